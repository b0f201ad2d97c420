"""The node's DICOM store: every file zstandard-compressed, then AES-256-GCM encrypted, written atomically.

Layout: `<dir>/<record id>/<index>.bin` for the files and `<dir>/<record id>/manifest.bin` for the
record's analysis (itself encrypted: it holds patient names). A series that grows gets one small
journal part per append, `<dir>/<record id>/journal/<first blob>.bin` (the appended files' manifest
entries, `manifest.JournalEntry`), instead of a rewritten manifest: the manifest a reader gets is
the base followed by the parts in order (`Manifest.with_journal`), until `replace_manifest` stores
the series' new analysis as the base and removes the parts it took in. A record is first written into
`<dir>/.tmp-<random>/` with every file fsynced, the manifest last, and only then renamed to its id
in one `os.replace`: after a crash or kill there is either the whole record or none, and leftover
temporary folders are removed at start-up.

Each blob is `BOUND_MAGIC | 96-bit random nonce | ciphertext+tag`, with the record id, the file
index and the SHA-256 of the file's bytes (which its manifest entry names) as associated data, so a
blob moved to another record or position fails authentication just like a modified one, and so does
a blob of another generation of the same record (a series deleted and stored again keeps its record
id and blob indices: a copy of the old generation's blob put back in the new folder would otherwise
decrypt as the new file).
The reader passes the SHA-256 its manifest names, so reading costs no hashing: loads into RAM
(`verify=False`) trust the tag; the SHA-256 itself is checked for bytes that leave the node.

Blob format versions are told apart by their magic, and both are read: blobs written before the
SHA-256 was bound (`MAGIC`, the record id and index as associated data) are not rewritten, and
their SHA-256 is always checked, `verify=False` or not, as their tag does not tell generations
apart. A `BOUND_MAGIC` blob relabelled `MAGIC` fails authentication (its associated data differ),
so no blob can be downgraded into the always-checked form unnoticed either. Manifests, journal parts
and the key check keep `MAGIC`.

Each manifest and journal part names its commit (`manifest.Commit`): the base its own, each part
the one its append made, so the parts that follow a base count on from its generation without a
gap (a part missing, or one of another storing of the series, is `RecordRolledBack`), and the node
refuses a record whose commit went back (`generations`). A part at or below its base's generation
is one an interrupted compaction left behind and is skipped whole.

A file or folder of a record that the node may not read (its owner or mode) or that fails with an I/O
error is `RecordUnreadable`: that record answers 503 with the fix, the others are served, and it is
never quarantined (it is not damaged). A blob missing from a stored record is damage (StoreError).

`<dir>/.key-check` is a constant sealed with the store's key when the store is created: a node whose
`storage.key_file` is not its store's key (a swapped or wrongly restored file) refuses to start
instead of taking every record for damaged and quarantining all of them. A store of an earlier
release, without that object, is checked against some of its records' manifests first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pwd
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemons.render.store.generations import GenerationBook, Generations, RecordRolledBack
from daemons.render.store.interface import RecordUnreadable, StoreUnavailable
from daemons.render.store.manifest import Commit, FileEntry, JournalEntry, Manifest, decode_journal, encode_journal
from daemons.render.store.ownership import claim_folder, shown
from shared.config import ConfigError
from shared.files import require_owner_only
from shared.validation import is_record_id

log = logging.getLogger(__name__)

MAGIC = b"SIVRENC1"
BOUND_MAGIC = b"SIVRENC2"  # a file blob whose associated data holds the file's SHA-256 (module doc)
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
ZSTD_LEVEL = 1
ASIDE_THREADS = 4  # files compressed ahead, and journal parts written, at once in a process (each)
MANIFEST = "manifest.bin"
FILED = "filed"
UNFILED = "unfiled"  # the filed mark was taken off (`unmark_filed`)
JOURNAL = "journal"
READ_ATTEMPTS = 5  # a manifest read that races a compaction (its parts removed meanwhile) is retried
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
QUARANTINE = ".quarantine"
KEY_CHECK = ".key-check"
KEY_CHECK_AAD = b"sivr-store-key-check"  # no record's associated data: a blob cannot pass for it
KEY_CHECK_TEXT = b"the key of this SIVR record store\n"
SAMPLED = 5  # manifests tried on a store without its key check; one that opens proves the key
UNREADABLE = "unreadable"  # the manifest version of a record this node may not read (`manifest_versions`)


class StoreError(Exception):
    """A stored blob failed authentication or its checksum: tampered or corrupt, never rendered."""


def compress(data: bytes) -> bytes:
    """The first half of sealing a file (`seal_blob`), the costly one: zstd (the GIL released)."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(data)


