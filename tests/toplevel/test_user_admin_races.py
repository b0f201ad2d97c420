"""Changes of one user, or of each other, by two requests at once (docs/operations.md, the attack
table: user administration races).

A view read the user row, another request changed it, then the view saved every column it had
read: a name edited by an administrator, or by the user on their own profile page, made a user
who had just been deactivated and demoted active again in their old role. And two system
administrators demoting, deactivating or deleting each other at once both passed the check of
their own session, so none was left. Every change of a user row now reads and writes it under one
lock, and checks the caller's session again once it holds it (`daemons.toplevel.context.user_change`).

The other request is made at the moment the view saves, from another thread with its own
connection, as another worker makes it; it is given a second to finish, which it does at once
where nothing holds it back.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemons.toplevel import admin_ops
from daemons.toplevel.context import EXTENSION
from daemons.toplevel.models import User, database_proxy

from .conftest import Seed
from .support import PASSWORDS, Api, Other, Request

SECOND_ADMIN_PASSWORD = "second-admin-password"

def _row(user_id: str) -> User | None:
    with database_proxy.connection_context():
        return User.get_or_none(User.id == user_id)


def _second_system_admin(config, seed: Seed, api: Api) -> tuple[str, str]:
    user = admin_ops.create_user(config, "admin.two", SECOND_ADMIN_PASSWORD, "sysadmin",
                                 seed.institution_a["id"], "Second Admin")
    return user["id"], api.login("admin.two", SECOND_ADMIN_PASSWORD)["access_token"]


def _edit_by_an_admin(tokens: dict[str, str], api: Api, config, seed: Seed) -> Request:
    _uid, second = _second_system_admin(config, seed, api)
    return second, "PUT", f"/api/v1/users/{seed.users['admin_b']['id']}", {"full_name": "Robert Admin"}


def _own_profile(tokens: dict[str, str], api: Api, config, seed: Seed) -> Request:
    return tokens["admin_b"], "PUT", "/api/v1/me", {"full_name": "Robert Admin"}


EDITS: dict[str, Callable[[dict[str, str], Api, Any, Seed], Request]] = {
    "another admin's edit of the name": _edit_by_an_admin,
    "the user's own profile edit": _own_profile,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edit_racing_a_deactivation_and_demotion_does_not_undo_them(app, api: Api, config, tokens, seed,
                                                                       monkeypatch, edit: str):
    """B's institution admin is deactivated and made a physician while their name is edited: before,
    the edit's save wrote `active` and `role` back as it had read them, and the user logged in again
    as an institution admin (1 deactivation in 4 undone by hammering `PUT /api/v1/me`)."""
    victim = seed.users["admin_b"]["id"]
    token, method, path, body = EDITS[edit](tokens, api, config, seed)
    other = Other(app, monkeypatch, User, "save", (tokens["admin"], "PUT", f"/api/v1/users/{victim}",
                                                   {"active": False, "role": "physician"}))
    status, answer, _ = api.call(method, path, token, body)
    monkeypatch.undo()
    other_status, other_answer = other.answer()
    assert (status, other_status) == (200, 200), (answer, other_answer)
    row = _row(victim)
    assert row is not None and (row.active, row.role) == (False, "physician")
    assert row.full_name == "Robert Admin"
    login, refused, _ = api.call("POST", "/api/v1/auth/login",
                                 json={"username": "admin.b", "password": PASSWORDS["admin_b"]})
    assert login == 401, refused


#: What each of two system administrators does to the other at once.
REMOVALS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "demote": ("PUT", {"role": "instadmin"}),
    "deactivate": ("PUT", {"active": False}),
    "delete": ("DELETE", None),
}


def _system_admins_left() -> int:
    with database_proxy.connection_context():
        return User.select().where((User.role == "sysadmin") & User.active).count()


@pytest.mark.parametrize("removal", list(REMOVALS))
def test_two_system_admins_removing_each_other_at_once_leave_one(app, api: Api, config, tokens, seed,
                                                                   monkeypatch, removal: str):
    """Before, both answered 200 (204) and no system administrator was left to administer
    institutions, record types or anyone (7 races in 20 over the API). Now the second finds its
    own session ended by the first: `401 session_expired`, nothing changed by it."""
    method, body = REMOVALS[removal]
    first = seed.users["admin"]["id"]
    second, second_token = _second_system_admin(config, seed, api)
    other = Other(app, monkeypatch, User, "delete_instance" if method == "DELETE" else "save",
                  (second_token, method, f"/api/v1/users/{first}", body))
    status, answer, _ = api.call(method, f"/api/v1/users/{second}", tokens["admin"], body)
    monkeypatch.undo()
    other_status, other_answer = other.answer()
    assert sorted([status, other_status]) in ([200, 401], [204, 401]), (answer, other_answer)
    assert _system_admins_left() == 1
    refused = answer if status == 401 else other_answer
    assert refused["error"]["code"] == "session_expired"


def test_an_own_password_change_racing_an_administrators_reset_leaves_the_reset(app, api: Api, tokens, seed,
                                                                                monkeypatch):
    """Someone holding a physician's token and old password changes the password; the institution's
    administrator, told the account is taken, resets it meanwhile (while the change's passwords are
    hashed, a good part of a second each). Before, the change was written after the reset: 204,
    and the account was theirs again with the password they chose. Now the reset ended the
    change's session: `401 session_expired`, and the administrator's password is the one."""
    victim = seed.users["physician"]["id"]
    passwords = app.extensions[EXTENSION].passwords
    reset = Other(app, monkeypatch, type(passwords), "verify",
                  (tokens["admin"], "POST", f"/api/v1/users/{victim}/password", {"new_password": "reset-by-the-admin"}))
    status, answer, _ = api.call("POST", "/api/v1/me/password", tokens["physician"],
                                 {"old_password": PASSWORDS["physician"], "new_password": "chosen-by-the-thief"})
    monkeypatch.undo()
    assert reset.answer()[0] == 204
    assert status == 401, f"the change answered {status} after the reset"
    assert answer["error"]["code"] == "session_expired"
    for password, outcome in (("chosen-by-the-thief", 401), ("reset-by-the-admin", 200)):
        login, _, _ = api.call("POST", "/api/v1/auth/login", json={"username": "dr.house", "password": password})
        assert login == outcome


_SET_ROLE = """
import json, sys
from daemons.toplevel import admin_ops
from shared.config import Config
config = Config(json.loads(sys.argv[1]), "toplevel", None)
sys.stdin.readline()
admin_ops.set_role(config, sys.argv[2], sys.argv[3])
"""


def test_a_role_set_from_the_command_line_while_an_admin_edits_the_user_is_kept(api: Api, config, tokens, seed,
                                                                                 monkeypatch):
    """`sivr user set-role` (another process) demotes B's institution admin while an administrator
    edits their name through the API: before, the edit wrote the old role back."""
    victim = seed.users["admin_b"]["id"]
    cli = subprocess.Popen([sys.executable, "-c", _SET_ROLE, json.dumps(config), "admin.b", "physician"],
                           stdin=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    real_save = User.save

    def save(row: User, *args: Any, **kwargs: Any) -> Any:
        if cli.stdin is not None and not cli.stdin.closed:
            cli.stdin.write("go\n")
            cli.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                cli.wait(3)  # unhindered, it is over by now; held by the lock, it waits for this edit
        return real_save(row, *args, **kwargs)

    monkeypatch.setattr(User, "save", save)
    status, answer, _ = api.call("PUT", f"/api/v1/users/{victim}", tokens["admin"], {"full_name": "Robert Admin"})
    monkeypatch.undo()
    assert cli.wait(30) == 0
    assert status == 200, answer
    row = _row(victim)
    assert row is not None and (row.role, row.full_name) == ("physician", "Robert Admin")
