"""Records: upload, list, read, delete, original bytes, load and load status."""

from __future__ import annotations

import io
from typing import Any

from flask import Blueprint, Response, jsonify, request

from daemons.render.api import query
from daemons.render.api.worklist import node_receipt
from daemons.render.catalogue.frame_instances import frame_instances, with_instances
from daemons.render.catalogue.index import CatalogueModels
from daemons.render.imaging.planes import plane_table
from daemons.render.ingest.service import Actor, ingest_service
from daemons.render.ingest.upload_checks import UploadError
from daemons.render.ingest.upload_memory import Reservation, stored_body
from daemons.render.node import node
from daemons.render.records import LoadedRecord, MemoryBudgetError
from daemons.render.stacks import stacks_json
from daemons.render.store.generations import RecordRolledBack, delete_put_back
from daemons.render.store.local import StoreError, StoreFull
from daemons.render.store.manifest import Manifest
from daemons.render.stored_only import require_renderable
from daemons.render.view_audit import note_view
from daemons.render.volume.mpr import STORED
from shared.access import require_own_institution, require_query_scope
from shared.audit import record_audit
from shared.auth import current_identity, require_auth
from shared.errors import ApiError, not_found
from shared.roles import INSTANCE_STORERS, ORIGINAL_FILE_READERS, ROLES, may_change_record
from shared.validation import iso_utc, page_args, parse_record_id, query_int, query_text

bp = Blueprint("render_records", __name__)


def record_meta(record_id: str, row=None, per_slice: bool = True, manifest: Manifest | None = None) -> dict[str, Any]:
    """RecordMeta (docs/API.md) from the manifest (read here unless given) and the catalogue row.

    `slices` (instance number and position of every frame) is left out of lists, where it would
    multiply their size by the frame count; records stored before it existed have none. `planes`
    (each plane's geometry, `daemons.render.imaging.planes`) is computed from the manifest, so every record
    has it; lists leave it out too, as a viewer reads it from the record it opens. `stacks` lists
    the record's stacks (`daemons.render.stacks`: MPR and 3D render one at a time), with each
    one's planes in full detail.
    """
    the_node = node()
    if manifest is None:
        manifest = the_node.manifest(record_id)
    meta = manifest.meta.to_json()
    stacks = stacks_json(manifest, with_planes=per_slice) if manifest.meta.frames else []  # none: stored only
    if per_slice and stacks:
        # the stored frames are the whole record's; the reformats are those of the first stack (the
        # default of MPR and 3D), each stack's own are in `stacks`
        meta["planes"] = {**stacks[0]["planes"], STORED: plane_table(manifest)[STORED]}
        if meta.get("slices"):   # which instance each frame is (the viewer's tag browser names it)
            frames = frame_instances(manifest, the_node.models.catalogue, record_id)
            meta["slices"] = with_instances(meta["slices"], frames)
    else:
        meta.pop("slices", None)
    meta["stacks"] = stacks
    if row is None:
        row = the_node.models.StoredRecord.get_or_none(the_node.models.StoredRecord.id == record_id)
    meta["stored_at"] = iso_utc(row.stored_at) if row is not None else None
    meta.update(_catalogued(the_node.models.catalogue, record_id))
    return meta


def _catalogued(cat: CatalogueModels, record_id: str) -> dict[str, Any]:
    """What the patient page groups and labels a series by that the manifest does not keep: the
    study's description and time, and the series' number and own description (the manifest's
    `description` falls back to the study's). Null for a series the catalogue has not indexed."""
    series = (cat.Series.select(cat.Series, cat.Study).join(cat.Study)
              .where(cat.Series.id == record_id).first())
    if series is None:
        return {"study_description": None, "study_time": None, "series_number": None, "series_description": None}
    return {"study_description": series.study.description, "study_time": series.study.study_time,
            "series_number": series.series_number, "series_description": series.description}


def stored_or_404(record_id: str):
    """The catalogue row of a stored record; one another node stored in a shared store is adopted."""
    row = node().record_index.find(record_id)
    if row is None:
        node().forget(record_id)
        raise not_found("record", record_id)
    return row


