"""The console window: login screen first, then navigation on the left and one screen at a time.

The window owns the session: it logs in (in the background), renews the token on a timer before
it expires, and goes back to the login screen with a message when the toplevel says the session is
over — from the renewal, a token exchange or any other call to it. No other server's answer ends
the session (`api_client.SessionEnded`), so the login screen never shows another server's words.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QByteArray, QSettings, QSize, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from admin_gui.api_client import ApiClient, ApiError
from admin_gui.context import ConsoleContext
from admin_gui.screens.audit import AuditScreen
from admin_gui.screens.base import Screen
from admin_gui.screens.institutions import InstitutionsScreen
from admin_gui.screens.login import LoginScreen
from admin_gui.screens.node_health import NodeHealthScreen
from admin_gui.screens.nodes import NodesScreen
from admin_gui.screens.record_types import RecordTypesScreen
from admin_gui.screens.users import UsersScreen
from admin_gui.server_text import one_line
from admin_gui.table_models import role_label
from admin_gui.widgets import plain_label
from admin_gui.workers import TaskRunner
from shared.roles import Principal, is_admin

#: (navigation label, screen class) in the order shown.
SCREENS: tuple[tuple[str, type[Screen]], ...] = (
    ("Institutions", InstitutionsScreen),
    ("Users", UsersScreen),
    ("Record types", RecordTypesScreen),
    ("Render nodes", NodesScreen),
    ("Node health", NodeHealthScreen),
    ("Audit log", AuditScreen),
)
RENEW_RETRY_S = 10
KEY_GEOMETRY = "window/geometry"


#: the longest wait before a renewal: QTimer counts milliseconds in a C int (about 24 days), and
#: a server may be configured with longer tokens (renewing earlier is harmless)
MAX_RENEWAL_DELAY_S = 24 * 3600


def renewal_delay_s(expires_in: int) -> int:
    """Renew a minute before expiry, or at 80 % of short lifetimes; never sooner than 1 s, never
    later than MAX_RENEWAL_DELAY_S."""
    margin = min(60, max(1, expires_in // 5))
    return min(MAX_RENEWAL_DELAY_S, max(1, expires_in - margin))


class ConsolePage(QWidget):
    """Navigation list on the left, the chosen screen on the right."""

    def __init__(self, ctx: ConsoleContext, on_logout, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        side = QFrame()
        side.setObjectName("sidebar")
        side.setFixedWidth(220)
        brand = QLabel("SIVR")
        brand.setObjectName("brand")
        brand_sub = QLabel("Administration")
        brand_sub.setObjectName("brandSub")
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setIconSize(QSize(18, 18))
        self.stack = QStackedWidget()
        self.screens: dict[str, Screen] = {}
        for label, screen_class in SCREENS:
            screen = screen_class(ctx)
            self.screens[label] = screen
            self.stack.addWidget(screen)
            item = QListWidgetItem(label)
            item.setSizeHint(QSize(0, 40))
            self.nav.addItem(item)
        name, role = one_line(ctx.user.get("full_name") or ctx.user.get("username")), role_label(ctx.user.get("role"))
        who = plain_label(f"{name}\n{one_line(ctx.user.get('username'))} · {one_line(role)}", "sideUser")
        self.logout_button = QPushButton("Sign out")
        self.logout_button.setObjectName("signOut")
        self.logout_button.clicked.connect(on_logout)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(14, 20, 14, 16)
        side_layout.setSpacing(4)
        side_layout.addWidget(brand)
        side_layout.addWidget(brand_sub)
        side_layout.addSpacing(18)
        side_layout.addWidget(self.nav, 1)
        side_layout.addWidget(who)
        side_layout.addSpacing(6)
        side_layout.addWidget(self.logout_button)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(side)
        layout.addWidget(self.stack, 1)
        self.nav.currentRowChanged.connect(self._show)
        self.nav.setCurrentRow(0)

    def _show(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        screen = self.stack.currentWidget()
        if isinstance(screen, Screen):
            screen.refresh()

    def open_screen(self, label: str) -> Screen:
        self.nav.setCurrentRow([name for name, _ in SCREENS].index(label))
        return self.screens[label]


class ConsoleWindow(QMainWindow):
    def __init__(self, settings: QSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("SIVR Administration")
        self.resize(1280, 800)
        self.settings = settings
        geometry = settings.value(KEY_GEOMETRY)
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self.runner = TaskRunner(self)
        self.runner.session_ended.connect(self.session_ended)
        self.runner.unhandled_error.connect(lambda message: self.statusBar().showMessage(message, 10000))
        self.client: ApiClient | None = None
        self.console: ConsolePage | None = None
        self.renew_timer = QTimer(self)
        self.renew_timer.setSingleShot(True)
        self.renew_timer.timeout.connect(self.renew)

        self.login = LoginScreen(settings)
        self.login.login_requested.connect(self.start_login)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.login)
        self.setCentralWidget(self.pages)

        self.user_label = plain_label()
        self.server_label = plain_label()
        self.busy_label = QLabel()
        self.busy_label.setObjectName("busy")
        for label in (self.busy_label, self.user_label, self.server_label):
            self.statusBar().addPermanentWidget(label)
        self.runner.busy_changed.connect(lambda busy: self.busy_label.setText("● working…" if busy else ""))
        self._show_login("")

    # --- session -------------------------------------------------------------------------

    def start_login(self, url: str, ca_file: str, username: str, password: str) -> None:
        client = ApiClient(url, ca_file)
        self.runner.submit(lambda: client.login(username, password),
                           lambda user: self._logged_in(client, user), self._login_failed, owner=self)

    def _login_failed(self, error: ApiError) -> None:
        self.login.show_error(error.message)

    def _logged_in(self, client: ApiClient, user: dict[str, Any]) -> None:
        self.login.remember()
        if not is_admin(Principal(str(user.get("role", "")), str(user.get("institution_id", "")))):
            self.runner.submit(client.logout, lambda _: None, lambda _: None)
            role = str(role_label(user.get("role"))).lower()
            self.login.show_error(f"{one_line(user.get('username'))} is a {one_line(role)}; this "
                                  "console is for administrators. Physicians use the web viewer.")
            return
        self.client = client
        self.login.password.clear()
        self.login.set_busy(False)
        self.console = ConsolePage(ConsoleContext(client, self.runner, user), self.logout)
        self.pages.addWidget(self.console)
        self.pages.setCurrentWidget(self.console)
        self.user_label.setText(f"Signed in as {one_line(user.get('full_name') or user.get('username'))} "
                                f"({one_line(user.get('username'))})")
        self.server_label.setText(client.base_url)
        self.statusBar().showMessage("Signed in.", 5000)
        self._schedule_renewal(client.credentials.expires_in)

    def _schedule_renewal(self, expires_in: int) -> None:
        self.renew_timer.start(renewal_delay_s(expires_in) * 1000)

    def renew(self) -> None:
        """Swap the token before it expires; a network hiccup is retried, a refusal logs out."""
        client = self.client
        if client is None:
            return

        def failed(error: ApiError) -> None:
            self.statusBar().showMessage(f"Could not renew the session: {error.message} "
                                         f"Retrying in {RENEW_RETRY_S} s.", RENEW_RETRY_S * 1000)
            self.renew_timer.start(RENEW_RETRY_S * 1000)

        self.runner.submit(client.renew, self._schedule_renewal, failed, owner=self)

    def session_ended(self, message: str) -> None:
        if self.client is None:
            return
        self._end_session()
        self._show_login(f"Your session has ended — {message.rstrip('.')}.")

    def logout(self) -> None:
        client = self.client
        if client is not None:
            self.runner.submit(client.logout, lambda _: None, lambda _: None)
        self._end_session()
        self._show_login("")

    def _end_session(self) -> None:
        self.renew_timer.stop()
        self.client = None
        if self.console is not None:
            self.pages.removeWidget(self.console)
            self.console.deleteLater()
            self.console = None

    def _show_login(self, message: str) -> None:
        self.pages.setCurrentWidget(self.login)
        self.statusBar().clearMessage()
        self.user_label.setText("Not signed in")
        self.server_label.setText("")
        self.login.reset_for_login(message)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.renew_timer.stop()
        self.settings.setValue(KEY_GEOMETRY, self.saveGeometry())
        super().closeEvent(event)
