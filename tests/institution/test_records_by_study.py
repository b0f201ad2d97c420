"""Which patient a study is filed to: `GET /api/v1/records?study_uid=`.

The work list proposed the patient of a series by the DICOM patient rule only, so series 2 of a study
filed to patient A could be proposed for patient B (or nobody), and the physician learned that a
study is one patient's only from the 409 `study_of_another_patient` after choosing. The work list now
asks the institution which patient the study is filed to: a physician may list a study's records as
a patient's (the one rule `shared.access.require_patient_named`, with the study as a narrowing), the
UID is checked by the rule every layer keeps UIDs by (`shared.dicom_uid`), and the listing is audited
for each patient it shows, as record lists are. Real institution app, registrations with receipts
the node's key signs, stating the study.
"""

from __future__ import annotations

import uuid

import pytest
from pydicom.uid import generate_uid

from daemons.institution.models import AuditEntry

from .conftest import record_body

FACTS = {"rows": 512, "columns": 512, "frames": 100, "modality": "CT", "study_date": "2026-11-02"}


def _file(api, user, node: dict, patient_id: str, study_uid: str | None, content: bytes) -> dict:
    """Register a series whose node receipt states `study_uid` (as a render node of this release signs it)."""
    body = record_body(node["id"], patient_id, content=content)
    body["receipt"] = api.receipt(node["id"], body["id"], user, facts={**FACTS, "study_uid": study_uid})
    status, answer = api.call("POST", "/api/v1/records", user, body)
    assert status == 201, answer
    return answer


@pytest.fixture
def study(api, users, node) -> dict:
    """A study of two series filed to patient A, another study filed to patient B, and a series of A
    registered without a study (an older node's receipt)."""
    uid, other = generate_uid(), generate_uid()
    patient_a, patient_b = str(uuid.uuid4()), str(uuid.uuid4())
    doctor = users["physician"]
    series = [_file(api, doctor, node, patient_a, uid, content) for content in (b"series-1", b"series-2")]
    _file(api, doctor, node, patient_b, other, b"series-of-b")
    _file(api, doctor, node, patient_a, None, b"series-without-study")
    return {"uid": uid, "patient": patient_a, "series": {record["id"] for record in series}}


def test_a_physician_lists_the_records_of_a_study(api, users, study):
    """The attack of before: a physician asking which patient a study is filed to got 400 (patient_id
    required) and could only learn it from the 409 after filing the next series elsewhere."""
    status, answer = api.call("GET", f"/api/v1/records?study_uid={study['uid']}", users["physician2"])
    assert status == 200, answer
    assert answer["total"] == 2 and {item["id"] for item in answer["items"]} == study["series"]
    assert {item["patient_id"] for item in answer["items"]} == {study["patient"]}
    # with the patient too, and paged as any list
    status, answer = api.call("GET", f"/api/v1/records?study_uid={study['uid']}&patient_id={study['patient']}&limit=1",
                              users["physician"])
    assert status == 200 and answer["total"] == 2 and len(answer["items"]) == 1
    status, answer = api.call("GET", f"/api/v1/records?study_uid={study['uid']}&patient_id={uuid.uuid4()}",
                              users["physician"])
    assert status == 200 and answer == {"items": [], "total": 0}


def test_a_study_filed_nowhere_lists_nothing(api, users, study):
    status, answer = api.call("GET", f"/api/v1/records?study_uid={generate_uid()}", users["physician"])
    assert status == 200 and answer == {"items": [], "total": 0}


def test_the_study_listing_is_audited_for_the_patient_it_shows(app, api, users, study):
    doctor = users["physician2"]
    status, _ = api.call("GET", f"/api/v1/records?study_uid={study['uid']}", doctor)
    assert status == 200
    with app.app_context():
        entries = list(AuditEntry.select().where((AuditEntry.action == "record.search")
                                                 & (AuditEntry.user_id == doctor.id)))
    assert [entry.patient_id for entry in entries] == [study["patient"]]
    assert f"study_uid={study['uid']}" in entries[0].detail and "results=2" in entries[0].detail


@pytest.mark.parametrize("value", ["", " ", "1.2.840.abc", "1.2..3", "1." + "2" * 64, "1.2.3\n",
                                   "1.2.3' OR '1'='1", "%"])
def test_a_study_uid_that_is_no_uid_is_400(api, users, study, value, db_state):
    before = db_state()
    status, answer = api.call("GET", "/api/v1/records", users["physician"], query_string={"study_uid": value})
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error"
    assert "study_uid must be a DICOM UID" in answer["error"]["message"]
    assert db_state() == before  # not even an audit entry of a listing


def test_without_patient_or_study_a_physician_is_still_refused(api, users, study):
    status, answer = api.call("GET", "/api/v1/records", users["physician"])
    assert status == 400 and "patient_id" in answer["error"]["message"] and "study_uid" in answer["error"]["message"]
    status, answer = api.call("GET", f"/api/v1/records?study_uid={study['uid']}", users["admin"])
    assert status == 200 and answer["total"] == 2


def test_another_institution_sees_none_of_the_study(api, users, study):
    """A physician or admin of institution B, at institution A's server, by the study's UID alone: 403
    (which patient a DICOM study is filed to is A's filing); by the patient, as before."""
    for user in (users["physician_b"], users["admin_b"]):
        status, answer = api.call("GET", f"/api/v1/records?study_uid={study['uid']}", user)
        assert status == 403, answer
        assert answer["error"]["code"] == "forbidden" and "patient_id" in answer["error"]["message"]
        assert study["patient"] not in str(answer)
        both = f"study_uid={study['uid']}&patient_id={study['patient']}"
        status, answer = api.call("GET", f"/api/v1/records?{both}", user)
        assert status == 200 and answer["total"] == 2
