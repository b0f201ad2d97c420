"""CORS for the DICOMweb root: browser viewers served from another origin (OHIF) call it.

Only origins listed in `dicomweb.cors_origins` get the Access-Control headers, each matched as
every layer matches `cors.origins` (`shared.webapp.exact_origin`); the bearer token travels in
the Authorization header (never cookies), so credentials are not allowed.
A preflight (OPTIONS) is answered here without authentication, as the Fetch standard requires.

The hooks are the app's, for every path under the root, not the blueprint's: a blueprint's hooks
do not run for a request no route of it matched, so a 404 for a resource the node does not offer
(`/pixeldata`, a typo) or a 405 (`DELETE /studies/{study}`) reached the browser without
Access-Control-Allow-Origin, and the viewer saw a network error instead of the node's answer.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request

from daemons.render.api import image_headers
from daemons.render.dicomweb import ROOT
from shared.logs import REQUEST_ID_HEADER
from shared.webapp import exact_origin

CORS_EXTENSION = "sivr_dicomweb_cors"
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = f"Authorization, Accept, Content-Type, {REQUEST_ID_HEADER}"
EXPOSED_HEADERS = ", ".join(("Content-Type", "Content-Length", "ETag", "Warning", REQUEST_ID_HEADER,
                             *image_headers.EXPOSED))
MAX_AGE_S = "600"


def allow_origins(app: Flask, origins: list[str]) -> None:
    """Answer CORS for the origins `origins` on every path under this app's DICOMweb root (once, at
    `daemons.render.dicomweb.install`)."""
    app.extensions[CORS_EXTENSION] = [exact_origin(origin) for origin in origins]
    app.before_request(_preflight)
    app.after_request(_allow_origin)


def _under_root() -> bool:
    return request.path == ROOT or request.path.startswith(f"{ROOT}/")


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin", "")
    allowed = current_app.extensions.get(CORS_EXTENSION, ())
    return origin if origin and any(pattern.match(origin) for pattern in allowed) else None


def _preflight() -> Response | None:
    if request.method != "OPTIONS" or not _under_root():
        return None
    response = Response(status=204)
    if _allowed_origin() is not None:
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = MAX_AGE_S
    return response


def _allow_origin(response: Response) -> Response:
    if not _under_root():
        return response
    origin = _allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if current_app.extensions.get(CORS_EXTENSION):
        # the headers above depend on Origin, also when it is absent or not allowed: a cache must not
        # hand this answer to a call from another origin
        response.vary.add("Origin")
    return response
