"""Routing: a blank id in the path is a 400 `invalid_id`, never a fall-through elsewhere.

`DELETE /api/v1/nodes/` or `POST /api/v1/findings//records` (empty id) must not match "all
rows", be merged into another route by slash-collapsing (every layer's map keeps slashes as
sent: `shared.webapp`), or vanish as a bare 404. Path ids use the `id` converter, which also
matches an empty segment, so the view's `parse_uuid` refuses it like any other malformed id.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import BaseConverter


class IdSegment(BaseConverter):
    """One path segment, possibly empty; validation is the view's job (`parse_uuid`...)."""

    regex = "[^/]*"


def install_id_converter(app: Flask) -> None:
    """Call before registering blueprints: rules are compiled against the map's converters."""
    app.url_map.converters["id"] = IdSegment
