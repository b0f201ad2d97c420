"""The caller's own account: `/api/v1/me` and the own-password change (old password always required)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from daemons.toplevel import sessions, throttle
from daemons.toplevel.accounts import USER_UPDATE_FIELDS
from daemons.toplevel.context import require_user, toplevel, user_change
from daemons.toplevel.models import AuditEntry, User
from daemons.toplevel.passwords import MAX_PASSWORD_LENGTH, check_body_fields, password_field
from daemons.toplevel.serialize import user_json
from shared.audit import client_address, record_audit
from shared.auth import current_identity
from shared.errors import ApiError, save_edit
from shared.validation import json_body, validate

bp = Blueprint("profile", __name__)

_OWN_FIELDS = {name: USER_UPDATE_FIELDS[name] for name in ("full_name", "email")}


def _me() -> User:
    return User.get_by_id(current_identity().user_id)


@bp.get("/api/v1/me")
@require_user()
def get_me():
    return jsonify(user_json(_me()))


@bp.put("/api/v1/me")
@require_user()
def update_me():
    data = validate(json_body(), _OWN_FIELDS, partial=True)
    with user_change() as (_identity, user):
        for name, value in data.items():
            setattr(user, name, value)
        save_edit(user, "user")
        record_audit(AuditEntry, "user.update", "user", user.id, detail="own profile: " + ", ".join(data))
    return jsonify(user_json(user))


@bp.get("/api/v1/me/password-policy")
@require_user()
def password_policy():
    """The lengths a new password must have here (`auth.min_password_length` is an operator's
    setting), so that a client checks what this server checks rather than a number of its own."""
    return jsonify({"min_length": toplevel().config["auth"]["min_password_length"], "max_length": MAX_PASSWORD_LENGTH})


@bp.post("/api/v1/me/password")
@require_user()
def change_my_password():
    """Needs the old password even with a valid token, so a stolen token cannot take the account.

    Wrong old passwords count as failed logins, so the token cannot be used to guess either. A
    change ends the user's other sessions (someone else may hold one), keeping the caller's.
    The new password is written under `user_change`'s lock, which checks the caller's session
    again: an administrator's reset (or a change from another session) while this one's passwords
    were hashed ended it, and the reset stands. Before, the change saved after the reset, and
    whoever held the stolen token and the old password kept the account.
    """
    body = json_body()
    check_body_fields(body, ("old_password", "new_password"))
    top = toplevel()
    auth = top.config["auth"]
    old_password = password_field(body, "old_password")
    new_password = password_field(body, "new_password", auth["min_password_length"])
    user = _me()
    address = client_address()
    attempt = throttle.reserve_attempt(user.username, address, auth, "user.password_change_throttled")
    if not top.passwords.verify(user.password_hash, old_password):
        record_audit(AuditEntry, "user.password_change_failed", "user", user.id, detail="wrong old password")
        throttle.attempt_failed(attempt)
        raise ApiError(403, "wrong_password", "the old password is not correct")
    throttle.attempt_succeeded(attempt, user.username, address)
    password_hash = top.passwords.hash(new_password)
    with user_change() as (identity, current):
        current.password_hash = password_hash
        save_edit(current, "user", only=[User.password_hash])
        sessions.revoke_user_sessions(current.id, keep=identity.session_id)
        record_audit(AuditEntry, "user.password_change", "user", current.id)
    return Response(status=204)
