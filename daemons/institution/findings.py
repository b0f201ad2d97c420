"""`/api/v1/findings`: radiological findings written here, linked to records anywhere.

Physicians of this institution write findings (the author is the token's user, never a body
field); every physician or admin may read them, by patient, because a patient's findings must
be visible across institutions. Only the author, while a physician of this institution, changes a
finding; they or an admin of this institution delete it (`shared.roles.may_change_finding`). Every
read and change is audited with the patient id. A finding is stored only for a patient the
toplevel vouches for (`patient_reference`, see shared.patient_refs).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from flask import Blueprint, jsonify

from daemons.institution.access import (
    require_finding_change,
    require_member,
    require_patient_reference,
    take_patient_reference,
    this_institution,
)
from daemons.institution.checks import date_value, iso_date, record_id_value, uuid_value
from daemons.institution.finding_history import changed_findings, keep_version
from daemons.institution.models import (
    AuditEntry,
    Finding,
    FindingRecord,
    Node,
    Record,
    database_proxy,
)
from shared.audit import record_audit
from shared.auth import require_auth
from shared.db import exclusive_transaction, utcnow
from shared.errors import ApiError, not_found, save_edit
from shared.roles import PHYSICIAN, ROLES
from shared.validation import (
    Field,
    iso_utc,
    json_body,
    page_args,
    parse_record_id,
    parse_uuid,
    query_uuid,
    validate,
)

bp = Blueprint("findings", __name__)

MAX_LINKS = 200

LINK_FIELDS = {
    "record_id": Field(str, max_len=64, check=record_id_value),
    "institution_id": Field(str, max_len=36, check=uuid_value),
    "node_id": Field(str, required=False, nullable=True, max_len=36, check=uuid_value),
}


def parse_links(value: list[Any], field: str) -> list[dict[str, Any]]:
    """A non-empty list of RecordLink objects without duplicates (a finding cites records)."""
    if not value:
        raise ApiError(400, "validation_error", f"{field} must link at least one record")
    if len(value) > MAX_LINKS:
        raise ApiError(400, "validation_error", f"{field} may link at most {MAX_LINKS} records")
    links: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ApiError(400, "validation_error", f"{field}[{index}] must be an object")
        try:
            link = validate(item, LINK_FIELDS)
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"{field}[{index}]: {exc.message}") from exc
        key = (link["record_id"], link["institution_id"])
        if key in seen:
            raise ApiError(400, "validation_error", f"{field}[{index}] links the same record twice")
        seen.add(key)
        links.append(link)
    return links


FINDING_FIELDS = {
    "patient_id": Field(str, max_len=36, check=uuid_value),
    "description": Field(str, max_len=2000, min_len=1, multiline=True),
    "findings": Field(str, max_len=50_000, min_len=1, multiline=True),
    "conclusion": Field(str, max_len=20_000, min_len=1, multiline=True),
    "recommendation": Field(str, required=False, max_len=20_000, multiline=True),
    "date": Field(str, max_len=10, check=date_value),
    "records": Field(list, check=parse_links),
}


def link_to_json(link: FindingRecord) -> dict[str, Any]:
    return {"record_id": link.record_id, "institution_id": link.institution_id, "node_id": link.node_id}


def finding_to_json(finding: Finding, links: Iterable[FindingRecord], changed: bool) -> dict[str, Any]:
    """`changed`: a version of it was kept (`finding_history.changed_findings`)."""
    return {
        "id": finding.id,
        "institution_id": finding.institution_id,
        "patient_id": finding.patient_id,
        "author_id": finding.author_id,
        "author_name": finding.author_name,
        "description": finding.description,
        "findings": finding.findings,
        "conclusion": finding.conclusion,
        "recommendation": finding.recommendation,
        "date": iso_date(finding.date),
        "records": [link_to_json(link) for link in links],
        "created_at": iso_utc(finding.created_at),
        "updated_at": iso_utc(finding.updated_at),
        "changed": changed,
    }


def _stored(value: Any) -> str | None:
    """A field's value as the database keeps it, to tell a save that changes it from one that does not
    (a date arrives as text and is read back as a date)."""
    return None if value is None else str(value)


def _link_keys(links: Iterable[dict[str, Any]]) -> list[tuple[str | None, ...]]:
    """The links of a finding in a form two lists of them compare by (order does not matter)."""
    return sorted(tuple(_stored(link.get(key)) for key in ("record_id", "institution_id", "node_id")) for link in links)


def _links_of(finding: Finding) -> list[FindingRecord]:
    return list(FindingRecord.select().where(FindingRecord.finding == finding).order_by(FindingRecord.pk))


def _respond(finding: Finding, status: int = 200):
    return jsonify(finding_to_json(finding, _links_of(finding), bool(changed_findings([finding.id])))), status


def _finding_lock(finding_id: str) -> AbstractContextManager[None]:
    """The transaction of a change that reads a finding, then writes it. A plain one let two
    removals of its two links each see two and leave none (PostgreSQL), or failed with "database is
    locked" (SQLite: the second to write): `exclusive_transaction` serialises them."""
    return exclusive_transaction(database_proxy, f"sivr-finding-{finding_id}")


