"""A filing undone (review of session 60): a series a modality sent, filed from the work list to the
wrong patient, whose registration the physician then deleted, stayed filed on its node: on no
patient's page, not on the work list, and `POST …/receipt` answered 409 "it is on its patient's
page". `DELETE /api/v1/records/{id}/filed` takes the mark off for whoever may file, audited."""

from __future__ import annotations

import uuid

import pytest

from tests.render.dimse_peers import close_archive, open_archive
from tests.render.test_worklist import received_series


@pytest.fixture
def archive(make_node):
    harness = open_archive(make_node)
    yield harness
    close_archive(harness)


def _listed(archive) -> list[str]:
    return [i["id"] for i in archive.client.get("/api/v1/worklist", headers=archive.headers()).get_json()["items"]]


def test_a_filed_series_whose_registration_was_deleted_goes_back_on_the_work_list(archive):
    record_id = received_series(archive)
    url = f"/api/v1/records/{record_id}/filed"
    assert archive.client.post(url, headers=archive.headers()).status_code == 200
    assert record_id not in _listed(archive)
    # the physician may not delete a modality's images: the node keeps them
    kept = archive.client.delete(f"/api/v1/records/{record_id}", headers=archive.headers())
    assert kept.status_code == 403

    refused = archive.client.post(f"/api/v1/records/{record_id}/receipt", headers=archive.headers())
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "already_filed"
    assert "it is on its patient's page" not in refused.get_json()["error"]["message"]
    assert f"DELETE /api/v1/records/{record_id}/filed" in refused.get_json()["error"]["message"]

    unfiled = archive.client.delete(url, headers=archive.headers())
    assert unfiled.status_code == 200 and unfiled.get_json() == {"id": record_id, "filed": False}
    assert record_id in _listed(archive)
    the_node = archive.app.extensions["sivr_node"]
    assert the_node.store.filed_among([record_id]) == set()  # the store's mark, which nodes sharing it read
    assert archive.client.post(f"/api/v1/records/{record_id}/receipt", headers=archive.headers()).status_code == 200

    again = archive.client.delete(url, headers=archive.headers())
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "not_filed"
    audit = the_node.models.AuditEntry
    entries = {e.action: e.detail for e in audit.select().where(audit.object_id == record_id)}
    assert "back on the work list" in entries["record.unfiled"]
    assert "registering it at the institution" in entries["record.filed"]
    assert [e.action for e in audit.select().where(audit.object_id == record_id)].count("record.unfiled") == 1


def test_a_mark_set_without_registering_is_taken_off_by_the_store_too(archive):
    """Marked filed in the store by another node sharing it (this node's catalogue does not know yet)."""
    record_id = received_series(archive)
    archive.app.extensions["sivr_node"].store.mark_filed(record_id)
    assert record_id not in _listed(archive)
    assert archive.client.delete(f"/api/v1/records/{record_id}/filed", headers=archive.headers()).status_code == 200
    assert record_id in _listed(archive)


def test_unfiling_is_for_those_who_file(archive):
    record_id = received_series(archive)
    url = f"/api/v1/records/{record_id}/filed"
    assert archive.client.post(url, headers=archive.headers()).status_code == 200
    other = str(uuid.uuid4())
    for headers in (archive.headers(institution_id=other), archive.headers("instadmin")):
        refused = archive.client.delete(url, headers=headers)
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert archive.client.delete(url).status_code == 401
    missing = archive.client.delete(f"/api/v1/records/{'0' * 64}/filed", headers=archive.headers())
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    bad = archive.client.delete("/api/v1/records/not-an-id/filed", headers=archive.headers())
    assert bad.status_code == 400 and "error" in bad.get_json()
    assert record_id not in _listed(archive)  # still filed after every refusal


def test_another_node_sharing_the_store_follows_the_unfiling_at_its_start(archive):
    """Node B, sharing the store, still has the series filed in its own catalogue when node A takes
    the mark off; B's start-up pass, which marks what an upgraded store lacks, marked it filed again,
    and the series left A's work list at B's next restart. The store now keeps that it was unfiled, and
    B follows that (its catalogue, which the store is read through here, plays B's)."""
    record_id = received_series(archive)
    the_node = archive.app.extensions["sivr_node"]
    stored = the_node.models.StoredRecord
    assert archive.client.post(f"/api/v1/records/{record_id}/filed", headers=archive.headers()).status_code == 200
    the_node.store.unmark_filed(record_id)  # node A's unfiling, which B's catalogue does not know
    assert stored.get_by_id(record_id).filed  # B's catalogue: still filed

    the_node.record_index.sync_at_start()  # B restarts
    assert the_node.store.filed_among([record_id]) == set() and not stored.get_by_id(record_id).filed
    assert record_id in _listed(archive)

    legacy = received_series(archive, series_uid="1.2.826.0.1.3680043.8.498.60.77")  # filed before the store kept marks
    stored.update(filed=True).where(stored.id == legacy).execute()
    the_node.record_index.sync_at_start()
    assert the_node.store.filed_among([legacy]) == {legacy}
    the_node.store.mark_filed(record_id)  # filed again: the unfiled mark goes
    assert the_node.store.unfiled_among([record_id]) == set()
