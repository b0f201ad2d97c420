"""A login racing a change of its account (attack 69).

Checking a password takes a good part of a second (argon2id). An administrator who resets a
password, deactivates or deletes the account in that time must leave no session for the old
password: the reset revokes the sessions that exist, and a session the login started after it
outlived the reset.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from daemons.toplevel import sessions
from daemons.toplevel.context import EXTENSION
from daemons.toplevel.models import User, UserSession, database_proxy

from .support import PASSWORDS, Api

NEW_PASSWORD = "reset-by-the-admin-2026"

Change = Callable[[Api, str, str], tuple[int, Any, Any]]
CHANGES: dict[str, Change] = {
    "password reset": lambda api, admin, uid: api.call("POST", f"/api/v1/users/{uid}/password", admin,
                                                       json={"new_password": NEW_PASSWORD}),
    "deactivation": lambda api, admin, uid: api.call("PUT", f"/api/v1/users/{uid}", admin, json={"active": False}),
    "deletion": lambda api, admin, uid: api.call("DELETE", f"/api/v1/users/{uid}", admin),
}


def _change_in_another_thread(api: Api, admin: str, uid: str, change: str) -> threading.Thread:
    """The change as another worker makes it: its own thread, its own database connection."""
    outcome: list[tuple[int, Any]] = []

    def run() -> None:
        status, body, _ = CHANGES[change](api, admin, uid)
        outcome.append((status, body))

    thread = threading.Thread(target=run)
    thread.outcome = outcome  # type: ignore[attr-defined]
    thread.start()
    return thread


def _finished(thread: threading.Thread) -> None:
    thread.join(30)
    assert not thread.is_alive(), "the account change never finished"
    status, body = thread.outcome[0]  # type: ignore[attr-defined]
    assert status in (200, 204), body


def _live_sessions(uid: str) -> list[str]:
    with database_proxy.connection_context():
        return [s.id for s in UserSession.select().where(UserSession.user_id == uid, UserSession.revoked_at.is_null())]


def _login(api: Api) -> tuple[int, Any]:
    status, body, _ = api.call("POST", "/api/v1/auth/login",
                               json={"username": "dr.house", "password": PASSWORDS["physician"]})
    return status, body


@pytest.mark.parametrize("change", CHANGES)
def test_an_account_changed_while_the_login_checks_its_password_gets_no_session(
        api: Api, app, seed, tokens, monkeypatch, change):
    """The change commits between the password check and the session's start: the login is
    refused as a wrong password is, and no session of the account is left open. Before, the
    login answered 200 and, after a reset, its session for the old password lived on."""
    uid = seed.users["physician"]["id"]
    for session_id in _live_sessions(uid):  # the `tokens` fixture's own login
        sessions.revoke_session(session_id)
    passwords = app.extensions[EXTENSION].passwords
    real_verify = passwords.verify

    def verify(stored_hash: str, password: str) -> bool:
        verified = real_verify(stored_hash, password)
        _finished(_change_in_another_thread(api, tokens["admin"], uid, change))
        return verified

    monkeypatch.setattr(passwords, "verify", verify)
    status, body = _login(api)
    assert (status, body["error"]["code"]) == (401, "invalid_credentials"), body
    assert _live_sessions(uid) == []
    monkeypatch.setattr(passwords, "verify", real_verify)
    if change == "password reset":  # the new password works, the old one no longer
        status, _ = _login(api)
        assert status == 401
        ok, _, _ = api.call("POST", "/api/v1/auth/login", json={"username": "dr.house", "password": NEW_PASSWORD})
        assert ok == 200


def test_a_password_reset_racing_the_session_start_leaves_no_session_for_the_old_password(
        api: Api, app, seed, tokens, monkeypatch):
    """The reset starts while the login's session row is being written: whichever commits first,
    the session does not outlive the reset (refused at login, or revoked by the reset)."""
    uid = seed.users["physician"]["id"]
    real_start = sessions.start_session
    resets: list[threading.Thread] = []

    def start_session(*args: Any, **kwargs: Any) -> tuple[str, int]:
        started = real_start(*args, **kwargs)
        resets.append(_change_in_another_thread(api, tokens["admin"], uid, "password reset"))
        resets[-1].join(1.0)  # SQLite: the reset waits for the login's commit; PostgreSQL: it may finish
        return started

    monkeypatch.setattr(sessions, "start_session", start_session)
    status, body = _login(api)
    _finished(resets[0])
    assert _live_sessions(uid) == []
    if status == 200:
        renewed, _, _ = api.call("POST", "/api/v1/auth/renew", body["access_token"])
        assert renewed == 401
    else:
        assert body["error"]["code"] == "invalid_credentials"
    with database_proxy.connection_context():
        assert User.get_by_id(uid).active
