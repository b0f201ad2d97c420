"""A node-local copy of the S3 store's file objects, bounded in bytes, least recently used out first.

Why: loading a record from a shared bucket costs one GET per slice, and on a small node the S3
client's per-request work (signing, parsing), not the network, bounds the rate: a 555-slice
series loaded five to six times slower from SeaweedFS on loopback than from local disk. A node
that stored a series, or loaded it once, reads it again from this folder.

Why it is safe: the file objects are immutable (a stored file is never rewritten: a grown series
adds objects under a new part id, a record stored again gets a new upload id, and every key names
both), so a cached copy can never be stale, only orphaned; those are dropped with their record
(`drop_record`) or evicted. The copies are the sealed objects themselves (zstd + AES-GCM under
the record's data key), so the cache holds only ciphertext, as the bucket does, and a damaged
copy fails its GCM tag: the store then discards it and reads the object again from the bucket.
Writes go to a temporary name and are renamed, so a reader never sees half a file; nothing is
fsynced, because losing the cache loses nothing.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from daemons.render.store.ownership import claim_folder
from shared.validation import is_record_id

TEMPORARY_SUFFIX = ".part"


def _laid_out(entry: Path) -> bool:
    """Whether a cache folder's entry is one the cache makes: a record's folder (`ownership.claim_folder`)."""
    return entry.is_dir() and is_record_id(entry.name)


class BlobCache:
    """Sealed objects by name (`<record id>/<upload or part id>/<index>`), at most `max_bytes` in all."""

    def __init__(self, folder: Path, max_bytes: int):
        claim_folder(folder, "S3 blob cache", "s3.cache_dir", _laid_out)
        self.folder, self.max_bytes = folder, max_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._total = 0
        found = []
        for path in folder.glob("*/*/*"):
            if not path.is_file():
                continue
            if path.name.endswith(TEMPORARY_SUFFIX):  # a write cut short by a crash
                path.unlink(missing_ok=True)
                continue
            stat = path.stat()
            found.append((stat.st_mtime, path.relative_to(folder).as_posix(), stat.st_size))
        for _, name, size in sorted(found):
            self._sizes[name] = size
            self._total += size
        self._evict()

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._total

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if len(parts) != 3 or any(not p or p in (".", "..") for p in parts):
            raise ValueError(f"not a cache name: {name!r}")
        return self.folder.joinpath(*parts)

    def get(self, name: str) -> bytes | None:
        """The cached object, or None (then the caller reads the bucket and `put`s it)."""
        with self._lock:
            if name not in self._sizes:
                return None
            self._sizes.move_to_end(name)
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:  # removed behind the node's back
            self.discard([name])
            return None

    def put(self, name: str, blob: bytes) -> None:
        """Keep a copy of an object just written to or read from the bucket."""
        if len(blob) > self.max_bytes:
            return
        path = self._path(name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
        temporary.write_bytes(blob)
        os.replace(temporary, path)
        with self._lock:
            self._total += len(blob) - self._sizes.pop(name, 0)
            self._sizes[name] = len(blob)
            self._evict()

    def discard(self, names: list[str]) -> None:
        """Forget copies that must not be used (a damaged copy, objects of an upload that failed)."""
        with self._lock:
            for name in names:
                self._remove(name)

    def drop_record(self, record_id: str) -> None:
        """Forget every copy of a deleted or quarantined record."""
        folder = self._path(f"{record_id}/-/-").parent.parent  # refuses a record id that is not one name
        with self._lock:
            for name in [n for n in self._sizes if n.startswith(f"{record_id}/")]:
                self._remove(name)
        shutil.rmtree(folder, ignore_errors=True)

    def _remove(self, name: str) -> None:
        size = self._sizes.pop(name, None)
        if size is not None:
            self._total -= size
        self._path(name).unlink(missing_ok=True)

    def _evict(self) -> None:
        while self._total > self.max_bytes and self._sizes:
            self._remove(next(iter(self._sizes)))
