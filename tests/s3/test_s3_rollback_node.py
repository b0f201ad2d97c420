"""A render node on a shared bucket, restarted after an older manifest object of one of its series was
put back (a restore from an older backup of the bucket, or someone with write access to it but not the
key-encryption key): it served the older series, the instances appended since gone. It now answers
503 with the fix (`store.generations`; the store-level rule and what other nodes do:
tests/s3/test_s3_rollback.py)."""

from __future__ import annotations

import secrets

import pytest

from daemons.render.store.s3 import MANIFESTS
from tests.render.conftest import build_node, close_node
from tests.render.synthetic import stack
from tests.render.test_series_growth import add
from tests.s3.conftest import bucket_node_settings


@pytest.fixture
def bucket(seaweed) -> str:
    return seaweed.create_bucket(f"sivr-rollback-{secrets.token_hex(4)}")


def test_a_render_node_on_the_bucket_refuses_the_older_manifest_after_a_restart(seaweed, bucket, tmp_path):
    """The whole node (its catalogue database, its start-up sync, its API) on the shared bucket."""
    root, (private, public), settings = bucket_node_settings(seaweed, bucket, tmp_path)
    slices = sorted(stack((1, 0, 0, 0, 1, 0), count=4))
    client = seaweed.client()
    node = build_node(root, (private, public), **settings)
    try:
        record_id = node.upload(slices[:2]).json["id"]
        key = f"inst/{MANIFESTS}{record_id}"
        older = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        for one in slices[2:]:
            assert add(node, [one]).added == 1
        reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
        assert reply.json["files"] == 4
        institution = node.institution_id
    finally:
        close_node(node)
    client.put_object(Bucket=bucket, Key=key, Body=older)
    node = build_node(root, (private, public), institution_id=institution, **settings)
    try:
        reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
        assert reply.status_code == 503, reply.json
        assert "an older manifest of this series" in reply.json["error"]["message"]
    finally:
        close_node(node)
