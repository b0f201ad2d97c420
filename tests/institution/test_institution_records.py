"""`/api/v1/records`: record metadata, registered by physicians here, readable by all (audited)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from daemons.institution.models import Node, Record, database_proxy
from shared.patient_refs import issue_patient_reference

from .conftest import INSTITUTION_B, ISSUER, at_once, record_body, reference_attacks


def _audit(api, admin, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    status, body = api.call("GET", f"/api/v1/audit?{query}", admin)
    assert status == 200
    return body["items"]


def test_physician_registers_a_record(api, users, node, patient_id):
    physician = users["physician"]
    body = record_body(node["id"], patient_id)
    status, record = api.call("POST", "/api/v1/records", physician, body)
    assert status == 201
    assert {k: record[k] for k in body} == body
    assert record["registered_by"] == physician.id
    assert record["registered_at"].endswith("Z")
    entries = _audit(api, users["admin"], action="record.create")
    assert [(e["object_id"], e["patient_id"], e["user_id"]) for e in entries] == \
        [(record["id"], patient_id, physician.id)]


def test_optional_fields_default(api, users, node, patient_id):
    body = record_body(node["id"], patient_id)
    for optional in ("record_type", "description", "study_date"):
        del body[optional]
    status, record = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 201
    assert record["record_type"] == "" and record["description"] == "" and record["study_date"] is None


def test_registering_the_same_record_on_the_same_node_again_is_200(api, users, record, patient_id, db_state):
    before = db_state()
    body = record_body(record["node_id"], patient_id)
    status, again = api.call("POST", "/api/v1/records", users["physician2"], body)
    # the same record, still the first uploader's: physician2 may read it but not relabel it
    assert status == 200 and again == {**record, "editable": False}
    assert db_state() == before


def test_same_content_for_another_patient_is_a_conflict(api, users, record, db_state):
    before = db_state()
    status, answer = api.call("POST", "/api/v1/records", users["physician"],
                              record_body(record["node_id"], str(uuid.uuid4())))
    assert status == 409 and answer["error"]["code"] == "conflict"
    assert db_state() == before


def test_a_record_of_another_patient_on_another_node_is_a_conflict(api, users, record, patient_id, db_state):
    """Nodes sharing a store serve the same record id: registering it on the second node for another
    patient put the series on both patients' pages. For the same patient it is registered there too."""
    status, other = api.call("POST", "/api/v1/nodes", users["admin"],
                             {"name": "node-2", "url": "https://render2.hospital-a.example:5003"})
    assert status == 201, other
    before = db_state()
    status, answer = api.call("POST", "/api/v1/records", users["physician"],
                              record_body(other["id"], str(uuid.uuid4())))
    assert status == 409 and answer["error"]["code"] == "conflict"
    assert db_state() == before
    status, same = api.call("POST", "/api/v1/records", users["physician"], record_body(other["id"], patient_id))
    assert status == 201 and same["id"] == record["id"] and same["node_id"] == other["id"]


@pytest.mark.parametrize("who", ["admin", "admin_b", "physician_b"])
def test_only_physicians_of_this_institution_register_records(api, users, node, patient_id, db_state, who):
    before = db_state()
    status, answer = api.call("POST", "/api/v1/records", users[who], record_body(node["id"], patient_id))
    assert status == 403 and answer["error"]["code"] == "forbidden"
    assert db_state() == before


