"""What `create_app` builds for the toplevel's views, and the access checks that need the database.

The shared `require_auth` checks a token on its own; the toplevel additionally holds the users,
so here a token is only honoured while its session has not ended (logout, password reset, change
of role or institution) and its user still exists and is active. Other layers cannot ask
(horizontal independence) and rely on the short token lifetime instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Blueprint, current_app

from daemons.toplevel.models import User
from daemons.toplevel.passwords import Passwords
from daemons.toplevel.sessions import session_ended
from shared.auth import authenticate, check_role
from shared.config import Config
from shared.db import exclusive_transaction
from shared.errors import ApiError, not_found, save_edit
from shared.tokens import Identity, TokenIssuer
from shared.validation import page_args, parse_uuid

F = TypeVar("F", bound=Callable)

# A query string can carry %00 and other controls; PostgreSQL refuses NUL in any text it compares.

EXTENSION = "sivr_toplevel"


@dataclass(frozen=True)
class Toplevel:
    """What the views need beyond the request, built once by `create_app` (no module globals)."""

    config: Config
    issuer: TokenIssuer
    passwords: Passwords
    signing_key: Ed25519PrivateKey  # the issuer's key, which also signs patient references

    @property
    def session_max_s(self) -> int:
        return self.config["tokens"]["session_max_s"]

    @property
    def exchanged_ttl_s(self) -> int:
        return self.config["tokens"]["exchanged_ttl_s"]


def toplevel() -> Toplevel:
    return current_app.extensions[EXTENSION]


def require_live_session() -> tuple[Identity, User]:
    """The request's identity and user, or `401 session_expired` once the session or the user has ended."""
    identity = authenticate()
    user = User.get_or_none(User.id == identity.user_id)
    reason = session_ended(identity, user)
    if reason is not None:
        raise ApiError(401, "session_expired", reason)
    return identity, user


#: The lock every change of a user row takes (`user_change`; `sivr user set-role` too: `admin_ops.set_role`).
USERS_LOCK = "sivr-users"


@contextmanager
def user_change() -> Iterator[tuple[Identity, User]]:
    """One transaction, under `USERS_LOCK`, in which a view reads the user it changes and writes it;
    the caller's session is checked again once the lock is held.

    A view that read a user row before another request changed it, then saved it, wrote back the
    columns it had read: an administrator editing a name (or the user their own profile) while
    another deactivated or demoted that user made them active again, in their old role. And two
    system administrators demoting, deactivating or deleting each other at once both passed the
    check of their own session, so no system administrator was left. Under the lock, each change
    reads what the one before it wrote, and a caller whom it removed is refused (`401 session_expired`).
    """
    with exclusive_transaction(User._meta.database, USERS_LOCK):
        yield require_live_session()


def require_user(*roles: str) -> Callable[[F], F]:
    """Like `shared.auth.require_auth`, plus the live checks against the user table."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            identity, _user = require_live_session()
            check_role(identity, roles)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def refuse_blank_id(bp: Blueprint, collection: str, what: str, methods: list[str]) -> None:
    """`<collection>/` with the id left out is `400 invalid_id`, not a 404 that hides the mistake."""

    @bp.route(f"{collection}/", methods=methods, endpoint=f"blank_{what.replace(' ', '_')}_id")
    @require_user()
    def _blank_id():
        raise ApiError(400, "invalid_id", f"the {what} id is missing or blank")


def get_by_id(model: type[peewee.Model], raw_id: str, what: str) -> peewee.Model:
    """The row with this id: `400 invalid_id` for a blank or malformed id, `404` for an unknown one."""
    ident = parse_uuid(raw_id, f"{what} id")
    row = model.get_or_none(model.id == ident)
    if row is None:
        raise not_found(what, ident)
    return row


@contextmanager
def edited_row(model: type[peewee.Model], raw_id: str, what: str) -> Iterator[Any]:
    """The row with this id (`get_by_id`), read in a transaction that holds a lock on that row's id
    until the edit made in the block is written and committed.

    Two edits of one row at once each read it, set their fields and saved every column they had
    read: the one saved last undid the other's fields, though both answered 200 and both were
    audited as changes (two physicians correcting a patient's first and last name at once: one
    correction in three lost). Under the lock the second edit reads what the first wrote.
    """
    ident = parse_uuid(raw_id, f"{what} id")
    with exclusive_transaction(model._meta.database, f"sivr-{model._meta.table_name}-{ident}"):
        yield get_by_id(model, ident, what)


def save_unique(row: peewee.Model, field: peewee.Field, conflict: str, what: str, create: bool = False) -> None:
    """Insert or save `row`, or `409 conflict` (saying `conflict`) when another row holds the same
    `field` value; an edit of a row deleted meanwhile is `not_found(what, id)` (`save_edit`).

    The look-up gives the clear answer; the unique index still catches a concurrent request that
    inserted the same value between the look-up and the save.
    """
    model = type(row)
    if model.get_or_none((field == getattr(row, field.name)) & (model.id != row.id)) is not None:
        raise ApiError(409, "conflict", conflict)
    try:
        with model._meta.database.atomic():
            if create:
                row.save(force_insert=True)
            else:
                save_edit(row, what)
    except peewee.IntegrityError as exc:
        raise ApiError(409, "conflict", conflict) from exc


def page_of(query: peewee.ModelSelect, order: tuple[peewee.Node, ...],
            shape: Callable[[peewee.Model], dict[str, Any]]) -> dict[str, Any]:
    """One page of `query` (`?limit=`, `?offset=`) as the API's list shape `{"items", "total"}`."""
    limit, offset = page_args()
    rows = query.order_by(*order).limit(limit).offset(offset)
    return {"items": [shape(row) for row in rows], "total": query.count()}
