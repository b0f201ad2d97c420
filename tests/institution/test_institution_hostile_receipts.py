"""Hostile content inside validly signed upload receipts (the node signs what the file said).

A receipt's DICOM patient is the text of the uploaded files: whoever made the files chose it. A
render node signs it as read (U+FFFD for NUL since the nodes replace it; a node of an older release
still sends NUL), so an institution must take any text there without a 500, refuse what is not text,
audit visibly what the file said and never call two patients the same for characters it could not read.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from daemons.institution.models import AuditEntry
from shared.db import UNSTORABLE
from shared.patient_refs import issue_patient_reference
from shared.receipts import DICOM_CLAIM, RECEIPT_TYPE
from shared.tokens import ALGORITHM, key_id, normalize_audience

from .conftest import INSTITUTION_A, ISSUER, record_body

SIVR_JANE = {"first_name": "Jane", "last_name": "Doe", "birth_date": "1961-04-12"}
JANE = {"name": "DOE^JANE", "patient_id": "INS-0042", "issuer": "", "birth_date": "19610412", "sex": "F"}
#: What no stored or shown text of this layer may hold as it is (`shared.validation`'s refusals).
RAW_CONTROL = ("\x00", "\ud800", "\u202e", "\n", "\r", "\u2028")


def signed_claims(api, node, record_id: str, user, dicom: Any, extra: dict | None = None) -> str:
    """A receipt the node's own key signs with `dicom` as its DICOM claim, whatever its JSON type."""
    url = api.node_urls[node["id"]]
    key = api.node_key(url)
    now = int(time.time())
    claims = {"typ": RECEIPT_TYPE, "rid": record_id, "node": normalize_audience(url), "inst": INSTITUTION_A,
              "sub": user.id, "iat": now, "exp": now + 900, DICOM_CLAIM: dicom, **(extra or {})}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


def register(api, users, node, patient_id, dicom: Any, content: bytes, identity: dict | None = None,
             claims: dict | None = None):
    """POST /api/v1/records with a receipt stating `dicom` (and `claims` besides) and a reference to Jane Doe."""
    body = record_body(node["id"], patient_id, content=content)
    body["receipt"] = signed_claims(api, node, body["id"], users["physician"], dicom, claims)
    body["patient_reference"] = issue_patient_reference(api.signing_key, ISSUER, patient_id, users["physician"].id,
                                                        300, patient=SIVR_JANE)
    if identity is not None:
        body["identity"] = identity
    return api.call("POST", "/api/v1/records", users["physician"], body)


def assert_error(status: int, answer: Any, expected: int) -> None:
    assert status == expected, answer
    assert set(answer) == {"error"} and {"code", "message"} <= set(answer["error"]), answer
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]


def assert_no_raw_control(text: str) -> None:
    assert not any(c in text for c in RAW_CONTROL), repr(text)


HOSTILE = {
    "replacement": "DOE\ufffd^JANE",
    "nul": "DOE\x00^JANE",
    "lone surrogate": "DOE\ud800^JANE",
    "bidi override": "DOE\u202e^JANE",
    "line breaks": "DOE^JANE\nidentity=match\r\u2028",
    "long": "DOE^JANE" + "X" * 2500,
}


@pytest.mark.parametrize("field", ["name", "patient_id", "issuer", "birth_date", "sex"])
@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("decision", [None, "rule", "confirmed_mismatch", "chosen"])
def test_hostile_text_is_taken_or_refused_never_a_500(app, api, users, node, patient_id, field, kind, decision):
    """Every value of the DICOM patient, with every decision: 201 or 409, never a 500; what is stored
    and shown escapes the file's controls, and the audit keeps all five values."""
    value = HOSTILE[kind]
    identity = None if decision is None else {"decision": decision, "dicom_patient": {"name": "shown"}}
    status, answer = register(api, users, node, patient_id, {**JANE, field: value},
                              f"{field}-{kind}".encode(), identity)
    assert status in (201, 409), answer
    if status == 409:
        assert_error(status, answer, 409)
        assert_no_raw_control(answer["error"]["message"])
        return
    entry = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == answer["id"]))
    assert_no_raw_control(entry.detail)
    assert not UNSTORABLE.search(entry.detail)
    status, audit = api.call("GET", f"/api/v1/audit?object_id={answer['id']}&action=record.create", users["admin"])
    assert status == 200 and audit["items"][0]["detail"] == entry.detail
    for later in ("patient_id", "birth_date", "sex"):
        assert f"{later}=" in entry.detail, entry.detail
    status, record = api.call("GET", f"/api/v1/records/{answer['id']}", users["physician"])
    assert status == 200, record
    status, listing = api.call("GET", f"/api/v1/records?patient_id={patient_id}", users["physician"])
    assert status == 200 and listing["total"] == 1


