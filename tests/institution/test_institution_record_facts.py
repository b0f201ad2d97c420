"""A record's image facts are the render node's word, not the browser's.

An institution kept a record's rows, columns, frames, modality and study date as the registering
request stated them: with a real receipt for a 3-slice 8x8 CT of 2026, a body saying `MR`,
`1900-01-01`, `frames 1000000` was registered so (201). The node now signs the facts with the
receipt (`shared.receipts`, `daemons.render.api.worklist.record_facts`) and the institution keeps
those (`daemons.institution.records._record_facts`). These tests run a real render node (its Flask
app, real upload, real receipt key) beside the real institution app.
"""

from __future__ import annotations

import uuid

import pytest
from pydicom.uid import generate_uid

from daemons.institution.models import AuditEntry
from shared.patient_refs import issue_patient_reference
from tests.render.conftest import NodeHarness
from tests.render.synthetic import dataset, to_bytes

from .conftest import ISSUER, record_body
from .test_institution_hostile_receipts import signed_claims

#: The receipt's claim of the facts (`shared.receipts.FACTS_CLAIM`), as nodes send it.
FACTS_CLAIM = "facts"
PATIENT = {"first_name": "Jane", "last_name": "Doe", "birth_date": "1961-04-12"}
#: What the browser said of the series in the reviewer's attack.
LIES = {"rows": 65535, "columns": 65535, "frames": 1_000_000, "modality": "MR", "study_date": "1900-01-01"}
#: What the node stores: three 8x8 CT slices of 1 Jan 2026.
TRUTH = {"rows": 8, "columns": 8, "frames": 3, "modality": "CT", "study_date": "2026-01-01"}


def _series(study_date: str | None = "20260101") -> list[tuple[str, bytes]]:
    series = generate_uid()
    files = []
    for number in range(3):
        ds = dataset(series=series, position=float(number))
        ds.PatientName, ds.PatientBirthDate = "DOE^JANE", "19610412"
        if study_date is not None:
            ds.StudyDate = study_date
        files.append((f"{number}.dcm", to_bytes(ds)))
    return files


def _upload(render_node: NodeHarness, user, files) -> dict:
    answer = render_node.upload(files, headers=render_node.headers(user_id=user.id))
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def _register(api, user, node: dict, patient_id: str, meta: dict, receipt: str, **facts):
    """POST /api/v1/records as a client states it: `facts` are the body's copy (none: left out)."""
    body = {k: v for k, v in record_body(node["id"], patient_id, id=meta["id"]).items() if k not in LIES}
    body.update(facts, receipt=receipt, patient_reference=issue_patient_reference(
        api.signing_key, ISSUER, patient_id, user.id, 300, patient=PATIENT))
    return api.call("POST", "/api/v1/records", user, body)


def _facts(record: dict) -> dict:
    return {name: record[name] for name in TRUTH}


def test_a_body_stating_other_facts_than_the_receipt_registers_the_nodes(api, users, render_node, registered,
                                                                       patient_id):
    """The reviewer's attack: a real receipt, a body lying about every fact. The record keeps the
    node's facts; the answer and every later read show them."""
    doctor = users["physician"]
    meta = _upload(render_node, doctor, _series())
    status, record = _register(api, doctor, registered, patient_id, meta, meta["receipt"], **LIES)
    assert status == 201, record
    assert _facts(record) == TRUTH
    status, read = api.call("GET", f"/api/v1/records/{meta['id']}", doctor)
    assert status == 200 and _facts(read) == TRUTH
    detail = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == meta["id"])).detail
    assert "facts=unsigned" not in detail


def test_a_body_without_facts_registers_the_nodes(api, users, render_node, registered, patient_id):
    """A client need not state what the node signs: the facts are optional in the body."""
    doctor = users["physician"]
    meta = _upload(render_node, doctor, _series())
    status, record = _register(api, doctor, registered, patient_id, meta, meta["receipt"])
    assert status == 201, record
    assert _facts(record) == TRUTH


@pytest.mark.parametrize("study_date, kept", [("20260101", "2026-01-01"), ("2026-01-01", "2026-01-01"),
                                               (None, None), ("20261345", None), ("2026", None)])
