"""Key images: `GET/PUT/DELETE /api/v1/records/{id}/key-images[/{plane}/{index}]`.

A physician marks the images of a record that matter (the viewer's key K); they are kept on the
node that holds the record, so every viewer of it lists them. Reading them follows the record's
own read rule (open to physicians and admins across institutions, audited, as the record is);
marking and unmarking changes the node's data, so it is for users of the node's institution
(`shared.access.require_own_institution`), as storing and deleting are. Every call is audited.
"""

from __future__ import annotations

import contextlib
from typing import Any

import peewee
from flask import Blueprint, Response, jsonify

from daemons.render import query
from daemons.render.api_records import stored_or_404
from daemons.render.node import node
from daemons.render.planes import plane_table
from shared.access import require_own_institution
from shared.audit import record_audit
from shared.auth import current_identity, require_auth
from shared.roles import ROLES
from shared.validation import iso_utc, parse_record_id

bp = Blueprint("render_key_images", __name__)

#: The viewer's views a key image may be on, in listing order, and the plane of `planes` each counts in.
KEY_IMAGE_PLANES = {"native": "slices", "axial": "axial", "coronal": "coronal", "sagittal": "sagittal"}


def _item(row: Any) -> dict[str, Any]:
    return {"plane": row.plane, "index": row.image_index, "marked_by": row.marked_by_name,
            "marked_at": iso_utc(row.marked_at)}


def _listing(record_id: str) -> dict[str, Any]:
    model = node().models.KeyImage
    rows = list(model.select().where(model.record_id == record_id))
    order = list(KEY_IMAGE_PLANES)
    rows.sort(key=lambda r: (order.index(r.plane) if r.plane in order else len(order), r.image_index))
    return {"items": [_item(r) for r in rows]}


def _checked(record_id: str, plane: str, index: int) -> str:
    """The record id once the record is known (404) and `plane`/`index` name one of its images (400)."""
    record_id = parse_record_id(record_id, "record id")
    stored_or_404(record_id)
    if plane not in KEY_IMAGE_PLANES:
        raise query.bad(f"plane must be one of {', '.join(KEY_IMAGE_PLANES)}")
    count = plane_table(node().manifest(record_id))[KEY_IMAGE_PLANES[plane]]["count"]
    if not 0 <= index < count:
        raise query.bad(f"index {index} is outside the {plane} images of this record (0..{count - 1})")
    return record_id


def _writer() -> None:
    require_own_institution(current_identity(), node().institution_id, "marking key images")


@bp.get("/api/v1/records/<record_id>/key-images")
@require_auth(*ROLES)
def list_key_images(record_id: str):
    record_id = parse_record_id(record_id, "record id")
    stored_or_404(record_id)
    record_audit(node().models.AuditEntry, "record.key_images.read", "record", record_id)
    return jsonify(_listing(record_id))


@bp.put("/api/v1/records/<record_id>/key-images/<plane>/<int(signed=True):index>")
@require_auth(*ROLES)
def mark_key_image(record_id: str, plane: str, index: int):
    """Mark an image; marking it again changes nothing (200 with the list either way)."""
    _writer()
    record_id = _checked(record_id, plane, index)
    identity, model = current_identity(), node().models.KeyImage
    with contextlib.suppress(peewee.IntegrityError):   # already a key image: PUT is idempotent
        model.create(record_id=record_id, plane=plane, image_index=index, marked_by=identity.user_id,
                     marked_by_name=identity.username)
    record_audit(node().models.AuditEntry, "record.key_image.mark", "record", record_id, detail=f"{plane}:{index}")
    return jsonify(_listing(record_id))


@bp.delete("/api/v1/records/<record_id>/key-images/<plane>/<int(signed=True):index>")
@require_auth(*ROLES)
def unmark_key_image(record_id: str, plane: str, index: int):
    _writer()
    record_id = _checked(record_id, plane, index)
    model = node().models.KeyImage
    model.delete().where((model.record_id == record_id) & (model.plane == plane)
                         & (model.image_index == index)).execute()
    record_audit(node().models.AuditEntry, "record.key_image.unmark", "record", record_id, detail=f"{plane}:{index}")
    return Response(status=204)
