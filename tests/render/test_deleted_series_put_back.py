"""A series DELETEd from the node, its store folder then put back (an old backup restored, someone with
write access to the store volume but not the key): its manifest is validly sealed, and the deletion had
taken the series' commit out of the node's database, so the node adopted the folder as a new series
and served the deleted patient's images again. The deletion now leaves a tombstone of the series'
storing (`store.generations`): that storing put back is refused as a rollback is (503 with the fix,
audited, left out of lists, nothing served), while the series sent again (a new storing under the same
Series Instance UID) is stored and served. What was put back is IT's to remove from the store (the
node holds no row of it to DELETE)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import peewee

from daemons.render.models import make_models
from tests.render.conftest import NodeHarness, build_node, close_node
from tests.render.synthetic import stack
from tests.render.test_series_growth import add

IDENTITY = (1, 0, 0, 0, 1, 0)


def _slices(count: int) -> list[tuple[str, bytes]]:
    return sorted(stack(IDENTITY, count=count))


def _refused(node: NodeHarness, record_id: str) -> None:
    """Nothing of the record is served, and the answer says why and what to do."""
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 503, reply.json
    error = reply.json["error"]
    assert error["code"] == "store_unavailable", error
    assert "deleted" in error["message"], error
    assert str(node.root) not in error["message"]
    frame = node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers())
    assert frame.status_code == 503, frame.json
    load = node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert load.status_code == 503, load.json
    listed = node.client.get("/api/v1/records", headers=node.headers("instadmin"))
    assert listed.status_code == 200 and record_id not in json.dumps(listed.json)


def _audited(root: Path, record_id: str) -> int:
    with sqlite3.connect(root / "render.db") as database:
        return database.execute("SELECT count(*) FROM audit_entry WHERE action = 'record.rolled_back' "
                                "AND object_id = ?", (record_id,)).fetchone()[0]


def _delete(node: NodeHarness, record_id: str) -> None:
    reply = node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 204, reply.json


def test_a_deleted_series_put_back_is_refused_after_a_restart(tmp_path, token_keys):
    slices = _slices(3)
    node = build_node(tmp_path, token_keys)
    try:
        record_id = node.upload(slices).json["id"]
        folder = tmp_path / "store" / record_id
        aside = tmp_path / "backup"
        shutil.copytree(folder, aside)  # what a backup of the store holds
        _delete(node, record_id)
        institution = node.institution_id  # a record's id is its institution's and series'
    finally:
        close_node(node)
    shutil.copytree(aside, folder)  # the backup restored, or the folder put back by hand
    node = build_node(tmp_path, token_keys, institution_id=institution)  # its start-up sync meets the folder
    try:
        _refused(node, record_id)
        assert _audited(tmp_path, record_id) == 1
        node.app.extensions["sivr_node"].record_index.sync()  # nor does a later sync adopt it
        _refused(node, record_id)
        assert node.upload(slices[:2]).status_code == 503  # nor is anything appended onto it
        shutil.rmtree(folder)  # the fix the message gives: IT removes it, the series may be sent again
        assert node.upload(slices[:2]).status_code == 201
        reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
        assert reply.status_code == 200 and reply.json["files"] == 2
    finally:
        close_node(node)


def test_a_running_node_refuses_a_deleted_series_put_back_and_takes_it_sent_again(make_node):
    node = make_node(storage__manifest_refresh_s=0)
    slices = _slices(3)
    record_id = node.upload(slices).json["id"]
    folder = node.root / "store" / record_id
    aside = node.root / "backup"
    shutil.copytree(folder, aside)
    _delete(node, record_id)
    shutil.copytree(aside, folder)
    _refused(node, record_id)
    assert _audited(node.root, record_id) == 1
    shutil.rmtree(folder)

    assert node.upload(slices).status_code == 201  # a modality sends the series again: a new storing
    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json["files"] == 3
    _delete(node, record_id)
    shutil.copytree(aside, folder)  # the first storing, put back after the second was deleted
    _refused(node, record_id)


def test_a_database_of_the_previous_schema_gets_the_tombstones_table(tmp_path, token_keys):
    """The table is new: the upgrade at start-up makes it, empty (series deleted before are not known)."""
    node = build_node(tmp_path, token_keys)
    close_node(node)
    database = peewee.SqliteDatabase(tmp_path / "render.db")
    database.execute_sql("DROP TABLE store_tombstone")  # the schema of the release before
    database.close()
    node = build_node(tmp_path, token_keys)
    try:
        record_id = node.upload(_slices(2)).json["id"]
        aside = tmp_path / "backup"
        shutil.copytree(tmp_path / "store" / record_id, aside)
        _delete(node, record_id)
        shutil.copytree(aside, tmp_path / "store" / record_id)
        _refused(node, record_id)
    finally:
        close_node(node)
    database = peewee.SqliteDatabase(tmp_path / "render.db")
    assert make_models(database).catalogue.StoreTombstone.select().count() == 1
    database.close()


def test_an_older_copy_put_back_in_place_of_a_quarantined_series_is_refused(make_node):
    """Quarantine made the node forget the series' commit: whoever could write the store damaged its
    manifest (so the node moved it aside), then put an older copy back, which was served as new. The
    node now keeps the commit: the older copy is refused, the latest one (IT's restore) served."""
    node = make_node(storage__manifest_refresh_s=0)
    slices = _slices(4)
    record_id = node.upload(slices[:2]).json["id"]
    folder = node.root / "store" / record_id
    older, latest = node.root / "older", node.root / "latest"
    shutil.copytree(folder, older)
    for one in slices[2:]:
        assert add(node, [one]).added == 1
    shutil.copytree(folder, latest)
    manifest = folder / "manifest.bin"
    manifest.write_bytes(manifest.read_bytes()[:-1] + bytes([manifest.read_bytes()[-1] ^ 1]))
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 422 and reply.json["error"]["code"] == "store_corrupt", reply.json
    shutil.copytree(older, folder)
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 503 and "an older manifest of this series" in reply.json["error"]["message"]
    shutil.rmtree(folder)
    shutil.copytree(latest, folder)  # IT restores the latest copy: served
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 200 and reply.json["files"] == 4, reply.json


def test_a_delete_cut_off_before_its_tombstone_is_written_leaves_the_series_in_place(make_node, monkeypatch):
    """The node stopped (or its database failed) between taking the series out of the store and
    burying its storing: the series was gone without a tombstone, so its folder put back later was
    served again. The storing is now buried first: cut off there, the series is still in place, and the
    delete sent again removes it for good."""
    node = make_node(storage__manifest_refresh_s=0)
    record_id = node.upload(_slices(3)).json["id"]
    folder = node.root / "store" / record_id
    aside = node.root / "backup"
    shutil.copytree(folder, aside)
    generations = node.app.extensions["sivr_node"].store._generations

    def cut_off(*_args) -> None:
        failure = peewee.OperationalError("database is locked")
        failure.orig = sqlite3.OperationalError("database is locked")  # as peewee wraps a driver's error
        raise failure

    monkeypatch.setattr(generations, "deleted", cut_off)
    reply = node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 503, reply.json
    monkeypatch.undo()
    assert folder.exists()  # nothing half-done: the series is where it was
    _delete(node, record_id)
    shutil.copytree(aside, folder)
    _refused(node, record_id)