@pytest.mark.parametrize("name", ["DOE\ufffd^JANE", "DOE\x00^JANE", "DOE^JANE\ufffd", "DOE^\ufffdJANE",
                                  "DOE\ud800^JANE", "JANE\ufffd DOE"])
def test_a_character_the_node_could_not_read_is_no_match(app, api, users, node, patient_id, db_state, name):
    """U+FFFD stands for a character of the file that could not be stored: "DOE\ufffd" may be "DOEN",
    another family. It was folded away as punctuation, so the name was a match and the series was
    registered for Jane Doe without the physician's confirmation."""
    before = db_state()
    status, answer = register(api, users, node, patient_id, {**JANE, "name": name}, b"unread")
    assert_error(status, answer, 409)
    assert answer["error"]["code"] == "identity_unconfirmed" and answer["error"]["differs"] == ["name"]
    assert db_state() == before


@pytest.mark.parametrize("name", ["DOE^JANE^" + "X" * 2500, "DOE^JANE^" + "\x01" * 400])
def test_a_long_name_does_not_push_the_rest_of_the_dicom_patient_out_of_the_audit(app, api, users, node,
                                                                                  patient_id, name):
    """The audit detail holds 2000 characters: a 2500-character name (a receipt holds one), or one of
    400 controls (each quoted as four), cut the entry silently before patient_id, birth_date and sex."""
    status, record = register(api, users, node, patient_id, {**JANE, "name": name}, name.encode(),
                              {"decision": "confirmed_mismatch", "dicom_patient": {}})
    assert status == 201, record
    detail = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == record["id"])).detail
    assert "patient_id='INS-0042'" in detail and "birth_date='19610412'" in detail and "sex='F'" in detail, detail
    assert f"({len(repr(name))} chars)" in detail and "\x01" not in detail, detail


def test_a_receipt_too_long_to_take_is_named_so(app, api, users, node, patient_id, db_state):
    """A 10,000-character name makes a receipt longer than 4096 characters: it was refused as
    `receipt_missing`, "send the upload receipt", which the browser had sent."""
    before = db_state()
    status, answer = register(api, users, node, patient_id, {**JANE, "name": "X" * 10_000}, b"huge")
    assert_error(status, answer, 422)
    assert answer["error"]["code"] == "invalid_receipt" and "4096" in answer["error"]["message"], answer
    assert db_state() == before


@pytest.mark.parametrize("value", [1961, 0, ["DOE", "JANE"], {"family": "DOE"}, True, 1.5])
@pytest.mark.parametrize("field", ["name", "birth_date", "patient_id"])
def test_a_dicom_patient_value_that_is_not_text_is_refused(app, api, users, node, patient_id, db_state, field,
                                                           value):
    """Python's str() of a list ["DOE", "JANE"] read "['DOE', 'JANE']", a match for Jane Doe; 0 read as
    no value. A receipt whose DICOM patient is not text is malformed: 422, nothing stored."""
    before = db_state()
    status, answer = register(api, users, node, patient_id, {**JANE, field: value}, b"typed")
    assert_error(status, answer, 422)
    assert answer["error"]["code"] == "invalid_receipt" and field in answer["error"]["message"], answer
    assert db_state() == before


@pytest.mark.parametrize("dicom", [{**JANE, "name": None}, {k: v for k, v in JANE.items() if k != "name"},
                                   {**JANE, "future": {"nested": [1]}}, {}])
def test_null_missing_and_unknown_fields_are_taken(app, api, users, node, patient_id, dicom):
    """null and a missing field are "not stated" (an older node); a field this release does not know is
    ignored, so a newer node's receipt is still taken. One that states neither a name nor a birth date
    names no patient to compare: taken with the physician's explicit choice
    (tests/institution/test_institution_blank_identity.py)."""
    names_none = not (dicom.get("name") or dicom.get("birth_date"))
    identity = {"decision": "chosen", "dicom_patient": dicom} if names_none else None
    status, record = register(api, users, node, patient_id, dicom, repr(dicom).encode(), identity)
    assert status == 201, record


