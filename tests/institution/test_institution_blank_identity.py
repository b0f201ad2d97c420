"""A series that names no patient (a CT sent by storescu with empty PatientID, PatientName and
PatientBirthDate) is registered only with the physician's explicit decision: nothing of it can be
compared with the SIVR patient, so it is no `match` (daemons/institution/reconciliation.py)."""

from __future__ import annotations

import pytest

from .test_institution_reconciliation import DICOM_PATIENT, created_entry, signed_body

BLANK = {"name": "", "patient_id": "", "issuer": "", "birth_date": "", "sex": ""}
#: As a node may state what the files lack: null, or a name of component separators alone.
NULL = {"name": None, "patient_id": None, "issuer": None, "birth_date": None, "sex": None}
CARETS = {**BLANK, "name": "^^^"}
#: A DICOM patient the node states with no field at all (each one "not stated").
UNSTATED: dict[str, str] = {}
#: A PatientID the institution cannot compare (the SIVR patient it knows states no insurance number).
ID_ONLY = {**BLANK, "patient_id": "INS-0042"}


@pytest.mark.parametrize("dicom", [BLANK, NULL, CARETS, ID_ONLY, UNSTATED],
                         ids=["blank", "null", "carets", "id-only", "unstated"])
@pytest.mark.parametrize("identity", [None, "match", "rule"])
def test_a_series_naming_no_patient_is_not_registered_as_a_match(app, api, users, node, patient_id, db_state,
                                                                 dicom, identity):
    before = db_state()
    extra = {} if identity is None else {"identity": {"decision": identity, "dicom_patient": BLANK}}
    status, answer = api.call("POST", "/api/v1/records", users["physician"],
                              signed_body(api, users, node, patient_id, dicom, **extra))
    assert status == 409 and answer["error"]["code"] == "identity_unconfirmed", answer
    # the shape of the mismatch refusal, which the viewer's upload flow answers with its dialog
    assert answer["error"]["differs"] == []
    signed = {key: dicom.get(key) or "" for key in BLANK}  # as the node states it
    assert answer["error"]["dicom_patient"] == signed
    assert "no name and no birth date" in answer["error"]["message"]
    assert "Doe, Jane" in answer["error"]["message"] and "confirmed_mismatch" in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("decision", ["confirmed_mismatch", "chosen"])
def test_the_physicians_explicit_decision_files_it_and_is_audited_as_such(app, api, users, node, patient_id,
                                                                          decision):
    body = signed_body(api, users, node, patient_id, BLANK,
                       identity={"decision": decision, "dicom_patient": BLANK})
    status, record = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 201, record
    detail = created_entry(record["id"]).detail
    assert f"identity={decision} differs=none unknown=name,birth date" in detail
    assert "identity=match" not in detail


@pytest.mark.parametrize("known", [{"name": "DOE^JANE"}, {"birth_date": "19610412"}], ids=["name", "birth-date"])
def test_one_agreeing_value_is_still_a_match(app, api, users, node, patient_id, known):
    """The existing rule for a partial DICOM patient is kept: what is there agrees, the gap is audited."""
    dicom = {**BLANK, **known}
    status, record = api.call("POST", "/api/v1/records", users["physician"],
                              signed_body(api, users, node, patient_id, dicom,
                                          identity={"decision": "match", "dicom_patient": DICOM_PATIENT}))
    assert status == 201, record
    assert "identity=match differs=none unknown=" in created_entry(record["id"]).detail
