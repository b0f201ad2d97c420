"""A damaged series the record index meets is quarantined by the node's one rule (session 61).

`Node.quarantine` moves a damaged series aside, drops its catalogue rows, audits `record.quarantined`
once and catches an OSError of the move. The record index (`RecordIndex._add`) quarantined on its
own, with `store.quarantine`, a damaged series the catalogue did not know yet (one stored by another
node sharing the store, found by a request, by the sync before a record list, or by the start-up
scan): no audit entry at all, and a move aside that failed (a file named `.quarantine` in the way)
went up as a 500 at the next read. Now the index is given the node's quarantine (`app.py`), and the
start-up scan runs once the node exists, inside the app.
"""

from __future__ import annotations

from daemons.render.catalogue.generation_book import NODE_ACTOR
from daemons.render.catalogue.index import forget_series
from tests.render.test_put_back_delete import SLICES


def _unknown_and_damaged(harness) -> str:
    """A stored series whose manifest no longer authenticates (one byte flipped on disk) and that the
    catalogue does not know (as one another node sharing the store stored): its record id."""
    record_id = harness.upload(SLICES).json["id"]
    manifest = harness.root / "store" / record_id / "manifest.bin"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    the_node = harness.app.extensions["sivr_node"]
    the_node.forget(record_id)
    the_node.models.StoredRecord.delete_by_id(record_id)
    forget_series(the_node.models.catalogue, record_id)
    return record_id


def _audited(harness, record_id: str) -> list[dict]:
    reply = harness.client.get("/api/v1/audit", headers=harness.headers(role="instadmin"),
                               query_string={"object_id": record_id, "action": "record.quarantined"})
    assert reply.status_code == 200, reply.json
    return reply.json["items"]


def _moved_aside_and_audited_once(harness, record_id: str) -> None:
    aside = list((harness.root / "store" / ".quarantine").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(record_id), aside
    entries = _audited(harness, record_id)
    assert len(entries) == 1, entries
    assert entries[0]["username"] == NODE_ACTOR and entries[0]["user_id"] == "", entries[0]
    assert "damaged" in entries[0]["detail"] and str(aside[0]) in entries[0]["detail"], entries[0]["detail"]
    again = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
    assert again.status_code == 404, again.json
    assert len(_audited(harness, record_id)) == 1


def test_a_request_for_an_unknown_damaged_series_audits_its_quarantine(make_node):
    harness = make_node(storage__manifest_refresh_s=0)
    record_id = _unknown_and_damaged(harness)

    reply = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
    assert reply.status_code == 422, reply.json
    _moved_aside_and_audited_once(harness, record_id)


def test_the_sync_before_a_record_list_audits_its_quarantine(make_node):
    harness = make_node(storage__manifest_refresh_s=0, storage__catalogue_refresh_s=0)
    record_id = _unknown_and_damaged(harness)

    listed = harness.client.get("/api/v1/records", headers=harness.headers(role="instadmin"))
    assert listed.status_code == 200, listed.json
    assert record_id not in {item["id"] for item in listed.json["items"]}
    _moved_aside_and_audited_once(harness, record_id)


def test_the_start_up_scan_audits_its_quarantine(make_node):
    first = make_node(storage__manifest_refresh_s=0)
    record_id = _unknown_and_damaged(first)

    restarted = make_node(root=first.root, institution_id=first.institution_id, storage__manifest_refresh_s=0)
    assert not (restarted.root / "store" / record_id).exists()
    _moved_aside_and_audited_once(restarted, record_id)


def test_a_failed_move_aside_met_by_the_index_is_audited_not_a_500(make_node):
    harness = make_node(storage__manifest_refresh_s=0)
    record_id = _unknown_and_damaged(harness)
    (harness.root / "store" / ".quarantine").write_text("in the way")  # the move aside fails (an OSError)

    for attempt in (1, 2):
        reply = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
        assert reply.status_code == 422, reply.json
        assert (harness.root / "store" / record_id / "manifest.bin").is_file()
        entries = _audited(harness, record_id)
        assert len(entries) == attempt, entries  # it stays in place and is refused (and audited) at each read
        assert all("could not be moved aside" in entry["detail"] for entry in entries), entries


def test_a_failed_move_aside_at_start_up_is_audited_and_the_node_starts(make_node):
    first = make_node(storage__manifest_refresh_s=0)
    record_id = _unknown_and_damaged(first)
    (first.root / "store" / ".quarantine").write_text("in the way")

    restarted = make_node(root=first.root, institution_id=first.institution_id, storage__manifest_refresh_s=0)
    entries = _audited(restarted, record_id)
    assert len(entries) == 1 and "could not be moved aside" in entries[0]["detail"], entries
    assert restarted.client.get("/api/v1/records", headers=restarted.headers(role="instadmin")).status_code == 200
