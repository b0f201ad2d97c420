"""The node-local cache of S3 file objects: bounded, least recently used out, safe after a crash."""

from __future__ import annotations

import pytest

from daemons.render.store.blob_cache import TEMPORARY_SUFFIX, BlobCache
from daemons.render.store.ownership import MARKER
from shared.config import ConfigError


def test_keeps_at_most_its_size_dropping_the_least_recently_used(tmp_path):
    cache = BlobCache(tmp_path / "cache", max_bytes=300)
    for name in ("r/u/000000", "r/u/000001", "r/u/000002"):
        cache.put(name, b"x" * 100)
    assert cache.get("r/u/000000") == b"x" * 100  # now the most recently used
    cache.put("r/u/000003", b"y" * 100)
    assert cache.get("r/u/000001") is None and cache.used_bytes == 300
    assert not (tmp_path / "cache" / "r" / "u" / "000001").exists()
    assert cache.get("r/u/000000") == b"x" * 100 and cache.get("r/u/000003") == b"y" * 100
    cache.put("r/u/big", b"z" * 301)  # larger than the whole cache: not kept, nothing evicted for it
    assert cache.get("r/u/big") is None and cache.used_bytes == 300


def test_a_restarted_node_finds_its_copies_and_drops_half_written_ones(tmp_path):
    BlobCache(tmp_path, max_bytes=1000).put("rec/up/000007", b"sealed")
    (tmp_path / "rec" / "up" / f"000008.1234{TEMPORARY_SUFFIX}").write_bytes(b"half")
    again = BlobCache(tmp_path, max_bytes=1000)
    assert again.get("rec/up/000007") == b"sealed" and again.used_bytes == 6
    assert not list(tmp_path.rglob(f"*{TEMPORARY_SUFFIX}"))


def test_a_record_is_dropped_whole_and_names_cannot_leave_the_folder(tmp_path):
    cache = BlobCache(tmp_path / "c", max_bytes=1000)
    cache.put("gone/u/000000", b"a")
    cache.put("gone/p/000001", b"b")
    cache.put("kept/u/000000", b"c")
    cache.drop_record("gone")
    assert cache.get("gone/p/000001") is None and cache.get("kept/u/000000") == b"c"
    assert not (tmp_path / "c" / "gone").exists() and cache.used_bytes == 1
    for bad in ("../u/000000", "a/../b", "a/b", "a/b/c/d", "/a/b"):
        with pytest.raises(ValueError):
            cache.put(bad, b"x")
    with pytest.raises(ValueError):
        cache.drop_record("..")


def test_a_copy_removed_behind_its_back_is_a_miss(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=1000)
    cache.put("r/u/000000", b"abc")
    (tmp_path / "r" / "u" / "000000").unlink()
    assert cache.get("r/u/000000") is None and cache.used_bytes == 0


def test_a_folder_of_other_things_is_never_taken_as_the_cache(tmp_path):
    """The cache evicts files to stay within its size: `s3.cache_dir` set to a folder of other things
    would have had them deleted (every file found there counted as a cached copy)."""
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_bytes(b"x" * 5000)
    with pytest.raises(ConfigError, match=r"s3.cache_dir = .*home: the folder holds what is not a SIVR S3 blob "
                                          r"cache \(notes\)"):
        BlobCache(home, max_bytes=10)
    assert (home / "notes" / "todo.txt").stat().st_size == 5000


def test_a_cache_of_an_earlier_release_is_kept_and_its_marker_never_evicted(tmp_path):
    record = "cd" * 32
    (tmp_path / record / "up").mkdir(parents=True)
    (tmp_path / record / "up" / "000000").write_bytes(b"sealed")
    cache = BlobCache(tmp_path, max_bytes=6)
    assert cache.get(f"{record}/up/000000") == b"sealed" and (tmp_path / MARKER).is_file()
    cache.put(f"{record}/up/000001", b"sealed")  # evicts the first copy, and nothing else
    assert cache.used_bytes == 6 and (tmp_path / MARKER).is_file()
