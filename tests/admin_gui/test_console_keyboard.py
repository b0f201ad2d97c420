"""The console by keyboard alone: a row chosen with the arrow keys opens with Enter, as a
double-click opens it."""

from __future__ import annotations

import pytest
from driving import WAIT_MS
from PySide6.QtCore import Qt

from admin_gui.screens.users import UsersScreen

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("how", ["enter", "double-click"])
def test_enter_on_a_row_opens_it_as_a_double_click_does(qtbot, fake_sivr, fake_context, how):
    """Enter on the selected row of a table did nothing (only a double-click opened the edit form):
    an administrator at the keyboard had to tab through the toolbar to Edit…."""
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution()]
    fake_sivr.answers["/api/v1/users"] = [{**fake_context.user, "id": "u2", "username": "dr.novak",
                                          "full_name": "Dr. Novak", "role": "physician"}]
    screen = UsersScreen(fake_context)
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: screen.table.model.rowCount() == 1, timeout=WAIT_MS)
    view = screen.table.view
    view.selectRow(0)  # as the arrow keys leave it: the current, selected row
    assert screen.table.selected()["username"] == "dr.novak"
    if how == "enter":
        qtbot.keyClick(view, Qt.Key.Key_Return)
    else:
        at = view.visualRect(view.currentIndex()).center()
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at)  # a double-click's first press
        qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at)
    assert screen.dialog is not None and screen.dialog.windowTitle() == "Edit user dr.novak"
    screen.dialog.reject()
