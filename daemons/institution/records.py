"""`/api/v1/records`: metadata of DICOM records stored on this institution's render nodes.

A physician registers a record here after uploading it to a node, so findings anywhere can
link to it; the node's upload receipt proves the record is stored there (`shared.receipts`).
Any physician or admin may read the metadata (it is patient data: every read is audited);
physicians must name the patient, so no one pages through all patients' records. The uploader
and the institution's administrators may correct a record's description and type, or delete it
(`shared.roles.may_change_record`); every change is audited with the old and the new values.

A record's image facts (rows, columns, frames, modality, study date: `FACT_FIELDS`) are the
node's, from its receipt: a request's copy of them is checked as any field is, then not used. So is
its study (`STATED_FIELDS`), which a request cannot state at all: a study belongs to one patient, and
a series of a study registered here for another patient is refused (`_refuse_study_of_another_patient`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import peewee
from flask import Blueprint, Response, jsonify, request

from daemons.institution.access import (
    may_change_record_here,
    require_member,
    require_patient_reference,
    require_record_change,
    take_patient_reference,
    this_institution,
)
from daemons.institution.checks import (
    date_value,
    int_between,
    iso_date,
    modality,
    record_id_value,
    uuid_value,
)
from daemons.institution.models import AuditEntry, Node, Record, database_proxy
from daemons.institution.nodes import serving_node_ids
from daemons.institution.reconciliation import judge_identity, take_identity_decision
from shared.access import is_institution_admin, require_patient_named
from shared.audit import describe_old_new, describe_values, record_audit
from shared.auth import current_identity, require_auth, require_institution
from shared.db import exclusive_transaction, run_exclusive
from shared.dicom_uid import MAX_LENGTH as UID_LENGTH
from shared.dicom_uid import is_uid
from shared.errors import ApiError, not_found, save_edit
from shared.receipts import Expected, Receipt, ReceiptError, parse_public_key, verify_receipt
from shared.roles import ROLES, SERIES_FILERS
from shared.tokens import Identity
from shared.validation import (
    Field,
    iso_utc,
    json_body,
    page_args,
    parse_record_id,
    query_uuid,
    validate,
)

bp = Blueprint("records", __name__)
T = TypeVar("T")

RECORD_FIELDS = {
    "id": Field(str, max_len=64, check=record_id_value),
    "node_id": Field(str, max_len=36, check=uuid_value),
    "record_type": Field(str, required=False, max_len=64),
    "patient_id": Field(str, max_len=36, check=uuid_value),
    "description": Field(str, required=False, max_len=2000, multiline=True),
}

#: What the render node states in its receipt (`shared.receipts.RECORD_FACT_KEYS`) and the registry
#: keeps from there. The same rules check a request's copy (sent by viewers and clients of before)
#: and the node's statement.
FACT_FIELDS = {
    "rows": Field(int, check=int_between(1, 65535)),
    "columns": Field(int, check=int_between(1, 65535)),
    "frames": Field(int, check=int_between(1, 1_000_000)),
    "modality": Field(str, max_len=16, check=modality),
    "study_date": Field(str, required=False, nullable=True, check=date_value),
}

def _uid(value: str, field: str) -> str:
    """A DICOM UID by the rule every layer keeps UIDs by (`shared.dicom_uid`)."""
    if not is_uid(value):
        raise ApiError(400, "validation_error",
                       f"{field} must be a DICOM UID (digits and dots, at most {UID_LENGTH} characters)")
    return value


#: What only the node's receipt states, never a request: its facts and the series' study. A receipt
#: that states no study (a node of a release before it was signed) leaves it None: not compared.
STATED_FIELDS = {**FACT_FIELDS, "study_uid": Field(str, required=False, nullable=True, max_len=UID_LENGTH, check=_uid)}

# What the uploader or an admin may correct after registration (PATCH): the labels a person typed.
EDITABLE_FIELDS = {name: RECORD_FIELDS[name] for name in ("record_type", "description")}


def record_to_json(record: Record) -> dict[str, Any]:
    """The record as the API shows it; `editable` says whether the caller may change or delete it,
    so the viewer offers exactly what the server allows (the rule lives in `shared.roles`)."""
    return {
        "id": record.id,
        "node_id": record.node_id,
        "node_ids": serving_node_ids(record.node_id),
        "rows": record.rows,
        "columns": record.columns,
        "frames": record.frames,
        "modality": record.modality,
        "record_type": record.record_type,
        "patient_id": record.patient_id,
        "description": record.description,
        "study_date": iso_date(record.study_date),
        "registered_by": record.registered_by,
        "registered_at": iso_utc(record.registered_at),
        "editable": may_change_record_here(current_identity(), record.registered_by),
    }


def records_here() -> peewee.ModelSelect:
    """Records on the nodes of this institution only."""
    return Record.select().join(Node).where(Node.institution_id == this_institution())


def _matching(record_id: str) -> list[Record]:
    query = records_here().where(Record.id == record_id)
    node_id = query_uuid("node_id")
    if node_id is not None:
        query = query.where(Record.node == node_id)
    records = list(query.order_by(Record.registered_at, Record.pk))
    if not records:
        raise not_found("record", record_id)
    return records


def _query_study_uid() -> str | None:
    """The optional `?study_uid=`; present but no DICOM UID (blank, too long, not digits and dots)
    is 400, by the rule every layer keeps UIDs by (`_uid`)."""
    if "study_uid" not in request.args:
        return None
    return _uid(request.args["study_uid"], "study_uid")


def _require_listing_scope(identity: Identity, patient_named: bool, study_named: bool) -> None:
    """Who lists which records (`require_patient_named`): a physician names the patient, or the study,
    which is one patient's. The study only for users of this institution: which SIVR patient a DICOM
    study is filed to is its filing (the work list's question); a physician of another institution
    opens a patient's records from the patient's page, by `patient_id`."""
    institution = this_institution()
    if study_named and not patient_named and not is_institution_admin(identity, institution):
        require_institution(identity, institution, "a listing by study_uid (name the patient with patient_id instead)")
    require_patient_named(identity, institution, patient_named or study_named, "patient_id (or study_uid)")


@bp.get("/api/v1/records")
@require_auth(*ROLES)
def list_records():
    """A patient's records (`?patient_id=`), or a study's (`?study_uid=`: which patient the study is
    filed to, which the work list proposes for the study's next series, as a PACS files it). A
    study's series are one patient's (`_refuse_study_of_another_patient`), so naming the study
    narrows the list as naming the patient does; only an administrator lists without either."""
    identity = current_identity()
    patient_id = query_uuid("patient_id")
    study_uid = _query_study_uid()
    node_id = query_uuid("node_id")
    _require_listing_scope(identity, patient_id is not None, study_uid is not None)
    limit, offset = page_args()
    query = records_here()
    if patient_id is not None:
        query = query.where(Record.patient_id == patient_id)
    if study_uid is not None:
        query = query.where(Record.study_uid == study_uid)
    if node_id is not None:
        query = query.where(Record.node == node_id)
    total = query.count()
    rows = query.order_by(Record.registered_at.desc(), Record.pk.desc()).limit(limit).offset(offset)
    items = [record_to_json(r) for r in rows]
    # A listing across patients (an admin's, or a study's) is audited once per patient it shows, so that
    # `GET /api/v1/audit?patient_id=` answers "who has seen this patient's records" on its own.
    shown = [patient_id] if patient_id is not None else sorted({item["patient_id"] for item in items})
    study_note = f" study_uid={study_uid}" if study_uid is not None else ""
    detail = f"node_id={node_id or ''}{study_note} results={total}"
    with database_proxy.atomic():
        for shown_patient in shown or [None]:
            record_audit(AuditEntry, "record.search", "record", patient_id=shown_patient, detail=detail)
    return jsonify({"items": items, "total": total})


def _already_registered(record_id: str, node: Node, patient_id: str):
    """The answer to a repeated registration: 200 with the record, or 409 for another patient.

    A series is one patient's on every node that holds it: nodes sharing a store serve the same
    record id, so one registered on another node for another patient is 409 too (or the series
    would be listed on both patients' pages)."""
    existing = list(records_here().where(Record.id == record_id))
    if any(record.patient_id != patient_id for record in existing):
        raise ApiError(409, "conflict", "this record is already registered for another patient")
    here = next((record for record in existing if record.node_id == node.id), None)
    return None if here is None else (jsonify(record_to_json(here)), 200)


def _require_receipt(receipt: object, node: Node, record_id: str, user_id: str) -> Receipt:
    """422 unless `receipt` is `node`'s signed statement that `user_id` uploaded `record_id` to it;
    what it states (the DICOM patient, the record's facts)."""
    if not node.receipt_key:
        raise ApiError(422, "node_receipt_key_missing",
                       f"render node {node.name} has no receipt key registered, so its uploads cannot be verified: "
                       "an administrator of this institution sets it (console: Nodes; or PUT /api/v1/nodes/"
                       f"{node.id} with the receipt_key.public_key that GET /api/v1/node shows on the node)")
    try:
        return verify_receipt(receipt, parse_public_key(node.receipt_key),
                              Expected(node.url, record_id, this_institution(), user_id))
    except ReceiptError as exc:
        raise ApiError(422, exc.code, exc.message) from exc


def _record_facts(stated: dict[str, object] | None, sent: dict[str, object]) -> tuple[dict[str, object], str]:
    """The record's facts and the audit's note of where they come from: the node's, as its receipt
    states them (`stated`, checked by `STATED_FIELDS`: 422 where the registry cannot keep them), with
    the request's copy (`sent`) not used. `study_uid` is always among them, None where not signed.

    A receipt from a node of a release before the facts were signed (`stated` None) is taken for
    what it signs, as one without a DICOM patient is (`reconciliation.judge_identity`): the facts
    are then the request's, as they always were from such a node, and the audit says so
    ("facts=unsigned"); a study is never taken from the request, so such a record has none. Refusing
    it would stop every upload to a node not upgraded yet; its record, node, institution and uploader
    are still the node's word. Upgrading the nodes ends it (docs/deployment.md, "Upgrades")."""
    if stated is None:
        return {**validate(sent, FACT_FIELDS), "study_uid": None}, " facts=unsigned"
    try:
        return {"study_uid": None, **validate(stated, STATED_FIELDS)}, ""
    except ApiError as exc:
        raise ApiError(422, "unregistrable_record",
                       f"the render node states this series' image facts as the registry cannot keep them: "
                       f"{exc.message}. The node read them from the series' files (a series stored without "
                       "renderable images or without a DICOM modality is not registered); correct the files "
                       "and upload them again") from exc


def _lock_name(record_id: str) -> str:
    """The lock of the changes that read a record id's rows, then write them (`shared.db.exclusive_transaction`):
    a plain transaction let two registrations on two nodes both find no other patient's row
    (PostgreSQL), and two edits at once fail with "database is locked" (SQLite)."""
    return f"sivr-record-{record_id}"


def _registered_exclusively(record_id: str, study_uid: str | None, register: Callable[[], T]) -> T:
    """`register()` under the locks a registration reads, then writes under: always the record's, so
    that the same series registered on two nodes at once (nodes sharing a store) is one patient's
    (`_already_registered`), and its study's besides where the receipt states one, so that two series
    of one study registered at once for two patients cannot both find no other patient's series
    (`_refuse_study_of_another_patient`). The study's alone left a series registered on an upgraded
    node (study stated) and on a node of an older release (none) at once unordered: both 201, for two
    patients. Taken in that order (record, then study) by every registration."""
    if study_uid is None:
        return run_exclusive(database_proxy, _lock_name(record_id), register)

    def under_the_study() -> T:
        with exclusive_transaction(database_proxy, _lock_name(f"study-{study_uid}")):
            return register()

    return run_exclusive(database_proxy, _lock_name(record_id), under_the_study)


def _refuse_study_of_another_patient(study_uid: str | None, patient_id: str) -> None:
    """409 `study_of_another_patient` when a series of the study `study_uid` is registered at this
    institution for another patient than `patient_id`: a study is one patient's (DICOM PS3.3 C.7.2.1),
    and its series filed to two patients put one patient's images on another's page. The refusal names
    the study, one such series and its patient by the id this institution files it under (what a
    physician here may list anyway), and what to do. Registrations without a study (made before it
    was kept, or with an older node's receipt) are not compared. Called under the study's lock
    (`_registered_exclusively`)."""
    if study_uid is None:
        return
    other = (records_here().where((Record.study_uid == study_uid) & (Record.patient_id != patient_id))
             .order_by(Record.registered_at, Record.pk).first())
    if other is not None:
        raise ApiError(409, "study_of_another_patient",
                       f"study {study_uid} is filed at this institution to patient {other.patient_id} (series "
                       f"{other.id}); a study belongs to one patient. Register this series for that patient, "
                       "or, if that filing is wrong, first delete the study's series registered for it "
                       f"(DELETE /api/v1/records/{other.id})",
                       study_uid=study_uid, patient_id=other.patient_id, record_id=other.id)


@bp.post("/api/v1/records")
@require_auth(*SERIES_FILERS)
def register_record():
    """The patient must be vouched for by the toplevel (a patient reference), the node must be in
    this institution's registry, and the node must vouch that it stores the record: the upload
    receipt it answered this user's upload with, verified against the node's registered key, whose
    image facts the record keeps (`_record_facts`). When the two name different patients, the
    physician's confirmation must come with it (`reconciliation`)."""
    identity = require_member()  # the role: the view's require_auth, one rule
    body = json_body()
    reference = take_patient_reference(body)
    receipt = body.pop("receipt", None)
    decision = take_identity_decision(body)
    sent = {name: body.pop(name) for name in FACT_FIELDS if name in body}
    fields = validate(body, RECORD_FIELDS)
    if sent:  # a copy that is no possible value is refused, as before; a possible one is not used
        validate(sent, FACT_FIELDS, partial=True)
    node = Node.get_or_none((Node.id == fields["node_id"]) & (Node.institution_id == this_institution()))
    if node is None:
        raise ApiError(400, "validation_error",
                       f"node_id {fields['node_id']} is not a render node of this institution")
    patient = require_patient_reference(reference, fields["patient_id"])
    stated = _require_receipt(receipt, node, fields["id"], identity.user_id)
    facts, facts_note = _record_facts(stated.facts, sent)
    values = {**{k: v for k, v in fields.items() if k != "node_id"}, **facts}

    def register() -> tuple[Response, int]:
        answer = _already_registered(fields["id"], node, fields["patient_id"])
        if answer is not None:
            return answer
        _refuse_study_of_another_patient(values["study_uid"], fields["patient_id"])
        decided = judge_identity(decision, patient, stated.dicom)
        record = Record.create(node=node, registered_by=identity.user_id, **values)
        study_note = f" study_uid={record.study_uid}" if record.study_uid else ""
        record_audit(AuditEntry, "record.create", "record", record.id, patient_id=record.patient_id,
                     detail=f"node_id={node.id}{study_note}{facts_note}{decided}")
        return jsonify(record_to_json(record)), 201

    try:
        return _registered_exclusively(fields["id"], values["study_uid"], register)
    except peewee.IntegrityError:
        if not Node.select().where(Node.id == node.id).exists():
            raise ApiError(400, "validation_error", f"node_id {node.id} was removed meanwhile") from None
        # the same (id, node) registered meanwhile, where the database orders transactions itself
        # (CockroachDB: `run_exclusive`); answer as if it came first
        answer = _already_registered(fields["id"], node, fields["patient_id"])
        if answer is None:
            raise
        return answer


@bp.get("/api/v1/records/<id:record_id>")
@require_auth(*ROLES)
def read_record(record_id: str):
    record = _matching(parse_record_id(record_id))[0]
    record_audit(AuditEntry, "record.read", "record", record.id, patient_id=record.patient_id,
                 detail=f"node_id={record.node_id}")
    return jsonify(record_to_json(record))


def _the_one_matching(record_id: str) -> Record:
    """The record named by id (and `?node_id=` where the same content is registered on several nodes)."""
    records = _matching(record_id)
    if len(records) > 1:
        raise ApiError(409, "conflict", "this record is registered on several nodes; name one with ?node_id=")
    return records[0]


@bp.patch("/api/v1/records/<id:record_id>")
@require_auth(*ROLES)
def update_record(record_id: str):
    """Correct the description and/or type of a record (e.g. a series saved under another's label)."""
    record_id = parse_record_id(record_id)
    changes = validate(json_body(), EDITABLE_FIELDS, partial=True)
    with exclusive_transaction(database_proxy, _lock_name(record_id)):
        record = _the_one_matching(record_id)
        require_record_change(record.registered_by, "change this record")
        old = {name: getattr(record, name) for name in changes}
        for name, value in changes.items():
            setattr(record, name, value)
        save_edit(record, "record")
        record_audit(AuditEntry, "record.update", "record", record.id, patient_id=record.patient_id,
                     detail=f"node_id={record.node_id} " + describe_old_new(old, changes))
    return jsonify(record_to_json(record))


@bp.delete("/api/v1/records/<id:record_id>")
@require_auth(*ROLES)
def delete_record(record_id: str):
    """Remove the registry entry; the stored series is the render node's (its own DELETE and rule)."""
    record_id = parse_record_id(record_id)
    with exclusive_transaction(database_proxy, _lock_name(record_id)):
        record = _the_one_matching(record_id)
        require_record_change(record.registered_by, "delete this record")
        record.delete_instance()
        kept = {name: getattr(record, name) for name in EDITABLE_FIELDS}
        record_audit(AuditEntry, "record.delete", "record", record.id, patient_id=record.patient_id,
                     detail=f"node_id={record.node_id} " + describe_values(kept))
    return "", 204
