"""DICOM record types (CT, MR, US, ...): the list physicians pick from when registering a record."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from daemons.toplevel.context import edited_row, page_of, refuse_blank_id, require_user, save_unique
from daemons.toplevel.models import AuditEntry, RecordType
from daemons.toplevel.serialize import record_type_json
from shared import field_rules
from shared.audit import describe_changes, record_audit
from shared.errors import ApiError
from shared.roles import SYSTEM_ADMIN
from shared.validation import Field, json_body, validate

bp = Blueprint("record_types", __name__)

def check_code(value: str, field: str) -> str:
    """The code as stored (`shared.field_rules.record_type_code`: upper-case)."""
    code = field_rules.record_type_code(value)
    if code is None:
        raise ApiError(400, "validation_error", f"{field} must be {field_rules.RECORD_TYPE_CODE_RULE}")
    return code


FIELDS = {
    "code": Field(str, max_len=field_rules.MAX_RECORD_TYPE_CODE_LENGTH, min_len=1, check=check_code),
    "name": Field(str, max_len=200, min_len=1),
}


def _save(record_type: RecordType, create: bool) -> None:
    save_unique(record_type, RecordType.code,
                f"a record type with code {record_type.code!r} already exists", "record type", create)


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
    with edited_row(RecordType, record_type_id, "record type") as record_type:
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
    with edited_row(RecordType, record_type_id, "record type") as record_type:
        record_type.delete_instance()
        record_audit(AuditEntry, "record_type.delete", "record_type", record_type.id,
                     detail=f"code={record_type.code}")
    return Response(status=204)
