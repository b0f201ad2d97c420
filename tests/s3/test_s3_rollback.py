"""An older manifest object put back into the bucket (a restore from an older backup of the bucket,
or someone with write access to it but not the key-encryption key): it is validly sealed, so every
node served the older series. Each node now refuses a manifest older than the latest it noted in its
own database (`store.generations`), while what other nodes sharing the bucket do (appends, analyses,
a series deleted and stored again) is followed."""

from __future__ import annotations

import hashlib
import os
import secrets

import peewee
import pytest

from daemons.render.catalogue.generation_book import CatalogueGenerationBook
from daemons.render.models import make_models
from daemons.render.store.envelope import KeyRing
from daemons.render.store.generations import RecordRolledBack
from daemons.render.store.manifest import JournalEntry
from daemons.render.store.s3 import MANIFESTS, S3RecordStore
from tests.manifests import sample_manifest
from tests.s3.test_s3_store import make_store

FILES = [os.urandom(4000) for _ in range(5)]


@pytest.fixture
def bucket(seaweed) -> str:
    return seaweed.create_bucket(f"sivr-rollback-{secrets.token_hex(4)}")


def _node(seaweed, bucket: str, kek: bytes, folder) -> S3RecordStore:
    """A node's store of the shared bucket, with its own database's book (`RecordIndex` gives it one)."""
    folder.mkdir()
    database = peewee.SqliteDatabase(folder / "render.db")
    models = make_models(database)
    database.create_tables(models.all)
    store = make_store(seaweed, bucket, KeyRing(kek))
    store.track_generations(CatalogueGenerationBook(models))
    return store


def _manifest(count: int):
    return sample_manifest(count, files=FILES[:count], record_id="grow")


def _entries(count: int, start: int) -> list[JournalEntry]:
    return [JournalEntry(entry, ()) for entry in _manifest(count).files[start:]]


def test_an_older_manifest_object_put_back_is_refused_by_every_node_that_saw_a_later_one(seaweed, bucket, tmp_path):
    kek = os.urandom(32)
    node_a, node_b = _node(seaweed, bucket, kek, tmp_path / "a"), _node(seaweed, bucket, kek, tmp_path / "b")
    client, key = seaweed.client(), f"inst/{MANIFESTS}grow"
    assert node_a.write_record("grow", FILES[:2], _manifest(2))
    older = client.get_object(Bucket=bucket, Key=key)["Body"].read()  # what an older backup holds
    version = node_a.append_files("grow", 2, FILES[2:4], _entries(4, 2), node_a.manifest_version("grow"))
    assert len(node_b.read_manifest("grow").files) == 4  # node B follows node A's append
    version = node_b.append_files("grow", 4, FILES[4:5], _entries(5, 4), version)
    assert len(node_a.read_manifest("grow").files) == 5
    node_a.replace_manifest("grow", _manifest(5), version)  # a new analysis: commit 4
    assert node_b.read_manifest("grow") == _manifest(5)

    client.put_object(Bucket=bucket, Key=key, Body=older)
    for node in (node_a, node_b):
        with pytest.raises(RecordRolledBack, match=r"older manifest of this series \(commit 1; .* commit 4\)"):
            node.read_manifest_versioned("grow")
        with pytest.raises(RecordRolledBack):  # nor is anything appended onto it
            node.append_files("grow", 2, FILES[2:3], _entries(3, 2), node.manifest_version("grow"))
    # a node that never read the series takes what it first reads (docs/deployment.md says so)
    assert len(_node(seaweed, bucket, kek, tmp_path / "c").read_manifest("grow").files) == 2


def test_a_series_another_node_deleted_and_stored_again_is_followed(seaweed, bucket, tmp_path):
    kek = os.urandom(32)
    node_a, node_b = _node(seaweed, bucket, kek, tmp_path / "a"), _node(seaweed, bucket, kek, tmp_path / "b")
    assert node_a.write_record("grow", FILES[:2], _manifest(2))
    version = node_a.append_files("grow", 2, FILES[2:4], _entries(4, 2), node_a.manifest_version("grow"))
    assert len(node_b.read_manifest("grow").files) == 4
    assert node_a.delete("grow") and node_a.write_record("grow", FILES[:3], _manifest(3))  # commit 1 again
    assert node_b.read_manifest("grow") == _manifest(3)
    assert node_b.read_file("grow", 2, hashlib.sha256(FILES[2]).hexdigest()) == FILES[2]
    assert version != node_b.manifest_version("grow")

