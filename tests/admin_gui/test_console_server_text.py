"""Text from servers, as the console shows it: any length of it leaves every screen its room."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication, QWidget

from admin_gui.api_client import ApiError
from admin_gui.screens.users import UsersScreen
from admin_gui.widgets import FormDialog
from admin_gui.workers import TaskRunner

pytestmark = pytest.mark.gui

#: 2.6 KB of server words: as a label, 4800 px high (a reviewer's finding).
MANY_LINES = "\n".join(f"line {i}" for i in range(300))


def _settled() -> None:
    """Layout requests posted, then those they post in turn (a scroll bar shown or hidden)."""
    for _ in range(3):
        QApplication.processEvents()


def test_a_long_message_scrolls_in_its_banner_and_the_table_keeps_its_room(qtbot, fake_context):
    """A banner grew with its message: 300 lines made it 4800 px high, the window taller than any
    monitor, and left the table beneath no room. It stops at a few lines and scrolls; all of the
    message is still there to read and select."""
    screen = UsersScreen(fake_context)
    qtbot.addWidget(screen)
    screen.resize(1280, 800)
    screen.show()
    qtbot.waitExposed(screen)
    screen.show_error(ApiError(MANY_LINES, "conflict", 409))
    _settled()
    line = screen.banner.fontMetrics().lineSpacing()
    assert screen.banner.text() == "L" + MANY_LINES[1:]
    assert screen.banner.height() < 10 * line
    assert screen.banner.text_box.verticalScrollBar().maximum() > 0  # the rest is a scroll away
    assert screen.minimumSizeHint().height() < 800
    assert screen.table.view.viewport().height() > 400

    screen.show_error(ApiError("the server refused", "conflict", 409))  # and a short one takes one line
    _settled()
    assert screen.banner.text_box.height() < 2 * line
    assert screen.banner.text_box.verticalScrollBar().maximum() == 0


def test_a_long_error_in_a_form_scrolls_and_leaves_the_form_on_the_screen(qtbot):
    parent = QWidget()
    qtbot.addWidget(parent)
    dialog = FormDialog(parent, "Edit user", TaskRunner(parent), lambda values: {}, lambda values: None)
    dialog.add_line("full_name", "Full name")
    dialog.show_error(MANY_LINES)
    assert dialog.error.text() == "L" + MANY_LINES[1:]
    assert dialog.minimumSizeHint().height() < 400
