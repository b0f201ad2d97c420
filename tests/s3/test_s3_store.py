"""The S3 record store against a real SeaweedFS, without daemons: commit, races, clean-up, rewrap."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from dataclasses import replace

import pytest
from botocore.config import Config as BotoConfig

from daemons.render.store import s3 as s3_store
from daemons.render.store.envelope import KeyRing
from daemons.render.store.interface import StoreUnavailable
from daemons.render.store.local import StoreError
from daemons.render.store.manifest import JOURNAL_VERSION, JournalEntry, Manifest
from daemons.render.store.s3 import MANIFESTS, OBJECTS, S3RecordStore
from tests.manifests import sample_manifest

MANIFEST = sample_manifest(2, files=[b"first", b"second"])


def make_store(seaweed, bucket: str, keys: KeyRing, **kwargs) -> S3RecordStore:
    import boto3

    client = boto3.session.Session().client(
        "s3", endpoint_url=kwargs.pop("endpoint_url", seaweed.endpoint_url), region_name="us-east-1",
        aws_access_key_id=seaweed.access_key, aws_secret_access_key=kwargs.pop("secret", seaweed.secret_key),
        config=BotoConfig(s3={"addressing_style": "path"}, connect_timeout=1, retries={"max_attempts": 1}))
    return S3RecordStore(client, bucket, "inst/", keys, location="test", **kwargs)


@pytest.fixture
def bucket(seaweed) -> str:
    return seaweed.create_bucket(f"sivr-unit-{secrets.token_hex(4)}")


def test_round_trip_and_only_ciphertext_in_the_bucket(seaweed, bucket):
    store = make_store(seaweed, bucket, KeyRing(os.urandom(32)))
    files = [b"first file " * 100, b"second file " * 100]
    assert store.write_record("r1", files, MANIFEST) is True
    assert store.write_record("r1", files, MANIFEST) is False
    assert store.exists("r1") and store.record_ids() == ["r1"]
    assert store.read_manifest("r1") == MANIFEST
    assert store.read_file("r1", 1, hashlib.sha256(files[1]).hexdigest()) == files[1]
    with pytest.raises(StoreError, match="checksum"):
        store.read_file("r1", 1, "0" * 64)
    client = seaweed.client()
    for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
        assert b"file" not in client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    assert store.delete("r1") and not store.exists("r1") and store.record_ids() == []
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="inst/")


def test_two_nodes_storing_one_record_at_once_leave_one_coherent_copy(seaweed, bucket):
    kek = os.urandom(32)
    stores = [make_store(seaweed, bucket, KeyRing(kek)) for _ in range(4)]
    files = [os.urandom(50_000) for _ in range(6)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.write_record("same", files, MANIFEST)))
               for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) >= 1
    reader = make_store(seaweed, bucket, KeyRing(kek))
    assert reader.read_file("same", 5, "", verify=False) == files[5]
    uploads = {k["Key"].split("/")[3] for k in seaweed.client().list_objects_v2(
        Bucket=bucket, Prefix=f"inst/{OBJECTS}same/")["Contents"]}
    assert len(uploads) == results.count(True) == 1  # the losers removed their objects


def test_interrupted_upload_is_invisible_and_collected_once_stale(seaweed, bucket):
    store = make_store(seaweed, bucket, KeyRing(os.urandom(32)), stale_upload_s=3600)
    client = seaweed.client()
    client.put_object(Bucket=bucket, Key=f"inst/{OBJECTS}orphan/u1/000000", Body=b"x")
    store.write_record("kept", [b"a"], MANIFEST)
    assert store.record_ids() == ["kept"] and not store.exists("orphan")
    assert store.cleanup() == 0  # fresh: another node may be writing it
    assert make_store(seaweed, bucket, store.keys, stale_upload_s=0).cleanup() == 1
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="inst/")["Contents"]]
    assert not any("orphan" in k for k in keys) and f"inst/{MANIFESTS}kept" in keys


def test_rewrap_changes_only_manifests(seaweed, bucket):
    old, new = os.urandom(32), os.urandom(32)
    make_store(seaweed, bucket, KeyRing(old)).write_record("r", [b"payload"], MANIFEST)
    client = seaweed.client()
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=bucket, Prefix="inst/")["Contents"]}
    rotated = make_store(seaweed, bucket, KeyRing(new, (old,)))
    assert rotated.rewrap() == 1 and rotated.rewrap() == 0
    after = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=bucket, Prefix="inst/")["Contents"]}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {f"inst/{MANIFESTS}r"}
    assert make_store(seaweed, bucket, KeyRing(new)).read_file("r", 0, "", verify=False) == b"payload"


def test_unreachable_or_refusing_store_is_unavailable_not_an_error(seaweed, bucket):
    dead = make_store(seaweed, bucket, KeyRing(os.urandom(32)), endpoint_url="http://127.0.0.1:9")
    calls = (dead.check, lambda: dead.exists("r"), dead.record_ids, lambda: dead.write_record("r", [b"a"], MANIFEST))
    for call in calls:
        with pytest.raises(StoreUnavailable):
            call()
    wrong = make_store(seaweed, bucket, KeyRing(os.urandom(32)), secret="not-the-secret")
    with pytest.raises(StoreUnavailable, match="403"):
        wrong.check()


def test_a_deleted_bucket_is_unavailable_never_a_store_without_records(seaweed, bucket):
    """A HEAD in a missing bucket is a bare 404, as for a missing object: the record looked deleted
    (the node dropped it from its catalogue), its manifest unversioned, its series unfiled, and the
    readiness check raised a ClientError."""
    store = make_store(seaweed, bucket, KeyRing(os.urandom(32)))
    store.write_record("r1", [b"first", b"second"], MANIFEST)
    client = seaweed.client()
    for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)
    for call in (lambda: store.exists("r1"), store.check, store.record_ids, lambda: store.read_manifest("r1"),
                 lambda: store.manifest_version("r1"), lambda: store.filed_among(["r1"]),
                 lambda: store.write_record("r2", [b"first", b"second"], MANIFEST)):
        with pytest.raises(StoreUnavailable, match="(?i)bucket|404"):
            call()


def test_damaged_manifest_is_quarantined_for_every_node_and_its_objects_kept(seaweed, bucket):
    kek = os.urandom(32)
    store = make_store(seaweed, bucket, KeyRing(kek), stale_upload_s=0)
    store.write_record("bad", [b"one", b"two"], MANIFEST)
    client = seaweed.client()
    key = f"inst/{MANIFESTS}bad"
    blob = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    blob[-30] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(blob))
    other = make_store(seaweed, bucket, KeyRing(kek), stale_upload_s=0)
    with pytest.raises(StoreError, match="authentication failed"):
        other.read_manifest("bad")
    where = other.quarantine("bad", "manifest: authentication failed")
    assert where.startswith(f"s3://{bucket}/inst/quarantine/bad-")
    assert other.quarantine("bad", "again") is None
    assert not store.exists("bad") and store.record_ids() == []
    assert [name.rsplit("-", 1)[0] for name in store.quarantined()] == ["bad"]
    assert store.cleanup() == 0  # kept for IT although no manifest names them
    assert len(client.list_objects_v2(Bucket=bucket, Prefix=f"inst/{OBJECTS}bad/")["Contents"]) == 2
    reason = client.get_object(Bucket=bucket, Key=where.removeprefix(f"s3://{bucket}/") + "reason.txt")
    assert b"authentication failed" in reason["Body"].read()


def test_a_kek_the_node_lacks_is_unavailable_not_damage(seaweed, bucket):
    make_store(seaweed, bucket, KeyRing(os.urandom(32))).write_record("r", [b"a"], MANIFEST)
    with pytest.raises(StoreUnavailable, match="does not have"):
        make_store(seaweed, bucket, KeyRing(os.urandom(32))).read_manifest("r")


def test_append_files_commits_with_the_manifest_and_a_concurrent_append_loses_cleanly(seaweed, bucket):
    """A series that grows: new objects under a fresh part, their entries in the manifest's journal,
    the manifest replaced only if unchanged; the series' analysis replaces it the same way."""
    kek = os.urandom(32)
    node_a, node_b = make_store(seaweed, bucket, KeyRing(kek)), make_store(seaweed, bucket, KeyRing(kek))
    files = [os.urandom(5000) for _ in range(5)]
    sums = [hashlib.sha256(f).hexdigest() for f in files]

    def manifest(count: int) -> Manifest:
        return sample_manifest(count, files=files[:count], record_id="grow")

    def entries(count: int, start: int) -> list[JournalEntry]:
        return [JournalEntry(entry, ()) for entry in manifest(count).files[start:]]

    def grown_to(count: int) -> Manifest:  # the two-file analysis and a journal of the others
        return replace(manifest(2).with_journal(entries(count, 2)), version=JOURNAL_VERSION)

    assert node_a.write_record("grow", files[:2], manifest(2))
    assert node_b.read_file("grow", 1, sums[1]) == files[1]  # node B caches the header of two files
    seen_by_b = node_b.manifest_version("grow")
    assert node_b.read_manifest_versioned("grow") == (manifest(2), seen_by_b)
    grown = node_a.append_files("grow", 2, files[2:4], entries(4, 2), node_a.manifest_version("grow"))
    assert node_b.read_manifest_versioned("grow") == (grown_to(4), grown)
    assert grown_to(4).pending == 2 and grown_to(4).files == manifest(4).files
    assert node_b.manifest_versions() == {"grow": grown} and grown != seen_by_b
    assert [node_b.read_file("grow", i, sums[i]) for i in range(4)] == files[:4]
    # node B appends what it computed from the two-file manifest it read before A grew the series:
    # refused (it would drop A's files), nothing committed
    with pytest.raises(StoreUnavailable, match="another node"):
        node_b.append_files("grow", 2, [os.urandom(5000)], entries(3, 2), seen_by_b)
    assert node_b.read_manifest("grow") == grown_to(4)
    # node B appends on a manifest node A replaces meanwhile: B's objects are removed, nothing changes
    real_put = node_b._s3.put_object

    def put_after_a_grew(**kwargs):
        if kwargs["Key"].endswith(f"{MANIFESTS}grow"):
            node_a.append_files("grow", 4, files[4:5], entries(5, 4), node_a.manifest_version("grow"))
        return real_put(**kwargs)

    node_b._s3.put_object = put_after_a_grew
    with pytest.raises(StoreUnavailable, match="another node"):
        node_b.append_files("grow", 4, [os.urandom(5000)], entries(5, 4), grown)
    node_b._s3.put_object = real_put
    assert node_b.read_manifest("grow") == grown_to(5)
    assert [node_b.read_file("grow", i, sums[i]) for i in range(5)] == files
    # the series' analysis replaces manifest and journal, only onto the version it was made from
    with pytest.raises(StoreUnavailable, match="another node"):
        node_b.replace_manifest("grow", manifest(5), grown)
    node_b.replace_manifest("grow", manifest(5), node_b.manifest_version("grow"))
    assert node_a.read_manifest("grow") == manifest(5) and node_a.read_manifest("grow").pending == 0
    # clean-up keeps every part a manifest names, even once stale
    assert make_store(seaweed, bucket, KeyRing(kek), stale_upload_s=0).cleanup() == 0
    assert [node_a.read_file("grow", i, sums[i]) for i in range(5)] == files
    assert node_a.delete("grow")
    assert "Contents" not in seaweed.client().list_objects_v2(Bucket=bucket, Prefix="inst/")


