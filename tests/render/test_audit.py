"""Every read of patient data on a render node is audited, and its record list is scoped.

Image streams (frames, reformats, 3D views, load status) give one entry per user, record and
viewing session (the token's `sid`) with counts and first/last times; the record list is for the
node's institution only, across patients for its admins only, and each record it shows is audited.
"""

from __future__ import annotations

import json
import time
import uuid

import peewee
import pytest
from flask import Flask, g
from pydicom.uid import generate_uid

from daemons.render.view_audit import ViewAudit
from shared.audit import make_audit_model
from shared.db import close_database, connect_database
from shared.tokens import Identity
from tests.render.synthetic import dataset, to_bytes


def _series(patient_id: str, name: str, slices: int = 4) -> list[tuple[str, bytes]]:
    series = f"1.2.826.0.1.{uuid.uuid4().int % 10**12}"
    files = []
    for z in range(slices):
        ds = dataset(16, 16, series=series, position=float(z))
        ds.PatientID, ds.PatientName = patient_id, name
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["study of", patient_id])  # a study belongs to one patient
        files.append((f"{z}.dcm", to_bytes(ds)))
    return files


def _stored(node, patient_id: str = "P-1", name: str = "Doe^Jane") -> str:
    reply = node.upload(_series(patient_id, name))
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(30)
    return record_id


def _audit(node, **query) -> list[dict]:
    reply = node.client.get("/api/v1/audit", headers=node.headers(role="instadmin"), query_string=query)
    assert reply.status_code == 200, reply.json
    return reply.json["items"]


def _views(node) -> dict[tuple[str, str], dict]:
    return {(e["user_id"], json.loads(e["detail"])["session"]): e for e in _audit(node, action="record.view")}


def _flush(node) -> int:
    return node.app.extensions["sivr_view_audit"].flush()


@pytest.fixture
def quiet_node(make_node):
    """A node whose timer does not flush during the test: only the test's own flushes write."""
    harness = make_node(audit__flush_s=60)
    yield harness
    harness.registry.shutdown()
    harness.app.extensions["sivr_view_audit"].close()


def test_image_reads_give_one_entry_per_user_record_and_session_with_counts(quiet_node):
    node = quiet_node
    record_id = _stored(node)
    doctor = str(uuid.uuid4())
    session_a, session_b = node.headers(user_id=doctor), node.headers(user_id=doctor)
    for index in (0, 1, 2, 0):
        reply = node.client.get(f"/api/v1/records/{record_id}/frames/{index}", headers=session_a,
                                environ_base={"REMOTE_ADDR": "10.0.0.7"})
        assert reply.status_code == 200
    etag = reply.headers["ETag"]
    again = node.client.get(f"/api/v1/records/{record_id}/frames/0", headers={**session_a, "If-None-Match": etag})
    assert again.status_code == 304  # the browser shows its cached copy: still a view
    assert node.client.get(f"/api/v1/records/{record_id}/status", headers=session_a).status_code == 200
    assert node.client.get(f"/api/v1/records/{record_id}/mpr/coronal/3", headers=session_a).status_code == 200
    assert node.client.get(f"/api/v1/records/{record_id}/frames/1", headers=session_b).status_code == 200
    other = str(uuid.uuid4())
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/1", headers=node.headers(user_id=other))
    assert reply.status_code == 200
    assert node.client.get(f"/api/v1/records/{record_id}/frames/99", headers=session_a).status_code == 404

    assert _audit(node, action="record.view") == []  # counted in memory, written by the flush
    assert _flush(node) == 3
    views = _views(node)
    assert len(views) == 3 and {user for user, _ in views} == {doctor, other}
    first = next(e for (user, _), e in views.items() if user == doctor and json.loads(e["detail"])["frame"] == 5)
    detail = json.loads(first["detail"])
    assert detail["mpr"] == 1 and detail["volume"] == 0 and detail["status"] == 1
    assert first["object_id"] == record_id and first["client_ip"] == "10.0.0.7"
    assert first["at"] == detail["first_at"] and detail["first_at"] <= detail["last_at"]
    assert sorted(json.loads(e["detail"])["frame"] for e in views.values()) == [1, 1, 5]

    for index in (2, 3):
        node.client.get(f"/api/v1/records/{record_id}/frames/{index}", headers=session_a)
    assert _flush(node) == 1 and _flush(node) == 0
    updated = _views(node)
    assert len(updated) == 3  # the same row, updated: the log stays one line per viewing session
    row = updated[(doctor, detail["session"])]
    assert row["id"] == first["id"] and row["at"] == first["at"]
    assert json.loads(row["detail"])["frame"] == 7 and json.loads(row["detail"])["last_at"] >= detail["last_at"]