def test_record_on_an_unknown_or_foreign_node_is_refused(api, users, node, patient_id, db_state):
    foreign = Node.create(name="theirs", url="https://b.example", institution_id=INSTITUTION_B)
    database_proxy.close()
    before = db_state()
    for node_id in (str(uuid.uuid4()), foreign.id):
        status, answer = api.call("POST", "/api/v1/records", users["physician"], record_body(node_id, patient_id))
        assert status == 400 and "node_id" in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("change, code, fragment", [
    ({"id": "ABC"}, "invalid_id", "id must be 64"),
    ({"id": "A" * 64}, "invalid_id", "id must be 64"),
    ({"id": ""}, "invalid_id", "id must be 64"),
    ({"node_id": ""}, "invalid_id", "node_id is missing or blank"),
    ({"node_id": "node-1"}, "invalid_id", "node_id"),
    ({"patient_id": "all"}, "invalid_id", "patient_id"),
    ({"patient_id": None}, "validation_error", "patient_id"),
    ({"rows": 0}, "validation_error", "rows must be between"),
    ({"rows": -5}, "validation_error", "rows"),
    ({"columns": 70000}, "validation_error", "columns"),
    ({"frames": "100"}, "validation_error", "frames must be of type int"),
    ({"frames": 1.5}, "validation_error", "frames"),
    ({"frames": True}, "validation_error", "frames"),
    ({"modality": "ct scan"}, "validation_error", "modality"),
    ({"modality": ""}, "validation_error", "modality"),
    ({"study_date": "2026-13-01"}, "validation_error", "study_date"),
    ({"study_date": "yesterday"}, "validation_error", "study_date"),
    ({"description": "x" * 2001}, "validation_error", "description"),
    ({"record_type": "x" * 65}, "validation_error", "record_type"),
    ({"registered_by": str(uuid.uuid4())}, "validation_error", "unknown field"),
    ({"description": "a\u0000b"}, "validation_error", "description must not contain control"),
    ({"record_type": "C\nT"}, "validation_error", "record_type must not contain control"),
])
def test_invalid_record_bodies_are_refused(api, users, node, patient_id, db_state, change, code, fragment):
    before = db_state()
    status, answer = api.call("POST", "/api/v1/records", users["physician"],
                              {**record_body(node["id"], patient_id), **change})
    assert status == 400, answer
    assert answer["error"]["code"] == code and fragment in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("missing", ["id", "node_id", "rows", "columns", "frames", "modality", "patient_id"])
def test_required_record_fields(api, users, node, patient_id, missing):
    body = record_body(node["id"], patient_id)
    del body[missing]
    status, answer = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 400 and answer["error"]["message"] == f"{missing} is required"


@pytest.mark.parametrize("who", ["admin", "physician", "admin_b", "physician_b"])
def test_any_physician_or_admin_reads_a_patients_records_and_it_is_audited(api, users, record, patient_id, who):
    caller = users[who]
    record = {**record, "editable": who in ("physician", "admin")}  # the uploader and an admin here
    status, listed = api.call("GET", f"/api/v1/records?patient_id={patient_id}", caller)
    assert status == 200 and listed == {"items": [record], "total": 1}
    status, read = api.call("GET", f"/api/v1/records/{record['id']}", caller)
    assert status == 200 and read == record
    entries = _audit(api, users["admin"], user_id=caller.id)
    reads = [(e["action"], e["patient_id"]) for e in entries if e["action"] in ("record.read", "record.search")]
    assert reads == [("record.read", patient_id), ("record.search", patient_id)]


@pytest.mark.parametrize("who", ["physician", "physician_b", "admin_b"])
def test_listing_records_without_a_patient_is_refused(api, users, record, who):
    status, answer = api.call("GET", "/api/v1/records", users[who])
    assert status == 400 and "patient_id" in answer["error"]["message"]
    assert "items" not in answer


def test_admin_of_this_institution_may_list_all_records(api, users, record, node, patient_id):
    other = record_body(node["id"], str(uuid.uuid4()), content=b"another")
    api.call("POST", "/api/v1/records", users["physician"], other)
    status, listed = api.call("GET", "/api/v1/records", users["admin"])
    assert status == 200 and listed["total"] == 2
    status, listed = api.call("GET", f"/api/v1/records?patient_id={patient_id}", users["admin"])
    assert listed["total"] == 1 and listed["items"][0]["id"] == record["id"]


