"""DICOM record types (CT, MR, US, ...): the list physicians pick from when registering a record."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify

from daemons.toplevel.context import get_by_id, page_of, refuse_blank_id, require_user, save_unique
from daemons.toplevel.models import AuditEntry, RecordType
from daemons.toplevel.serialize import record_type_json
from shared.audit import describe_changes, record_audit
from shared.errors import ApiError
from shared.roles import SYSTEM_ADMIN
from shared.validation import Field, json_body, validate

bp = Blueprint("record_types", __name__)

_CODE = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,15}")


def check_code(value: str, field: str) -> str:
    """Codes are upper-case (DICOM modality style), so `ct` and `CT` are one type."""
    code = value.upper()
    if not _CODE.fullmatch(code):
        raise ApiError(400, "validation_error",
                       f"{field} must be 1-16 letters, digits, _ or - (e.g. CT, MR, US)")
    return code


FIELDS = {
    "code": Field(str, max_len=16, min_len=1, check=check_code),
    "name": Field(str, max_len=200, min_len=1),
}


def _save(record_type: RecordType, create: bool) -> None:
    save_unique(record_type, RecordType.code,
                f"a record type with code {record_type.code!r} already exists", create)


@bp.get("/api/v1/record-types")
@require_user()
def list_record_types():
    return jsonify(page_of(RecordType.select(), (RecordType.code,), record_type_json))


@bp.post("/api/v1/record-types")
@require_user(SYSTEM_ADMIN)
def create_record_type():
    record_type = RecordType(**validate(json_body(), FIELDS))
    _save(record_type, create=True)
    record_audit(AuditEntry, "record_type.create", "record_type", record_type.id,
                 detail=f"code={record_type.code}")
    return jsonify(record_type_json(record_type)), 201


refuse_blank_id(bp, "/api/v1/record-types", "record type", ["GET", "PUT", "DELETE"])


@bp.put("/api/v1/record-types/<record_type_id>")
@require_user(SYSTEM_ADMIN)
def update_record_type(record_type_id: str):
    record_type = get_by_id(RecordType, record_type_id, "record type")
    data = validate(json_body(), FIELDS, partial=True)
    for field, value in data.items():
        setattr(record_type, field, value)
    _save(record_type, create=False)
    record_audit(AuditEntry, "record_type.update", "record_type", record_type.id,
                 detail=describe_changes(data))
    return jsonify(record_type_json(record_type))


@bp.delete("/api/v1/record-types/<record_type_id>")
@require_user(SYSTEM_ADMIN)
def delete_record_type(record_type_id: str):
    record_type = get_by_id(RecordType, record_type_id, "record type")
    record_type.delete_instance()
    record_audit(AuditEntry, "record_type.delete", "record_type", record_type.id,
                 detail=f"code={record_type.code}")
    return Response(status=204)
