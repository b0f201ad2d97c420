"""A series deleted from a shared bucket, its manifest and objects then put back (a restore from an old
backup of the bucket, or someone with write access to it but not the key-encryption key): the deletion
had taken the series' commit out of the node's database, so the node took the objects for a series it
never saw and served the deleted patient's images again. The deleting node now buries the storing it
deleted, and a node that sees a series stored anew buries the storing it replaced
(`store.generations`): that storing put back is refused by both (503 with the fix at the API), while
the series stored again is followed (the local store's side: tests/render/test_deleted_series_put_back.py)."""

from __future__ import annotations

import hashlib
import os
import secrets

import pytest

from daemons.render.store.generations import RecordRolledBack
from daemons.render.store.s3 import MANIFESTS, OBJECTS
from tests.render.conftest import build_node, close_node
from tests.render.synthetic import stack
from tests.s3.conftest import bucket_node_settings
from tests.s3.test_s3_rollback import FILES, _manifest, _node


@pytest.fixture
def bucket(seaweed) -> str:
    return seaweed.create_bucket(f"sivr-tombstone-{secrets.token_hex(4)}")


def _backup(client, bucket: str, record_id: str) -> dict[str, bytes]:
    """The record's manifest object and file objects, as a backup of the bucket holds them."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"inst/{OBJECTS}{record_id}/").get("Contents", [])
    keys = [f"inst/{MANIFESTS}{record_id}"] + [o["Key"] for o in listed]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def _put_back(client, bucket: str, kept: dict[str, bytes]) -> None:
    for key, body in kept.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def test_a_deleted_series_put_back_is_refused_by_the_node_that_deleted_it_and_one_that_saw_it_replaced(
        seaweed, bucket, tmp_path):
    kek = os.urandom(32)
    node_a, node_b = _node(seaweed, bucket, kek, tmp_path / "a"), _node(seaweed, bucket, kek, tmp_path / "b")
    client = seaweed.client()
    assert node_a.write_record("grow", FILES[:2], _manifest(2))
    assert len(node_b.read_manifest("grow").files) == 2
    first = _backup(client, bucket, "grow")
    assert node_a.delete("grow")
    _put_back(client, bucket, first)
    with pytest.raises(RecordRolledBack, match="a storing of this series that was deleted"):
        node_a.read_manifest_versioned("grow")

    assert node_a.delete("grow") and node_a.write_record("grow", FILES[:3], _manifest(3))  # sent again
    assert node_b.read_manifest("grow") == _manifest(3)  # node B follows the new storing
    assert node_a.read_file("grow", 2, hashlib.sha256(FILES[2]).hexdigest()) == FILES[2]
    for stale in (key for key in _backup(client, bucket, "grow") if key not in first):
        client.delete_object(Bucket=bucket, Key=stale)
    _put_back(client, bucket, first)  # the first storing in place of the second
    for node in (node_a, node_b):
        with pytest.raises(RecordRolledBack, match="an earlier storing of this series"):
            node.read_manifest_versioned("grow")


def test_a_render_node_on_the_bucket_refuses_a_deleted_series_put_back_after_a_restart(seaweed, bucket, tmp_path):
    """The whole node (its catalogue database, its start-up sync, its API) on the shared bucket."""
    root, (private, public), settings = bucket_node_settings(seaweed, bucket, tmp_path)
    slices = sorted(stack((1, 0, 0, 0, 1, 0), count=3))
    client = seaweed.client()
    node = build_node(root, (private, public), **settings)
    try:
        record_id = node.upload(slices).json["id"]
        kept = _backup(client, bucket, record_id)
        assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 204
        institution = node.institution_id
    finally:
        close_node(node)
    _put_back(client, bucket, kept)
    node = build_node(root, (private, public), institution_id=institution, **settings)
    try:
        for url in (f"/api/v1/records/{record_id}", f"/api/v1/records/{record_id}/frames/0"):
            reply = node.client.get(url, headers=node.headers())
            assert reply.status_code == 503, reply.json
            assert "a storing of this series that was deleted" in reply.json["error"]["message"]
        listed = node.client.get("/api/v1/records", headers=node.headers("instadmin"))
        assert listed.status_code == 200 and record_id not in str(listed.json)
        for key in kept:  # IT removes what was put back: the series may be sent again
            client.delete_object(Bucket=bucket, Key=key)
        assert node.upload(slices[:2]).status_code == 201
        assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json["files"] == 2
    finally:
        close_node(node)


def test_a_series_wrapped_by_a_key_this_node_lacks_is_deleted_all_the_same(seaweed, bucket, tmp_path):
    """Reading the commit to bury may not stop a deletion: a series whose key-encryption key this
    node does not hold (retired, lost) could not be deleted any more (503 "add the old key file"),
    where it was before the commit was read, and the local store deletes an unreadable record."""
    writer = _node(seaweed, bucket, os.urandom(32), tmp_path / "a")
    deleter = _node(seaweed, bucket, os.urandom(32), tmp_path / "b")
    assert writer.write_record("grow", FILES[:2], _manifest(2))
    assert deleter.delete("grow")
    assert not writer.exists("grow")
    assert not seaweed.client().list_objects_v2(Bucket=bucket, Prefix=f"inst/{OBJECTS}grow/").get("Contents")
