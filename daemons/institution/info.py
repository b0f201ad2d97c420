"""`/api/v1/info`: which institution this server belongs to, so clients can label it."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from shared.auth import require_auth

bp = Blueprint("info", __name__)


@bp.get("/api/v1/info")
@require_auth()
def info():
    institution = current_app.config["SIVR"]["institution"]
    return jsonify({"institution_id": institution["id"], "name": institution["name"] or None})