def _read_files(reservation: Reservation) -> list[tuple[str, bytes]]:
    """The uploaded files, each read into memory once its room is reserved: werkzeug has spooled
    the form's files to disk while they arrived, so only what is read here counts (`upload_memory`)."""
    uploads, total = [], 0
    for number, file in enumerate(request.files.getlist("files")):
        total += file.stream.seek(0, io.SEEK_END)
        file.stream.seek(0)
        reservation.grow_to(total)
        uploads.append((file.filename or f"file{number}", file.read()))
    return uploads


@bp.post("/api/v1/records")
@require_auth(*INSTANCE_STORERS)
def upload():
    identity = current_identity()
    require_own_institution(identity, node().institution_id, "uploading to this node")
    ingest = ingest_service()
    with stored_body(ingest.memory, ingest.uploads, identity.user_id) as reservation:
        uploads = _read_files(reservation)
        try:
            result = ingest.add(uploads, Actor(identity.user_id, identity.username))
        except UploadError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from exc
        except StoreFull as exc:
            raise ApiError(507, "insufficient_storage", "the render node's disk is full; nothing was stored — ask "
                           "IT to free space or use another node") from exc
        del uploads
    row = stored_or_404(result.record_id)
    answer = record_meta(result.record_id, row)
    # the institution registers the record only with this (shared.receipts): proof that it is stored
    # here, and the DICOM patient its images name
    answer["receipt"] = node_receipt(result.record_id, identity.user_id)
    response = jsonify(answer)
    response.status_code = 201 if result.created or result.added else 200
    return response


@bp.get("/api/v1/records")
@require_auth(*ROLES)
def list_records():
    """This node's records, newest first: by patient for its institution's users, all of them for
    its administrators.

    The same rule as a QIDO-RS search of the catalogue (`shared.access.require_query_scope`): a
    DICOM PatientID is short and guessable (unlike the toplevel's patient UUIDs), so naming one is
    kept to this institution. This list has no study parameter. Each record shown is audited, so
    "who saw this record" needs no other log.
    """
    identity = current_identity()
    the_node = node()
    patient = query_text("patient_id_dicom", 64)
    require_query_scope(identity, the_node.institution_id, patient_named=bool(patient), study_named=False,
                        patient_parameter="patient_id_dicom", study_parameter=None)
    limit, offset = page_args()
    models = the_node.models
    the_node.record_index.refresh()
    rows = list(models.StoredRecord.select().order_by(models.StoredRecord.stored_at.desc(), models.StoredRecord.id))
    # a damaged record is quarantined, not everyone's error (nor one deleted meanwhile)
    listed = [(r, manifest) for r in rows if (manifest := the_node.intact(r.id)) is not None]
    if patient:
        listed = [(r, manifest) for r, manifest in listed if manifest.meta.patient_id_dicom == patient]
    items = [record_meta(r.id, r, per_slice=False, manifest=manifest) for r, manifest in listed[offset:offset + limit]]
    detail = f"patient_id_dicom={patient} results={len(listed)}"
    with models.database.atomic():
        for shown in [item["id"] for item in items] or [None]:
            record_audit(models.AuditEntry, "record.search", "record", shown, detail=detail)
    return jsonify({"items": items, "total": len(listed)})


@bp.get("/api/v1/records/<record_id>")
@require_auth(*ROLES)
def get_record(record_id: str):
    """RecordMeta of one record, audited `record.read` once it is read: a series refused on the way
    (422 damaged and quarantined, 503 an older storing put back) was shown to no one, and an entry
    saying it was read would name its caller among those who saw it (as the images, audited once
    made)."""
    record_id = parse_record_id(record_id, "record id")
    per_slice = query.choice(query.DETAIL, "full", query.RECORD_DETAILS) == "full"
    row = stored_or_404(record_id)
    meta = record_meta(record_id, row, per_slice=per_slice)
    record_audit(node().models.AuditEntry, "record.read", "record", record_id)
    return jsonify(meta)