def get_finding(finding_id: str) -> Finding:
    finding = Finding.get_or_none((Finding.id == finding_id) & (Finding.institution_id == this_institution()))
    if finding is None:
        raise not_found("finding", finding_id)
    return finding


def check_local_links(links: Iterable[dict[str, Any]], patient_id: str) -> None:
    """Links to records of this institution must name a registered record of the same patient.

    Records of other institutions cannot be checked here (servers never call each other).
    """
    for link in links:
        if link["institution_id"] != this_institution():
            continue
        query = (Record.select().join(Node)
                 .where((Record.id == link["record_id"]) & (Node.institution_id == this_institution())))
        if link.get("node_id"):
            query = query.where(Record.node == link["node_id"])
        records = list(query)
        if not records:
            raise ApiError(400, "validation_error",
                           f"record {link['record_id']} is not registered in this institution"
                           + (" on that node" if link.get("node_id") else ""))
        if any(r.patient_id != patient_id for r in records):
            raise ApiError(400, "validation_error",
                           f"record {link['record_id']} belongs to another patient than this finding")


def _is_linked(finding: Finding, link: dict[str, Any]) -> bool:
    return FindingRecord.select().where(
        (FindingRecord.finding == finding) & (FindingRecord.record_id == link["record_id"])
        & (FindingRecord.institution_id == link["institution_id"])).exists()


def _refuse_more_links(finding: Finding) -> None:
    """409 when `finding` links `MAX_LINKS` records already: the bound of a new finding's and an edit's
    `records` holds for links added one by one too. Without it one finding grew without end (2,000
    links: 300 kB in every read of it and every list of the patient's findings, which bounds its pages
    by their count of findings only)."""
    if FindingRecord.select().where(FindingRecord.finding == finding).count() >= MAX_LINKS:
        raise ApiError(409, "conflict",
                       f"this finding links {MAX_LINKS} records, the most one finding may link: remove a link "
                       "before adding another, or write another finding")


def _add_links(finding: Finding, links: Iterable[dict[str, Any]]) -> None:
    for link in links:
        FindingRecord.create(finding=finding, record_id=link["record_id"],
                             institution_id=link["institution_id"], node_id=link.get("node_id"))


@bp.get("/api/v1/findings")
@require_auth(*ROLES)
def list_findings():
    patient_id = query_uuid("patient_id")
    if patient_id is None:
        raise ApiError(400, "validation_error", "patient_id is required: name the patient whose findings you need")
    limit, offset = page_args()
    query = Finding.select().where((Finding.institution_id == this_institution())
                                   & (Finding.patient_id == patient_id))
    total = query.count()
    findings = list(query.order_by(Finding.date.desc(), Finding.created_at.desc(), Finding.id)
                    .limit(limit).offset(offset))
    links: dict[str, list[FindingRecord]] = {f.id: [] for f in findings}
    if findings:
        for link in (FindingRecord.select()
                     .where(FindingRecord.finding.in_(list(links)))
                     .order_by(FindingRecord.pk)):
            links[link.finding_id].append(link)
    record_audit(AuditEntry, "finding.search", "finding", patient_id=patient_id, detail=f"results={total}")
    changed = changed_findings(list(links))
    return jsonify({"items": [finding_to_json(f, links[f.id], f.id in changed) for f in findings], "total": total})


@bp.post("/api/v1/findings")
@require_auth(PHYSICIAN)
def create_finding():
    identity = require_member()  # the role: the view's require_auth, one rule
    body = json_body()
    reference = take_patient_reference(body)
    fields = validate(body, FINDING_FIELDS)
    require_patient_reference(reference, fields["patient_id"])
    links = fields.pop("records")
    # reads (the records linked), then writes: exclusive from its start, or SQLite refuses the
    # write ("database is locked") when another commit came between
    with exclusive_transaction(database_proxy, f"sivr-finding-of-{fields['patient_id']}"):
        check_local_links(links, fields["patient_id"])
        finding = Finding.create(institution_id=this_institution(), author_id=identity.user_id,
                                 author_name=identity.username, **fields)
        _add_links(finding, links)
        record_audit(AuditEntry, "finding.create", "finding", finding.id, patient_id=finding.patient_id)
    return _respond(finding, 201)


@bp.get("/api/v1/findings/<id:finding_id>")
@require_auth(*ROLES)
def read_finding(finding_id: str):
    finding = get_finding(parse_uuid(finding_id, "finding id"))
    record_audit(AuditEntry, "finding.read", "finding", finding.id, patient_id=finding.patient_id)
    return _respond(finding)


