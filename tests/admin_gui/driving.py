"""Helpers that drive the console the way an administrator does: type, click, wait for answers."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QDialogButtonBox, QLineEdit, QMessageBox

from admin_gui.main_window import ConsoleWindow
from admin_gui.screens.base import Screen
from admin_gui.widgets import FormDialog

#: Long enough for argon2 on a loaded 2-core machine, short enough to fail a hung test.
WAIT_MS = 20000


def wait_idle(qtbot, window: ConsoleWindow) -> None:
    """Until every background call has delivered its answer to the GUI thread."""
    qtbot.waitUntil(lambda: window.runner.pending == 0, timeout=WAIT_MS)


def log_in(qtbot, window: ConsoleWindow, deployment, username: str, password: str) -> None:
    page = window.login
    page.url.setText(deployment.url("toplevel"))
    page.ca_file.setText(deployment.ca_cert)
    page.username.setText(username)
    page.password.setText(password)
    qtbot.mouseClick(page.button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)


def log_in_admin(qtbot, window: ConsoleWindow, deployment) -> None:
    log_in(qtbot, window, deployment, **deployment.users["admin"])
    assert window.console is not None, window.login.banner.text()
    wait_idle(qtbot, window)


def open_screen(qtbot, window: ConsoleWindow, label: str) -> Screen:
    screen = window.console.open_screen(label)
    wait_idle(qtbot, window)
    return screen


def fill(dialog: FormDialog, **values) -> None:
    for name, value in values.items():
        widget = dialog.fields[name]
        if isinstance(widget, QLineEdit):
            widget.setText(value)
        elif isinstance(widget, QComboBox):
            index = widget.findData(value)
            if index < 0:
                index = widget.findText(value)
            assert index >= 0, f"{value!r} not offered in {name}"
            widget.setCurrentIndex(index)
        elif isinstance(widget, QCheckBox):
            widget.setChecked(value)


def save(qtbot, window: ConsoleWindow, dialog: FormDialog) -> None:
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Save), Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)


def answer(qtbot, window: ConsoleWindow, box: QMessageBox, yes: bool) -> None:
    button = QMessageBox.StandardButton.Yes if yes else QMessageBox.StandardButton.No
    qtbot.mouseClick(box.button(button), Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)


def table_values(screen, column: str) -> list[str]:
    """The texts of one column, in the order shown (after sorting and filtering)."""
    proxy, model = screen.table.proxy, screen.table.model
    col = [c.header for c in model.columns].index(column)
    return [proxy.index(r, col).data() for r in range(proxy.rowCount())]