def test_an_admins_listing_across_patients_is_audited_for_each_patient_shown(api, users, record, node,
                                                                            patient_id):
    other_patient = str(uuid.uuid4())
    api.call("POST", "/api/v1/records", users["physician"],
             record_body(node["id"], other_patient, content=b"another"))
    admin = users["admin"]
    assert api.call("GET", "/api/v1/records", admin)[1]["total"] == 2
    for shown in (patient_id, other_patient):
        entries = _audit(api, admin, patient_id=shown, action="record.search")
        assert [e["user_id"] for e in entries] == [admin.id]


def test_other_patients_records_are_not_listed(api, users, record):
    status, listed = api.call("GET", f"/api/v1/records?patient_id={uuid.uuid4()}", users["physician"])
    assert status == 200 and listed == {"items": [], "total": 0}


@pytest.mark.parametrize("query", ["patient_id=", "patient_id=%20", "patient_id=*", "patient_id=1%20OR%201=1",
                                   "node_id=", "node_id=x"])
def test_malformed_query_ids_are_400(api, users, record, patient_id, query):
    status, answer = api.call("GET", f"/api/v1/records?patient_id={patient_id}&{query}"
                              if query.startswith("node") else f"/api/v1/records?{query}", users["admin"])
    assert status == 400 and answer["error"]["code"] == "invalid_id"


def test_same_content_on_two_nodes(api, users, record, patient_id, db_state):
    admin, physician = users["admin"], users["physician"]
    _, node2 = api.call("POST", "/api/v1/nodes", admin, {"name": "node-2", "url": "https://n2.example"})
    status, copy = api.call("POST", "/api/v1/records", physician, record_body(node2["id"], patient_id))
    assert status == 201 and copy["id"] == record["id"] and copy["node_id"] == node2["id"]

    listed = api.call("GET", f"/api/v1/records?patient_id={patient_id}&node_id={node2['id']}", physician)[1]
    assert [r["node_id"] for r in listed["items"]] == [node2["id"]]
    assert api.call("GET", f"/api/v1/records/{record['id']}", physician)[1]["node_id"] == record["node_id"]
    assert api.call("GET", f"/api/v1/records/{record['id']}?node_id={node2['id']}",
                    physician)[1]["node_id"] == node2["id"]

    before = db_state()
    status, answer = api.call("DELETE", f"/api/v1/records/{record['id']}", physician)
    assert status == 409 and "node_id" in answer["error"]["message"]
    assert db_state() == before
    status, _ = api.call("DELETE", f"/api/v1/records/{record['id']}?node_id={node2['id']}", physician)
    assert status == 204
    listed = api.call("GET", f"/api/v1/records?patient_id={patient_id}", physician)[1]
    assert [r["node_id"] for r in listed["items"]] == [record["node_id"]]


@pytest.mark.parametrize("who", ["physician", "admin"])
def test_the_uploader_or_an_admin_here_deletes_records(api, users, record, patient_id, who):
    status, _ = api.call("DELETE", f"/api/v1/records/{record['id']}", users[who])
    assert status == 204
    status, answer = api.call("GET", f"/api/v1/records/{record['id']}", users["admin"])
    assert status == 404 and answer["error"]["code"] == "not_found"
    entries = _audit(api, users["admin"], action="record.delete")
    assert entries[0]["patient_id"] == patient_id and entries[0]["user_id"] == users[who].id


@pytest.mark.parametrize("who", ["admin_b", "physician_b", "physician2"])
def test_others_cannot_delete_records(api, users, record, db_state, who):
    before = db_state()
    status, answer = api.call("DELETE", f"/api/v1/records/{record['id']}", users[who])
    assert status == 403 and answer["error"]["code"] == "forbidden"
    assert db_state() == before


@pytest.mark.parametrize("bad_id", ["", "%20", "abc", "A" * 64, "0" * 63, "0" * 65, "g" * 64, "*"])
def test_blank_or_malformed_record_id(api, users, record, db_state, bad_id):
    before = db_state()
    for method in ("GET", "DELETE"):
        status, answer = api.call(method, f"/api/v1/records/{bad_id}", users["admin"])
        assert status == 400 and answer["error"]["code"] == "invalid_id", (method, bad_id)
    assert db_state() == before


