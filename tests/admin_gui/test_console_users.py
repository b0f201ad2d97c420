"""The Users screen as an administrator reads it: their own row (what the server refuses there is
not offered; their own password is changed with the old one) and roles in the form's words."""

from __future__ import annotations

import pytest
from driving import WAIT_MS, fill, log_in, open_screen, save, table_values
from PySide6.QtCore import Qt

from admin_gui.api_client import ApiClient
from admin_gui.screens.users import UsersScreen, password_policy_of
from shared.roles import INSTITUTION_ADMIN, PHYSICIAN, SYSTEM_ADMIN

pytestmark = pytest.mark.gui

OLD_PASSWORD = "old-password-of-maja"
NEW_PASSWORD = "new-password-of-maja"


@pytest.fixture
def own_admin(gui_deployment):
    """A system administrator of their own, whose password this test may change (the shared
    deployment's `admin` logs the other tests in)."""
    api = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    api.login(**gui_deployment.users["admin"])
    user = api.post("/api/v1/users", {"username": "maja.self", "password": OLD_PASSWORD, "full_name": "Maja Self",
                                      "role": SYSTEM_ADMIN,
                                      "institution_id": gui_deployment.layout.institutions[0]["id"]})
    yield user
    api.delete(f"/api/v1/users/{user['id']}")


def test_an_admin_changes_their_own_password_with_the_old_one(qtbot, window, gui_deployment, own_admin):
    """On their own row the console offered "Reset password…", which the server refuses with 403
    "change your own password with POST /api/v1/me/password (it needs the old one)": API talk, and
    no way in the console to do what it says. Now that row's reset is disabled, saying why, and
    "Change my password…" asks for the old password, shows the server's refusal in the dialog
    with everything typed kept, and changes it."""
    log_in(qtbot, window, gui_deployment, "maja.self", OLD_PASSWORD)
    screen = open_screen(qtbot, window, "Users")
    assert screen.table.select_where(lambda r: r["username"] == "maja.self")
    assert not screen.reset_button.isEnabled()
    assert "Change my password…" in screen.reset_button.toolTip()
    assert screen.change_password_button.isEnabled()

    qtbot.mouseClick(screen.change_password_button, Qt.MouseButton.LeftButton)
    dialog = screen.dialog
    assert dialog.windowTitle() == "Change my password"
    fill(dialog, old_password="", password="short", password2="short")
    save(qtbot, window, dialog)
    assert dialog.error.text() == "Type your current password.\nPassword must be at least 10 characters."

    fill(dialog, old_password="not-my-password", password=NEW_PASSWORD, password2=NEW_PASSWORD)
    save(qtbot, window, dialog)
    assert dialog.isVisible()
    assert dialog.error.text() == "The old password is not correct"  # the server's words
    assert dialog.values() == {"old_password": "not-my-password", "password": NEW_PASSWORD,
                               "password2": NEW_PASSWORD}

    fill(dialog, old_password=OLD_PASSWORD)
    save(qtbot, window, dialog)
    assert not dialog.isVisible()
    assert screen.banner.text() == "Your password was changed; your other sessions have ended."
    assert window.console is not None  # this session goes on
    api = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    assert api.login("maja.self", NEW_PASSWORD)["username"] == "maja.self"


def test_the_role_column_and_its_filter_speak_the_forms_words(qtbot, fake_sivr, fake_context):
    """The Role column showed the API's codes (`sysadmin`) while the form offers "System
    administrator": filtering the users by "administrator" found no one."""
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution()]
    fake_sivr.answers["/api/v1/users"] = [
        {**fake_context.user, "id": f"u{n}", "username": name, "role": role}
        for n, (name, role) in enumerate((("ana", SYSTEM_ADMIN), ("ines", INSTITUTION_ADMIN),
                                          ("dr.novak", PHYSICIAN), ("newer", "auditor")))]
    screen = UsersScreen(fake_context)
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: screen.table.model.rowCount() == 4, timeout=WAIT_MS)
    assert dict(zip(table_values(screen, "Username"), table_values(screen, "Role"), strict=True)) == {
        "ana": "System administrator", "ines": "Institution administrator", "dr.novak": "Physician",
        "newer": "auditor"}  # a role this console does not know: as sent
    screen.table.filter.setText("administrator")
    assert sorted(table_values(screen, "Username")) == ["ana", "ines"]
    screen.table.filter.setText("system admin")
    assert table_values(screen, "Username") == ["ana"]


def test_password_checks_use_the_servers_minimum(qtbot, window, gui_deployment):
    """The console's own 10 stood for the server's `auth.min_password_length`, whatever an operator set;
    it now reads the server's (GET /api/v1/me/password-policy), and an answer that names none or an
    insane one leaves the check to the server."""
    log_in(qtbot, window, gui_deployment, **gui_deployment.users["admin"])
    screen = open_screen(qtbot, window, "Users")
    assert screen.password_policy == (10, 1024)  # the deployment's setting and the server's maximum
    for answer in ({}, {"min_length": True, "max_length": 1024}, {"min_length": "12", "max_length": 1024},
                   {"min_length": 0, "max_length": 1024}, {"min_length": 10**9, "max_length": 1024}, []):
        assert password_policy_of(answer) is None, answer
    assert password_policy_of({"min_length": 14, "max_length": 1024}) == (14, 1024)
