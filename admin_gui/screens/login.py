"""Login: toplevel URL, CA certificate file, username, password.

URL, CA file and username are remembered with QSettings for the next start; the password never is.
The screen only collects and checks the input; the window does the login call in the background
and reports back with `show_error()` (wrong password, unreachable server, expired session).
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from admin_gui.form_checks import check_ca_file, check_server_url
from admin_gui.widgets import MessageBanner

KEY_URL = "login/toplevel_url"
KEY_CA = "login/ca_file"
KEY_USER = "login/username"
DEFAULT_URL = "https://127.0.0.1:5001"


class LoginScreen(QWidget):
    """The centred login card; emits `login_requested(url, ca_file, username, password)`."""

    login_requested = Signal(str, str, str, str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.setObjectName("loginScreen")
        card = QFrame()
        card.setObjectName("loginCard")
        card.setFixedWidth(480)
        title = QLabel("SIVR Administration")
        title.setObjectName("loginTitle")
        subtitle = QLabel("Sign in with an administrator account of the toplevel server.")
        subtitle.setObjectName("muted")
        subtitle.setWordWrap(True)

        self.url = QLineEdit(str(settings.value(KEY_URL, DEFAULT_URL)))
        self.url.setPlaceholderText("https://sivr.example.org:5001")
        self.ca_file = QLineEdit(str(settings.value(KEY_CA, "")))
        self.ca_file.setPlaceholderText("empty: the system's trusted certificates")
        self.ca_file.textChanged.connect(self.ca_file.setToolTip)
        self.ca_file.setToolTip(self.ca_file.text())
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_ca)
        ca_row = QHBoxLayout()
        ca_row.setSpacing(6)
        ca_row.addWidget(self.ca_file, 1)
        ca_row.addWidget(browse)
        self.username = QLineEdit(str(settings.value(KEY_USER, "")))
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.banner = MessageBanner()
        self.button = QPushButton("Sign in")
        self.button.setObjectName("primary")
        self.button.setDefault(True)
        self.button.clicked.connect(self.submit)
        for edit in (self.url, self.ca_file, self.username, self.password):
            edit.returnPressed.connect(self.submit)

        form = QFormLayout()
        form.setVerticalSpacing(10)
        form.setHorizontalSpacing(14)
        form.addRow("Toplevel server", self.url)
        form.addRow("CA certificate", ca_row)
        form.addRow("Username", self.username)
        form.addRow("Password", self.password)

        inner = QVBoxLayout(card)
        inner.setContentsMargins(32, 28, 32, 28)
        inner.setSpacing(14)
        inner.addWidget(title)
        inner.addWidget(subtitle)
        inner.addWidget(self.banner)
        inner.addLayout(form)
        inner.addWidget(self.button)

        outer = QVBoxLayout(self)
        outer.addStretch(1)
        outer.addWidget(card, 0, Qt.AlignmentFlag.AlignHCenter)
        outer.addStretch(2)

    def focus_first_empty(self) -> None:
        for edit in (self.url, self.username, self.password):
            if not edit.text():
                edit.setFocus()
                return
        self.password.setFocus()

    def _browse_ca(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificate", self.ca_file.text(),
                                              "PEM certificates (*.pem *.crt);;All files (*)")
        if path:
            self.ca_file.setText(path)

    def submit(self) -> None:
        if not self.button.isEnabled():
            return
        url, ca_file = self.url.text().strip(), self.ca_file.text().strip()
        username, password = self.username.text().strip(), self.password.text()
        problem = (check_server_url(url, "Toplevel server") or check_ca_file(ca_file)
                   or (None if username else "Username is required.")
                   or (None if password else "Password is required."))
        if problem:
            self.show_error(problem)
            return
        self.banner.hide()
        self.set_busy(True)
        self.login_requested.emit(url.rstrip("/"), ca_file, username, password)

    def remember(self) -> None:
        """Keep the choice for the next start — never the password."""
        self.settings.setValue(KEY_URL, self.url.text().strip().rstrip("/"))
        self.settings.setValue(KEY_CA, self.ca_file.text().strip())
        self.settings.setValue(KEY_USER, self.username.text().strip())
        self.settings.sync()

    def set_busy(self, busy: bool) -> None:
        self.button.setEnabled(not busy)
        self.button.setText("Signing in…" if busy else "Sign in")

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.banner.show_error(message)

    def reset_for_login(self, message: str = "") -> None:
        """Back to this screen (logout, expired session): clear the password, keep the rest."""
        self.password.clear()
        self.set_busy(False)
        if message:
            self.banner.show_error(message)
        else:
            self.banner.hide()
        self.focus_first_empty()
