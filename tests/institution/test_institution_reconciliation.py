"""Work list decisions at the institution (issue 11): a registration says which DICOM patient the
series names and whether its SIVR patient was the matching rule's proposal or the physician's choice."""

from __future__ import annotations

import pytest

from daemons.institution.models import AuditEntry

from .conftest import record_body

DICOM_PATIENT = {"name": "DOE^JANE", "patient_id": "INS-0042", "issuer": "", "birth_date": "19610412", "sex": "F"}


@pytest.mark.parametrize("decision", ["rule", "chosen"])
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