@dataclass(frozen=True)
class Precompressed:
    """A file whose compression for the store started ahead, on another thread, while the node
    still checks it: for a C-STORE the parse (Python, holding the GIL) and zstd then share two
    cores instead of running one after the other. Stores take it wherever they take a file's bytes."""

    raw: bytes
    compressed: Future[bytes]

    @classmethod
    def start(cls, raw: bytes) -> Precompressed:
        return cls(raw, _aside_pool("compress").submit(compress, raw))


def seal_blob(aead: AESGCM, magic: bytes, aad: bytes, data: bytes | Precompressed) -> bytes:
    """`magic | random nonce | AES-GCM(zstd(data))` bound to `aad`: the one sealed-object format of
    both stores (a local blob and an S3 object differ only in their magic and associated data)."""
    compressed = data.compressed.result() if isinstance(data, Precompressed) else compress(data)
    nonce = os.urandom(NONCE_BYTES)
    return magic + nonce + aead.encrypt(nonce, compressed, aad)


def open_blob(aead: AESGCM, magic: bytes, aad: bytes, blob: bytes, what: str) -> bytes:
    """The original bytes of a sealed object; StoreError naming `what` when modified, moved or truncated."""
    head = len(magic) + NONCE_BYTES
    if not blob.startswith(magic) or len(blob) < head + TAG_BYTES:
        raise StoreError(f"{what}: not a store object (damaged or replaced)")
    try:
        compressed = aead.decrypt(blob[len(magic):head], blob[head:], aad)
    except InvalidTag as exc:
        raise StoreError(f"{what}: authentication failed (tampered or corrupt)") from exc
    try:
        return zstandard.ZstdDecompressor().decompress(compressed)
    except zstandard.ZstdError as exc:
        raise StoreError(f"{what}: cannot be decompressed ({exc})") from exc


def create_key_file(path: Path) -> None:
    """Write a new random 256-bit key readable by its owner only (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(os.urandom(KEY_BYTES))


def load_key(path: Path) -> bytes:
    """The store key; refused when other users could read it or when it is not 32 bytes."""
    require_owner_only(path, "the store key")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: the store key must be exactly {KEY_BYTES} bytes, has {len(key)}")
    return key


def _version(stat: os.stat_result) -> str:
    """A manifest file's version: a replaced manifest is a new inode with a new modification time."""
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_aside: dict[str, ThreadPoolExecutor] = {}
_aside_lock = threading.Lock()


def _aside_pool(purpose: str) -> ThreadPoolExecutor:
    """The threads that compress files ahead (`Precompressed`, purpose "compress") or write a journal
    part while its blobs are written ("journal"): one pool per purpose and process, made at its first
    use. A pool made per append cost a thread start and stop at every C-STORE (about 1 ms here, 5 % of
    an instance's time); one pool for both queued an append's journal part, which it waits for while
    holding its series' lock, behind every part of a STOW-RS request compressed ahead."""
    with _aside_lock:
        pool = _aside.get(purpose)
        if pool is None:
            pool = _aside[purpose] = ThreadPoolExecutor(ASIDE_THREADS, thread_name_prefix=f"store-{purpose}")
        return pool


def _forget_aside_pool() -> None:
    """In a forked child: a pool's threads do not survive a fork (the node's workers are forked), nor
    may a lock another thread held at the fork stay held."""
    global _aside, _aside_lock
    _aside, _aside_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_aside_pool)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _has_manifest(folder: Path) -> bool | None:
    """Whether a record folder holds its manifest; None when the node may not look into it (its owner
    or mode): such a folder is neither a leftover to remove nor a record gone (`record_ids` lists it)."""
    try:
        return (folder / MANIFEST).is_file()
    except OSError:
        return None


def _node_user() -> str:
    """The user the node runs as, named in the fix for a file it may not read."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _digests(entries: Iterable[FileEntry], first_blob: int, count: int) -> list[str]:
    """The SHA-256 each of blobs `first_blob`.. `first_blob + count - 1` is sealed with: its manifest
    entry's, which the ingest computed of the file's bytes and every reader passes back (`read_file`),
    so a write hashes nothing again (a second SHA-256, 0.37 ms a 513 KiB file, slowed STOW-RS). A
    digest that does not match its bytes makes the blob unreadable, never another file's."""
    by_blob = {entry.blob: entry.sha256 for entry in entries}
    return [by_blob[first_blob + offset] for offset in range(count)]


def _laid_out(entry: Path) -> bool:
    """Whether a store folder's entry is one the store makes (`ownership.claim_folder`); one of them
    means the store has held records, so its key is never replaced by a new one."""
    name = entry.name
    if name == KEY_CHECK:
        return entry.is_file()
    return entry.is_dir() and (is_record_id(name) or name.startswith((TEMP_PREFIX, TRASH_PREFIX)) or name == QUARANTINE)


