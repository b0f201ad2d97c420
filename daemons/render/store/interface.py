"""The render store interface the node uses, and the choice of backend from the config.

Two backends implement it: `storage.RecordStore` (the node's own folder) and
`s3store.S3RecordStore` (a bucket shared by the render nodes of one institution). The rest of the
node sees only `Store`, so nothing outside this module names a backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from flask import Flask

from daemons.render.store.manifest import JournalEntry, Manifest
from shared.config import Config, ConfigError
from shared.errors import error_response

if TYPE_CHECKING:  # the local store and generations modules import this one
    from daemons.render.store.generations import GenerationBook
    from daemons.render.store.local import Precompressed

BACKENDS = ("local", "s3")


class StoreUnavailable(Exception):
    """The store cannot be reached or refuses us right now; the request may be retried later (503)."""

    #: what anyone may be told of it (`/readyz` needs no token), where the message names more than
    #: an operator's own configuration shows (an object store's endpoint and bucket); None: the message
    public: str | None = None


class RecordUnreadable(StoreUnavailable):
    """One record's file or folder cannot be read by this node (its owner or mode, an I/O error) while
    the store's other records can: that record answers 503 with the fix (the message names its file in
    the store, never the node's paths), lists leave it out, and it is not quarantined (not damaged)."""

    def __init__(self, record_id: str, message: str):
        super().__init__(message)
        self.record_id = record_id


@runtime_checkable
class Store(Protocol):
    """What a render node needs of the place its encrypted records live."""

    location: str
    """Names the shared store for the institution registry ("" for a store no other node reads)."""

    def exists(self, record_id: str) -> bool: ...

    def write_record(self, record_id: str, files: list[bytes | Precompressed], manifest: Manifest) -> bool:
        """Store a record atomically; False (nothing written) if it is already stored. A file is its
        bytes, or `Precompressed`: its bytes with their compression under way."""

    def append_files(self, record_id: str, first_blob: int, files: list[bytes | Precompressed],
                     entries: list[JournalEntry], expected_version: str) -> str:
        """Add files to a stored record as blobs `first_blob`, `first_blob + 1`, ..., then their
        manifest entries (`entries`, naming them) to the record's journal as the commit point:
        readers see the old record or the grown one (a pending manifest, `manifest` module doc).

        `entries` continue the manifest of version `expected_version`; if the record changed since
        (another node appended), nothing is committed and StoreUnavailable asks for a retry, so an
        append never drops instances another node added. Returns the record's new version."""

    def replace_manifest(self, record_id: str, manifest: Manifest, expected_version: str) -> str:
        """Store `manifest` (the analysis of every file of the record) in place of the record's
        manifest and journal, if the record is still at `expected_version` (else StoreUnavailable).
        Returns the new version."""

    def read_manifest(self, record_id: str) -> Manifest: ...

    def read_manifest_versioned(self, record_id: str) -> tuple[Manifest, str]:
        """The manifest (pending while journal entries follow its analysis) and its version, read
        together (the version changes at every append and replacement)."""

    def manifest_version(self, record_id: str) -> str | None:
        """The current version of a record's manifest (cheap: no decryption); None if not stored."""

    def manifest_versions(self) -> dict[str, str]:
        """Every stored record's manifest version, in one listing."""

    def read_file(self, record_id: str, index: int, sha256: str, verify: bool = True) -> bytes:
        """The original bytes of blob `index` (a manifest file entry's `blob`)."""

    def delete(self, record_id: str) -> bool: ...

    def record_ids(self) -> list[str]: ...

    def mark_filed(self, record_id: str) -> None:
        """Say in the store that the series is filed at its institution (durable, idempotent)."""
        ...

    def unmark_filed(self, record_id: str) -> bool:
        """Take the filed mark off (its registration at the institution deleted, or never made): the
        series is unfiled for every node sharing the store, which keeps that it was unfiled
        (`unfiled_among`). True if it was marked."""
        ...

    def filed_among(self, record_ids: list[str]) -> set[str]:
        """Which of these records the store says are filed (by this node or another sharing it)."""
        ...

    def unfiled_among(self, record_ids: list[str]) -> set[str]:
        """Which of these records a node took the filed mark off (`unmark_filed`), and none filed again
        since: a node whose catalogue still says filed follows that, where a record of a store that
        kept no marks yet (an upgraded node) is marked (`RecordIndex`)."""
        ...

    def cleanup(self) -> int:
        """Remove what interrupted writes and deletes left behind; returns how many were removed."""

    def used_bytes(self) -> int: ...

    def check(self) -> None:
        """Raise StoreUnavailable unless the store can be reached now (readiness)."""

    def quarantine(self, record_id: str, reason: str) -> object | None:
        """Move a damaged record aside (kept for IT, never served); where it went, None if gone already."""

    def quarantined(self) -> list[str]:
        """Names of the quarantined records (`<record id>-<random>`)."""

    def rewrap(self) -> int | None:
        """Wrap every record's data key with the current key-encryption key; returns how many changed,
        None for a store with one key and no wrapped data keys (local)."""

    def track_generations(self, book: GenerationBook) -> None:
        """From now on refuse a manifest older than the latest `book` holds, and note every commit
        there (`generations` module doc); a store not given a book (a maintenance command) checks nothing."""


def open_store(config: Config, create_key: bool = True, records_expected: bool = False) -> Store:
    """The store the config names (`storage.backend`); `create_key` and `records_expected`: as
    `RecordStore.open` (a local store's missing key is made for an empty store only when True; an
    empty folder is refused when the node's catalogue lists records). An S3 store needs neither:
    a missing bucket is unavailable (`check`), never an empty store."""
    storage = config["storage"]
    backend = storage["backend"]
    if backend == "s3":
        from daemons.render.store.s3 import S3RecordStore

        return S3RecordStore.from_config(config)
    if backend == "local":
        from daemons.render.store.local import RecordStore

        if storage["old_key_files"]:  # accepted and ignored, it let an operator believe a key rotation was done
            raise ConfigError(f"{config.source or '<config>'}: storage.old_key_files is for storage.backend = "
                              "\"s3\" only; a local store has one key, storage.key_file: remove storage.old_key_files")
        return RecordStore.open(Path(storage["dir"]), Path(storage["key_file"]), create_key, records_expected)
    raise ConfigError(f"{config.source or '<config>'}: storage.backend must be one of {', '.join(BACKENDS)}")


def readiness_check(store: Store) -> Callable[[], str | None]:
    """`/readyz`'s store check: what is wrong, or None (the same `check()` for every backend)."""

    def check() -> str | None:
        try:
            store.check()
        except StoreUnavailable as exc:
            return exc.public or str(exc)
        return None

    return check


def install_error_handler(app: Flask) -> None:
    """A store that cannot be reached answers 503 store_unavailable on every route, never 500. One
    series the store holds but the node will not read (a folder it may not open, a copy put back)
    says so with its fix: "cannot be reached … try again shortly" sent its administrator waiting for
    a store that was up."""

    @app.errorhandler(StoreUnavailable)
    def _unavailable(exc: StoreUnavailable):
        message = (f"this series cannot be read from the render node's store: {exc}"
                   if isinstance(exc, RecordUnreadable)
                   else f"the render node's record store cannot be reached: {exc}; try again shortly")
        response = error_response(503, "store_unavailable", message)
        response.headers["Retry-After"] = "5"
        return response
