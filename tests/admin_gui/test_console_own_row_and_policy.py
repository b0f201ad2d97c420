"""The Users screen against a real toplevel: the edit form of one's own row offers nothing the
server refuses there, and new passwords are checked with both bounds of the server's policy and its
refusal of blank passwords."""

from __future__ import annotations

import pytest
from driving import WAIT_MS, fill, log_in, open_screen, save
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton

from admin_gui.api_client import ApiClient
from admin_gui.screens.users import UsersScreen, password_policy_of
from shared.roles import INSTITUTION_ADMIN, SYSTEM_ADMIN

pytestmark = pytest.mark.gui

PASSWORD = "password-of-olga-self"


@pytest.fixture
def admin_api(gui_deployment) -> ApiClient:
    api = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    api.login(**gui_deployment.users["admin"])
    return api


@pytest.fixture
def own_admin(gui_deployment, admin_api):
    """A system administrator of their own, who edits their own row (the shared `admin` logs the
    other tests in)."""
    user = admin_api.post("/api/v1/users", {"username": "olga.self", "password": PASSWORD, "full_name": "Olga Self",
                                            "role": SYSTEM_ADMIN,
                                            "institution_id": gui_deployment.layout.institutions[0]["id"]})
    yield user
    admin_api.delete(f"/api/v1/users/{user['id']}")


@pytest.mark.parametrize("how", ["edit button", "enter"])
def test_the_edit_form_of_ones_own_row_offers_no_active_or_role(qtbot, window, gui_deployment, own_admin,
                                                                 admin_api, how):
    """Deactivate was disabled on one's own row, but Edit… (and Enter on the row) offered "Active
    (may log in)" and the Role: unticking Active or choosing another role got the server's 409
    ("you cannot deactivate your own account" / "you cannot change your own role") after Save.
    Now both are disabled there, saying why in the words of the row's Deactivate button, and
    not sent: the rest of the form saves."""
    log_in(qtbot, window, gui_deployment, "olga.self", PASSWORD)
    screen = open_screen(qtbot, window, "Users")
    assert screen.table.select_where(lambda r: r["username"] == "olga.self")
    if how == "enter":
        qtbot.keyClick(screen.table.view, Qt.Key.Key_Return)
    else:
        edit_button = next(b for b in screen.findChildren(QPushButton) if b.text() == "Edit…")
        qtbot.mouseClick(edit_button, Qt.MouseButton.LeftButton)
    dialog = screen.dialog
    assert dialog is not None and dialog.windowTitle() == "Edit user olga.self"
    active, role = dialog.fields["active"], dialog.fields["role"]
    assert not active.isEnabled() and not role.isEnabled()
    assert active.toolTip() == screen.toggle_button.toolTip()  # one reason, said once
    assert "deactivate your own account" in active.toolTip()
    assert "change your own role" in role.toolTip()

    # what a disabled field still holds (set by a script, an accessibility tool) is not sent
    fill(dialog, full_name="Olga Self-Edited", active=False, role=INSTITUTION_ADMIN)
    save(qtbot, window, dialog)
    assert not dialog.isVisible(), dialog.error.text()
    assert screen.banner.text() == "User olga.self saved."
    user = admin_api.get(f"/api/v1/users/{own_admin['id']}")
    assert (user["full_name"], user["active"], user["role"]) == ("Olga Self-Edited", True, SYSTEM_ADMIN)

    # another administrator's row: both offered, as before
    assert screen.table.select_where(lambda r: r["username"] == "admin")
    screen.edit(screen.table.selected())
    assert screen.dialog.fields["active"].isEnabled() and screen.dialog.fields["role"].isEnabled()
    assert not screen.dialog.fields["active"].toolTip()
    screen.dialog.reject()


