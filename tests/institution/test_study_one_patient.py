"""A study belongs to one patient: its series are not filed to two patients at one institution.

A physician filed series 1 of a CT study to patient A and series 2 of the same study (same
StudyInstanceUID, same DICOM patient) to patient B, a namesake: both registrations answered 201 and
the study was split over two patients' pages. The render node now signs the series' study with its
receipt (`daemons.render.api.worklist.record_facts`), the institution keeps it on the registration
and refuses a series of a study filed here to another patient
(`daemons.institution.records._refuse_study_of_another_patient`). These tests run a real render node
(its Flask app, real uploads, real receipts, the work list's receipt route) beside the real
institution app, making the calls the viewer makes.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import peewee
import pytest
from pydicom.uid import generate_uid

from daemons.institution.models import AuditEntry, Record, database_proxy, upgrade
from shared.patient_refs import issue_patient_reference
from tests.render.conftest import NodeHarness
from tests.render.synthetic import dataset, to_bytes

from .conftest import INSTITUTION_A, ISSUER, at_once, institution_config, record_body, sqlite_at_schema
from .test_institution_hostile_receipts import signed_claims

#: The SIVR patients: two namesakes, so the identity check (names, birth date) passes for both.
PATIENT = {"first_name": "Jane", "last_name": "Doe", "birth_date": "1961-04-12"}
FACTS = {"rows": 8, "columns": 8, "frames": 3, "modality": "CT", "study_date": "2026-01-01"}


def _series(study: str) -> list[tuple[str, bytes]]:
    """One 3-slice CT series of `study` naming Jane Doe."""
    series = generate_uid()
    files = []
    for number in range(3):
        ds = dataset(series=series, position=float(number))
        ds.StudyInstanceUID = study
        ds.PatientName, ds.PatientBirthDate, ds.PatientID = "DOE^JANE", "19610412", "MRN-7"
        ds.StudyDate = "20260101"
        files.append((f"{number}.dcm", to_bytes(ds)))
    return files


def _upload(render_node: NodeHarness, user, files) -> dict:
    answer = render_node.upload(files, headers=render_node.headers(user_id=user.id))
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def _worklist_receipt(render_node: NodeHarness, user, record_id: str) -> str:
    """The receipt the viewer's work list asks the node for (series sent by C-STORE or STOW-RS)."""
    answer = render_node.client.post(f"/api/v1/records/{record_id}/receipt",
                                     headers=render_node.headers(user_id=user.id))
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["receipt"]


def _file(api, user, node: dict, patient_id: str, record_id: str, receipt: str):
    """POST /api/v1/records as the viewer's upload and work list send it."""
    body = record_body(node["id"], patient_id, id=record_id)
    body.update(receipt=receipt, patient_reference=issue_patient_reference(
        api.signing_key, ISSUER, patient_id, user.id, 300, patient=PATIENT))
    return api.call("POST", "/api/v1/records", user, body)


def test_a_series_of_a_study_filed_to_another_patient_is_refused(api, users, render_node, registered, db_state):
    """The attack: series 1 of a study uploaded and filed to patient A; series 2 of the same study
    filed from the work list to patient B. The second is 409, naming the study, the patient it is
    filed to and what to do; nothing is stored."""
    doctor = users["physician"]
    study = generate_uid()
    patient_a, patient_b = str(uuid.uuid4()), str(uuid.uuid4())
    first = _upload(render_node, doctor, _series(study))
    second = _upload(render_node, doctor, _series(study))
    status, record = _file(api, doctor, registered, patient_a, first["id"], first["receipt"])
    assert status == 201, record
    before = db_state()
    status, answer = _file(api, users["physician2"], registered, patient_b, second["id"],
                           _worklist_receipt(render_node, users["physician2"], second["id"]))
    assert status == 409, answer
    error = answer["error"]
    assert error["code"] == "study_of_another_patient"
    assert study in error["message"] and patient_a in error["message"] and first["id"] in error["message"]
    assert "Jane" not in error["message"] and "DOE" not in error["message"]
    assert f"DELETE /api/v1/records/{first['id']}" in error["message"]
    assert error["study_uid"] == study and error["patient_id"] == patient_a and error["record_id"] == first["id"]
    # the viewer shows at most 500 characters of a refusal: with the longest study UID too
    assert len(error["message"]) - len(study) + 64 <= 500
    assert db_state() == before
    status, listed = api.call("GET", f"/api/v1/records?patient_id={patient_b}", doctor)
    assert status == 200 and listed["items"] == []