@bp.delete("/api/v1/records/<record_id>")
@require_auth(*ROLES)
def delete_record(record_id: str):
    record_id = parse_record_id(record_id, "record id")
    identity, the_node = current_identity(), node()
    require_own_institution(identity, the_node.institution_id, "deleting records of this node")
    try:
        row = stored_or_404(record_id)
    except RecordRolledBack:  # a storing put back into the store, refused: it has no row to delete
        return _delete_put_back(record_id)
    # the same rule as the institution's registry (shared.roles): the uploader or an admin of it
    if not may_change_record(identity, identity.user_id, row.uploaded_by, the_node.institution_id):
        raise ApiError(403, "forbidden", "only the physician who stored this series or an administrator of "
                       "this institution may delete it")
    if not ingest_service().delete(record_id):  # another DELETE took it while this one waited
        raise not_found("record", record_id)
    record_audit(the_node.models.AuditEntry, "record.delete", "record", record_id)
    return Response(status=204)


def _delete_put_back(record_id: str) -> Response:
    """Delete a series' storing put back into the store after it was deleted or replaced
    (`store.generations.delete_put_back`), which the node refuses to serve: else IT had to remove it
    from the store by hand. The rule of any delete, its uploader unknown (the node deleted its row):
    an administrator of the institution."""
    identity, the_node = current_identity(), node()
    if not may_change_record(identity, identity.user_id, "", the_node.institution_id):
        raise ApiError(403, "forbidden", "this series' copy in the store was put back after the series was "
                       "deleted or replaced, and is not served; an administrator of this institution may "
                       "delete it")
    if not delete_put_back(the_node.store, record_id):  # deleted (or stored anew) meanwhile
        raise not_found("record", record_id)
    the_node.forget(record_id)
    record_audit(the_node.models.AuditEntry, "record.delete", "record", record_id,
                 detail="a storing of this series put back into the store after it was deleted or "
                        "replaced: removed from the store, never served")
    return Response(status=204)


@bp.get("/api/v1/records/<record_id>/original")
@require_auth(*ORIGINAL_FILE_READERS)
def original(record_id: str):
    record_id = parse_record_id(record_id, "record id")
    stored_or_404(record_id)
    the_node = node()
    # every instance the series holds, its stored-only ones after its images (`Manifest.every_file`): with
    # the images' files alone a series of reports had none, and `/original` was 500 (file 0 of none)
    files = the_node.manifest(record_id).every_file
    index = query_int("index", 0, 0, len(files) - 1)
    try:
        data = the_node.store.read_file(record_id, files[index].blob, files[index].sha256)
    except FileNotFoundError as exc:  # deleted since its manifest was read
        raise not_found("record", record_id) from exc
    except StoreError as exc:
        raise ApiError(422, "store_corrupt", f"file {index} of record {record_id} failed verification: {exc}") from exc
    record_audit(the_node.models.AuditEntry, "record.original", "record", record_id, detail=f"index={index}")
    response = Response(data, mimetype="application/dicom")
    response.headers["Content-Disposition"] = f'attachment; filename="{record_id[:16]}-{index:06d}.dcm"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def unloaded_status(record_id: str) -> dict[str, Any]:
    meta = node().manifest(record_id).meta
    return {"id": record_id, "state": "unloaded", "frames_total": meta.frames, "frames_ready": 0, "errors": [],
            "stored_only": meta.stored_only}


def start_loading(record_id: str) -> LoadedRecord:
    """Load a stored record into RAM (or find it loaded); 507 when it alone exceeds the memory budget.
    Image requests that arrive without a load (DICOMweb clients) start it here too. 415 for a series
    of stored-only instances (`daemons.render.stored_only`)."""
    require_renderable(node().manifest(record_id))
    try:
        return node().registry.load(record_id)
    except MemoryBudgetError as exc:
        raise ApiError(507, "insufficient_memory", str(exc)) from exc


@bp.post("/api/v1/records/<record_id>/load")
@require_auth(*ROLES)
def load(record_id: str):
    record_id = parse_record_id(record_id, "record id")
    stored_or_404(record_id)
    the_node = node()
    record = start_loading(record_id)
    record_audit(the_node.models.AuditEntry, "record.load", "record", record_id)
    response = jsonify(record.status())
    response.status_code = 202
    return response


@bp.get("/api/v1/records/<record_id>/status")
@require_auth(*ROLES)
def status(record_id: str):
    record_id = parse_record_id(record_id, "record id")
    stored_or_404(record_id)
    record = node().registry.get_loaded(record_id)
    note_view("status", record_id)  # polled while loading: counted with the session's images
    return jsonify(record.status() if record is not None else unloaded_status(record_id))