def test_image_views_are_written_on_the_configured_period(make_node):
    node = make_node(audit__flush_s=0.5)
    try:
        record_id = _stored(node)
        assert node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers()).status_code == 200
        deadline = time.monotonic() + 10
        while not _audit(node, action="record.view") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_audit(node, action="record.view")) == 1
    finally:
        node.registry.shutdown()
        node.app.extensions["sivr_view_audit"].close()


def test_view_audit_flush_period_is_checked(make_node):
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match="audit.flush_s"):
        make_node(audit__flush_s=0)


def test_the_node_audit_log_is_for_the_admins_of_its_institution(node):
    record_id = _stored(node)
    node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers())
    _flush(node)
    assert len(_audit(node, action="record.view")) == 1
    assert [e["action"] for e in _audit(node, object_id=record_id)] == ["record.view", "record.load", "record.upload"]
    assert _audit(node, object_id="f" * 64) == []
    for headers in (node.headers(), node.headers(role="instadmin", institution_id=str(uuid.uuid4())),
                    node.headers(institution_id=str(uuid.uuid4()))):
        reply = node.client.get("/api/v1/audit", headers=headers)
        assert reply.status_code == 403 and reply.json["error"]["code"] == "forbidden"


def test_refused_requests_are_audited_as_access_denied(node):
    """As on the other layers (`shared.audit.audit_denials`): who was refused what, and why."""
    other = str(uuid.uuid4())
    assert node.client.get("/api/v1/audit", headers=node.headers()).status_code == 403
    assert node.client.delete(f"/api/v1/records/{'a' * 64}",
                              headers=node.headers(institution_id=other)).status_code == 403
    entries = {e["object_type"]: e for e in _audit(node, action="access.denied")}
    assert entries.keys() == {"request", "record"}
    assert entries["request"]["username"] == "physician-user"
    assert entries["request"]["detail"] == ("GET /api/v1/audit: this action needs the role sysadmin or instadmin; "
                                            "you are physician")
    assert entries["record"]["object_id"] == "a" * 64
    assert entries["record"]["detail"].startswith(f"DELETE /api/v1/records/{'a' * 64}: deleting records of this node")


