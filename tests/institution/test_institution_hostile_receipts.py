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
from shared.patient_refs import issue_patient_reference
from shared.receipts import DICOM_CLAIM, RECEIPT_TYPE
from shared.tokens import ALGORITHM, key_id, normalize_audience

from .conftest import INSTITUTION_A, ISSUER, record_body

SIVR_JANE = {"first_name": "Jane", "last_name": "Doe", "birth_date": "1961-04-12"}
JANE = {"name": "DOE^JANE", "patient_id": "INS-0042", "issuer": "", "birth_date": "19610412", "sex": "F"}


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
    ignored, so a newer node's receipt is still taken."""
    status, record = register(api, users, node, patient_id, dicom, repr(dicom).encode())
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
