"""Key images: `GET/PUT/DELETE /api/v1/records/{id}/key-images[/{plane}/{index}]`.

A physician marks the images of a record that matter (the viewer's key K); they are kept on the
node that holds the record, so every viewer of it lists them. A mark names the image as the viewer
shows it: the view and its index, the stack a reformat cuts (`stack=`, the same parameter and rule
as the reformats' own: default the first, an id the record lacks 404) and the time point shown
(`phase=`, 0-based, when the stack has several), so the list leads back to that very image.
Reading them follows the record's own read rule (open to physicians and admins across
institutions, audited, as the record is); marking and unmarking changes the node's data, so it is
for users of the node's institution (`shared.access.require_own_institution`), as storing and
deleting are. Every call is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify

from daemons.render.api import query
from daemons.render.api.mpr3d import require_reformattable
from daemons.render.api.records import stored_or_404
from daemons.render.imaging.planes import plane_table
from daemons.render.models import KEY_IMAGES_LOCK
from daemons.render.node import node
from daemons.render.stacks import Stack, find_stack, frame_stack, stack_manifest, stacks_of
from daemons.render.store.manifest import Manifest
from daemons.render.stored_only import require_renderable
from shared.access import require_own_institution
from shared.audit import record_audit
from shared.auth import current_identity, require_auth
from shared.db import exclusive_transaction
from shared.errors import ApiError, not_found
from shared.roles import ROLES
from shared.validation import iso_utc, parse_record_id

bp = Blueprint("render_key_images", __name__)

#: The viewer's views a key image may be on, in listing order, and the plane of `planes` each counts in.
KEY_IMAGE_PLANES = {"native": "slices", "axial": "axial", "coronal": "coronal", "sagittal": "sagittal"}


@dataclass(frozen=True)
class KeyImageRef:
    """One image as a mark names it: the stack is None on the stored slices (the index names the
    frame whatever its stack), the phase None where no time point is recorded."""

    record_id: str
    plane: str
    index: int
    stack: str | None
    phase: int | None

    @property
    def detail(self) -> str:
        """How the audit log names it: `plane:index`, then `stack=`/`phase=` when recorded."""
        extra = [f"{k}={v}" for k, v in (("stack", self.stack), ("phase", self.phase)) if v is not None]
        return ":".join([self.plane, str(self.index), *extra])

    def matches(self, model: Any) -> Any:
        """The condition on `model` (KeyImage) of this mark's rows (one at most: marking holds a lock)."""
        return ((model.record_id == self.record_id) & (model.plane == self.plane) & (model.image_index == self.index)
                & (model.stack.is_null() if self.stack is None else model.stack == self.stack)
                & (model.phase.is_null() if self.phase is None else model.phase == self.phase))


def _item(row: Any) -> dict[str, Any]:
    return {"plane": row.plane, "index": row.image_index, "stack": row.stack, "phase": row.phase,
            "marked_by": row.marked_by_name, "marked_at": iso_utc(row.marked_at)}


def _listing(record_id: str) -> dict[str, Any]:
    model = node().models.KeyImage
    rows = list(model.select().where(model.record_id == record_id))
    order = list(KEY_IMAGE_PLANES)
    rows.sort(key=lambda r: (order.index(r.plane) if r.plane in order else len(order), r.stack or "",
                             r.image_index, -1 if r.phase is None else r.phase))
    return {"items": [_item(r) for r in rows]}


def _phase_count(stacks: list[Stack], index: int, stack: Stack | None) -> int:
    """How many time points the image has: its stack's (a stored slice: the stack holding the frame)."""
    if stack is None:
        stack = next((s for s in stacks if index in s.all_frames), None)
    return len(stack.phases) if stack is not None else 1