def test_record_list_is_scoped_like_the_institution_layer_and_audited(node):
    jane = _stored(node, "P-1", "Doe^Jane")
    john = _stored(node, "P-2", "Roe^John")
    listing = "/api/v1/records"

    for outsider in (node.headers(institution_id=str(uuid.uuid4())),
                     node.headers(role="instadmin", institution_id=str(uuid.uuid4()))):
        for query in ("", "?patient_id_dicom=P-1"):
            reply = node.client.get(listing + query, headers=outsider)
            assert reply.status_code == 403 and reply.json["error"]["code"] == "forbidden"

    unnamed = node.client.get(listing, headers=node.headers())
    assert unnamed.status_code == 400 and "patient_id_dicom" in unnamed.json["error"]["message"]

    doctor = str(uuid.uuid4())
    named = node.client.get(listing + "?patient_id_dicom=P-1", headers=node.headers(user_id=doctor)).json
    assert named["total"] == 1 and [m["id"] for m in named["items"]] == [jane]
    assert named["items"][0]["patient_name"] == "Doe^Jane"
    assert node.client.get(listing + "?patient_id_dicom=P-9", headers=node.headers()).json["total"] == 0

    everything = node.client.get(listing, headers=node.headers(role="instadmin")).json
    assert everything["total"] == 2 and {m["id"] for m in everything["items"]} == {jane, john}
    # the same rule as a QIDO-RS search (shared.access.require_query_scope): a system administrator,
    # whatever institution the token names, administers this one too
    system = node.client.get(listing, headers=node.headers(role="sysadmin", institution_id=str(uuid.uuid4())))
    assert system.status_code == 200 and system.json["total"] == 2

    searches = _audit(node, action="record.search")
    by_doctor = [e for e in searches if e["user_id"] == doctor]
    assert [(e["object_id"], e["detail"]) for e in by_doctor] == [(jane, "patient_id_dicom=P-1 results=1")]
    assert any(e["object_id"] is None and e["detail"] == "patient_id_dicom=P-9 results=0" for e in searches)
    assert {e["object_id"] for e in searches if e["detail"] == "patient_id_dicom= results=2"} == {jane, john}


def test_a_patient_id_longer_than_any_is_refused_not_cut_to_another_patients(node):
    """`patient_id_dicom` of 65 characters was cut to 64 and listed the records of the patient whose
    64-character ID is its first 64: another patient. Longer than any stored ID is 400, naming the limit."""
    long_id = "P" * 64
    record = _stored(node, long_id, "Long^Id")
    listing = "/api/v1/records"
    found = node.client.get(listing, query_string={"patient_id_dicom": long_id}, headers=node.headers()).json
    assert [m["id"] for m in found["items"]] == [record]
    reply = node.client.get(listing, query_string={"patient_id_dicom": long_id + "X"}, headers=node.headers())
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error", reply.json
    assert "patient_id_dicom" in reply.json["error"]["message"] and "64" in reply.json["error"]["message"]


def test_a_failed_write_keeps_the_counts_for_the_next_flush(tmp_path):
    database = peewee.SqliteDatabase(str(tmp_path / "audit.db"))
    model = make_audit_model(database)
    audit = ViewAudit(model, flush_s=60)
    with Flask(__name__).test_request_context(environ_base={"REMOTE_ADDR": "10.0.0.1"}):
        g.identity = Identity("u-1", "doc", "physician", "i-1", "sid-1", 0, 0)
        audit.note("frame", "e" * 64)
    assert audit.flush() == 0  # no table yet: the write fails, nothing is lost
    database.create_tables([model])
    assert audit.flush() == 1
    assert json.loads(model.get().detail)["frame"] == 1
    audit.close()


@pytest.mark.postgres
def test_an_image_view_from_a_peer_address_longer_than_the_column_is_flushed_cut(pg_database_factory):
    """The stream's first address is the entry's `client_ip`: longer than its 64 characters (an IPv6
    address with a zone id), PostgreSQL refused every flush, and the counts waited for ever. It is
    stored cut, ending in `…` (`shared.audit.stored_address`); the detail keeps every address whole."""
    address = "fe80::a00:27ff:fe4e:66a1%" + "veth-a1b2c3d4e5f6-" * 4
    database = connect_database(pg_database_factory())
    model = make_audit_model(database)
    database.create_tables([model])
    audit = ViewAudit(model, flush_s=60)
    try:
        with Flask(__name__).test_request_context(environ_base={"REMOTE_ADDR": address}):
            g.identity = Identity("u-1", "doc", "physician", "i-1", "sid-1", 0, 0)
            audit.note("frame", "e" * 64)
        assert audit.flush() == 1
        entry = model.get()
        assert entry.client_ip == address[:63] + "…"
        assert json.loads(entry.detail)["addresses"] == [address]
    finally:
        audit.close()  # its last flush, before the database goes
        close_database(database)
