"""Server-side authorization for Flask views: every endpoint states who may call it.

The identity comes only from a verified token (never from the body or from other query
parameters), so the UI hiding a button is never what protects an action.

The token travels in the `Authorization` header, except where an endpoint opts in to
`?access_token=` (RFC 6750 §2.3): the render node's image and value-probe GETs, which a viewer
asks for several times a second. A header that is not CORS-safelisted makes the browser send a
preflight before each new URL, one more round trip per slice (100 ms on the paper's 2G); without
it the image GET is a simple request. The risks of a token in a URL are bounded by the token
itself: it lives at most a minute and only at the one server it was minted for (`shared.tokens`);
access lines log the route, never the query, and every JSON log line masks the parameter
(`shared.logs`); the viewer asks with `cache: "no-store"`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from flask import current_app, g, request

from shared.errors import ApiError
from shared.roles import may_administer_institution
from shared.tokens import QUERY_TOKEN_PARAM, Identity, TokenError, TokenVerifier

F = TypeVar("F", bound=Callable)

VERIFIER_EXTENSION = "sivr_token_verifier"


def install_verifier(app, verifier: TokenVerifier) -> None:
    app.extensions[VERIFIER_EXTENSION] = verifier


def _invalid_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message, headers={"WWW-Authenticate": 'Bearer error="invalid_request"'})


def _query_token(header: str, allowed: bool) -> str:
    """The token of `?access_token=`, where the endpoint takes one; the request must not also
    carry a header, nor the parameter twice (RFC 6750: one method per request)."""
    if not allowed:
        raise _invalid_request(f"this endpoint takes its access token in the Authorization header only, "
                               f"not as the {QUERY_TOKEN_PARAM} query parameter")
    sent = request.args.getlist(QUERY_TOKEN_PARAM)
    if header or len(sent) > 1:
        raise _invalid_request(f"send the access token once: in the Authorization header or as one "
                               f"{QUERY_TOKEN_PARAM} query parameter")
    token = sent[0].strip()
    if not token:
        raise ApiError(401, "invalid_token", f"the {QUERY_TOKEN_PARAM} query parameter is empty",
                       headers={"WWW-Authenticate": "Bearer"})
    return token


def _bearer_token(query_allowed: bool = False) -> str:
    header = request.headers.get("Authorization", "")
    if QUERY_TOKEN_PARAM in request.args:
        return _query_token(header, query_allowed)
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "missing_token", "log in first: no access token was sent",
                       headers={"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "invalid_token", "the Authorization header must be 'Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def authenticate(token_in_query: bool = False) -> Identity:
    """Verify the request's token and remember the identity for this request; `token_in_query`:
    the endpoint also takes it as `?access_token=` (see the module's docstring)."""
    verifier: TokenVerifier = current_app.extensions[VERIFIER_EXTENSION]
    try:
        identity = verifier.verify(_bearer_token(token_in_query))
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


def require_auth(*roles: str, token_in_query: bool = False) -> Callable[[F], F]:
    """Decorator: a valid token is required, and its role must be one of `roles` (if given);
    `token_in_query`: for GETs a viewer makes many times a second (the module's docstring)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            check_role(authenticate(token_in_query), roles)
            return view(*args, **kwargs)

        # the render node's OpenAPI document reads it (daemons.render.api.openapi)
        wrapper.token_in_query = token_in_query  # type: ignore[attr-defined]
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
