"""`/api/v1/findings/{id}/versions`: what a finding said before each change, and who changed it.

A finding is a medical report: a colleague may have treated the patient on its first wording, so a
change must not erase what was read. Every change (an edit, a record linked or unlinked, the
deletion) first keeps the text it replaces (`keep_version`, called inside the change's transaction,
so a version exists exactly when the change landed). While the finding exists its history is read
as the finding is (any role, audited); once deleted, only an administrator of this institution reads
what it said (a deleted report stays traceable, not shown to every reader).
"""

from __future__ import annotations

import json
from typing import Any

import peewee
from flask import Blueprint, jsonify

from daemons.institution.access import require_admin_here, this_institution
from daemons.institution.checks import iso_date
from daemons.institution.models import AuditEntry, Finding, FindingRecord, FindingVersion
from shared.audit import record_audit
from shared.auth import current_identity, require_auth
from shared.errors import not_found
from shared.roles import ROLES
from shared.validation import iso_utc, parse_uuid, query_int

bp = Blueprint("finding_history", __name__)

#: What ends a version: the change that replaced its text.
CHANGES = ("update", "link", "unlink", "delete")


def keep_version(finding: Finding, links: list[FindingRecord], change: str) -> None:
    """Keep `finding`'s text and links as they stand, before `change` (one of `CHANGES`) by the caller."""
    if change not in CHANGES:
        raise ValueError(f"unknown finding change {change!r}: one of {', '.join(CHANGES)}")
    identity = current_identity()
    last = (FindingVersion.select(peewee.fn.MAX(FindingVersion.version))
            .where(FindingVersion.finding_id == finding.id).scalar())
    FindingVersion.create(
        finding_id=finding.id, version=(last or 0) + 1, institution_id=finding.institution_id,
        patient_id=finding.patient_id, author_id=finding.author_id, author_name=finding.author_name,
        description=finding.description, findings=finding.findings, conclusion=finding.conclusion,
        recommendation=finding.recommendation, date=finding.date,
        records=json.dumps([{"record_id": link.record_id, "institution_id": link.institution_id,
                             "node_id": link.node_id} for link in links]),
        written_at=finding.updated_at, change=change,
        changed_by_id=identity.user_id, changed_by_name=identity.username)


def version_to_json(version: FindingVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "patient_id": version.patient_id,
        "author_id": version.author_id,
        "author_name": version.author_name,
        "description": version.description,
        "findings": version.findings,
        "conclusion": version.conclusion,
        "recommendation": version.recommendation,
        "date": iso_date(version.date),
        "records": json.loads(version.records),
        "written_at": iso_utc(version.written_at),
        "change": version.change,
        "changed_at": iso_utc(version.changed_at),
        "changed_by_id": version.changed_by_id,
        "changed_by_name": version.changed_by_name,
    }


def changed_findings(finding_ids: list[str]) -> set[str]:
    """Which of these findings were changed since they were written (a version kept): what the
    viewer's "Changed … History" line says. Their times could not tell: they are answered to the
    second, and an edit within the second of the writing left the finding looking unchanged."""
    if not finding_ids:
        return set()
    return {row.finding_id for row in FindingVersion.select(FindingVersion.finding_id)
            .where(FindingVersion.finding_id.in_(finding_ids)).distinct()}


#: Versions in one answer, at most (`?limit=`, default `PAGE_DEFAULT`). A version holds up to ~92,000
#: characters of text and 200 links; the whole history in one answer let an author who saved one
#: finding 300 times in 3 s make every read of its history 27.7 MB (and its server hold it whole).
PAGE_MAX = 50
PAGE_DEFAULT = 20


@bp.get("/api/v1/findings/<id:finding_id>/versions")
@require_auth(*ROLES)
def list_versions(finding_id: str):
    """The earlier texts, newest page first, oldest first within it (`?before=` a version number
    pages back); the finding itself (if not deleted) is the version after them."""
    finding_id = parse_uuid(finding_id, "finding id")
    limit = query_int("limit", PAGE_DEFAULT, 1, PAGE_MAX)
    before = query_int("before", 0, 1, 2**31 - 1) or None
    kept = FindingVersion.select().where((FindingVersion.finding_id == finding_id)
                                         & (FindingVersion.institution_id == this_institution()))
    total = kept.count()
    last = kept.select(peewee.fn.MAX(FindingVersion.version)).scalar() or 0
    finding = Finding.get_or_none((Finding.id == finding_id) & (Finding.institution_id == this_institution()))
    if finding is None:
        if not total:
            raise not_found("finding", finding_id)
        require_admin_here("a deleted finding's history")
    page = kept if before is None else kept.where(FindingVersion.version < before)
    versions = list(page.order_by(FindingVersion.version.desc()).limit(limit))[::-1]
    # a finding moved to another patient told something about each: the read is audited under all
    patients = [*(v.patient_id for v in versions), *([finding.patient_id] if finding is not None else [])]
    if not patients:  # an empty page of a deleted finding's history still told of it: its last patient
        patients = [kept.order_by(FindingVersion.version.desc()).get().patient_id]
    shown = f"versions {versions[0].version}-{versions[-1].version}" if versions else "no versions"
    for patient_id in dict.fromkeys(patients):
        record_audit(AuditEntry, "finding.versions.read", "finding", finding_id, patient_id=patient_id,
                     detail=f"{shown} of {total}")
    return jsonify({"id": finding_id, "items": [version_to_json(v) for v in versions], "total": total,
                    "deleted": finding is None, "current_version": None if finding is None else last + 1})