def _own_phase(manifest: Manifest, index: int) -> int:
    """The time point stored slice `index` is of: the phase of its stack holding the frame. A stored
    slice shows one time point only, so a mark naming another (`native/0?phase=2` on a cine whose
    frame 0 is time point 0) named an image that does not exist: it was kept, listed as
    "Slice 1 · Time 3" and led to frame 0, beside the mark of that same slice at its own time point."""
    return next((p for p, frames in enumerate(frame_stack(manifest, index).phases) if index in frames), 0)


def _checked(record_id: str, plane: str, index: int) -> KeyImageRef:
    """The image a request names, once the record is known (404), `plane` is one of the views (400,
    as an MPR plane), the stack is one of the record's (404; 422 when it forms no volume to reformat),
    `index` one of that view's images (404 with the range, as the image routes answer it:
    `query.check_index`) and the time point one of that stack's (404). The rule, as theirs: what
    names nothing the record has is 404 `not_found`, a parameter that is malformed or does not
    apply 400. An image the image routes would not draw cannot be marked, refused as they refuse
    it: a series stored only (415 `stored_only`), a reformat of a colour record or one with a
    Modality LUT (400 `unsupported_record`)."""
    record_id = parse_record_id(record_id, "record id")
    stored_or_404(record_id)
    if plane not in KEY_IMAGE_PLANES:
        raise query.bad(f"plane must be one of {', '.join(KEY_IMAGE_PLANES)}")
    stack_id = query.stack()
    phase = query.optional_phase()
    manifest = node().manifest(record_id)
    require_renderable(manifest)
    stack = None
    if plane == "native":
        if stack_id is not None:
            raise query.bad("the stored slices are the record's own images: stack= applies to reformats only")
        table = plane_table(manifest)
    else:
        require_reformattable(manifest)
        stack = find_stack(manifest, stack_id)
        if stack.volume is not None:
            raise ApiError(422, "no_volume", f"stack {stack.id} ({stack.label}) cannot be reformatted: {stack.volume}")
        table = plane_table(stack_manifest(manifest, stack))
    query.check_index(f"{plane} image", index, table[KEY_IMAGE_PLANES[plane]]["count"])
    phases = _phase_count(stacks_of(manifest), index, stack)
    if phase is not None and not 0 <= phase < phases:
        raise not_found("time point", f"{phase} (this image has {phases}: 0..{phases - 1})")
    if phase is not None and stack is None and phase != (own := _own_phase(manifest, index)):
        raise not_found("time point", f"{phase} of stored slice {index}: it is time point {own} of its stack; "
                        f"give phase={own}, or no phase")
    return KeyImageRef(record_id, plane, index, None if stack is None else stack.id, phase)


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
    image = _checked(record_id, plane, index)
    identity, models = current_identity(), node().models
    with exclusive_transaction(models.database, KEY_IMAGES_LOCK):   # read, then write: one mark per image
        # deleted since `_checked` found it: a mark written now would outlive the series, and be
        # shown on a new series stored under its Series Instance UID (the same record id)
        if not models.StoredRecord.select().where(models.StoredRecord.id == image.record_id).exists():
            raise not_found("record", image.record_id)
        if not models.KeyImage.select().where(image.matches(models.KeyImage)).exists():
            models.KeyImage.create(record_id=image.record_id, plane=plane, image_index=index, stack=image.stack,
                                   phase=image.phase, marked_by=identity.user_id, marked_by_name=identity.username)
    record_audit(models.AuditEntry, "record.key_image.mark", "record", image.record_id, detail=image.detail)
    return jsonify(_listing(image.record_id))


@bp.delete("/api/v1/records/<record_id>/key-images/<plane>/<int(signed=True):index>")
@require_auth(*ROLES)
def unmark_key_image(record_id: str, plane: str, index: int):
    _writer()
    image = _checked(record_id, plane, index)
    models = node().models
    models.KeyImage.delete().where(image.matches(models.KeyImage)).execute()
    record_audit(models.AuditEntry, "record.key_image.unmark", "record", image.record_id, detail=image.detail)
    return Response(status=204)
