"""A series registered on two nodes at once is one patient's, whatever release each node runs.

Two render nodes share a store, so they serve the same record id; one of them is upgraded and signs
the series' study with its receipt, the other (of a release before) does not. Registering the series
on each at the same moment for two patients: the registration with the study took only the study's
lock, the other only the record's, so neither waited for the other, each found the series registered
nowhere, and both answered 201: one series on two patients' pages (`_already_registered` is checked
under the record's lock for exactly that). Now a registration always holds the record's lock, and
the study's besides where its receipt states one (`records._registered_exclusively`).

PostgreSQL only: SQLite takes one write lock for every registration, whatever its name.
"""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from daemons.institution.models import Record, database_proxy
from shared.patient_refs import issue_patient_reference

from .conftest import ISSUER, record_body
from .test_institution_hostile_receipts import signed_claims

PATIENT = {"first_name": "Jane", "last_name": "Doe", "birth_date": "1961-04-12"}
FACTS = {"rows": 8, "columns": 8, "frames": 3, "modality": "CT", "study_date": "2026-01-01"}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_series_registered_on_an_old_and_a_new_node_at_once_is_one_patients(app, api, users, database_url):
    doctor = users["physician"]
    nodes = []
    for number in (1, 2):
        status, node = api.call("POST", "/api/v1/nodes", users["admin"],
                                {"name": f"node-{number}", "url": f"https://render{number}.hospital-a.example:5003"})
        assert status == 201, node
        nodes.append(node)
    upgraded, older = nodes
    patient_a, patient_b = str(uuid.uuid4()), str(uuid.uuid4())
    body = record_body(upgraded["id"], patient_a, content=b"shared-store-series")
    record_id = body["id"]
    body["receipt"] = signed_claims(api, upgraded, record_id, doctor, None,
                                    {"facts": {**FACTS, "study_uid": "1.2.840.777.1"}})
    body["patient_reference"] = issue_patient_reference(api.signing_key, ISSUER, patient_a, doctor.id, 300,
                                                        patient=PATIENT)
    answers: list[int] = []
    client = app.test_client()

    def register_on_the_upgraded_node() -> None:
        answers.append(client.post("/api/v1/records", json=body, headers=doctor.headers).status_code)

    # the older node's registration of the same series for patient B, in flight: it holds the record's
    # lock, has found the series registered nowhere, and writes its row (as `register_record` does)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sivr-record-{record_id}",))
        sender = threading.Thread(target=register_on_the_upgraded_node)
        sender.start()
        sender.join(timeout=2)
        other.execute("INSERT INTO record (id, node_id, rows, columns, frames, modality, record_type, patient_id, "
                      "description, registered_by, registered_at) VALUES (%s, %s, 8, 8, 3, 'CT', 'CT', %s, '', %s, "
                      "now())", (record_id, older["id"], patient_b, doctor.id))
        other.commit()
    sender.join(timeout=30)
    assert not sender.is_alive()
    patients = {r.patient_id for r in Record.select().where(Record.id == record_id)}
    database_proxy.close()
    assert answers == [409], f"answered {answers}: the series is now filed to {len(patients)} patients"
    assert patients == {patient_b}