@bp.put("/api/v1/findings/<id:finding_id>")
@require_auth(*ROLES)
def update_finding(finding_id: str):
    finding_id = parse_uuid(finding_id, "finding id")
    body = json_body()
    reference = take_patient_reference(body)
    fields = validate(body, FINDING_FIELDS, partial=True)
    links = fields.pop("records", None)
    with _finding_lock(finding_id):
        finding = get_finding(finding_id)
        require_finding_change(finding.author_id)
        previous_patient = finding.patient_id
        patient_id = fields.get("patient_id", previous_patient)
        # a reference sent is checked even where the patient stays: a value of any shape was taken unread
        if patient_id != previous_patient or reference is not None:
            require_patient_reference(reference, patient_id)
        if links is not None:
            check_local_links(links, patient_id)
        elif patient_id != finding.patient_id:
            check_local_links((link_to_json(link) for link in _links_of(finding)), patient_id)
        kept = _links_of(finding)
        changed = sorted(name for name, value in fields.items() if _stored(getattr(finding, name)) != _stored(value))
        if links is not None and _link_keys(link_to_json(link) for link in kept) != _link_keys(links):
            changed.append("records")
        if not changed:  # saved as it stands: no version, no edit, but the answer shows the finding (a read)
            record_audit(AuditEntry, "finding.read", "finding", finding.id, patient_id=finding.patient_id,
                         detail="saved unchanged")
            return _respond(finding)
        keep_version(finding, kept, "update")
        for name, value in fields.items():
            setattr(finding, name, value)
        finding.updated_at = utcnow()
        save_edit(finding, "finding")
        if links is not None:
            FindingRecord.delete().where(FindingRecord.finding == finding).execute()
            _add_links(finding, links)
        detail = ", ".join(changed)
        # a finding moved to another patient changes both patients' data: audit it under both
        for audited_patient in dict.fromkeys((previous_patient, finding.patient_id)):
            record_audit(AuditEntry, "finding.update", "finding", finding.id, patient_id=audited_patient,
                         detail=detail)
    return _respond(finding)


@bp.delete("/api/v1/findings/<id:finding_id>")
@require_auth(*ROLES)
def delete_finding(finding_id: str):
    finding_id = parse_uuid(finding_id, "finding id")
    with _finding_lock(finding_id):
        finding = get_finding(finding_id)
        require_finding_change(finding.author_id, deleting=True)
        keep_version(finding, _links_of(finding), "delete")
        FindingRecord.delete().where(FindingRecord.finding == finding).execute()
        finding.delete_instance()
        record_audit(AuditEntry, "finding.delete", "finding", finding.id, patient_id=finding.patient_id)
    return "", 204


@bp.post("/api/v1/findings/<id:finding_id>/records")
@require_auth(*ROLES)
def link_record(finding_id: str):
    finding_id = parse_uuid(finding_id, "finding id")
    body = json_body()
    link = parse_links([body], "record link")[0]
    with _finding_lock(finding_id):  # the finding read here is saved: no edit may land in between
        finding = get_finding(finding_id)
        require_finding_change(finding.author_id)
        if _is_linked(finding, link):  # nothing changes, but the answer shows the finding: a read
            record_audit(AuditEntry, "finding.read", "finding", finding.id, patient_id=finding.patient_id,
                         detail=f"linked already: record_id={link['record_id']} "
                                f"institution_id={link['institution_id']}")
            return _respond(finding, 200)
        _refuse_more_links(finding)
        check_local_links([link], finding.patient_id)
        keep_version(finding, _links_of(finding), "link")
        finding.updated_at = utcnow()
        save_edit(finding, "finding")  # before the link, whose foreign key would refuse a finding gone
        _add_links(finding, [link])
        record_audit(AuditEntry, "finding.link", "finding", finding.id, patient_id=finding.patient_id,
                     detail=f"record_id={link['record_id']} institution_id={link['institution_id']}")
    return _respond(finding, 201)


@bp.delete("/api/v1/findings/<id:finding_id>/records/<id:record_id>")
@require_auth(*ROLES)
def unlink_record(finding_id: str, record_id: str):
    finding_id = parse_uuid(finding_id, "finding id")
    record_id = parse_record_id(record_id)
    institution_id = query_uuid("institution_id")
    with _finding_lock(finding_id):
        finding = get_finding(finding_id)
        require_finding_change(finding.author_id)
        links = _links_of(finding)
        matching = [link for link in links if link.record_id == record_id
                    and (institution_id is None or link.institution_id == institution_id)]
        if not matching:
            raise not_found("record link", record_id)
        if len(matching) > 1:
            raise ApiError(409, "conflict",
                           "this record id is linked from several institutions; name one with ?institution_id=")
        if len(links) == 1:
            raise ApiError(409, "conflict",
                           "a finding must keep at least one record; link another before removing this one")
        keep_version(finding, links, "unlink")
        matching[0].delete_instance()
        finding.updated_at = utcnow()
        save_edit(finding, "finding")
        record_audit(AuditEntry, "finding.unlink", "finding", finding.id, patient_id=finding.patient_id,
                     detail=f"record_id={record_id} institution_id={matching[0].institution_id}")
    return "", 204