def test_the_study_date_is_the_files_day_or_none(api, users, render_node, registered, patient_id, study_date, kept):
    """A DA (or an old writer's YYYY-MM-DD) is kept as the date; no date, or one that is no day of
    the calendar, is kept as none (the body's "today", as the demo client sends, is not used)."""
    doctor = users["physician"]
    meta = _upload(render_node, doctor, _series(study_date))
    status, record = _register(api, doctor, registered, patient_id, meta, meta["receipt"], study_date="2030-05-05")
    assert status == 201, record
    assert record["study_date"] == kept


def test_the_work_list_receipt_states_the_facts_too(api, users, render_node, registered, patient_id):
    """`POST /api/v1/records/{id}/receipt` (series that arrived without an upload, or an expired
    upload receipt) signs the same facts."""
    doctor = users["physician"]
    meta = _upload(render_node, doctor, _series())
    answer = render_node.client.post(f"/api/v1/records/{meta['id']}/receipt",
                                     headers=render_node.headers(user_id=doctor.id))
    assert answer.status_code == 200
    status, record = _register(api, doctor, registered, patient_id, meta, answer.get_json()["receipt"],
                               frames=1, modality="US")
    assert status == 201 and _facts(record) == TRUTH


def test_a_body_copy_that_is_no_possible_value_is_still_refused(api, users, render_node, registered, patient_id,
                                                                db_state):
    doctor = users["physician"]
    meta = _upload(render_node, doctor, _series())
    before = db_state()
    for bad in ({"rows": 0}, {"frames": "3"}, {"modality": "c t"}, {"study_date": "yesterday"}):
        status, answer = _register(api, doctor, registered, patient_id, meta, meta["receipt"], **bad)
        assert status == 400 and answer["error"]["code"] == "validation_error", (bad, answer)
        assert next(iter(bad)) in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("facts, named", [
    ({**TRUTH, "frames": 0}, "frames"),          # a series stored only (no renderable image)
    ({**TRUTH, "modality": ""}, "modality"),     # files naming no modality
    ({**TRUTH, "rows": "8"}, "rows"),            # not a number
    ({k: v for k, v in TRUTH.items() if k != "columns"}, "columns"),
])
def test_signed_facts_the_registry_cannot_keep_are_refused_naming_them(api, users, node, patient_id, db_state,
                                                                       facts, named):
    """What a node signs is checked by the registry's own field rules: 422, nothing stored."""
    doctor = users["physician"]
    body = record_body(node["id"], patient_id)
    receipt = signed_claims(api, node, body["id"], doctor, None, {FACTS_CLAIM: facts})
    before = db_state()
    status, answer = api.call("POST", "/api/v1/records", doctor, {**body, "receipt": receipt})
    assert status == 422 and answer["error"]["code"] == "unregistrable_record", answer
    assert named in answer["error"]["message"] and "upload them again" in answer["error"]["message"]
    assert db_state() == before


def test_facts_that_are_no_object_are_an_invalid_receipt(api, users, node, patient_id):
    doctor = users["physician"]
    body = record_body(node["id"], patient_id)
    for facts in ([8, 8, 3, "CT", None], "8x8x3 CT"):
        receipt = signed_claims(api, node, body["id"], doctor, None, {FACTS_CLAIM: facts})
        status, answer = api.call("POST", "/api/v1/records", doctor, {**body, "receipt": receipt})
        assert status == 422 and answer["error"]["code"] == "invalid_receipt", answer


def test_a_receipt_of_an_older_node_is_taken_for_what_it_signs(api, users, node, patient_id):
    """A node of a release before the facts were signed: its receipt still proves record, node,
    institution and uploader; the facts are the request's, as they were, and the audit says so."""
    doctor = users["physician"]
    body = record_body(node["id"], patient_id)
    status, record = api.call("POST", "/api/v1/records", doctor, body)  # conftest: a receipt without facts
    assert status == 201 and record["frames"] == body["frames"], record
    detail = AuditEntry.get((AuditEntry.action == "record.create") & (AuditEntry.object_id == body["id"])).detail
    assert "facts=unsigned" in detail
    missing = record_body(node["id"], str(uuid.uuid4()), content=b"another")
    del missing["rows"]
    status, answer = api.call("POST", "/api/v1/records", doctor, missing)
    assert status == 400 and answer["error"]["message"] == "rows is required"

