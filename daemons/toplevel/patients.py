"""Patients: demographics and the unique insurance number. Every read, search and change is audited.

A search writes one audit entry per patient it shows, so "who has seen this patient" is answered
by `GET /api/v1/audit?patient_id=...` alone, whether the patient was opened or only listed.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, jsonify

from daemons.toplevel.context import edited_row, get_by_id, refuse_blank_id, require_user, save_unique, toplevel
from daemons.toplevel.models import AuditEntry, Patient, insurance_number_form
from daemons.toplevel.serialize import patient_json
from shared.audit import describe_old_new, describe_values, record_audit
from shared.auth import current_identity
from shared.errors import ApiError
from shared.names import name_search_key
from shared.patient_refs import FIELD, issue_patient_reference
from shared.roles import ROLES, SYSTEM_ADMIN
from shared.validation import Field, check_person_name, json_body, page_args, parse_date, query_text, validate

bp = Blueprint("patients", __name__)

SEXES = ("F", "M", "O", "U")
_READERS = ROLES
#: The most different words one patient search matches (`?q=`, as `name_search_key` folds it).
#: Each is one more condition of the statement: 84 made SQLite's parser overflow its stack, and 631
#: (210 U+FDFA, which `name_search_key` spells as four words) Python's while peewee wrote it, both a
#: 500. A name has fewer: "Maria de los Angeles Garcia de la Fuente" is seven once "de" is counted once.
MAX_SEARCH_WORDS = 12


def check_birth_date(value: str, field: str) -> dt.date:
    date = dt.date.fromisoformat(parse_date(value, field))
    if date > dt.date.today() or date.year < 1850:
        raise ApiError(400, "validation_error", f"{field} {value!r} is not a plausible date of birth")
    return date


def check_insurance_number(value: str, field: str) -> str:
    """The number as stored (`insurance_number_form`), which must be printable ASCII.

    The number is what tells patients apart, unique as stored: `HR-123456` followed by a zero-width
    space, word joiner or soft hyphen, written in full-width letters or with a non-breaking hyphen
    (U+2011) was another patient's number, so one patient could be created six times, each one
    shown as "Ana Horvat, HR-123456", and records filed under any of them.
    """
    number = insurance_number_form(value)
    if not (number.isascii() and number.isprintable()):
        raise ApiError(400, "validation_error",
                       f"{field} {number[:80]!r} holds characters beyond printable ASCII; type it as the card "
                       "shows it, with ASCII letters, digits, spaces and punctuation only")
    return number


FIELDS = {
    "first_name": Field(str, max_len=100, min_len=1, check=check_person_name),
    "last_name": Field(str, max_len=100, min_len=1, check=check_person_name),
    "sex": Field(str, choices=SEXES),
    "birth_date": Field(str, max_len=10, check=check_birth_date),
    "insurance_number": Field(str, max_len=64, min_len=1, check=check_insurance_number),
}


def _refuse_unsearchable_name(patient: Patient) -> None:
    """`400 validation_error` when both names, folded for search (`name_search_key`), outgrow the
    search column: folding spells out what one character stands for (NFKD: U+FDFA is 18 letters,
    `ß` is `ss`), so 100 + 100 characters could be 3,600, which PostgreSQL refused with a 500."""
    key = name_search_key(f"{patient.first_name} {patient.last_name}")
    limit = Patient.name_key.max_length
    if len(key) > limit:
        raise ApiError(400, "validation_error",
                       f"first_name and last_name are {len(key)} characters together as the patient search "
                       f"reads them (ligatures and compatibility characters spelled out); at most {limit}")


def search_words(q: str) -> list[str]:
    """The different words of `q` as the search matches them (`name_search_key`), in the order
    typed: a repeated word matches nothing more. `400 validation_error` beyond MAX_SEARCH_WORDS,
    where a statement of one condition each overflowed the database's or Python's stack."""
    words = list(dict.fromkeys(name_search_key(q).split()))
    if len(words) > MAX_SEARCH_WORDS:
        raise ApiError(400, "validation_error",
                       f"q has {len(words)} different words as the search reads them (ligatures and "
                       f"compatibility characters spelled out); at most {MAX_SEARCH_WORDS} are matched: "
                       "search for fewer words of the name")
    return words


def _save(patient: Patient, create: bool) -> None:
    _refuse_unsearchable_name(patient)
    save_unique(patient, Patient.insurance_number,
                f"a patient with insurance number {patient.insurance_number!r} already exists", "patient", create)


@bp.get("/api/v1/patients")
@require_user(*_READERS)
def search_patients():
    """`?q=` matches every word (at most MAX_SEARCH_WORDS different ones) against first or last name,
    ignoring case and accents."""
    limit, offset = page_args()
    q = query_text("q", Patient.name_key.max_length)  # both names folded, as they are matched
    number = insurance_number_form(query_text("insurance_number", 64))
    query = Patient.select()
    for word in search_words(q):
        query = query.where(Patient.name_key.contains(word))
    if number:
        query = query.where(Patient.insurance_number == number)
    total = query.count()
    rows = list(query.order_by(Patient.last_name, Patient.first_name, Patient.id).limit(limit).offset(offset))
    detail = f"q={q!r} insurance_number={number!r} total={total}"
    with AuditEntry._meta.database.atomic():
        for patient in rows:
            record_audit(AuditEntry, "patient.search", "patient", patient.id, patient.id, detail)
        if not rows:
            record_audit(AuditEntry, "patient.search", "patient", detail=detail)
    return jsonify({"items": [patient_json(p) for p in rows], "total": total})


@bp.post("/api/v1/patients")
@require_user(*_READERS)
def create_patient():
    patient = Patient(**validate(json_body(), FIELDS))
    _save(patient, create=True)
    record_audit(AuditEntry, "patient.create", "patient", patient.id, patient.id)
    return jsonify(patient_json(patient)), 201


refuse_blank_id(bp, "/api/v1/patients", "patient", ["GET", "PUT", "DELETE"])


@bp.get("/api/v1/patients/<patient_id>")
@require_user(*_READERS)
def get_patient(patient_id: str):
    patient = get_by_id(Patient, patient_id, "patient")
    record_audit(AuditEntry, "patient.read", "patient", patient.id, patient.id)
    return jsonify(patient_json(patient))


@bp.post("/api/v1/patients/<patient_id>/reference")
@require_user(*_READERS)
def patient_reference(patient_id: str):
    """A short-lived signed reference to this patient, which institution servers require before they
    store a finding or a record for them (they cannot ask the toplevel: `shared.patient_refs`)."""
    patient = get_by_id(Patient, patient_id, "patient")
    top = toplevel()
    ttl_s = top.config["tokens"]["patient_reference_ttl_s"]
    reference = issue_patient_reference(top.signing_key, top.issuer.issuer, patient.id,
                                        current_identity().user_id, ttl_s, patient=patient_json(patient))
    record_audit(AuditEntry, "patient.reference", "patient", patient.id, patient.id)
    return jsonify({FIELD: reference, "expires_in": ttl_s})


@bp.put("/api/v1/patients/<patient_id>")
@require_user(*_READERS)
def update_patient(patient_id: str):
    """The audit entry states each changed field's value before and after (`describe_old_new`): a
    patient's names, birth date or insurance number overwritten are otherwise found nowhere."""
    with edited_row(Patient, patient_id, "patient") as patient:
        data = validate(json_body(), FIELDS, partial=True)
        before = patient_json(patient)
        for field, value in data.items():
            setattr(patient, field, value)
        _save(patient, create=False)
        after = patient_json(patient)
        changed = {field: after[field] for field in data if after[field] != before[field]}
        record_audit(AuditEntry, "patient.update", "patient", patient.id, patient.id,
                     detail=describe_old_new(before, changed) or "no change")
    return jsonify(after)


@bp.delete("/api/v1/patients/<patient_id>")
@require_user(SYSTEM_ADMIN)
def delete_patient(patient_id: str):
    """The audit entry keeps what the patient was (`describe_values`): nothing else does once deleted.
    Two deletions at once delete once: the second finds no patient (404)."""
    with edited_row(Patient, patient_id, "patient") as patient:
        patient.delete_instance()
        shown = patient_json(patient)
        record_audit(AuditEntry, "patient.delete", "patient", patient.id, patient.id,
                     detail=describe_values({field: shown[field] for field in FIELDS}))
    return Response(status=204)