def test_unknown_record_id_is_404(api, users, record, db_state):
    before = db_state()
    unknown = hashlib.sha256(b"nothing").hexdigest()
    for method in ("GET", "DELETE"):
        status, answer = api.call(method, f"/api/v1/records/{unknown}", users["physician"])
        assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = api.call("DELETE", f"/api/v1/records/{record['id']}?node_id={uuid.uuid4()}",
                              users["physician"])
    assert status == 404
    assert db_state() == before


def test_concurrent_registrations_of_one_record_make_one_row(app, api, users, node, patient_id, db_state):
    """Uploaders retry; simultaneous identical registrations answer 201 once and 200 otherwise."""
    import threading

    body = record_body(node["id"], patient_id, content=b"raced",
                       patient_reference=issue_patient_reference(api.signing_key, ISSUER, patient_id,
                                                                 users["physician"].id, 300))
    body["receipt"] = api.receipt(node["id"], body["id"], users["physician"])
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def register() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.post("/api/v1/records", json=body, headers=users["physician"].headers).status_code)

    threads = [threading.Thread(target=register) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 5 + [201]
    assert len(db_state()["record"]) == 1


def test_concurrent_registrations_of_one_record_for_two_patients_on_two_nodes_keep_one_patient(
        app, api, users, node, db_state):
    """Nodes sharing a store serve the same record id. Registered at once on two nodes for two
    patients, both passed the check that no other patient has it, and each made its row (the
    unique index is per node): one series on two patients' pages. Now one patient wins, the other
    registrations are 409."""
    status, other = api.call("POST", "/api/v1/nodes", users["admin"],
                             {"name": "node-2", "url": "https://render2.hospital-a.example:5003"})
    assert status == 201, other
    bodies = []
    for node_id in (node["id"], other["id"]):
        patient = str(uuid.uuid4())
        body = record_body(node_id, patient, content=b"raced-two",
                           patient_reference=issue_patient_reference(api.signing_key, ISSUER, patient,
                                                                     users["physician"].id, 300))
        body["receipt"] = api.receipt(node_id, body["id"], users["physician"])
        bodies.append(body)
    for _ in range(5):  # a race: a few rounds, each from no row
        with database_proxy.atomic():
            Record.delete().execute()
        statuses = at_once(app, [("POST", "/api/v1/records", bodies[n % 2]) for n in range(8)], users["physician"])
        patients = {row.patient_id for row in Record.select()}
        assert len(patients) == 1, statuses
        assert sorted(statuses).count(201) in (1, 2) and set(statuses) <= {200, 201, 409}, statuses


def test_records_of_patients_the_toplevel_did_not_vouch_for_are_refused(api, users, node, patient_id, db_state):
    before = db_state()
    for name, reference in reference_attacks(api, users, patient_id).items():
        body = record_body(node["id"], patient_id)
        if reference is not None:
            body["patient_reference"] = reference
        status, answer = api.call("POST", "/api/v1/records", users["physician"], body, references=False)
        assert status == 400 and answer["error"]["code"] == "invalid_patient_reference", (name, answer)
    assert db_state() == before


def test_records_on_a_node_this_institution_does_not_know_are_refused(api, users, node, patient_id, db_state):
    before = db_state()
    for node_id in (str(uuid.uuid4()), None):
        body = record_body(node_id or node["id"], patient_id)
        if node_id is None:
            foreign = Node.create(name="b-node", url="https://render.b.example", institution_id=INSTITUTION_B)
            body["node_id"] = foreign.id
            database_proxy.close()
        status, answer = api.call("POST", "/api/v1/records", users["physician"], body)
        assert status == 400 and "not a render node of this institution" in answer["error"]["message"]
    after = db_state()
    after["node"] = [row for row in after["node"] if "b-node" not in row]
    assert after == before
