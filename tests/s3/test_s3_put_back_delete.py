"""A series deleted from the shared bucket, its manifest and objects then put back: the node refuses
to serve it (tests/s3/test_s3_deleted_put_back.py) and refused its DELETE the same 503, so IT had to
remove its objects by hand. An administrator now DELETEs it through the node's API: its manifest and
objects leave the bucket, its storing stays buried, and the series sent again is served (the local
store's side: tests/render/test_put_back_delete.py)."""

from __future__ import annotations

import secrets

import pytest

from tests.render.conftest import build_node, close_node
from tests.render.synthetic import stack
from tests.s3.conftest import bucket_node_settings
from tests.s3.test_s3_deleted_put_back import _backup, _put_back


@pytest.fixture
def bucket(seaweed) -> str:
    return seaweed.create_bucket(f"sivr-put-back-{secrets.token_hex(4)}")


def test_an_administrator_deletes_a_deleted_series_put_back_into_the_bucket(seaweed, bucket, tmp_path):
    root, keys, settings = bucket_node_settings(seaweed, bucket, tmp_path)
    slices = sorted(stack((1, 0, 0, 0, 1, 0), count=3))
    client = seaweed.client()
    node = build_node(root, keys, **settings)
    try:
        record_id = node.upload(slices).json["id"]
        kept = _backup(client, bucket, record_id)
        assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 204
        _put_back(client, bucket, kept)
        assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 503

        reply = node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers("instadmin"))
        assert reply.status_code == 204, reply.json
        left = client.list_objects_v2(Bucket=bucket, Prefix="inst/").get("Contents", [])
        assert not [o["Key"] for o in left if record_id in o["Key"]]
        _put_back(client, bucket, kept)  # once more: still refused
        assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 503
        assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers("instadmin")).status_code == 204

        assert node.upload(slices[:2]).status_code == 201  # sent again: a new storing, served
        reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
        assert reply.status_code == 200 and reply.json["files"] == 2, reply.json
    finally:
        close_node(node)