def _laid_out_names(root: Path) -> list[str]:
    """The entries of a store folder the store made (`_laid_out`), by name; none for no folder."""
    return sorted(p.name for p in root.iterdir() if _laid_out(p)) if root.is_dir() else []


class StoreFull(Exception):
    """The disk holding the store is full; nothing of the record was kept."""


class RecordStore:
    """Encrypted, compressed, atomically written records under one folder (the `stores.Store` interface)."""

    location = ""  # no other node reads this folder

    def __init__(self, root: Path, key: bytes, threads: int = 2):
        self.root = Path(root)
        self._aead = AESGCM(key)
        self._threads = threads
        self._generations: Generations | None = None
        # record id -> (version, its commit) as last read or written here: an append names the commit
        # it makes without decrypting the manifest again
        self._commits: dict[str, tuple[str, Commit]] = {}

    def track_generations(self, book: GenerationBook) -> None:
        """Refuse rolled-back manifests from now on (`generations`); no other node writes this store."""
        self._generations = Generations(book, shared=bool(self.location))

    @classmethod
    def open(cls, root: Path, key_file: Path, create_key: bool = True,
             records_expected: bool = False) -> RecordStore:
        """Open the store (its folder claimed first: `ownership`) with its own key, or refuse (ConfigError).

        `records_expected` (the node's catalogue lists records): a folder with neither a key check nor
        a record is then the empty mount point of an unmounted volume, not a new store, and is
        refused before anything is written there. Opened as new, it got a key check, the start-up
        sync dropped the whole catalogue and new records went beside the volume (the folder's own
        checks, `_held`, only guard a store unmounted while the node runs).

        A missing key is created only for a store that never held a record, and only when
        `create_key` (a node starting; maintenance commands such as `sivr store rewrap` pass False:
        one made there would be taken for the store's key from then on): a store with records,
        quarantined records or their leftovers keeps its key (a new one would open none of them).
        A key that is not the store's is refused here, before a record is read with it.
        """
        root, key_file = Path(root), Path(key_file)
        if not create_key and not key_file.exists():
            raise ConfigError(f"storage.key_file = {key_file}: the store key is missing; restore the store's key "
                              "file (only a render node starting on an empty store makes a new one)")
        if records_expected and not _laid_out_names(root):
            raise ConfigError(f"storage.dir = {root} holds no record and no key check, but this node's catalogue "
                              "lists records: is its volume mounted? The node does not start on an empty folder in "
                              "its place (the catalogue would be dropped and new records written beside the volume)")
        claim_folder(root, "record store", "storage.dir", _laid_out)
        if not key_file.exists():
            held = _laid_out_names(root)
            if held:
                raise ConfigError(f"storage.key_file = {key_file}: the store key is missing but {root} holds "
                                  f"records ({shown(held)}); restore the store's key file, a new key would open none")
            create_key_file(key_file)
        store = cls(root, load_key(key_file))
        store._check_key(key_file)
        return store

    # --- the store's key ---------------------------------------------------------------------
    def _check_key(self, key_file: Path) -> None:
        """Refuse a key that is not this store's; give a store without its key check one.

        Why: with another key every manifest fails authentication, and the node would quarantine
        every record and serve an empty, "ready" store. A store of an earlier release has no key
        check: the key must open one of a few of its record manifests (quarantined ones too, they
        were this store's), and an empty store's key is its key.
        """
        check = self.root / KEY_CHECK
        if check.is_file():
            try:
                opened = open_blob(self._aead, MAGIC, KEY_CHECK_AAD, check.read_bytes(), str(check))
            except StoreError:
                opened = b""
            if opened != KEY_CHECK_TEXT:
                raise self._not_its_key(key_file, f"{check} does not open with it")
            return
        sampled = list(islice(self._manifests_to_sample(), SAMPLED))
        if sampled and not any(self._opens(record_id, manifest) for record_id, manifest in sampled):
            raise self._not_its_key(key_file, f"none of {len(sampled)} record manifests opens with it")
        self._write_key_check()

    def _not_its_key(self, key_file: Path, why: str) -> ConfigError:
        return ConfigError(f"storage.key_file = {key_file}: not the key of the store at {self.root} ({why}); "
                           "restore the store's own key file (the node read no record with this one)")

    def _manifests_to_sample(self) -> Iterator[tuple[str, Path]]:
        """(record id, manifest file) of stored records, then of quarantined ones."""
        live = ((entry.name, entry / MANIFEST) for entry in self.root.iterdir())
        folder = self.root / QUARANTINE
        aside = ((entry.name.rpartition("-")[0], entry / MANIFEST)
                 for entry in (folder.iterdir() if folder.is_dir() else ()))
        return ((record_id, manifest) for record_id, manifest in chain(live, aside)
                if is_record_id(record_id) and _has_manifest(manifest.parent))

    def _opens(self, record_id: str, manifest: Path) -> bool:
        """Whether the record's manifest authenticates with this store's key (one gone meanwhile does not count)."""
        try:
            self._open(record_id, "manifest", manifest.read_bytes())
        except (StoreError, OSError):
            return False
        return True

    def _write_key_check(self) -> None:
        """Write the key check durably, whole or not at all (written in a temporary folder, then renamed)."""
        temp = self.root / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        temp.mkdir()
        try:
            _write_durable(temp / KEY_CHECK, seal_blob(self._aead, MAGIC, KEY_CHECK_AAD, KEY_CHECK_TEXT))
            os.replace(temp / KEY_CHECK, self.root / KEY_CHECK)
            _fsync_dir(self.root)
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    # --- blobs -------------------------------------------------------------------------------
    @staticmethod
    def _aad(record_id: str, part: str) -> bytes:
        return f"sivr-record:{record_id}:{part}".encode("ascii")

    def _seal(self, record_id: str, part: str, data: bytes | Precompressed) -> bytes:
        return seal_blob(self._aead, MAGIC, self._aad(record_id, part), data)

    def _open(self, record_id: str, part: str, blob: bytes) -> bytes:
        return open_blob(self._aead, MAGIC, self._aad(record_id, part), blob, f"record {record_id} {part}")

    @staticmethod
    def _file_aad(record_id: str, index: int, sha256: str) -> bytes:
        """A file blob's associated data (`BOUND_MAGIC`): its record, position and content."""
        return f"sivr-record:{record_id}:{index}:{sha256}".encode("ascii")

    def _open_file(self, record_id: str, index: int, sha256: str, blob: bytes) -> bytes:
        """A file blob's bytes, by its format (module doc); StoreError when it is not that file."""
        if blob.startswith(BOUND_MAGIC):
            return open_blob(self._aead, BOUND_MAGIC, self._file_aad(record_id, index, sha256), blob,
                             f"record {record_id} file {index}")
        return self._open(record_id, str(index), blob)

    def _unreadable(self, record_id: str, path: Path, exc: OSError, writing: bool = False) -> RecordUnreadable:
        """The error for a record's file or folder the node cannot read (`writing`: write, as a series
        that grows must): the client is told its path in the store and the fix, the log gets the
        absolute path."""
        able, done = ("writable", "written") if writing else ("readable", "read")
        if exc.errno in (errno.EACCES, errno.EPERM):
            user = _node_user()
            why = (f"is not {able} by the node's user {user}: chown the record's folder and its files to "
                   f"{user} (or make them {able} by it)")
        elif exc.errno == errno.EROFS:
            why = f"cannot be {done}: the store's file system is mounted read-only"
        else:
            why = f"cannot be {done} ({exc.strerror or exc}): check the disk"
        log.error("record %s: %s %s", record_id, path, why)
        return RecordUnreadable(record_id, f"record {record_id}: {path.relative_to(self.root)} in the store {why}")

    def _unwritable(self, record_id: str, folder: Path, exc: OSError) -> Exception | None:
        """The error for a write into a stored record's folder that failed: StoreFull on a full disk;
        a folder or file the node may not write (restored as root, a read-only mount) is that record's
        503 with the fix (`_unreadable`), where it was a 500 naming nothing; None: any other error, as
        it is."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreFull(f"the store at {self.root} has no space left")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            path = Path(exc.filename) if isinstance(exc.filename, str) else folder
            return self._unreadable(record_id, path if path.is_relative_to(self.root) else folder, exc, writing=True)
        return None

    def _read(self, record_id: str, path: Path) -> bytes:
        """A record's file; RecordUnreadable when the node may not read it (FileNotFoundError as it is)."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._unreadable(record_id, path, exc) from exc

    # --- records -----------------------------------------------------------------------------
    def path_of(self, record_id: str) -> Path:
        return self.root / record_id

    def exists(self, record_id: str) -> bool:
        path = self.path_of(record_id) / MANIFEST
        try:
            if path.is_file():
                return True
        except OSError as exc:  # its folder unreadable: stored, but this node may not read it
            raise self._unreadable(record_id, path.parent, exc) from exc
        self._held()
        return False

    def _held(self) -> None:
        """StoreUnavailable unless the folder still holds this store (its key check, written when it was
        opened). An unmounted volume leaves its empty mount point: there, every record would look
        deleted, a sync would drop the whole catalogue, and new records would be written beside the
        volume and vanish when it came back. So a missing record is only taken for a deleted one while
        the store is there."""
        if not (self.root / KEY_CHECK).is_file():
            raise StoreUnavailable(f"the store folder {self.root} is missing or no longer holds the store (its "
                                   f"{KEY_CHECK} is gone): is its volume mounted?")

    def write_record(self, record_id: str, files: list[bytes | Precompressed], manifest: Manifest) -> bool:
        """Store a record atomically; False (and nothing written) if it is already stored.

        A full disk raises `StoreFull` after the partial copy is removed.
        """
        if self.exists(record_id):
            return False
        temp = self.root / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            return self._write_into(temp, record_id, files, manifest)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(f"the store at {self.root} has no space left") from exc
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # the whole store: a 503 with the fix
                log.error("the store folder %s cannot be written: %s", self.root, exc)
                user = _node_user()
                raise StoreUnavailable(f"the store folder is not writable by the node's user {user} (read-only, or "
                                       f"owned by another user): make it writable by {user}; its path is in the "
                                       "node's log") from exc
            raise
        finally:
            with contextlib.suppress(OSError):  # a folder the node may not write holds nothing of it
                if temp.exists():
                    shutil.rmtree(temp, ignore_errors=True)

    def _write_blobs(self, folder: Path, record_id: str, first_blob: int,
                     files: list[bytes | Precompressed], digests: list[str]) -> None:
        """Seal and durably write `files` as blobs `first_blob`, `first_blob + 1`... in `folder`, each
        bound to its SHA-256 in `digests` (module doc).

        Several threads at once (zstd, AES-GCM and fsync release the GIL): the fsyncs of a batch
        overlap instead of queueing one after another. Every blob is on disk when this returns (the
        first error is raised after all writes ended), so the caller's manifest still comes last.
        """
        def write_one(offset: int) -> None:
            index = first_blob + offset
            aad = self._file_aad(record_id, index, digests[offset])
            _write_durable(folder / f"{index:06d}.bin", seal_blob(self._aead, BOUND_MAGIC, aad, files[offset]))

        if len(files) <= 1:
            for offset in range(len(files)):
                write_one(offset)
            return
        with ThreadPoolExecutor(min(self._threads, len(files))) as pool:
            list(pool.map(write_one, range(len(files))))

    def _write_into(self, temp: Path, record_id: str, files: list[bytes | Precompressed],
                    manifest: Manifest) -> bool:
        temp.mkdir()
        self._write_blobs(temp, record_id, 0, files, _digests(manifest.every_file, 0, len(files)))
        commit = Commit(uuid.uuid4().hex, 1)  # a new storing of the series
        body = replace(manifest, commit=commit).encode()
        _write_durable(temp / MANIFEST, self._seal(record_id, "manifest", body))
        _fsync_dir(temp)
        try:
            os.replace(temp, self.path_of(record_id))
        except OSError:
            if self.exists(record_id):  # the same record was stored concurrently
                return False
            raise
        _fsync_dir(self.root)
        self._committed(record_id, commit, None, new_lineage=True)
        return True

    def _committed(self, record_id: str, commit: Commit, version: str | None, new_lineage: bool = False) -> None:
        """Note a commit this node made, and the version it is at when that is known for sure (else
        the next append reads the manifest to learn its commit)."""
        if version is None:
            self._commits.pop(record_id, None)
        else:
            self._commits[record_id] = (version, commit)
        if self._generations is not None:
            self._generations.wrote(record_id, commit, new_lineage)

    def _commit_at(self, record_id: str, version: str) -> Commit:
        """The record's commit at `version` (an append or analysis continues it); StoreUnavailable
        (retry) when the record is no longer at that version."""
        known = self._commits.get(record_id)
        if known is not None and known[0] == version:
            return known[1]
        manifest, read = self.read_manifest_versioned(record_id)
        if read != version:
            raise StoreUnavailable(f"record {record_id} changed since it was read; retry")
        return manifest.commit

    def append_files(self, record_id: str, first_blob: int, files: list[bytes | Precompressed],
                     entries: list[JournalEntry], expected_version: str) -> str:
        """Add files to a stored record (a series that grows) and their manifest entries as one journal part.

        Each new file is written durably as blob `first_blob + i` before the part that names it
        (`journal/<first_blob>.bin`, written aside, fsynced, then linked into place: a part is whole
        or absent); after a crash the record is the old one or the grown one, never half of it; a
        blob left without a part is overwritten by the next append. The caller serialises appends
        to one record (`daemons.render.ingest.service`); a record changed since `expected_version` was read
        is not appended to (StoreUnavailable), nor is a part of that name written by another node.
        """
        folder = self.path_of(record_id)
        if self.manifest_version(record_id) != expected_version:
            raise StoreUnavailable(f"record {record_id} changed since it was read; retry")
        commit = self._commit_at(record_id, expected_version).next()
        journal = folder / JOURNAL
        temp = journal / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            journal.mkdir(exist_ok=True)
            part = self._seal(record_id, f"journal:{first_blob}", encode_journal(entries, commit))
            # the part's bytes are written aside while the blobs are (each fsync waits on the disk);
            # it takes its name only once the blobs' names are durable
            part_written = _aside_pool("journal").submit(_write_durable, temp, part)
            try:
                self._write_blobs(folder, record_id, first_blob, files,
                                  _digests((entry.file for entry in entries), first_blob, len(files)))
            finally:
                part_written.result()
            _fsync_dir(folder)
            try:
                os.link(temp, journal / f"{first_blob:06d}.bin")
            except FileExistsError as exc:
                raise StoreUnavailable(f"record {record_id} grew on another node meanwhile; retry") from exc
            _fsync_dir(journal)
        except OSError as exc:
            if (refused := self._unwritable(record_id, folder, exc)) is None:
                raise
            raise refused from exc
        finally:
            with contextlib.suppress(OSError):  # in a folder the node may not write, nothing was made
                temp.unlink(missing_ok=True)
        version = self._current_version(record_id)
        # the version is this commit's while this part is the last (appends to a series take turns)
        self._committed(record_id, commit, version if version.endswith(f".{first_blob:06d}") else None)
        return version

    def replace_manifest(self, record_id: str, manifest: Manifest, expected_version: str) -> str:
        """Store `manifest` (the analysis of the whole series) as the record's base, atomically, then
        remove the journal parts it took in; refused (StoreUnavailable) if the record changed since
        `expected_version`. A part left behind by a crash is skipped by readers and removed next time."""
        folder = self.path_of(record_id)
        if self.manifest_version(record_id) != expected_version:
            raise StoreUnavailable(f"record {record_id} changed since it was read; retry")
        commit = self._commit_at(record_id, expected_version).next()
        try:
            temp = folder / f"{TEMP_PREFIX}{MANIFEST}"
            _write_durable(temp, self._seal(record_id, "manifest", replace(manifest, commit=commit).encode()))
            os.replace(temp, folder / MANIFEST)
            _fsync_dir(folder)
        except OSError as exc:
            if (refused := self._unwritable(record_id, folder, exc)) is None:
                raise
            raise refused from exc
        merged = {entry.blob for entry in manifest.files}
        for name in self._parts(record_id):  # a part is merged whole: its first blob tells
            if int(name[:-4]) in merged:
                (folder / JOURNAL / name).unlink(missing_ok=True)
        version = self._current_version(record_id)
        self._committed(record_id, commit, None if "+" in version else version)  # no part left: this commit's
        return version

    def _parts(self, record_id: str) -> list[str]:
        """Names of the record's journal parts, in append order."""
        journal = self.path_of(record_id) / JOURNAL
        try:
            names = os.listdir(journal)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._unreadable(record_id, journal, exc) from exc
        return sorted(name for name in names if not name.startswith(".") and name.endswith(".bin"))

    @staticmethod
    def _joined(base: str, parts: list[str]) -> str:
        """A record's version: its base manifest's, and which parts follow it (first blobs only grow)."""
        return base if not parts else f"{base}+{len(parts)}.{parts[-1][:-4]}"

    def _current_version(self, record_id: str) -> str:
        version = self.manifest_version(record_id)
        if version is None:
            raise StoreUnavailable(f"record {record_id} was removed meanwhile")
        return version

    def read_manifest(self, record_id: str) -> Manifest:
        return self.read_manifest_versioned(record_id)[0]

    def read_manifest_versioned(self, record_id: str) -> tuple[Manifest, str]:
        """The base manifest followed by its journal parts (a pending manifest while any follows),
        refused when it went back (`generations`)."""
        if self._generations is None:
            manifest, version = self._read_versioned(record_id)
        else:
            manifest, version = self._generations.checked(record_id, lambda: self._read_versioned(record_id))
        self._commits[record_id] = (version, manifest.commit)
        return manifest, version

    def _read_versioned(self, record_id: str) -> tuple[Manifest, str]:
        folder = self.path_of(record_id)
        for _ in range(READ_ATTEMPTS):
            # the version of the very file read: a manifest is replaced by rename, never rewritten in place
            try:
                with open(folder / MANIFEST, "rb") as handle:
                    base_version = _version(os.fstat(handle.fileno()))
                    blob = handle.read()
            except FileNotFoundError:
                self._held()
                raise
            except OSError as exc:
                raise self._unreadable(record_id, folder / MANIFEST, exc) from exc
            parts = self._parts(record_id)
            try:
                sealed = [(name, self._read(record_id, folder / JOURNAL / name)) for name in parts]
            except FileNotFoundError:
                continue  # compacted meanwhile: read the new base
            base = Manifest.decode(self._open(record_id, "manifest", blob))
            journal = [(name, *decode_journal(self._open(record_id, f"journal:{int(name[:-4])}", part)))
                       for name, part in sealed]
            commit, entries, gap = base.commit, [], None
            for name, part_entries, part_commit in journal:
                if part_commit.generation == 0 and base.commit.generation == 0:
                    entries.extend(part_entries)  # written before commits were counted: read as then
                elif part_commit.generation > base.commit.generation:  # (below: merged into the base)
                    if part_commit != commit.next():
                        gap = (name, part_commit)
                        break
                    commit = part_commit
                    entries.extend(part_entries)
            if gap is not None:
                if self.manifest_version(record_id) != self._joined(base_version, parts):
                    continue  # compacted or grown meanwhile: read again
                raise self._journal_gap(record_id, commit, *gap)
            return replace(base.with_journal(entries), commit=commit), self._joined(base_version, parts)
        raise StoreUnavailable(f"record {record_id} keeps changing while it is read; retry")

    def _journal_gap(self, record_id: str, before: Commit, name: str, found: Commit) -> RecordRolledBack:
        """A journal part that does not continue the commits before it: the part between was removed,
        or this one is of another storing of the series (put back). Refused as a rollback (logged)."""
        what = (f"journal part {name} is of another storing of this series" if found.lineage != before.lineage
                else f"journal part {name} is commit {found.generation} but follows commit {before.generation}: "
                     "the parts between are missing")
        message = (f"record {record_id}: {what} (removed or put back by someone with write access to the store, "
                   "or a partial restore). It is not served: restore the record's whole folder from one backup, "
                   "or delete the series and send it again")
        log.error("%s", message)
        if self._generations is not None:
            self._generations.book.refused(record_id, found, before, message)
        return RecordRolledBack(record_id, message)

    def manifest_version(self, record_id: str) -> str | None:
        path = self.path_of(record_id) / MANIFEST
        try:
            base = _version(path.stat())
        except FileNotFoundError:
            self._held()
            return None
        except OSError as exc:
            raise self._unreadable(record_id, path, exc) from exc
        return self._joined(base, self._parts(record_id))

    def manifest_versions(self) -> dict[str, str]:
        """Every stored record's version; `UNREADABLE` for one this node may not read (logged): it is
        still stored, so a sync neither drops it nor reads it until it can be read again."""
        versions = {}
        for record_id in self.record_ids():
            try:
                version = self.manifest_version(record_id)
            except RecordUnreadable:
                version = UNREADABLE
            if version is not None:
                versions[record_id] = version
        return versions

    def read_file(self, record_id: str, index: int, sha256: str, verify: bool = True) -> bytes:
        """The original bytes of file `index`, verified against the manifest's SHA-256.

        `verify=False` is for decoding into RAM only: the GCM tag, bound to `sha256`, still refuses
        any modified or moved blob and any of another generation of the record, and zstd's frame
        checksum any corruption, so the SHA-256 (a quarter of the CPU time of a load) is kept for
        bytes that leave the node, and for blobs written before it was bound (module doc).

        FileNotFoundError for a record deleted, StoreError for a blob missing from a stored one
        (its path is logged, not put in the error: the message reaches clients).
        """
        path = self.path_of(record_id) / f"{index:06d}.bin"
        try:
            blob = self._read(record_id, path)
        except FileNotFoundError:
            if not self.exists(record_id):
                raise
            log.error("record %s: its file %s is missing", record_id, path)
            raise StoreError(f"record {record_id} file {index}: missing from the store (deleted or lost)") from None
        data = self._open_file(record_id, index, sha256, blob)
        if (verify or not blob.startswith(BOUND_MAGIC)) and hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"record {record_id} file {index}: checksum mismatch (another version of the file, "
                             "or damaged)")
        return data

    def delete(self, record_id: str) -> bool:
        """Remove a record; it disappears in one rename, then its files are deleted. Its storing is
        buried before the rename: a node stopped in between leaves a series it refuses to serve (and
        an administrator deletes again, `generations.delete_put_back`), where burying it after left
        a series gone without a tombstone, which a copy put back then replaced unrefused."""
        path = self.path_of(record_id)
        if not path.exists():
            self._held()
            return False
        if self._generations is not None:  # its storing is buried first: put back, it is refused
            self._generations.deleted(record_id, self._stored_commit(record_id))
        trash = self.root / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
        os.replace(path, trash)
        self._gone(record_id)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _stored_commit(self, record_id: str) -> Commit | None:
        """The commit of the base manifest in the record's folder, for `Generations.deleted`; None
        when it does not read (a damaged or unreadable record is deleted all the same)."""
        try:
            body = self._open(record_id, "manifest", self._read(record_id, self.path_of(record_id) / MANIFEST))
            return Commit.from_json(json.loads(body))
        except (OSError, StoreUnavailable, StoreError, ValueError):
            return None

    def _gone(self, record_id: str) -> None:
        """The record left its folder (deleted or quarantined): this process forgets its commit. The
        book keeps a quarantined record's latest commit and buries a deleted one's (`generations`)."""
        self._commits.pop(record_id, None)

    def quarantine(self, record_id: str, reason: str) -> Path | None:
        """Move a damaged record aside (kept for IT to inspect, never served); None if it is gone already.

        The folder lands in `<dir>/.quarantine/<record id>-<random>/` with a `reason.txt`; the node
        then works as if the record had been deleted.
        """
        path = self.path_of(record_id)
        if not path.exists():
            return None
        folder = self.root / QUARANTINE
        folder.mkdir(exist_ok=True)
        target = folder / f"{record_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(path, target)
        except FileNotFoundError:  # quarantined by another request meanwhile
            return None
        self._gone(record_id)
        try:
            (target / "reason.txt").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:  # a full disk: the record is aside all the same, its reason in the log
            log.error("record %s quarantined in %s without its reason.txt (%s); the reason: %s",
                      record_id, target, exc, reason)
        return target

    def quarantined(self) -> list[str]:
        """Names of the quarantined record folders (`<record id>-<random>`)."""
        folder = self.root / QUARANTINE
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def record_ids(self) -> list[str]:
        """The stored records, those whose folder this node may not read included (`_has_manifest`)."""
        self._held()
        stored = []
        for folder in self.root.iterdir():
            if folder.name.startswith("."):
                continue
            manifest = _has_manifest(folder)  # None: a folder it may not look into, a record's if so named
            if manifest or (manifest is None and is_record_id(folder.name)):
                stored.append(folder.name)
        return sorted(stored)

    def mark_filed(self, record_id: str) -> None:
        """An empty `filed` file in the record's folder (and no `unfiled`): deleting the record deletes
        the marks."""
        folder = self.path_of(record_id)
        if not self.exists(record_id):
            raise FileNotFoundError(f"record {record_id} is not in the store {self.root}")
        if not (folder / FILED).exists():
            _write_durable(folder / FILED, b"")
            _fsync_dir(folder)
        if (folder / UNFILED).exists():
            (folder / UNFILED).unlink(missing_ok=True)
            _fsync_dir(folder)

    def unmark_filed(self, record_id: str) -> bool:
        """An `unfiled` file in place of the `filed` one, durably (a crash must not bring the mark
        back; one between the two leaves the series filed, as it was)."""
        folder = self.path_of(record_id)
        if not self.exists(record_id):
            raise FileNotFoundError(f"record {record_id} is not in the store {self.root}")
        if not (folder / FILED).exists():
            return False
        _write_durable(folder / UNFILED, b"")
        (folder / FILED).unlink(missing_ok=True)
        _fsync_dir(folder)
        return True

    def filed_among(self, record_ids: list[str]) -> set[str]:
        """The filed ones; a record whose folder this node may not read is taken for unfiled (it is
        served to no one until it is readable, `RecordUnreadable`)."""
        return {r for r in record_ids if self._marked(r, FILED)}

    def unfiled_among(self, record_ids: list[str]) -> set[str]:
        return {r for r in record_ids if self._marked(r, UNFILED)}

    def _marked(self, record_id: str, mark: str) -> bool:
        try:
            return (self.path_of(record_id) / mark).is_file()
        except OSError:
            return False

    def cleanup(self) -> int:
        """Remove what an interrupted write or delete left behind; returns how many folders."""
        removed = 0
        for path in self.root.iterdir():
            if path.name == QUARANTINE:
                continue
            if path.name.startswith((TEMP_PREFIX, TRASH_PREFIX)) or (
                    is_record_id(path.name) and path.is_dir() and _has_manifest(path) is False):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    def used_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*.bin"))

    def rewrap(self) -> int | None:
        """None: the local store has one key and no wrapped data keys, so nothing can be rewrapped."""
        return None

    def check(self) -> None:
        """The store folder can be listed and written (readiness)."""
        self._held()
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise StoreUnavailable(f"the store folder {self.root} is not readable and writable")