def test_a_node_reads_a_series_again_from_its_cache_which_holds_only_ciphertext(seaweed, bucket, tmp_path):
    from daemons.render.store.blob_cache import BlobCache

    kek = os.urandom(32)
    files = [b"first file " * 100, b"second file " * 100]
    writer = make_store(seaweed, bucket, KeyRing(kek), cache=BlobCache(tmp_path / "writer", 10**6))
    assert writer.write_record("r1", files, MANIFEST)
    cached = sorted(p for p in (tmp_path / "writer").glob("*/*/*") if p.is_file())  # <record id>/<upload>/<index>
    assert len(cached) == 2 and all(b"file" not in p.read_bytes() for p in cached)  # written through, sealed
    reader = make_store(seaweed, bucket, KeyRing(kek), cache=BlobCache(tmp_path / "reader", 10**6))
    assert reader.read_file("r1", 1, hashlib.sha256(files[1]).hexdigest()) == files[1]  # from the bucket, kept
    client = seaweed.client()
    for item in client.list_objects_v2(Bucket=bucket, Prefix=f"inst/{OBJECTS}")["Contents"]:
        client.delete_object(Bucket=bucket, Key=item["Key"])  # the objects are gone from the bucket...
    assert writer.read_file("r1", 0, hashlib.sha256(files[0]).hexdigest()) == files[0]  # ...the caches serve
    assert reader.read_file("r1", 1, hashlib.sha256(files[1]).hexdigest()) == files[1]
    with pytest.raises(StoreError, match="missing"):
        reader.read_file("r1", 0, "")  # never read by this node: not in its cache


