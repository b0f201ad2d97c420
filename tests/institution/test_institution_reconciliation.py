"""Work list decisions at the institution (issue 11): a registration says which DICOM patient the
series names and whether its SIVR patient was the matching rule's proposal or the physician's choice."""

from __future__ import annotations

import pytest

from daemons.institution.models import AuditEntry
from shared.patient_refs import issue_patient_reference

from .conftest import ISSUER, record_body

DICOM_PATIENT = {"name": "DOE^JANE", "patient_id": "INS-0042", "issuer": "", "birth_date": "19610412", "sex": "F"}


@pytest.mark.parametrize("decision", ["rule", "chosen", "match", "confirmed_mismatch"])
def test_registration_audits_the_identity_decision(app, api, users, node, patient_id, decision):
    body = record_body(node["id"], patient_id, identity={"decision": decision, "dicom_patient": DICOM_PATIENT})
    status, record = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 201, record
    entry = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == record["id"]))
    assert entry.patient_id == patient_id
    assert f"identity={decision}" in entry.detail
    assert "name='DOE^JANE'" in entry.detail and "patient_id='INS-0042'" in entry.detail
    assert "birth_date='19610412'" in entry.detail


@pytest.mark.parametrize("identity", [
    "rule", {"decision": "guessed", "dicom_patient": DICOM_PATIENT}, {"decision": "rule"},
    {"decision": "rule", "dicom_patient": {**DICOM_PATIENT, "extra": 1}},
    {"decision": "rule", "dicom_patient": {**DICOM_PATIENT, "name": "X" * 201}},
    {"decision": "rule", "dicom_patient": "DOE^JANE"},
])
def test_a_malformed_decision_is_refused(app, api, users, node, patient_id, db_state, identity):
    before = db_state()
    status, answer = api.call("POST", "/api/v1/records", users["physician"],
                              record_body(node["id"], patient_id, identity=identity))
    assert status == 400 and answer["error"]["code"] == "validation_error", answer
    assert db_state() == before


def test_info_names_the_issuer_the_matching_rule_uses(api, users):
    status, info = api.call("GET", "/api/v1/info", users["physician"])
    assert status == 200 and info["issuer_of_patient_id"] == ""


# The identity check (issue 11): the node's receipt states the images' patient, the toplevel's
# reference the SIVR patient; a mismatch is registered only with the physician's confirmation.
SIVR_JANE = {"first_name": "Jane", "last_name": "Doe", "birth_date": "1961-04-12"}
OTHER_PATIENT = {**DICOM_PATIENT, "name": "ROE^RICHARD", "patient_id": "H-77", "birth_date": "19500101"}


def signed_body(api, users, node, patient_id, dicom, content=b"identity-series", **extra):
    """A registration whose receipt states `dicom` and whose reference states SIVR_JANE."""
    body = record_body(node["id"], patient_id, content=content, **extra)
    body["receipt"] = api.receipt(node["id"], body["id"], users["physician"], dicom_patient=dicom)
    body["patient_reference"] = issue_patient_reference(api.signing_key, ISSUER, patient_id, users["physician"].id,
                                                        300, patient=SIVR_JANE)
    return body


def created_entry(record_id: str) -> AuditEntry:
    return AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == record_id))


@pytest.mark.parametrize("identity", [None, {"decision": "match", "dicom_patient": OTHER_PATIENT},
                                      {"decision": "rule", "dicom_patient": OTHER_PATIENT}])
def test_a_mismatch_without_confirmation_is_refused_and_nothing_stored(app, api, users, node, patient_id,
                                                                       db_state, identity):
    before = db_state()
    extra = {} if identity is None else {"identity": identity}
    status, answer = api.call("POST", "/api/v1/records", users["physician"],
                              signed_body(api, users, node, patient_id, OTHER_PATIENT, **extra))
    assert status == 409 and answer["error"]["code"] == "identity_unconfirmed", answer
    assert answer["error"]["differs"] == ["name", "birth date"]
    assert "ROE^RICHARD" in answer["error"]["message"] and "Doe, Jane" in answer["error"]["message"]
    assert db_state() == before


def test_a_browser_that_says_the_images_are_someone_else_cannot_override_the_receipt(
        app, api, users, node, patient_id, db_state):
    """The DICOM patient compared is the node's signed statement, not the browser's word."""
    before = db_state()
    lie = {"decision": "match", "dicom_patient": {**DICOM_PATIENT, "name": "DOE^JANE"}}
    status, answer = api.call("POST", "/api/v1/records", users["physician"],
                              signed_body(api, users, node, patient_id, OTHER_PATIENT, identity=lie))
    assert status == 409 and answer["error"]["code"] == "identity_unconfirmed"
    assert db_state() == before


@pytest.mark.parametrize("decision", ["confirmed_mismatch", "chosen"])
def test_a_confirmed_mismatch_is_stored_and_audited_with_the_signed_dicom_patient(
        app, api, users, node, patient_id, decision):
    body = signed_body(api, users, node, patient_id, OTHER_PATIENT,
                       identity={"decision": decision, "dicom_patient": {"name": "what the browser showed"}})
    status, record = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 201, record
    entry = created_entry(record["id"])
    assert entry.user_id == users["physician"].id and entry.patient_id == patient_id
    assert f"identity={decision} differs=name,birth date" in entry.detail
    assert "name='ROE^RICHARD'" in entry.detail and "patient_id='H-77'" in entry.detail
    assert "what the browser showed" not in entry.detail


def test_a_match_needs_no_confirmation_and_is_audited_as_match(app, api, users, node, patient_id):
    same = {**DICOM_PATIENT, "name": "DOE^JANE^M", "birth_date": "19610412"}
    status, record = api.call("POST", "/api/v1/records", users["physician"],
                              signed_body(api, users, node, patient_id, same))
    assert status == 201, record
    assert "identity=match differs=none unknown=none" in created_entry(record["id"]).detail


def test_images_without_a_birth_date_match_by_name_and_the_gap_is_audited(app, api, users, node, patient_id):
    status, record = api.call("POST", "/api/v1/records", users["physician"],
                              signed_body(api, users, node, patient_id, {**DICOM_PATIENT, "birth_date": ""}))
    assert status == 201, record
    assert "identity=match differs=none unknown=birth date" in created_entry(record["id"]).detail


def test_a_reference_that_states_no_patient_cannot_vouch_for_a_checked_series(app, api, users, node, patient_id,
                                                                              db_state):
    before = db_state()
    body = signed_body(api, users, node, patient_id, OTHER_PATIENT,
                       identity={"decision": "confirmed_mismatch", "dicom_patient": OTHER_PATIENT})
    body["patient_reference"] = issue_patient_reference(api.signing_key, ISSUER, patient_id, users["physician"].id, 300)
    status, answer = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 400 and answer["error"]["code"] == "invalid_patient_reference", answer
    assert db_state() == before


@pytest.mark.parametrize("name", ["O\u0092Brien^Pat", "Anna\u202e^X", "Thorax\u2028KM"])
def test_the_images_own_patient_is_taken_as_shown(name):
    """A Windows modality's `O’Brien` (byte 0x92 under ISO_IR 100) reads as U+0092, a C1 control that
    typed text may not hold: echoed back by a client that showed it, it is taken as shown (U+FFFD),
    never refused (the physician has no field to correct it in)."""
    from daemons.institution.reconciliation import take_identity_decision
    from shared.shown_text import as_shown

    taken = take_identity_decision({"identity": {"decision": "confirmed_mismatch", "dicom_patient": {"name": name}}})
    assert taken["dicom_patient"]["name"] == as_shown(name) and "\ufffd" in as_shown(name)
