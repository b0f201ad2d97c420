"""An older manifest of a series put back into the store (a restore from an older backup, or someone
with write access to the store but not the node's key): it is validly sealed, so it used to be served,
the instances appended since gone (and, after a restart, the catalogue followed it). The node now keeps
the latest commit of each series it wrote or read in its database (`store.generations`) and refuses
an older one: 503 with the fix, logged and audited, the catalogue left as it was."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from daemons.render.store import local as storage
from tests.render.conftest import NodeHarness, build_node, close_node
from tests.render.synthetic import stack
from tests.render.test_series_growth import add

IDENTITY = (1, 0, 0, 0, 1, 0)


def _slices(count: int) -> list[tuple[str, bytes]]:
    """`count` slices of one new series, in slice order (each its own SOP Instance UID)."""
    return sorted(stack(IDENTITY, count=count))


def _copy(folder: Path) -> dict[str, bytes]:
    """What a backup of the record's folder holds now."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.bin")}


def _put_back(folder: Path, kept: dict[str, bytes]) -> None:
    """The record's folder as `kept` had it (its manifest and journal; the blobs appended since stay)."""
    shutil.rmtree(folder / storage.JOURNAL, ignore_errors=True)
    for name, data in kept.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)


def _get(node: NodeHarness, record_id: str):
    return node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())


def _refused(node: NodeHarness, record_id: str, says: str) -> str:
    reply = _get(node, record_id)
    assert reply.status_code == 503, reply.json
    error = reply.json["error"]
    assert error["code"] == "store_unavailable" and says in error["message"], error
    assert "restore the record's" in error["message"] and str(node.root) not in error["message"]
    return error["message"]


def _audited(root: Path, record_id: str) -> int:
    with sqlite3.connect(root / "render.db") as database:
        return database.execute("SELECT count(*) FROM audit_entry WHERE action = 'record.rolled_back' "
                                "AND object_id = ?", (record_id,)).fetchone()[0]


def _catalogued(root: Path, record_id: str) -> int:
    with sqlite3.connect(root / "render.db") as database:
        return database.execute("SELECT count(*) FROM dicom_instance WHERE series_id = ?", (record_id,)).fetchone()[0]


def test_an_older_manifest_put_back_is_refused_after_a_restart(tmp_path, token_keys):
    slices = _slices(5)
    node = build_node(tmp_path, token_keys)
    try:
        record_id = node.upload(slices[:3]).json["id"]
        folder = tmp_path / "store" / record_id
        kept = _copy(folder)  # the series of 3, as an older backup holds it
        assert node.upload(slices[3:]).status_code in (200, 201)
        assert _get(node, record_id).json["files"] == 5
    finally:
        close_node(node)
    node = build_node(tmp_path, token_keys)  # a restart alone changes nothing
    try:
        assert _get(node, record_id).json["files"] == 5
    finally:
        close_node(node)
    _put_back(folder, kept)
    node = build_node(tmp_path, token_keys)
    try:
        _refused(node, record_id, "an older manifest of this series")
        assert _audited(tmp_path, record_id) == 1
        node.app.extensions["sivr_node"].record_index.sync()  # the catalogue does not follow it
        assert _catalogued(tmp_path, record_id) == 5
        listed = node.client.get("/api/v1/records", headers=node.headers("instadmin"))
        assert listed.status_code == 200 and record_id not in json.dumps(listed.json)
    finally:
        close_node(node)


def test_a_running_node_refuses_an_older_manifest_and_serves_the_latest_put_back(make_node):
    node = make_node(storage__manifest_refresh_s=0)
    slices = _slices(6)
    record_id = node.upload(slices[:2]).json["id"]
    folder = node.root / "store" / record_id
    older = _copy(folder)
    for one in slices[2:]:  # instance by instance, as C-STORE and STOW-RS add them: one journal part each
        assert add(node, [one]).added == 1
    assert len(list((folder / storage.JOURNAL).iterdir())) == 4
    latest = _copy(folder)

    _put_back(folder, older)
    _refused(node, record_id, "commit 1; this node wrote or read commit 5")
    _put_back(folder, {k: v for k, v in latest.items() if not k.endswith("000005.bin") or "journal" not in k})
    _refused(node, record_id, "commit 4; this node wrote or read commit 5")  # the last append's part removed
    _put_back(folder, {k: v for k, v in latest.items() if not k.endswith("000003.bin") or "journal" not in k})
    _refused(node, record_id, "the parts between are missing")  # one in the middle removed
    assert _audited(node.root, record_id) == 3
    upload = node.upload([slices[0]])  # an append to it is refused too, nothing written
    assert upload.status_code == 503, upload.json

    _put_back(folder, latest)  # IT restores the latest copy: served again, and grows again
    assert _get(node, record_id).json["files"] == 6
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
    assert node.upload(sorted(stack(IDENTITY, count=1, series=_series_uid(node, record_id)))).status_code == 201
    assert _get(node, record_id).json["files"] == 7


def _series_uid(node: NodeHarness, record_id: str) -> str:
    return node.app.extensions["sivr_node"].store.read_manifest(record_id).meta.series_uid


def test_an_earlier_storing_of_the_series_put_back_is_refused(make_node):
    """A series deleted and stored again keeps its record id: the first storing's folder, put back
    whole, is another lineage, which only this node's own write starts in a store no other node writes."""
    node = make_node(storage__manifest_refresh_s=0)
    slices = _slices(3)
    record_id = node.upload(slices).json["id"]
    folder = node.root / "store" / record_id
    first = _copy(folder)
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 204
    assert node.upload(slices[:2]).json["id"] == record_id
    shutil.rmtree(folder)
    folder.mkdir()
    _put_back(folder, first)
    _refused(node, record_id, "an earlier storing of this series")
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 204
    assert node.upload(slices).status_code == 201  # deleted and sent again: served
    assert _get(node, record_id).json["files"] == 3


def test_a_store_written_before_commits_were_counted_keeps_serving_and_growing(tmp_path, token_keys):
    """Its manifests name no commit and the node's database has none: the first read is taken as the
    latest; the first append counts from there, and the old copy put back after it is refused."""
    slices = _slices(4)
    node = build_node(tmp_path, token_keys)
    try:
        record_id = node.upload(slices[:2]).json["id"]
        store = node.app.extensions["sivr_node"].store
        legacy = store.read_manifest(record_id).to_json()  # the content alone: no lineage, no generation
    finally:
        close_node(node)
    folder = tmp_path / "store" / record_id
    store = storage.RecordStore.open(tmp_path / "store", tmp_path / "store.key")
    storage._write_durable(folder / storage.MANIFEST, store._seal(
        record_id, "manifest", json.dumps(legacy, separators=(",", ":")).encode()))
    with sqlite3.connect(tmp_path / "render.db") as database:
        database.execute("DELETE FROM store_generation")
    old = _copy(folder)

    node = build_node(tmp_path, token_keys, storage__manifest_refresh_s=0)
    try:
        assert _get(node, record_id).json["files"] == 2
        for one in slices[2:]:
            assert add(node, [one]).added == 1
        assert _get(node, record_id).json["files"] == 4
        _put_back(folder, old)
        _refused(node, record_id, "commit 0;")
    finally:
        close_node(node)