def test_the_same_patient_the_same_series_and_other_studies_stay_allowed(api, users, render_node, registered):
    """Filing the study's other series to its patient is allowed; registering the same series again
    answers as before (200 with the registration); another study of the same DICOM patient may be
    filed to another SIVR patient (the identity check's business, not this rule's)."""
    doctor = users["physician"]
    study = generate_uid()
    patient_a, patient_b = str(uuid.uuid4()), str(uuid.uuid4())
    first, second = (_upload(render_node, doctor, _series(study)) for _ in range(2))
    other_study = _upload(render_node, doctor, _series(generate_uid()))
    assert _file(api, doctor, registered, patient_a, first["id"], first["receipt"])[0] == 201
    status, record = _file(api, doctor, registered, patient_a, second["id"], second["receipt"])
    assert status == 201, record
    status, again = _file(api, doctor, registered, patient_a, second["id"], _worklist_receipt(render_node, doctor,
                                                                                             second["id"]))
    assert status == 200 and again["id"] == second["id"], again
    status, record = _file(api, doctor, registered, patient_b, other_study["id"], other_study["receipt"])
    assert status == 201, record
    assert {r.study_uid for r in Record.select()} == {study, record_study(other_study["id"])}
    database_proxy.close()


def record_study(record_id: str) -> str | None:
    """The study the registry keeps for `record_id`."""
    return Record.get(Record.id == record_id).study_uid


def test_two_series_of_one_study_filed_at_once_to_two_patients(app, api, users, render_node, registered):
    """Filed at the same moment (two physicians, or two tabs), one of them wins: each registration
    reads the study's other series under the study's lock (PostgreSQL: its advisory lock)."""
    doctor = users["physician"]
    study = generate_uid()
    metas = [_upload(render_node, doctor, _series(study)) for _ in range(2)]
    bodies = []
    for meta in metas:
        patient_id = str(uuid.uuid4())
        body = record_body(registered["id"], patient_id, id=meta["id"])
        body.update(receipt=meta["receipt"], patient_reference=issue_patient_reference(
            api.signing_key, ISSUER, patient_id, doctor.id, 300, patient=PATIENT))
        bodies.append(("POST", "/api/v1/records", body))
    assert at_once(app, bodies, doctor) == [201, 409]
    assert len({r.patient_id for r in Record.select().where(Record.study_uid == study)}) == 1
    database_proxy.close()


def test_once_the_other_registration_is_deleted_the_series_may_be_filed(api, users, render_node, registered):
    """What the refusal says to do works: delete the wrong registration, then file the series."""
    doctor = users["physician"]
    study = generate_uid()
    patient_a, patient_b = str(uuid.uuid4()), str(uuid.uuid4())
    first, second = (_upload(render_node, doctor, _series(study)) for _ in range(2))
    assert _file(api, doctor, registered, patient_a, first["id"], first["receipt"])[0] == 201
    assert _file(api, doctor, registered, patient_b, second["id"], second["receipt"])[0] == 409
    assert api.call("DELETE", f"/api/v1/records/{first['id']}", doctor)[0] == 204
    status, record = _file(api, doctor, registered, patient_b, second["id"], second["receipt"])
    assert status == 201, record


def test_a_record_cannot_be_moved_to_another_patient(api, users, render_node, registered, db_state):
    """There is no move: a PATCH naming a patient is refused, so the rule cannot be gone around."""
    doctor = users["physician"]
    meta = _upload(render_node, doctor, _series(generate_uid()))
    assert _file(api, doctor, registered, str(uuid.uuid4()), meta["id"], meta["receipt"])[0] == 201
    before = db_state()
    for body in ({"patient_id": str(uuid.uuid4())}, {"study_uid": "1.2.3"}):
        status, answer = api.call("PATCH", f"/api/v1/records/{meta['id']}", doctor, body, references=False)
        assert status == 400 and answer["error"]["code"] == "validation_error", answer
    assert db_state() == before


