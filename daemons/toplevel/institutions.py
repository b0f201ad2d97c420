"""Institutions: name, address and the URL of the institution's own server (read by every user)."""

from __future__ import annotations

import peewee
from flask import Blueprint, Response, jsonify

from daemons.toplevel import accounts
from daemons.toplevel.context import edited_row, get_by_id, page_of, refuse_blank_id, require_user
from daemons.toplevel.models import AuditEntry, Institution, User
from daemons.toplevel.serialize import institution_json
from shared.audit import describe_changes, record_audit
from shared.errors import ApiError
from shared.roles import SYSTEM_ADMIN
from shared.validation import json_body, validate

bp = Blueprint("institutions", __name__)


@bp.get("/api/v1/institutions")
@require_user()
def list_institutions():
    return jsonify(page_of(Institution.select(), (Institution.name,), institution_json))


@bp.post("/api/v1/institutions")
@require_user(SYSTEM_ADMIN)
def create_institution():
    institution = accounts.create_institution(validate(json_body(), accounts.INSTITUTION_FIELDS))
    record_audit(AuditEntry, "institution.create", "institution", institution.id,
                 detail=f"name={institution.name}")
    return jsonify(institution_json(institution)), 201


refuse_blank_id(bp, "/api/v1/institutions", "institution", ["GET", "PUT", "DELETE"])


@bp.get("/api/v1/institutions/<institution_id>")
@require_user()
def get_institution(institution_id: str):
    return jsonify(institution_json(get_by_id(Institution, institution_id, "institution")))


@bp.put("/api/v1/institutions/<institution_id>")
@require_user(SYSTEM_ADMIN)
def update_institution(institution_id: str):
    with edited_row(Institution, institution_id, "institution") as institution:
        data = validate(json_body(), accounts.INSTITUTION_FIELDS, partial=True)
        renamed = data.get("name", institution.name) != institution.name
        for field, value in data.items():
            setattr(institution, field, value)
        accounts.save_institution(institution, create=False, renamed=renamed)
        record_audit(AuditEntry, "institution.update", "institution", institution.id,
                     detail=describe_changes(data))
    return jsonify(institution_json(institution))


@bp.delete("/api/v1/institutions/<institution_id>")
@require_user(SYSTEM_ADMIN)
def delete_institution(institution_id: str):
    with edited_row(Institution, institution_id, "institution") as institution:
        members = User.select().where(User.institution == institution.id).count()
        if members:
            raise ApiError(409, "conflict",
                           f"{members} user(s) still belong to this institution; move or delete them first")
        try:
            with Institution._meta.database.atomic():
                institution.delete_instance()
        except peewee.IntegrityError as exc:
            raise ApiError(409, "conflict", "users still belong to this institution") from exc
        record_audit(AuditEntry, "institution.delete", "institution", institution.id,
                     detail=f"name={institution.name}")
    return Response(status=204)
