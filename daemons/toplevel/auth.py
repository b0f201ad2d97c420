"""Login, token renewal, token exchange and logout: the only place access tokens are minted.

Login and renewal give a session token, accepted by the toplevel alone. The exchange turns it into
a short-lived token for one other server (an institution server, a render node): the client asks
for one per server it calls, so no server ever receives a token another would accept.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify

from daemons.toplevel import sessions, throttle
from daemons.toplevel.context import require_live_session, toplevel
from daemons.toplevel.models import AuditEntry, User
from daemons.toplevel.passwords import check_body_fields, password_field
from daemons.toplevel.serialize import user_json
from shared.audit import client_address, record_audit
from shared.auth import authenticate
from shared.errors import ApiError
from shared.field_rules import MAX_USERNAME_LENGTH
from shared.tokens import Identity, normalize_audience
from shared.validation import is_blank, json_body, refuse_controls

bp = Blueprint("auth", __name__)

_BAD_CREDENTIALS = "wrong username or password"


def _token_answer(user: User, session_id: str | None = None, auth_time: int | None = None) -> Response:
    token, expires_in = toplevel().issuer.issue(
        user.id, user.username, user.role, user.institution_id,
        session_id=session_id, auth_time=auth_time,
    )
    return jsonify({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "user": user_json(user),
    })


def _login_username(body: dict[str, Any]) -> str:
    """The username to look up, refused before the lookup when no username can hold it.

    No username holds a character that no typed text may hold (`shared.validation.refuse_controls`:
    PostgreSQL cannot even compare a NUL, no database can encode a lone surrogate, a bidirectional
    control would reorder the text shown after it wherever the attempt's audit entry is read), nor
    only characters that show nothing. Checked as sent, before stripping: stricter than `validate`,
    a line break around the name is refused too. Not `accounts.check_username`'s form, which binds
    new accounts only. The length is checked on the name as it is looked up, throttled and audited
    (`_login_key`), so whatever passes fits their columns.
    """
    value = body.get("username")
    if not isinstance(value, str) or is_blank(value):
        raise ApiError(400, "validation_error", "username is required")
    refuse_controls(value, "username")
    username = _login_key(value)
    if len(username) > MAX_USERNAME_LENGTH:
        raise ApiError(400, "validation_error",
                       f"username is {len(username)} characters long; at most {MAX_USERNAME_LENGTH}")
    return username


def _login_key(typed: str) -> str:
    """A typed username as accounts store theirs (`shared.field_rules.username`: ASCII, lower case).

    Only ASCII letters are lower-cased. A name beyond ASCII is no account's, but it is answered,
    throttled and audited like any other unknown name, so it is kept as typed: Unicode lower-casing
    made `İ` two characters (150 of them overflowed the audit entry's column, a 500 on PostgreSQL
    that lost the failed login's entry) and the Kelvin sign an ASCII `k`.
    """
    name = typed.strip()
    return name.lower() if name.isascii() else name


def _login_refusal(user: User | None, password: str) -> str:
    """Why a login fails, for the audit log ("" when it does not); the answer is the same for all.

    A deactivated account is answered and counted like a wrong password: a different answer would
    confirm its password to whoever guesses it, and a success would clear the guesser's failures.
    """
    passwords = toplevel().passwords
    if user is None:
        passwords.burn_dummy(password)
        return "unknown username"
    if not passwords.verify(user.password_hash, password):
        return "wrong password"
    return "" if user.active else "account deactivated"


@bp.post("/api/v1/auth/login")
def login():
    body = json_body()
    check_body_fields(body, ("username", "password"))
    username = _login_username(body)
    password = password_field(body, "password")
    top = toplevel()
    auth = top.config["auth"]
    address = client_address()
    attempt = throttle.reserve_attempt(username, address, auth, "auth.login_throttled")

    user = User.get_or_none(User.username == username)
    refusal = _login_refusal(user, password)
    opened = None if user is None or refusal else _open_session(user, password)
    if opened is None:
        throttle.audit_login_attempt("auth.login_failed", username, user, refusal or _ACCOUNT_CHANGED)
        throttle.attempt_failed(attempt)
        raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
    throttle.attempt_succeeded(attempt, username, address)
    user, session_id, auth_time = opened
    throttle.audit_login_attempt("auth.login", username, user, f"session {session_id}")
    return _token_answer(user, session_id, auth_time)


_ACCOUNT_CHANGED = "the account's password was changed, or it was deactivated or deleted, while the login was checked"


class _AccountChanged(Exception):
    """The user row no longer matches the one whose password a login verified."""


def _open_session(checked: User, password: str) -> tuple[User, str, int] | None:
    """A new session of `checked`, whose password was just verified, with the user row as it is
    now; None when the row changed meanwhile (another password, deactivated, deleted).

    Verifying a password takes a good part of a second, and an administrator's password reset
    (or the user's own change) in that time revokes the sessions that exist: a session started
    after it, for the old password, would outlive the reset. So the session row is written first
    and the user row read again in the same transaction, locked (`FOR UPDATE` where the database
    has it; SQLite's writer lock, taken by the first write, holds every other writer off): a reset
    that committed before is seen here and refuses the login, one that comes after waits for this
    commit and then revokes the new session with the others.
    """
    top = toplevel()
    rehashed = top.passwords.hash(password) if top.passwords.needs_rehash(checked.password_hash) else None
    database = User._meta.database
    try:
        with database.atomic():
            session_id, auth_time = sessions.start_session(checked.id, top.session_max_s, top.issuer.ttl_s)
            query = User.select().where(User.id == checked.id)
            current = (query.for_update() if database.for_update else query).first()
            if current is None or not current.active or current.password_hash != checked.password_hash:
                raise _AccountChanged
            if rehashed is not None:
                current.password_hash = rehashed
                current.save(only=[User.password_hash])
    except _AccountChanged:
        return None
    return current, session_id, auth_time


def _check_session_limit(identity: Identity) -> None:
    """`401 session_expired` once the session is older than the absolute limit."""
    limit = toplevel().session_max_s
    if time.time() - identity.auth_time > limit:
        raise ApiError(401, "session_expired",
                       f"sessions last at most {limit // 3600} h {limit % 3600 // 60} min; log in again")


@bp.post("/api/v1/auth/renew")
def renew():
    """A new token for the same session, re-checked against the user table and the session limit."""
    identity, user = require_live_session()
    _check_session_limit(identity)
    return _token_answer(user, session_id=identity.session_id, auth_time=identity.auth_time)


EXCHANGE_AUDIT_ACTION = "auth.token_exchange"


@bp.post("/api/v1/auth/token")
def exchange():
    """RFC 8693 style token exchange: the session token (bearer) for a token for one other server.

    The session and the user are re-checked on every exchange, and the token lives at most
    `tokens.exchanged_ttl_s` (<= 60 s), so a revoked session stops working everywhere within that
    time. Its claims come from the user row as it is now, not from the session token.
    """
    identity, user = require_live_session()
    _check_session_limit(identity)
    body = json_body()
    check_body_fields(body, ("audience",))
    raw = body.get("audience")
    if not isinstance(raw, str) or len(raw) > 2000:
        raise ApiError(400, "validation_error", "audience must be the base URL of the server the token is for")
    try:
        audience = normalize_audience(raw)
    except ValueError as exc:
        raise ApiError(400, "validation_error", f"audience: {exc}") from exc
    top = toplevel()
    if audience == top.issuer.audience:
        raise ApiError(400, "validation_error",
                       "the toplevel's own audience is the session token's; exchange it for other servers only")
    token, expires_in = top.issuer.issue(
        user.id, user.username, user.role, user.institution_id, session_id=identity.session_id,
        auth_time=identity.auth_time, audience=audience, ttl_s=top.exchanged_ttl_s,
    )
    _audit_first_exchange(identity, audience)
    return jsonify({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": expires_in,
        "audience": audience,
    })


def _audit_first_exchange(identity: Identity, audience: str) -> None:
    """One entry per session and server, at its first exchange: renewals every minute would
    flood the log without saying anything new (the servers audit what the token was used for)."""
    detail = f"audience {audience}"[:2000]
    already = AuditEntry.select(AuditEntry.id).where(
        AuditEntry.user_id == identity.user_id, AuditEntry.action == EXCHANGE_AUDIT_ACTION,
        AuditEntry.object_id == identity.session_id, AuditEntry.detail == detail,
    ).exists()
    if not already:
        record_audit(AuditEntry, EXCHANGE_AUDIT_ACTION, "session", identity.session_id, detail=detail)


@bp.post("/api/v1/auth/logout")
def logout():
    """End the session: its tokens are refused here from now on and can no longer be renewed."""
    identity = authenticate()
    sessions.revoke_session(identity.session_id)
    record_audit(AuditEntry, "auth.logout", "user", identity.user_id)
    return Response(status=204)