def test_the_study_is_the_nodes_word_never_the_requests(api, users, node, db_state):
    """A request stating a study is refused (unknown field): the study compared is the one the node
    signs. A receipt of an older node states none: its registration is not compared."""
    doctor = users["physician"]
    patient_a, patient_b = str(uuid.uuid4()), str(uuid.uuid4())
    body = record_body(node["id"], patient_a, content=b"series-1")
    receipt = signed_claims(api, node, body["id"], doctor, None, {"facts": {**FACTS, "study_uid": "1.2.840.99"}})
    assert api.call("POST", "/api/v1/records", doctor, {**body, "receipt": receipt})[0] == 201
    stated = record_body(node["id"], patient_b, content=b"series-2")
    status, answer = api.call("POST", "/api/v1/records", doctor, {**stated, "study_uid": "1.2.840.99"})
    assert status == 400 and "study_uid" in answer["error"]["message"], answer
    for content, facts in ((b"series-3", FACTS), (b"series-4", None)):  # facts without a study; no facts
        older = record_body(node["id"], patient_b, content=content)
        claims = {"facts": facts} if facts is not None else {}
        receipt = signed_claims(api, node, older["id"], doctor, None, claims)
        status, record = api.call("POST", "/api/v1/records", doctor, {**older, "receipt": receipt})
        assert status == 201, record
    assert record_study(record_body(node["id"], patient_b, content=b"series-3")["id"]) is None
    database_proxy.close()


@pytest.mark.parametrize("study", ["1" * 65, 7, ["1.2"], "1.2\n3"])
def test_a_signed_study_the_registry_cannot_keep_is_refused(api, users, node, db_state, study):
    doctor = users["physician"]
    body = record_body(node["id"], str(uuid.uuid4()))
    receipt = signed_claims(api, node, body["id"], doctor, None, {"facts": {**FACTS, "study_uid": study}})
    before = db_state()
    status, answer = api.call("POST", "/api/v1/records", doctor, {**body, "receipt": receipt})
    assert status == 422 and answer["error"]["code"] == "unregistrable_record", answer
    assert "study_uid" in answer["error"]["message"]
    assert db_state() == before


def test_the_audit_names_the_study(api, users, render_node, registered):
    doctor = users["physician"]
    study = generate_uid()
    meta = _upload(render_node, doctor, _series(study))
    assert _file(api, doctor, registered, str(uuid.uuid4()), meta["id"], meta["receipt"])[0] == 201
    detail = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == meta["id"])).detail
    assert f"study_uid={study}" in detail
    database_proxy.close()


def test_a_schema_5_database_gets_the_study_column(tmp_path: Path, signing_keys):
    """Schema 5 -> 6 adds the study to registrations; those made before have none (not compared)."""
    path = tmp_path / "v5.db"
    db = sqlite_at_schema(path, 5)
    db.execute_sql("CREATE TABLE node (id VARCHAR(36) PRIMARY KEY, name VARCHAR(120), url VARCHAR(2048), "
                   "store VARCHAR(512), institution_id VARCHAR(36), created_at DATETIME, receipt_key VARCHAR(64))")
    db.execute_sql("CREATE TABLE record (pk INTEGER PRIMARY KEY, id VARCHAR(64), node_id VARCHAR(36), rows INTEGER, "
                   "columns INTEGER, frames INTEGER, modality VARCHAR(16), record_type VARCHAR(64), "
                   "patient_id VARCHAR(36), description TEXT, study_date DATE, registered_by VARCHAR(36), "
                   "registered_at DATETIME)")
    db.execute_sql("INSERT INTO node VALUES ('n1', 'node', 'https://n', '', ?, '2026-01-01', '')", (INSTITUTION_A,))
    db.execute_sql("INSERT INTO record (id, node_id, rows, columns, frames, modality, record_type, patient_id, "
                   "description, registered_by, registered_at) VALUES "
                   "('a' , 'n1', 8, 8, 3, 'CT', 'CT', 'p', '', 'u', '2026-01-01')")
    db.close()
    config = institution_config(f"sqlite:///{path}", signing_keys)
    try:
        assert upgrade(config) == 7
        assert upgrade(config) == 7
        check = peewee.SqliteDatabase(str(path))
        assert "study_uid" in {c.name for c in check.get_columns("record")}
        assert "record_study_uid" in {i.name for i in check.get_indexes("record")}
        assert check.execute_sql("SELECT study_uid FROM record").fetchall() == [(None,)]
        check.close()
    finally:
        database_proxy.close()
