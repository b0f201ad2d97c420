"""A series deleted and stored again keeps its record id: the store refuses a blob the earlier
generation left (put back from a backup, or by someone with write access to the store) as it refuses a
modified file, though loads into RAM hash no file (`store.local` module doc). An older manifest put
back is refused too (`store.generations`, tests/render/test_manifest_rollback.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from daemons.render.store import local as storage
from daemons.render.store.local import MAGIC, RecordStore, StoreError
from tests.manifests import sample_manifest
from tests.render.synthetic import stack

RECORD = "ef" * 32
SERIES = "1.2.826.0.1.3680043.8.498.4711"
IDENTITY = (1, 0, 0, 0, 1, 0)


@pytest.fixture
def store(tmp_path) -> RecordStore:
    return RecordStore.open(tmp_path / "store", tmp_path / "store.key")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(store: RecordStore, files: list[bytes]) -> None:
    assert store.write_record(RECORD, files, sample_manifest(len(files), files=files, record_id=RECORD))


def test_a_blob_of_an_earlier_generation_of_the_record_is_refused_when_loaded(store):
    earlier, now = [b"earlier pixels" * 50, b"b" * 300], [b"current pixels" * 50, b"b" * 300]
    _write(store, earlier)
    kept = (store.path_of(RECORD) / "000000.bin").read_bytes()
    store.delete(RECORD)
    _write(store, now)
    (store.path_of(RECORD) / "000000.bin").write_bytes(kept)
    for verify in (False, True):
        with pytest.raises(StoreError, match="file 0: authentication failed"):
            store.read_file(RECORD, 0, _sha(now[0]), verify=verify)
    assert store.read_file(RECORD, 1, _sha(now[1]), verify=False) == now[1]


def _legacy_blob(store: RecordStore, index: int, data: bytes) -> bytes:
    """A blob as the store wrote it before the file's SHA-256 was bound to it."""
    return storage.seal_blob(store._aead, MAGIC, store._aad(RECORD, str(index)), data)


def test_a_record_written_before_the_checksum_was_bound_reads_and_is_always_checked(store):
    """Existing stores keep working unconverted; their blobs' tags do not tell generations apart, so
    their SHA-256 is checked even for a load into RAM."""
    earlier, now = [b"earlier" * 40], [b"current" * 40]
    _write(store, now)
    blob = store.path_of(RECORD) / "000000.bin"
    blob.write_bytes(_legacy_blob(store, 0, now[0]))
    assert store.read_file(RECORD, 0, _sha(now[0]), verify=False) == now[0]
    blob.write_bytes(_legacy_blob(store, 0, earlier[0]))  # an earlier generation's blob of the old format
    with pytest.raises(StoreError, match="file 0: checksum mismatch"):
        store.read_file(RECORD, 0, _sha(now[0]), verify=False)


def test_a_bound_blob_relabelled_as_one_of_the_old_format_is_refused(store):
    files = [b"pixels" * 40]
    _write(store, files)
    blob = store.path_of(RECORD) / "000000.bin"
    sealed = blob.read_bytes()
    assert sealed.startswith(storage.BOUND_MAGIC)
    blob.write_bytes(MAGIC + sealed[len(storage.BOUND_MAGIC):])
    with pytest.raises(StoreError, match="authentication failed"):
        store.read_file(RECORD, 0, _sha(files[0]), verify=False)


def _flat(value: int) -> list[tuple[str, bytes]]:
    return stack(IDENTITY, count=3, series=SERIES, values=lambda x, y, z: np.full(x.shape, value))


def test_a_node_does_not_show_an_earlier_generations_blob_put_back(node):
    record_id = node.upload(_flat(100)).json["id"]
    folder = node.root / "store" / record_id
    kept = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith(".bin")}
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 204
    assert node.upload(_flat(900)).json["id"] == record_id
    for name, blob in kept.items():
        if name != "manifest.bin":
            (folder / name).write_bytes(blob)
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
    status = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json
    assert len(status["errors"]) == 3 and all("authentication failed" in e["message"] for e in status["errors"])
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/0/value?x=2&y=2", headers=node.headers())
    assert reply.status_code == 422, reply.json