def test_a_damaged_cached_copy_is_read_again_from_the_bucket(seaweed, bucket, tmp_path):
    from daemons.render.store.blob_cache import BlobCache

    files = [os.urandom(5000)]
    store = make_store(seaweed, bucket, KeyRing(os.urandom(32)), cache=BlobCache(tmp_path, 10**6))
    assert store.write_record("r2", files, MANIFEST)
    [copy] = [p for p in tmp_path.glob("*/*/*") if p.is_file()]  # <record id>/<upload>/<index>
    damaged = bytearray(copy.read_bytes())
    damaged[-20] ^= 0xFF
    copy.write_bytes(bytes(damaged))
    assert store.read_file("r2", 0, hashlib.sha256(files[0]).hexdigest()) == files[0]
    assert copy.read_bytes() != bytes(damaged)  # replaced by the bucket's object
    assert store.delete("r2") and not any(p.is_file() for p in tmp_path.glob("*/*/*"))


def test_filed_among_asks_about_a_few_records_without_listing_every_filed_series(seaweed, bucket, monkeypatch):
    """`filed/` names every series the institution ever filed: the work list, which asks about its
    few unfiled series on every request, must not list it all each time."""
    store = make_store(seaweed, bucket, KeyRing(os.urandom(32)))
    for record_id in ("r1", "r2", "r3"):
        store.write_record(record_id, [record_id.encode()], sample_manifest(1, files=[record_id.encode()]))
    store.mark_filed("r1")
    store.mark_filed("r2")
    operations: list[str] = []
    store._s3.meta.events.register("before-call.s3", lambda model, **_: operations.append(model.name))

    assert store.filed_among(["r1", "r3", "gone"]) == {"r1"}
    assert "ListObjectsV2" not in operations and operations.count("HeadObject") == 3

    operations.clear()
    monkeypatch.setattr(s3_store, "FILED_HEAD_LIMIT", 2)  # many records: one listing is cheaper
    assert store.filed_among(["r1", "r2", "r3"]) == {"r1", "r2"}
    assert operations == ["ListObjectsV2"]


def test_an_unfiled_mark_is_kept_in_the_bucket_until_filed_again_or_deleted(seaweed, bucket):
    """Every node sharing the bucket reads that a series was unfiled (`unfiled/`), so one whose own
    catalogue still says filed follows it instead of marking it filed again at its start."""
    store = make_store(seaweed, bucket, KeyRing(os.urandom(32)))
    for record_id in ("r1", "r2"):
        store.write_record(record_id, [record_id.encode()], sample_manifest(1, files=[record_id.encode()]))
    store.mark_filed("r1")
    assert store.unmark_filed("r1") and not store.unmark_filed("r2")  # r2 was never filed
    assert store.filed_among(["r1", "r2"]) == set() and store.unfiled_among(["r1", "r2"]) == {"r1"}
    store.mark_filed("r1")
    assert store.filed_among(["r1"]) == {"r1"} and store.unfiled_among(["r1"]) == set()
    store.unmark_filed("r1")
    store.delete("r1")
    keys = [o["Key"] for o in store._list(store.prefix)]
    assert not any(key.endswith("/r1") or "/r1/" in key for key in keys), keys  # the marks went with it
