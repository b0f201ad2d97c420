"""Server-side authorization for Flask views: every endpoint states who may call it.

The identity comes only from a verified token (never from the body or query), so the UI hiding a
button is never what protects an action.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from flask import current_app, g, request

from shared.errors import ApiError
from shared.roles import may_administer_institution
from shared.tokens import Identity, TokenError, TokenVerifier

F = TypeVar("F", bound=Callable)

VERIFIER_EXTENSION = "sivr_token_verifier"


def install_verifier(app, verifier: TokenVerifier) -> None:
    app.extensions[VERIFIER_EXTENSION] = verifier


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "missing_token", "log in first: no access token was sent",
                       headers={"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "invalid_token", "the Authorization header must be 'Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def authenticate() -> Identity:
    """Verify the request's token and remember the identity for this request."""
    verifier: TokenVerifier = current_app.extensions[VERIFIER_EXTENSION]
    try:
        identity = verifier.verify(_bearer_token())
    except TokenError as exc:
        raise ApiError(401, exc.code, exc.message,
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
    g.identity = identity
    return identity


def current_identity() -> Identity:
    identity = getattr(g, "identity", None)
    if identity is None:
        raise RuntimeError("current_identity() called in a view without @require_auth")
    return identity


def check_role(identity: Identity, roles: tuple[str, ...]) -> None:
    """Refuse a caller whose role is not one of `roles` (no roles: anyone authenticated)."""
    if roles and identity.role not in roles:
        raise ApiError(403, "forbidden",
                       f"this action needs the role {' or '.join(roles)}; you are {identity.role}")


def require_auth(*roles: str) -> Callable[[F], F]:
    """Decorator: a valid token is required, and its role must be one of `roles` (if given)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            check_role(authenticate(), roles)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def require_institution(identity: Identity, institution_id: str, what: str) -> None:
    """Refuse acting on another institution's resources."""
    if identity.institution_id != institution_id:
        raise ApiError(403, "forbidden", f"{what} belongs to another institution than yours")


def require_admin_of(identity: Identity, institution_id: str, what: str) -> None:
    """Refuse administering `what` of an institution the caller may not administer (`shared.roles`)."""
    if not may_administer_institution(identity, institution_id):
        raise ApiError(403, "forbidden",
                       f"{what} belongs to an institution you do not administer "
                       "(institution administrators act on their own institution only)")
