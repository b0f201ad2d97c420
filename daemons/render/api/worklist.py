"""The work list: series of this node not yet filed at the institution, and filing them.

A series arrives by browser upload (the browser registers it at the institution right away) or from
a DICOM peer (C-STORE, STOW-RS: nobody registers it). Until it is registered for a SIVR patient it
is invisible on every patient page, so the node lists it here with its DICOM patient, study and
series for the physicians of its institution. The node never asks the institution anything
(backends never call each other, docs/architecture.md): a physician's browser proposes the SIVR
patient (webviewer/static/js/patient_match.js), registers the series at the institution with the
signed receipt this node issues (`POST /api/v1/records/{id}/receipt`, the same kind an upload
answers with, shared.receipts) and then tells the node it is filed (`POST /api/v1/records/{id}/filed`).
A filing undone (the registration deleted while the node keeps the images, or a mark set without
registering) takes the mark off again (`DELETE /api/v1/records/{id}/filed`): the series is back
on the work list, where it was matched in the first place, as a PACS sends a study back to be matched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, jsonify

from daemons.render.ingest.service import ingest_service
from daemons.render.node import node
from daemons.render.store.manifest import Meta
from daemons.render.uids import is_uid
from shared.access import require_own_institution
from shared.audit import record_audit, record_audit_many
from shared.auth import current_identity, require_auth
from shared.errors import ApiError, not_found
from shared.patient_identity import iso_date
from shared.receipts import issue_receipt
from shared.roles import ROLES, SERIES_FILERS
from shared.validation import iso_utc, page_args, parse_record_id

bp = Blueprint("render_worklist", __name__)

#: What the audit entries of the filed mark mean (the node cannot see the registration itself).
FILED_DETAIL = ("marked filed by a physician's browser after registering it at the institution: "
                "off the work list")
UNFILED_DETAIL = ("filed mark taken off (its registration at the institution deleted, or never made): "
                  "back on the work list")


def _dicom_patient(series, meta: Meta) -> dict[str, str]:
    """The patient a series' images name: name, PatientID and birth date are this series' own (its
    manifest, from its first file), not the catalogue's patient row, which keeps the first name it saw
    for a PatientID: a series naming someone else under a known PatientID is exactly what a physician
    must see. Issuer and sex come from the catalogue ("" for a series it has not indexed)."""
    patient = series.study.patient if series is not None and series.study is not None else None
    return {"name": meta.patient_name, "patient_id": meta.patient_id_dicom,
            "issuer": patient.issuer if patient else "", "birth_date": meta.patient_birth_date or "",
            "sex": patient.sex if patient else ""}


def record_facts(meta: Meta) -> dict[str, object]:
    """The record's image facts a receipt states (`shared.receipts.RECORD_FACT_KEYS`), from its
    manifest, as RecordMeta serves them: the institution keeps these as the record's rows, columns,
    frames, modality and study date, not what the registering request says. The study date is the
    files' StudyDate (DA, or the YYYY-MM-DD of old writers) as an ISO date; null where the files
    state no day of the calendar (the institution's registry keeps no other). The study is the files'
    StudyInstanceUID, by which the institution keeps a study's series on one patient; null where it is
    no UID (a series stored before the ingest required one): such a series is not compared."""
    study_uid = meta.study_uid.strip()
    return {"rows": meta.rows, "columns": meta.columns, "frames": meta.frames,
            "modality": meta.record_modality, "study_date": _calendar_date(iso_date(meta.study_date.strip())),
            "study_uid": study_uid if is_uid(study_uid) else None}


def _calendar_date(iso: str | None) -> str | None:
    """`iso` where it is a day of the calendar ("2026-13-45" is none), else None."""
    if iso is None:
        return None
    try:
        return dt.date.fromisoformat(iso).isoformat()
    except ValueError:
        return None


def node_receipt(record_id: str, user_id: str) -> str:
    """The receipt for registering `record_id` at the institution (`shared.receipts`), stating its
    DICOM patient, which the institution compares with the SIVR patient it is registered for, and
    its image facts (`record_facts`), which the institution keeps."""
    the_node = node()
    series = the_node.models.catalogue.Series.get_or_none(the_node.models.catalogue.Series.id == record_id)
    meta = the_node.manifest(record_id).meta
    return issue_receipt(the_node.receipt_key, the_node.url, record_id, the_node.institution_id, user_id,
                         dicom_patient=_dicom_patient(series, meta), facts=record_facts(meta))


def _series_json(row, series, meta: Meta) -> dict[str, Any]:
    """One work list entry: the stored series and, when the catalogue indexed it, its DICOM patient
    (`_dicom_patient`), study and series (what a physician needs to tell whose images these are)."""
    study = series.study if series is not None else None
    return {
        "id": row.id,
        "rows": row.rows, "columns": row.columns, "frames": row.frames, "modality": row.modality,
        "stored_at": iso_utc(row.stored_at),
        "received_from": row.uploaded_by or None,
        "patient": _dicom_patient(series, meta),
        "study": {
            "study_uid": study.study_uid if study else "", "date": study.study_date if study else "",
            "description": study.description if study else "",
            "accession_number": study.accession_number if study else "",
        },
        "series": {
            "series_uid": series.series_uid if series else "", "modality": series.modality if series else row.modality,
            "description": series.description if series else "",
            "count": series.instance_count if series else row.files,
        },
    }


@bp.get("/api/v1/worklist")
@require_auth(*ROLES)
def worklist():
    """Unfiled series, newest first, paged; each one shown is audited (it names a patient)."""
    the_node = node()
    require_own_institution(current_identity(), the_node.institution_id, "this node's work list")
    limit, offset = page_args()
    models = the_node.models
    the_node.record_index.refresh()
    Stored = models.StoredRecord
    unfiled = list(Stored.select().where(~Stored.filed).order_by(Stored.stored_at.desc(), Stored.id))
    filed_elsewhere = the_node.record_index.follow_filed([r.id for r in unfiled])
    rows = [(r, manifest) for r in unfiled
            if r.id not in filed_elsewhere and (manifest := the_node.intact(r.id)) is not None]
    page = rows[offset:offset + limit]
    Series = models.catalogue.Series
    series = {s.id: s for s in Series.select().where(Series.id.in_([r.id for r, _ in page]))} if page else {}
    items = [_series_json(r, series.get(r.id), manifest.meta) for r, manifest in page]
    detail = f"results={len(rows)}"
    with models.database.atomic():
        record_audit_many(models.AuditEntry, "worklist.read",
                          [("record", item["id"]) for item in items] or [("record", None)], detail=detail)
    return jsonify({"items": items, "total": len(rows)})


def _stored_here(record_id: str):
    """The stored row of a series of this node, for a physician of its institution (else 403/404)."""
    the_node = node()
    require_own_institution(current_identity(), the_node.institution_id, "filing this node's series")
    row = the_node.record_index.find(record_id)
    if row is None:
        raise not_found("record", record_id)
    return row


@contextmanager
def _marking(record_id: str) -> Iterator[Any]:
    """The stored row of a series of this node (`_stored_here`), read under the series' lock, held while
    its filed mark is set or taken off: the store's mark and the row are set together, one request at
    a time. Without it a POST and a DELETE at once each set the store's mark, then the row, from a row
    read before the other's: the row said filed and the store unfiled (or the reverse), both 200, and
    this node kept the series off its work list while nodes sharing the store listed it. The lock is
    the one appends and deletes take (`Ingest.series_lock`): a series deleted meanwhile is a 404."""
    _stored_here(record_id)  # 403 and 404 before taking a lock
    with ingest_service().series_lock(record_id):
        row = node().record_index.find(record_id)
        if row is None:
            raise not_found("record", record_id)
        yield row


@bp.post("/api/v1/records/<record_id>/receipt")
@require_auth(*SERIES_FILERS)
def receipt(record_id: str):
    """A signed receipt for registering a stored, unfiled series at the institution, as an upload
    answers with: for series that arrived without an upload, or whose upload receipt has expired."""
    record_id = parse_record_id(record_id, "record id")
    row = _stored_here(record_id)
    if row.filed or node().record_index.follow_filed([record_id]):
        raise ApiError(409, "already_filed", f"series {record_id} is marked filed: a physician's browser said it "
                       "registered it at the institution; open it from its patient's page, or, if it is on no "
                       "patient's page (its registration deleted, or never made), take the mark off with "
                       f"DELETE /api/v1/records/{record_id}/filed to put it back on the work list")
    record_audit(node().models.AuditEntry, "record.receipt", "record", record_id)
    return jsonify({"id": record_id, "receipt": node_receipt(record_id, current_identity().user_id)})


@bp.post("/api/v1/records/<record_id>/filed")
@require_auth(*SERIES_FILERS)
def filed(record_id: str):
    """Take a series off the work list once the browser has registered it at the institution.

    The node cannot check the registration (it never calls the institution); marking a series filed
    only hides it from the work list, so a wrong mark costs a series on the list, never a patient's
    images on another patient's page. Idempotent. The mark is kept in the store, not only in this
    node's catalogue: with a shared S3 store another node that takes the series over knows it is filed.
    """
    record_id = parse_record_id(record_id, "record id")
    models = node().models
    with _marking(record_id) as row:
        try:
            node().store.mark_filed(record_id)  # first: the store is what every node sharing it reads
        except FileNotFoundError:
            raise not_found("record", record_id) from None
        if not row.filed:
            with models.database.atomic():
                models.StoredRecord.update(filed=True).where(models.StoredRecord.id == record_id).execute()
                record_audit(models.AuditEntry, "record.filed", "record", record_id, detail=FILED_DETAIL)
    return jsonify({"id": record_id, "filed": True})


@bp.delete("/api/v1/records/<record_id>/filed")
@require_auth(*SERIES_FILERS)
def unfiled(record_id: str):
    """Put a series back on the work list: its registration at the institution was deleted while
    this node keeps its images (the physician may not delete a modality's series), or it was marked
    filed without being registered. Without this the series was on no patient's page and on no work
    list, and only an administrator deleting the images (and the modality sending them again) got
    it back. Whoever may file may unfile (the same roles and institution, `_stored_here`): the mark
    only hides a series from the work list, so taking it off shows a series, never moves one. The
    node cannot check that no registration is left (it never calls the institution); the viewer
    takes the mark off only after deleting the registration. 409 when not filed."""
    record_id = parse_record_id(record_id, "record id")
    models = node().models
    with _marking(record_id) as row:
        try:
            was_marked = node().store.unmark_filed(record_id)  # first: the store is what every node sharing it reads
        except FileNotFoundError:
            raise not_found("record", record_id) from None
        if not (row.filed or was_marked):  # marked in this node's catalogue, or in the store by another node
            raise ApiError(409, "not_filed", f"series {record_id} is not filed: it is on the work list already; "
                           "attach it to its patient there")
        with models.database.atomic():
            models.StoredRecord.update(filed=False).where(models.StoredRecord.id == record_id).execute()
            record_audit(models.AuditEntry, "record.unfiled", "record", record_id, detail=UNFILED_DETAIL)
    return jsonify({"id": record_id, "filed": False})
