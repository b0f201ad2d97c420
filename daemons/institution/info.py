"""`/api/v1/info`: which institution this server belongs to, so clients can label it."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from shared.auth import require_auth

bp = Blueprint("info", __name__)


@bp.get("/api/v1/info")
@require_auth()
def info():
    config = current_app.config["SIVR"]
    institution = config["institution"]
    # the work list's matching rule runs in the browser, which reads the issuer here
    return jsonify({"institution_id": institution["id"], "name": institution["name"] or None,
                    "issuer_of_patient_id": config["identity"]["issuer_of_patient_id"]})
