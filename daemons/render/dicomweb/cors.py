"""CORS for the DICOMweb root: browser viewers served from another origin (OHIF) call it.

Only origins listed in `dicomweb.cors_origins` get the Access-Control headers, each matched as
every layer matches `cors.origins` (`shared.webapp.exact_origin`); the bearer token travels in
the Authorization header (never cookies), so credentials are not allowed.
A preflight (OPTIONS) is answered here without authentication, as the Fetch standard requires.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, request

from daemons.render.api import image_headers
from shared.logs import REQUEST_ID_HEADER
from shared.webapp import exact_origin

CORS_EXTENSION = "sivr_dicomweb_cors"
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = f"Authorization, Accept, Content-Type, {REQUEST_ID_HEADER}"
EXPOSED_HEADERS = ", ".join(("Content-Type", "Content-Length", "ETag", "Warning", REQUEST_ID_HEADER,
                             *image_headers.EXPOSED))
MAX_AGE_S = "600"


def allow_origins(app: Flask, origins: list[str]) -> None:
    """The origins this app's DICOMweb root answers with CORS headers."""
    app.extensions[CORS_EXTENSION] = [exact_origin(origin) for origin in origins]


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin", "")
    allowed = current_app.extensions.get(CORS_EXTENSION, ())
    return origin if origin and any(pattern.match(origin) for pattern in allowed) else None


def attach(bp: Blueprint) -> None:
    """Add the preflight and response hooks to the DICOMweb blueprint (once, at import)."""

    @bp.before_request
    def _preflight() -> Response | None:
        if request.method != "OPTIONS":
            return None
        response = Response(status=204)
        if _allowed_origin() is not None:
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = MAX_AGE_S
        return response

    @bp.after_request
    def _allow_origin(response: Response) -> Response:
        origin = _allowed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if current_app.extensions.get(CORS_EXTENSION):
            # the headers above depend on Origin, also when it is absent or not allowed: a cache
            # must not hand this answer to a call from another origin
            response.vary.add("Origin")
        return response