@pytest.mark.parametrize("dicom", [[JANE], "DOE^JANE", 5])
def test_a_dicom_claim_that_is_no_object_is_refused(app, api, users, node, patient_id, db_state, dicom):
    before = db_state()
    status, answer = register(api, users, node, patient_id, dicom, b"claim")
    assert_error(status, answer, 422)
    assert answer["error"]["code"] == "invalid_receipt", answer
    assert db_state() == before


@pytest.mark.parametrize("birth_date", ["1961-04-12T00:00", "not a date", "19611341", "\ufffd"])
def test_a_birth_date_that_is_no_date_is_audited_as_stated(app, api, users, node, patient_id, birth_date):
    """A birth date that is no date is "unknown" (the name alone decides, as for none), audited as the
    file said it; one of a date's form but another day differs."""
    status, answer = register(api, users, node, patient_id, {**JANE, "birth_date": birth_date}, birth_date.encode())
    if birth_date == "19611341":
        assert_error(status, answer, 409)
        assert answer["error"]["differs"] == ["birth date"], answer
        return
    assert status == 201, answer
    detail = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == answer["id"])).detail
    assert "unknown=birth date" in detail and f"birth_date={birth_date!r}" in detail, detail


def test_the_refusal_of_a_mismatch_quotes_the_files_text_escaped_and_cut(app, api, users, node, patient_id):
    """The 409 that asks for the physician's confirmation quoted the file's name as it was: its line
    breaks and bidirectional override wrote into the message the viewer shows, 10,000 characters long."""
    name = "ROE\u202e^X\nidentity=match\u2028" + "Y" * 2000
    status, answer = register(api, users, node, patient_id, {**JANE, "name": name}, b"shown-refusal")
    assert_error(status, answer, 409)
    message = answer["error"]["message"]
    assert_no_raw_control(message)
    assert "'ROE\\u202e^X\\nidentity=match\\u2028" in message and f"({len(repr(name))} chars)" in message, message
    assert answer["error"]["dicom_patient"]["name"] == name


@pytest.mark.parametrize("claims", [{"note": "\x00\ud800\u202e", "dicom2": {"name": "X"}}, {"rid": ["x"]},
                                    {"sub": None}, {"node": {"url": 1}}, {"typ": 5}, {"iat": "now"},
                                    {"exp": "later"}, {"inst": "\x00"}])
def test_other_claims_of_a_signed_receipt_are_ignored_or_refused(app, api, users, node, patient_id, db_state,
                                                                 claims):
    """Claims this release does not know are ignored; its own of another type or value are refused."""
    before = db_state()
    status, answer = register(api, users, node, patient_id, JANE, repr(claims).encode(), claims=claims)
    if "note" in claims:
        assert status == 201, answer
        return
    assert_error(status, answer, 422)
    assert answer["error"]["code"] == "invalid_receipt", answer
    assert db_state() == before


@pytest.mark.parametrize("name", ["DOE\x00^JANE", "DOE\ud800^JANE", "DOE\n^JANE", "X" * 201])
def test_what_the_browser_showed_is_refused_as_typed_text_when_the_receipt_states_none(
        app, api, users, node, patient_id, db_state, name):
    """A node of a release before the identity check states no DICOM patient: the browser's word is
    the audit's only account, checked as typed text (400), never a 500."""
    before = db_state()
    body = record_body(node["id"], patient_id, content=b"browser-word",
                       identity={"decision": "chosen", "dicom_patient": {"name": name}})
    status, answer = api.call("POST", "/api/v1/records", users["physician"], body)
    assert_error(status, answer, 400)
    assert answer["error"]["code"] == "validation_error", answer
    assert db_state() == before


def test_what_the_browser_showed_with_a_bidi_control_is_audited_as_shown(app, api, users, node, patient_id):
    body = record_body(node["id"], patient_id, content=b"browser-bidi",
                       identity={"decision": "chosen", "dicom_patient": {"name": "DOE\u202e^JANE"}})
    status, record = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 201, record
    detail = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == record["id"])).detail
    assert "name='DOE\ufffd^JANE'" in detail, detail