def test_new_passwords_follow_both_bounds_of_the_servers_policy(qtbot, window, gui_deployment, admin_api):
    """The console checked only the policy's minimum (and its own copy, 1024, of the server's
    maximum length bounded the minimum it believed): 12 spaces or 1,025 characters passed the form
    and the server refused them ("password must be at least 10 characters and not only spaces",
    "password is longer than 1024 characters"). Now the form refuses both, in the server's words,
    and sends nothing; within the bounds it creates the user."""
    log_in(qtbot, window, gui_deployment, **gui_deployment.users["admin"])
    screen = open_screen(qtbot, window, "Users")
    screen.create()
    dialog = screen.dialog
    fill(dialog, username="blank.pw", full_name="Blank Password", password=" " * 12, password2=" " * 12)
    save(qtbot, window, dialog)
    assert dialog.isVisible()
    assert dialog.error.text() == "Password must not be only spaces."
    fill(dialog, password="x" * 1025, password2="x" * 1025)
    save(qtbot, window, dialog)
    assert dialog.isVisible()
    assert dialog.error.text() == "Password is longer than 1024 characters."
    assert "blank.pw" not in {u["username"] for u in admin_api.list_all("/api/v1/users")}  # nothing sent

    fill(dialog, password="x" * 1024, password2="x" * 1024)  # the longest the server takes
    save(qtbot, window, dialog)
    assert not dialog.isVisible(), dialog.error.text()
    created = next(u for u in admin_api.list_all("/api/v1/users") if u["username"] == "blank.pw")
    admin_api.delete(f"/api/v1/users/{created['id']}")
    assert screen.password_policy == (10, 1024)  # the server's answer, both bounds


def test_reset_and_own_change_check_the_same_bounds(qtbot, window, gui_deployment, own_admin):
    """Reset password… and Change my password… check with the same rule as New user."""
    log_in(qtbot, window, gui_deployment, "olga.self", PASSWORD)
    screen = open_screen(qtbot, window, "Users")
    assert screen.table.select_where(lambda r: r["username"] == "admin")
    screen.reset_password(screen.table.selected())
    fill(screen.dialog, password=" " * 40, password2=" " * 40)
    save(qtbot, window, screen.dialog)
    assert screen.dialog.error.text() == "Password must not be only spaces."
    screen.dialog.reject()
    qtbot.mouseClick(screen.change_password_button, Qt.MouseButton.LeftButton)
    fill(screen.dialog, old_password=PASSWORD, password="y" * 2000, password2="y" * 2000)
    save(qtbot, window, screen.dialog)
    assert screen.dialog.error.text() == "Password is longer than 1024 characters."
    screen.dialog.reject()
    api = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    assert api.login("olga.self", PASSWORD)["username"] == "olga.self"  # unchanged


def test_a_policy_answer_names_both_bounds_or_none():
    """Only a whole answer is believed: a minimum above the answer's own maximum, or a bound
    missing, leaves the lengths to the server's refusal."""
    assert password_policy_of({"min_length": 14, "max_length": 1024}) == (14, 1024)
    for answer in ({}, {"min_length": 14}, {"max_length": 1024}, {"min_length": 20, "max_length": 19},
                   {"min_length": 0, "max_length": 1024}, {"min_length": True, "max_length": 1024},
                   {"min_length": 10, "max_length": "1024"}, [], None):
        assert password_policy_of(answer) is None, answer


def test_a_toplevel_without_the_policy_leaves_the_lengths_to_it(qtbot, fake_sivr, fake_context):
    """An older toplevel has no GET /api/v1/me/password-policy (404): no length is checked, as
    before, and the server's own refusal names it; a blank password, which every toplevel refuses,
    is still refused at once."""
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution()]
    fake_sivr.answers["/api/v1/users"] = [fake_context.user]
    screen = UsersScreen(fake_context)
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: "/api/v1/me/password-policy" in fake_sivr.paths(), timeout=WAIT_MS)
    fake_context.runner.wait_for_done(WAIT_MS)
    screen.create()
    dialog = screen.dialog
    fill(dialog, username="someone", full_name="Some One", password="   ", password2="   ")
    dialog.submit()
    assert dialog.error.text() == "Password must not be only spaces."
    fake_sivr.answers["POST /api/v1/users"] = (400, {"error": {"code": "validation_error",
                                                               "message": "password is longer than 1024 characters"}})
    fill(dialog, password="z" * 3000, password2="z" * 3000)
    dialog.submit()
    qtbot.waitUntil(lambda: "POST" in {c["method"] for c in fake_sivr.seen}, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: dialog.error.text() == "Password is longer than 1024 characters", timeout=WAIT_MS)
    assert screen.password_policy is None
