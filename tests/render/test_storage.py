"""The encrypted store: bit-exact round trip, tamper detection, atomic writes, key handling."""

from __future__ import annotations

import os
import random
import re
import threading
from pathlib import Path

import pytest

from daemons.render.store import local as storage
from daemons.render.store.interface import StoreUnavailable
from daemons.render.store.local import KEY_CHECK, MAGIC, QUARANTINE, RecordStore, StoreError, create_key_file, load_key
from daemons.render.store.manifest import BadFrame, JournalEntry
from daemons.render.store.ownership import MARKER
from shared.config import ConfigError
from tests.manifests import sample_manifest
from tests.render.conftest import close_node

RECORD = "ab" * 32


@pytest.fixture
def store(tmp_path) -> RecordStore:
    return RecordStore.open(tmp_path / "store", tmp_path / "store.key")


def _files() -> list[bytes]:
    return [random.Random(7).randbytes(1000) + b"\x00" * 5000, b"DICM" * 100, bytes(range(256)) * 40]


def _series_files(count: int) -> list[bytes]:
    """The files of a record grown to `count` files, as the tests store them: a blob is sealed with
    the SHA-256 its manifest entry names (`_grown`, `_entries`), the file's own in a real record."""
    first = _files()
    kinds = [*first, first[0] + b"x", first[1] + b"y"]
    return [kinds[index % len(kinds)] + bytes(index // len(kinds)) for index in range(count)]


def _manifest(files: list[bytes]):
    return sample_manifest(len(files), files=files, record_id=RECORD)


def _grown(count: int):
    """The manifest of a record grown to `count` files (`_series_files`: what differs between its versions)."""
    return sample_manifest(count, files=_series_files(count), record_id=RECORD)


def _entries(count: int, start: int) -> list[JournalEntry]:
    """The journal entries of files `start`.. of a record grown to `count` files."""
    return [JournalEntry(entry, ()) for entry in _grown(count).files[start:]]


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_round_trip_is_bit_exact_and_at_rest_is_neither_plain_nor_compressed_plain(store):
    files = _files()
    assert store.write_record(RECORD, files, _manifest(files)) is True
    for index, data in enumerate(files):
        assert store.read_file(RECORD, index, _sha(data)) == data
    assert store.read_manifest(RECORD) == _manifest(files)
    for blob in store.path_of(RECORD).iterdir():
        raw = blob.read_bytes()
        assert raw.startswith(MAGIC if blob.name == "manifest.bin" else storage.BOUND_MAGIC)
        assert b"DICMDICM" not in raw and b"Doe^Jane" not in raw
    assert store.write_record(RECORD, files, _manifest(files)) is False  # already stored: nothing rewritten


def test_key_file_is_created_0600_and_must_stay_private(tmp_path):
    key = tmp_path / "k"
    create_key_file(key)
    assert key.stat().st_mode & 0o777 == 0o600 and len(load_key(key)) == 32
    os.chmod(key, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_key(key)


def test_missing_key_for_a_store_with_records_is_refused(tmp_path, store):
    store.write_record(RECORD, _files(), _manifest(_files()))
    (tmp_path / "store.key").unlink()
    with pytest.raises(ValueError, match="key is missing"):
        RecordStore.open(tmp_path / "store", tmp_path / "store.key")


def _swap_key(key_file: Path) -> None:
    """Put 32 other random bytes in the key file (a swapped key, a wrong restore), mode kept 0600."""
    key_file.write_bytes(os.urandom(32))


def _nothing_moved(root: Path, record_id: str) -> None:
    assert (root / record_id / "manifest.bin").is_file() and not (root / ".quarantine").exists()


def test_a_key_that_is_not_the_stores_is_refused_at_open_and_nothing_is_moved(tmp_path, store):
    store.write_record(RECORD, _files(), _manifest(_files()))
    _swap_key(tmp_path / "store.key")
    with pytest.raises(ConfigError, match=r"storage.key_file = .*store.key: not the key of the store at .*store "
                                          r"\(.*\.key-check does not open with it\)"):
        RecordStore.open(tmp_path / "store", tmp_path / "store.key")
    _nothing_moved(store.root, RECORD)


def test_a_node_started_with_another_key_refuses_to_start_and_quarantines_nothing(make_node, tmp_path):
    """The reported case: the node took every record for damaged, quarantined all of them, dropped
    them from its catalogue and answered ready with an empty record list."""
    from tests.render.test_image_description import AXIAL, stack, upload

    first = make_node(tmp_path)
    record_id = upload(first, stack(AXIAL, count=2))["id"]
    close_node(first)
    _swap_key(tmp_path / "store.key")
    with pytest.raises(ConfigError, match="not the key of the store"):
        make_node(tmp_path, institution_id=first.institution_id)
    _nothing_moved(tmp_path / "store", record_id)


def test_a_store_of_an_earlier_release_gets_its_key_check_when_its_key_opens_a_record(tmp_path, store):
    files = _files()
    store.write_record(RECORD, files, _manifest(files))
    (store.root / KEY_CHECK).unlink(missing_ok=True)  # as a store written before key checks existed
    reopened = RecordStore.open(tmp_path / "store", tmp_path / "store.key")
    assert (store.root / KEY_CHECK).is_file() and reopened.record_ids() == [RECORD]
    assert reopened.read_manifest(RECORD) == _manifest(files)
    _swap_key(tmp_path / "store.key")  # from now on the check object alone refuses another key
    with pytest.raises(ConfigError, match="does not open with it"):
        RecordStore.open(tmp_path / "store", tmp_path / "store.key")


@pytest.mark.parametrize("quarantined", [False, True], ids=["stored", "quarantined"])
def test_a_store_of_an_earlier_release_refuses_a_key_that_opens_none_of_its_records(tmp_path, store, quarantined):
    """Records quarantined by an earlier start with a wrong key are intact: they count as the store's."""
    store.write_record(RECORD, _files(), _manifest(_files()))
    if quarantined:
        store.quarantine(RECORD, "manifest: authentication failed")
    (store.root / KEY_CHECK).unlink(missing_ok=True)
    before = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*"))
    _swap_key(tmp_path / "store.key")
    with pytest.raises(ConfigError, match=r"not the key of the store .*\(none of 1 record manifests opens with it\)"):
        RecordStore.open(tmp_path / "store", tmp_path / "store.key")
    assert sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*")) == before


@pytest.mark.parametrize("left", [QUARANTINE, ".tmp-0123", ".trash-0123", KEY_CHECK])
def test_a_missing_key_is_not_recreated_for_a_store_that_held_records(tmp_path, store, left):
    """Quarantined records, leftovers of a write or delete, or the key check: the store had a key, and
    a new one would open none of its records (a lost key file is restored, never replaced)."""
    if left != KEY_CHECK:  # the entry alone, in a store of an earlier release
        if left == QUARANTINE:
            store.write_record(RECORD, _files(), _manifest(_files()))
            store.quarantine(RECORD, "damaged")
        else:
            (store.root / left).mkdir()
        (store.root / KEY_CHECK).unlink(missing_ok=True)
    (tmp_path / "store.key").unlink()
    with pytest.raises(ConfigError, match=r"storage.key_file = .*: the store key is missing but .* holds records "
                                          rf"\({re.escape(left)}\)"):
        RecordStore.open(tmp_path / "store", tmp_path / "store.key")
    assert not (tmp_path / "store.key").exists()


def test_old_key_files_are_refused_with_a_local_store(tmp_path):
    """A local store has one key: the setting was accepted and ignored, as if a rotation were done."""
    from daemons.render.settings import KEYS
    from daemons.render.store.interface import open_store
    from shared.config import build_config

    create_key_file(tmp_path / "old.key")
    config = build_config("render", KEYS, {"storage": {
        "dir": str(tmp_path / "store"), "key_file": str(tmp_path / "store.key"),
        "old_key_files": [str(tmp_path / "old.key")]}}, None)
    with pytest.raises(ConfigError, match=r"storage.old_key_files is for storage.backend = \"s3\" only"):
        open_store(config)
    assert not (tmp_path / "store").exists()


def test_flipped_byte_is_detected(store):
    files = _files()
    store.write_record(RECORD, files, _manifest(files))
    blob = store.path_of(RECORD) / "000001.bin"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="authentication failed"):
        store.read_file(RECORD, 1, _sha(files[1]))


def test_blob_moved_to_another_position_or_record_is_detected(store):
    files = _files()
    store.write_record(RECORD, files, _manifest(files))
    folder = store.path_of(RECORD)
    (folder / "000000.bin").write_bytes((folder / "000002.bin").read_bytes())
    with pytest.raises(StoreError):
        store.read_file(RECORD, 0, _sha(files[0]))
    other = "cd" * 32
    store.write_record(other, files, _manifest(files))
    (store.path_of(other) / "000002.bin").write_bytes((folder / "000002.bin").read_bytes())
    with pytest.raises(StoreError):
        store.read_file(other, 2, _sha(files[2]))


def test_wrong_checksum_is_an_error(store):
    """A blob's SHA-256 is part of its associated data: read for another checksum, its tag fails."""
    store.write_record(RECORD, _files(), _manifest(_files()))
    for verify in (True, False):
        with pytest.raises(StoreError, match="authentication failed"):
            store.read_file(RECORD, 0, "0" * 64, verify=verify)


def test_crash_before_the_final_rename_leaves_no_record(store, monkeypatch):
    def crash(src, dst):
        raise KeyboardInterrupt("killed mid-upload")

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_record(RECORD, _files(), _manifest(_files()))
    monkeypatch.undo()
    assert not store.exists(RECORD) and store.record_ids() == []


def test_leftovers_of_a_killed_process_are_ignored_then_cleaned(tmp_path, store):
    # what a SIGKILL between file writes leaves: a temp folder with some blobs, no manifest
    half = store.root / ".tmp-deadbeef"
    half.mkdir()
    (half / "000000.bin").write_bytes(b"partial")
    stray = store.root / ("ef" * 32)
    stray.mkdir()  # a record folder without manifest is not a record
    assert store.record_ids() == [] and not store.exists("ef" * 32)
    reopened = RecordStore.open(tmp_path / "store", tmp_path / "store.key")
    assert reopened.cleanup() == 2
    assert sorted(p.name for p in reopened.root.iterdir()) == [KEY_CHECK, MARKER]


def test_a_folder_holding_other_things_is_never_taken_as_the_store(tmp_path):
    """`storage.dir` set by mistake to a folder of other things (here a copy of part of /etc): at its
    first start the node removed every sub-folder without a manifest, which there is all of them."""
    etc = tmp_path / "etc"
    (etc / "apt" / "sources.list.d").mkdir(parents=True)
    (etc / "ssl").mkdir()
    (etc / "hostname").write_text("host\n")
    create_key_file(tmp_path / "store.key")  # the key of the node's real store
    with pytest.raises(ConfigError, match=r"storage.dir = .*etc: the folder holds what is not a SIVR record store "
                                          r"\(apt, hostname, ssl\)"):
        RecordStore.open(etc, tmp_path / "store.key")
    assert sorted(p.name for p in etc.iterdir()) == ["apt", "hostname", "ssl"]
    assert (etc / "apt" / "sources.list.d").is_dir()


def _store_of_an_earlier_release(tmp_path) -> Path:
    """A store holding one record and no ownership mark, as releases before the mark left it."""
    root = tmp_path / "store"
    RecordStore.open(root, tmp_path / "store.key").write_record(RECORD, _files(), _manifest(_files()))
    (root / MARKER).unlink()
    return root


def test_a_store_of_an_earlier_release_is_recognised_by_its_layout_and_marked(tmp_path):
    """Stores filled before the marker existed hold record folders and the store's own dot folders only."""
    root = _store_of_an_earlier_release(tmp_path)
    (root / ".quarantine").mkdir()
    reopened = RecordStore.open(root, tmp_path / "store.key")
    assert (root / MARKER).read_text() == "record store\n"
    assert reopened.record_ids() == [RECORD]


def test_a_store_at_the_root_of_a_mounted_disk_is_taken_and_its_lost_and_found_kept(tmp_path):
    """The guide mounts a NAS share at the store's folder: its `lost+found` is the file system's,
    not something else's data, and the store (of an earlier release here) still opens."""
    root = _store_of_an_earlier_release(tmp_path)
    (root / "lost+found").mkdir()
    reopened = RecordStore.open(root, tmp_path / "store.key")
    assert reopened.record_ids() == [RECORD] and reopened.cleanup() == 0 and (root / "lost+found").is_dir()


def test_cleanup_removes_only_what_the_store_makes(store):
    """A folder that is not a record's (someone's notes, a mount's lost+found put there later) is kept."""
    (store.root / "notes").mkdir()
    (store.root / ("ab" * 32)).mkdir()  # a record folder left without its manifest
    assert store.cleanup() == 1
    assert (store.root / "notes").is_dir() and not (store.root / ("ab" * 32)).exists()


def test_one_folder_is_never_both_the_store_and_the_s3_cache(tmp_path):
    from daemons.render.store.blob_cache import BlobCache

    BlobCache(tmp_path / "shared", max_bytes=1000)
    with pytest.raises(ConfigError, match="is SIVR's S3 blob cache, not its record store"):
        RecordStore.open(tmp_path / "shared", tmp_path / "store.key")


def test_delete_removes_everything(store):
    store.write_record(RECORD, _files(), _manifest(_files()))
    assert store.delete(RECORD) is True
    assert not store.path_of(RECORD).exists() and store.delete(RECORD) is False


def test_used_bytes_counts_blobs(store):
    assert store.used_bytes() == 0
    store.write_record(RECORD, _files(), _manifest(_files()))
    assert store.used_bytes() > 0


def test_store_dir_layout(store):
    store.write_record(RECORD, _files(), _manifest(_files()))
    names = sorted(p.name for p in Path(store.path_of(RECORD)).iterdir())
    assert names == ["000000.bin", "000001.bin", "000002.bin", "manifest.bin"]


def test_image_cache_keeps_to_its_budget_and_drops_a_record():
    from daemons.render.imaging.image_cache import ENTRY_OVERHEAD, ImageCache

    cache = ImageCache(budget_bytes=1600)
    for index in range(20):
        cache.put("r1" if index % 2 else "r2", f"e{index}", bytes(100), "image/png")
    assert cache.used_bytes <= 1600 and cache.get("r1", "e1") is None and cache.get("r2", "e18") is not None
    cache.drop_record("r2")
    assert cache.get("r2", "e18") is None and cache.used_bytes == sum(
        100 + ENTRY_OVERHEAD for index in range(20) if index % 2 and cache.get("r1", f"e{index}") is not None)
    cache.put("r3", "big", bytes(1000), "image/png")  # over 1/16 of the budget: not kept
    assert cache.get("r3", "big") is None


def test_image_cache_counts_the_memory_of_its_entries_not_only_their_images():
    """A client chooses the keys (any window, size, region): 1x1 PNGs of 67 bytes under ever new
    windows were counted by their bodies alone, and a cache of 1 MiB took several MiB (each entry's
    key, ETag and slots cost more than its image). Each entry counts its bookkeeping too now: what
    the cache takes stays within its budget."""
    import hashlib
    import tracemalloc

    from daemons.render.imaging.image_cache import ImageCache

    budget = 1 << 20
    record_id = hashlib.sha256(b"record").hexdigest()
    cache = ImageCache(budget_bytes=budget)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for window in range(20_000):
            etag = hashlib.sha256(f"{record_id}:{window}".encode()).hexdigest()[:32]
            # a request's record id is a string of its own (parsed from its URL), as its body is
            cache.put(record_id[:32] + record_id[32:], etag, os.urandom(67), "image/png")
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert budget / 2 <= taken <= budget, f"{taken} bytes taken by a cache of {budget}"
    assert cache.used_bytes <= budget


def test_image_cache_makes_an_image_once_for_concurrent_requests():
    import threading
    import time as clock

    from daemons.render.imaging.image_cache import ImageCache

    cache = ImageCache(budget_bytes=10_000)
    calls = []

    def make():
        calls.append(1)
        clock.sleep(0.2)
        return b"x" * 100, "image/webp"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_make("r", "e", make))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [(b"x" * 100, "image/webp")] * 8


def test_append_commits_only_onto_the_manifest_version_it_was_computed_from(store):
    """An append computed from an older manifest would drop what was appended since: refused."""

    files = _files()
    assert store.write_record(RECORD, files[:1], _grown(1))
    first = store.manifest_version(RECORD)
    assert store.read_manifest_versioned(RECORD) == (_grown(1), first)
    second = store.append_files(RECORD, 1, files[1:2], _entries(2, 1), first)
    assert second != first and store.manifest_versions() == {RECORD: second}
    with pytest.raises(StoreUnavailable, match="changed since it was read"):
        store.append_files(RECORD, 1, files[2:], _entries(3, 1), first)
    with pytest.raises(StoreUnavailable, match="changed since it was read"):
        store.replace_manifest(RECORD, _grown(2), first)
    assert store.read_manifest_versioned(RECORD) == (_grown(1).with_journal(_entries(2, 1)), second)
    assert store.read_file(RECORD, 1, _sha(files[1])) == files[1]
    assert store.manifest_version("cd" * 32) is None


def test_an_append_writes_a_journal_part_not_the_manifest_and_reads_are_base_then_parts(store):
    """Each append adds one small sealed part; the manifest file is untouched until the series'
    analysis replaces it (then the parts it took in are removed)."""
    files = _files()
    assert store.write_record(RECORD, files[:1], _grown(1))
    base = (store.path_of(RECORD) / storage.MANIFEST).read_bytes()
    version = store.manifest_version(RECORD)
    bad = JournalEntry(_grown(3).files[2], (BadFrame(0, "short"),))
    version = store.append_files(RECORD, 1, files[1:2], _entries(2, 1), version)
    version = store.append_files(RECORD, 2, files[2:3], [bad], version)
    assert (store.path_of(RECORD) / storage.MANIFEST).read_bytes() == base
    assert sorted(p.name for p in (store.path_of(RECORD) / storage.JOURNAL).iterdir()) == ["000001.bin", "000002.bin"]
    pending, read_version = store.read_manifest_versioned(RECORD)
    assert read_version == version and pending.pending == 2
    assert pending.files == _grown(3).files and pending.meta.files == 3 and pending.meta.frames == 3
    assert pending.meta.size_bytes == _grown(3).meta.size_bytes
    assert pending.render.bad_frames == (BadFrame(2, "short"),)  # numbered in the record
    for part in (store.path_of(RECORD) / storage.JOURNAL).iterdir():
        assert part.read_bytes().startswith(MAGIC) and b"1.2.3.4" not in part.read_bytes()
    settled = store.replace_manifest(RECORD, _grown(3), version)
    assert store.read_manifest_versioned(RECORD) == (_grown(3), settled)
    assert list((store.path_of(RECORD) / storage.JOURNAL).iterdir()) == []
    with pytest.raises(ValueError, match="pending"):
        store.replace_manifest(RECORD, pending, settled)


def test_a_journal_part_never_waits_behind_files_compressed_ahead(store, monkeypatch):
    """A STOW-RS request starts compressing all its parts at once (`Precompressed`); an append, which
    waits for its journal part while it holds its series' lock, must not queue behind them."""
    files = _files()
    assert store.write_record(RECORD, files[:1], _grown(1))
    release = threading.Event()
    real = storage.compress
    monkeypatch.setattr(storage, "compress", lambda raw: (release.wait(30), real(raw))[1])
    queued = [storage.Precompressed.start(b"x" * 10) for _ in range(storage.ASIDE_THREADS * 2)]
    monkeypatch.setattr(storage, "compress", real)  # the append's own blobs are compressed as ever
    appended = threading.Event()

    def append() -> None:
        store.append_files(RECORD, 1, files[1:2], _entries(2, 1), store.manifest_version(RECORD))
        appended.set()

    worker = threading.Thread(target=append)
    worker.start()
    try:
        assert appended.wait(20), "the append's journal part waited behind the files compressed ahead"
    finally:
        release.set()
        worker.join(30)
    assert [ahead.compressed.result(30) for ahead in queued] == [real(b"x" * 10)] * len(queued)


def test_a_part_left_by_an_interrupted_compaction_is_skipped_and_a_moved_part_refused(store):
    files = _files()
    assert store.write_record(RECORD, files[:1], _grown(1))
    version = store.append_files(RECORD, 1, files[1:2], _entries(2, 1), store.manifest_version(RECORD))
    journal = store.path_of(RECORD) / storage.JOURNAL
    kept = (journal / "000001.bin").read_bytes()
    store.replace_manifest(RECORD, _grown(2), version)
    (journal / "000001.bin").write_bytes(kept)  # the crash came after the new base, before the part's removal
    assert store.read_manifest(RECORD) == _grown(2)
    (journal / "000001.bin").unlink()
    (journal / "000007.bin").write_bytes(kept)  # a part moved to another position fails authentication
    with pytest.raises(StoreError, match="journal"):
        store.read_manifest(RECORD)


def test_an_old_store_folder_without_a_journal_reads_as_before(store):
    """A record stored before the journal existed (no `journal/` folder) reads, versions and grows."""
    files = _files()
    assert store.write_record(RECORD, files[:1], _grown(1))
    assert not (store.path_of(RECORD) / storage.JOURNAL).exists()
    stat = (store.path_of(RECORD) / storage.MANIFEST).stat()
    version = store.manifest_version(RECORD)
    assert version == f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"  # the version format of before
    assert store.read_manifest_versioned(RECORD) == (_grown(1), version)
    version = store.append_files(RECORD, 1, files[1:2], _entries(2, 1), version)
    assert store.read_manifest(RECORD).files == _grown(2).files


def test_an_appends_blobs_are_all_durable_before_its_manifest_and_a_failed_one_keeps_the_old(store, monkeypatch):
    """The blobs of one append are written in parallel threads; its journal part still comes after every fsync."""
    files = _files()
    assert store.write_record(RECORD, files[:1], _grown(1))
    version = store.manifest_version(RECORD)
    order: list[str] = []
    write = storage._write_durable
    overlap = threading.Barrier(2, timeout=10)  # the first two blobs' writes are in flight at once

    def recording(path: Path, data: bytes) -> None:
        if path.name in ("000001.bin", "000002.bin"):
            overlap.wait()
        write(path, data)
        order.append(path.name if path.parent.name != storage.JOURNAL else "journal part")

    sync_dir, link = storage._fsync_dir, os.link
    monkeypatch.setattr(storage, "_write_durable", recording)
    monkeypatch.setattr(storage, "_fsync_dir", lambda path: order.append(f"folder {path.name}") or sync_dir(path))
    monkeypatch.setattr(os, "link", lambda source, target: order.append(f"named {Path(target).name}") or link(source,
                                                                                                             target))
    new = [files[1], files[2], files[0] + b"x", files[1] + b"y"]
    version = store.append_files(RECORD, 1, new, _entries(5, 1), version)
    # the part's bytes are written beside the blobs; it is named only once the blobs' names are
    # durable, and that name is durable before the call returns
    assert sorted(order[:5]) == ["000001.bin", "000002.bin", "000003.bin", "000004.bin", "journal part"]
    assert order[5:] == [f"folder {RECORD}", "named 000001.bin", f"folder {storage.JOURNAL}"]
    monkeypatch.setattr(os, "link", link)
    assert [store.read_file(RECORD, 1 + i, _sha(data)) for i, data in enumerate(new)] == new
    grown = store.read_manifest_versioned(RECORD)

    def failing(path: Path, data: bytes) -> None:
        if path.name == "000006.bin":
            raise OSError(28, "No space left on device")
        write(path, data)

    monkeypatch.setattr(storage, "_write_durable", failing)
    with pytest.raises(storage.StoreFull):
        store.append_files(RECORD, 5, _series_files(8)[5:], _entries(8, 5), version)
    assert store.read_manifest_versioned(RECORD) == grown
    assert sorted(p.name for p in (store.path_of(RECORD) / storage.JOURNAL).iterdir()) == ["000001.bin"]


def test_a_file_compressed_ahead_is_stored_as_its_bytes_would_be(store):
    """`Precompressed` (a C-STORE's file, its compression started while it is checked) seals to a
    blob that opens to the file's own bytes, for a new record and for an append."""
    files = _files()
    assert store.write_record(RECORD, [storage.Precompressed.start(files[0])], _grown(1))
    version = store.append_files(RECORD, 1, [storage.Precompressed.start(files[1])], _entries(2, 1),
                                 store.manifest_version(RECORD))
    assert store.manifest_version(RECORD) == version
    assert store.read_file(RECORD, 0, _sha(files[0])) == files[0]
    assert store.read_file(RECORD, 1, _sha(files[1])) == files[1]
    assert (store.path_of(RECORD) / "000001.bin").read_bytes().startswith(storage.BOUND_MAGIC)


def test_a_forked_process_compresses_ahead_with_threads_of_its_own(store):
    """The threads compressing ahead are made per process: a node's workers are forked from a
    process that may have used them, and a pool copied by a fork has no threads behind it."""
    storage.Precompressed.start(b"before the fork").compressed.result(timeout=10)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's outcome is read back through the pipe
        try:
            done = storage.Precompressed.start(b"x" * 1000).compressed.result(timeout=10)
            os.write(write, b"ok" if storage.compress(b"x" * 1000) == done else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 16) == b"ok"
    finally:
        os.close(read)
        os.waitpid(child, 0)


def _unmount(root: Path) -> Path:
    """What an unmounted volume leaves: its empty mount point where the store was."""
    aside = root.with_name(root.name + "-volume")
    os.replace(root, aside)
    root.mkdir()
    return aside


def test_a_store_whose_volume_is_unmounted_is_unavailable_never_empty(store):
    """The reported case: with the store's volume unmounted, every record looked deleted (a sync
    would have dropped the whole catalogue) and a new record was written onto the mount point."""
    files = _files()
    store.write_record(RECORD, files, _manifest(files))
    aside = _unmount(store.root)
    other = "cd" * 32
    for call in (lambda: store.exists(RECORD), store.record_ids, store.manifest_versions, store.check,
                 lambda: store.read_manifest(RECORD), lambda: store.read_file(RECORD, 0, _sha(files[0])),
                 lambda: store.manifest_version(RECORD), lambda: store.delete(RECORD),
                 lambda: store.write_record(other, files, sample_manifest(len(files), files=files, record_id=other))):
        with pytest.raises(StoreUnavailable, match="is its volume mounted"):
            call()
    assert list(store.root.iterdir()) == []  # nothing written beside the volume
    store.root.rmdir()
    os.replace(aside, store.root)
    assert store.record_ids() == [RECORD] and store.read_file(RECORD, 0, _sha(files[0])) == files[0]
    assert store.exists(other) is False  # a record that is not there, in a store that is


def test_a_store_found_unmounted_at_start_is_refused_before_anything_is_written(tmp_path):
    """Review: the running node's checks did not cover a start (a reboot whose NAS mount failed):
    the empty mount point was opened as a new store, given a key check, the start-up sync dropped
    the whole catalogue, and a second start found a "store" that passed every check."""
    root, key = tmp_path / "store", tmp_path / "store.key"
    opened = RecordStore.open(root, key)
    files = _files()
    opened.write_record(RECORD, files, _manifest(files))
    aside = _unmount(root)
    with pytest.raises(ConfigError, match="is its volume mounted"):
        RecordStore.open(root, key, records_expected=True)
    assert list(root.iterdir()) == []  # neither a key check nor the folder's ownership marker
    root.rmdir()
    os.replace(aside, root)
    assert RecordStore.open(root, key, records_expected=True).record_ids() == [RECORD]
    fresh = tmp_path / "new-store"  # a new store of a node whose catalogue is empty opens as ever
    assert RecordStore.open(fresh, tmp_path / "new.key", records_expected=False).record_ids() == []


def test_a_node_restarted_on_an_unmounted_store_refuses_to_start_and_keeps_its_catalogue(make_node, tmp_path):
    from daemons.render.app import create_app
    from tests.render.test_image_description import AXIAL, stack, upload

    node = make_node(tmp_path)
    record_id = upload(node, stack(AXIAL, count=2))["id"]
    config = node.app.config["SIVR"]
    close_node(node)
    aside = _unmount(tmp_path / "store")
    with pytest.raises(ConfigError, match="is its volume mounted"):
        create_app(config)
    (tmp_path / "store").rmdir()
    os.replace(aside, tmp_path / "store")
    again = make_node(tmp_path)
    listed = again.client.get("/api/v1/records", headers=again.headers("instadmin"))
    assert listed.status_code == 200 and record_id in [row["id"] for row in listed.json["items"]]


def test_a_node_whose_store_is_unmounted_answers_503_and_keeps_its_catalogue(make_node, tmp_path):
    from tests.render.test_image_description import AXIAL, stack, upload

    node = make_node(tmp_path, storage__catalogue_refresh_s=0.0)
    record_id = upload(node, stack(AXIAL, count=2))["id"]
    aside = _unmount(tmp_path / "store")
    for url in ("/api/v1/records", f"/api/v1/records/{record_id}"):
        reply = node.client.get(url, headers=node.headers("instadmin"))
        assert reply.status_code == 503 and reply.json["error"]["code"] == "store_unavailable", (url, reply.json)
    stored = node.app.extensions["sivr_node"].models.StoredRecord
    assert stored.get_or_none(stored.id == record_id) is not None  # not dropped as deleted
    (tmp_path / "store").rmdir()
    os.replace(aside, tmp_path / "store")
    listed = node.client.get("/api/v1/records", headers=node.headers("instadmin"))
    assert listed.status_code == 200 and record_id in [row["id"] for row in listed.json["items"]]
