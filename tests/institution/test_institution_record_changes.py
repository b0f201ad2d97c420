"""Correcting or deleting a registered record (issue 15, item 1): who may, what the audit keeps.

A series saved under another series' label must be correctable by whoever uploaded it (and by the
institution's administrators), never silently by anyone else; the audit log keeps the label it
had before, so a report read under the wrong label can be traced.
"""

from __future__ import annotations

import json
import uuid

import pytest

from shared.audit import AUDIT_VALUE_CHARS

from .conftest import INSTITUTION_B, User, record_body

FIX = {"record_type": "MR", "description": "MR knee, sagittal PD"}


def _audit(api, admin, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    status, body = api.call("GET", f"/api/v1/audit?{query}", admin)
    assert status == 200
    return body["items"]


@pytest.mark.parametrize("who", ["physician", "admin"])
def test_the_uploader_or_an_admin_here_corrects_the_labels(api, users, record, patient_id, who):
    status, changed = api.call("PATCH", f"/api/v1/records/{record['id']}", users[who], FIX)
    assert status == 200, changed
    assert {k: changed[k] for k in FIX} == FIX
    unchanged = {k: v for k, v in record.items() if k not in (*FIX, "editable")}
    assert {k: changed[k] for k in unchanged} == unchanged
    listed = api.call("GET", f"/api/v1/records?patient_id={patient_id}", users["physician2"])[1]["items"]
    assert [(r["record_type"], r["description"]) for r in listed] == [("MR", "MR knee, sagittal PD")]

    [entry] = _audit(api, users["admin"], action="record.update")
    assert (entry["object_id"], entry["patient_id"], entry["user_id"]) == (record["id"], patient_id, users[who].id)
    assert 'record_type: "CT" -> "MR"' in entry["detail"]
    assert 'description: "Abdomen CT" -> "MR knee, sagittal PD"' in entry["detail"]
    assert f"node_id={record['node_id']}" in entry["detail"]


def test_one_field_alone_changes_only_that_field(api, users, record):
    status, changed = api.call("PATCH", f"/api/v1/records/{record['id']}", users["physician"], {"description": ""})
    assert status == 200 and changed["description"] == "" and changed["record_type"] == "CT"
    [entry] = _audit(api, users["admin"], action="record.update")
    assert entry["detail"].endswith('description: "Abdomen CT" -> ""')


@pytest.mark.parametrize("who", ["physician2", "admin_b", "physician_b"])
def test_others_may_not_change_a_record(api, users, record, db_state, who):
    before = db_state()
    status, answer = api.call("PATCH", f"/api/v1/records/{record['id']}", users[who], FIX)
    assert status == 403 and answer["error"]["code"] == "forbidden", answer
    assert "registered the record" in answer["error"]["message"] or who != "physician2"
    assert db_state() == before


def test_editable_tells_each_caller_what_the_server_allows(api, users, record, patient_id):
    path = f"/api/v1/records/{record['id']}"
    assert record["editable"] is True  # the uploader's own answer to the registration
    assert {who: api.call("GET", path, users[who])[1]["editable"]
            for who in ("physician", "physician2", "admin", "admin_b", "physician_b")} == {
        "physician": True, "physician2": False, "admin": True, "admin_b": False, "physician_b": False}
    listed = api.call("GET", f"/api/v1/records?patient_id={patient_id}", users["physician2"])[1]["items"]
    assert [r["editable"] for r in listed] == [False]


def test_deletion_is_audited_with_the_labels_it_removed(api, users, record, patient_id):
    status, _ = api.call("DELETE", f"/api/v1/records/{record['id']}", users["physician"])
    assert status == 204
    [entry] = _audit(api, users["admin"], action="record.delete")
    assert entry["patient_id"] == patient_id
    assert 'record_type: "CT"' in entry["detail"] and 'description: "Abdomen CT"' in entry["detail"]


@pytest.mark.parametrize("body, fragment", [
    ({}, "at least one"),
    ({"patient_id": str(uuid.uuid4())}, "unknown field"),
    ({"node_id": str(uuid.uuid4())}, "unknown field"),
    ({"frames": 1}, "unknown field"),
    ({"description": "x" * 2001}, "longer than"),
    ({"record_type": "x" * 65}, "longer than"),
    ({"record_type": "CT\nMR"}, "control characters"),
    ({"description": 5}, "must be of type"),
    ({"record_type": None}, "must be of type"),
])
def test_only_the_labels_change_and_bad_values_are_400(api, users, record, db_state, body, fragment):
    before = db_state()
    status, answer = api.call("PATCH", f"/api/v1/records/{record['id']}", users["physician"], body)
    assert status == 400 and answer["error"]["code"] == "validation_error", answer
    assert fragment in answer["error"]["message"]
    assert db_state() == before


def test_non_json_bodies_are_400(api, users, record, db_state):
    before = db_state()
    for raw in (b"", b"[]", b"{", b"null"):
        response = api.client.patch(f"/api/v1/records/{record['id']}", data=raw, content_type="application/json",
                                    headers=users["physician"].headers)
        assert response.status_code == 400 and "error" in response.get_json()
    assert db_state() == before


def test_unknown_malformed_or_ambiguous_records(api, users, record, patient_id, db_state):
    before = db_state()
    physician = users["physician"]
    status, answer = api.call("PATCH", f"/api/v1/records/{'b' * 64}", physician, FIX)
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = api.call("PATCH", "/api/v1/records/nope", physician, FIX)
    assert status == 400 and answer["error"]["code"] == "invalid_id"
    status, answer = api.call("PATCH", f"/api/v1/records/{record['id']}?node_id=x", physician, FIX)
    assert status == 400 and answer["error"]["code"] == "invalid_id"
    assert db_state() == before
    _, node2 = api.call("POST", "/api/v1/nodes", users["admin"], {"name": "node-2", "url": "https://n2.example"})
    status, _ = api.call("POST", "/api/v1/records", physician, record_body(node2["id"], patient_id))
    assert status == 201
    status, answer = api.call("PATCH", f"/api/v1/records/{record['id']}", physician, FIX)
    assert status == 409 and "node_id" in answer["error"]["message"]
    status, changed = api.call("PATCH", f"/api/v1/records/{record['id']}?node_id={node2['id']}", physician, FIX)
    assert status == 200 and changed["node_id"] == node2["id"] and changed["description"] == FIX["description"]
    first = api.call("GET", f"/api/v1/records/{record['id']}?node_id={record['node_id']}", physician)[1]
    assert first["description"] == "Abdomen CT"


def test_long_values_are_cut_in_the_log_but_both_fields_stay(api, users, record):
    long = "L" * 2000
    status, _ = api.call("PATCH", f"/api/v1/records/{record['id']}", users["physician"],
                         {"description": long, "record_type": "MR"})
    assert status == 200
    [entry] = _audit(api, users["admin"], action="record.update")
    assert 'record_type: "CT" -> "MR"' in entry["detail"]
    assert f"…({len(json.dumps(long))} chars)" in entry["detail"]
    assert len(entry["detail"]) < 2000 and len(long) > AUDIT_VALUE_CHARS


def test_an_uploader_who_moved_institution_no_longer_changes_records(api, users, record, issuer, db_state):
    """The same user id with a token for institution B (the toplevel moved them): no longer the uploader here."""
    uploader = users["physician"]
    token, _ = issuer.issue(uploader.id, uploader.username, "physician", INSTITUTION_B)
    moved = User(uploader.id, uploader.username, "physician", INSTITUTION_B, token)
    before = db_state()
    for method, body in (("PATCH", FIX), ("DELETE", None)):
        status, answer = api.call(method, f"/api/v1/records/{record['id']}", moved, body)
        assert status == 403 and answer["error"]["code"] == "forbidden"
    assert db_state() == before
