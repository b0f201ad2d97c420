"""A render store in an S3 bucket shared by the render nodes of one institution.

Layout under the institution's prefix:

    manifests/<record id>                   the commit point: header (wrapped data key, upload id)
                                            and the encrypted manifest
    objects/<record id>/<upload id>/<NNNNNN> one encrypted object per uploaded file
    objects/<record id>/<part id>/<NNNNNN>   files added later to a series that grows; the
                                            manifest header lists each part's first blob index

An upload writes every file object under a fresh upload id, then the manifest with
`If-None-Match: *`: the record becomes visible to every node in that one conditional PUT, and a
second node storing the same record at the same moment loses cleanly (its objects are removed).
Adding files to a stored record (`append_files`) writes them under a fresh part id, then replaces
the manifest only if it is still the one read (`If-Match` its ETag), its journal grown by their
entries (the analysis is not redone: `manifest` module doc): the grown series appears in that one
write, and a node that appended meanwhile makes this one fail cleanly (503, retry).
`replace_manifest` stores a series' new analysis the same way.
A node killed mid-upload leaves only objects no manifest names; readers never see them and
`cleanup` removes them once older than `s3.stale_upload_s`. Deleting removes the manifest first.

Every manifest body names its commit (`manifest.Commit`: the upload id as its lineage, and a
generation each append and analysis counts on), so that an older manifest object put back into the
bucket is refused (`generations`; a store shared by several nodes, so another lineage, a series
another node deleted and stored again, is followed, unless it is one this node deleted or saw
replaced: that series' objects put back are refused too).

Everything is encrypted on the node before it is sent (see `envelope`); the bucket, its operators
and the network see only ciphertext, object sizes and record ids (content hashes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from daemons.render.store import envelope
from daemons.render.store.blob_cache import BlobCache
from daemons.render.store.envelope import KeyRing
from daemons.render.store.generations import GenerationBook, Generations
from daemons.render.store.interface import StoreUnavailable
from daemons.render.store.local import Precompressed, StoreError
from daemons.render.store.manifest import JOURNAL_VERSION, Commit, JournalEntry, Manifest, ManifestVersionError
from shared.config import Config, ConfigError
from shared.files import require_owner_only

log = logging.getLogger(__name__)

MANIFESTS = "manifests/"
OBJECTS = "objects/"
QUARANTINE = "quarantine/"
FILED = "filed/"
UNFILED = "unfiled/"  # the filed mark was taken off (`unmark_filed`)
#: Up to this many records, `filed_among` asks about each (HEAD) rather than listing `filed/`.
FILED_HEAD_LIMIT = 32
MISSING_CODES = ("404", "NoSuchKey", "NotFound")
CONFLICT_CODES = ("412", "PreconditionFailed", "ConditionalRequestConflict")
T = TypeVar("T")


class _Header(NamedTuple):
    """What a manifest's header says about where a record's objects are."""

    upload: str
    data_key: bytes
    parts: tuple[tuple[int, str], ...] = ()  # (first blob index, part id) of appended files, in order

    def folder_of(self, index: int) -> str:
        """The upload or part id under which blob `index` was written."""
        folder = self.upload
        for first, part in self.parts:
            if index >= first:
                folder = part
        return folder

    def folders(self) -> set[str]:
        return {self.upload, *(part for _, part in self.parts)}


def load_credentials(path: Path) -> tuple[str, str]:
    """`{"access_key_id": ..., "secret_access_key": ...}` from a file only its owner may read."""
    require_owner_only(path, "the S3 credentials file")
    try:
        data = json.loads(path.read_text())
        return str(data["access_key_id"]), str(data["secret_access_key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: must be JSON with access_key_id and secret_access_key") from exc


def store_location(endpoint_url: str, bucket: str, prefix: str) -> str:
    """The name under which nodes sharing a bucket prefix declare their store to the registry."""
    return f"s3:{endpoint_url.rstrip('/')}/{bucket}/{prefix.strip('/')}"


def _call(what: str, action: Callable[[], T], expected: tuple[str, ...] = MISSING_CODES) -> T:
    """Run one S3 call; a store that cannot be reached or refuses us becomes StoreUnavailable.

    An `expected` answer (a missing object, a failed condition) stays a ClientError for the caller.
    """
    try:
        return action()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in expected:
            raise
        error = exc.response.get("Error", {})
        raise StoreUnavailable(f"{what}: {error.get('Code')} {error.get('Message', '')}".strip()) from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(f"{what}: {exc}") from exc


class S3RecordStore:
    """Records of one institution under one bucket prefix, envelope-encrypted on the node."""

    def __init__(self, client: Any, bucket: str, prefix: str, keys: KeyRing, *, location: str,
                 threads: int = 8, stale_upload_s: float = 3600.0, cache: BlobCache | None = None):
        self._s3 = client
        self._cache = cache
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.keys = keys
        self.location = location
        self._threads = max(1, threads)
        self._stale_upload_s = stale_upload_s
        self._headers: dict[str, _Header] = {}
        self._lock = threading.Lock()
        self._used_bytes = 0
        self._generations: Generations | None = None

    def track_generations(self, book: GenerationBook) -> None:
        """Refuse rolled-back manifests from now on (`generations`); other nodes write this store too."""
        self._generations = Generations(book, shared=True)

    def _committed(self, record_id: str, commit: Commit, new_lineage: bool = False) -> None:
        if self._generations is not None:
            self._generations.wrote(record_id, commit, new_lineage)

    @classmethod
    def from_config(cls, config: Config) -> S3RecordStore:
        storage, s3 = config["storage"], config["s3"]
        where = config.source or "<config>"
        for name in ("endpoint_url", "bucket", "credentials_file"):
            if not s3[name]:
                raise ConfigError(f"{where}: s3.{name} is required with storage.backend = \"s3\"")
        access_key, secret_key = load_credentials(Path(s3["credentials_file"]))
        threads = int(s3["threads"])
        client = boto3.session.Session().client(
            "s3", endpoint_url=s3["endpoint_url"], region_name=s3["region"],
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            verify=(s3["ca_file"] or True) if s3["verify_tls"] else False,
            config=BotoConfig(
                s3={"addressing_style": "path" if s3["path_style"] else "virtual"},
                connect_timeout=float(s3["connect_timeout_s"]), read_timeout=float(s3["read_timeout_s"]),
                retries={"mode": "standard", "max_attempts": int(s3["max_attempts"])},
                max_pool_connections=threads * 2 + 8,
            ))
        keys = KeyRing.from_files(Path(storage["key_file"]), storage["old_key_files"])
        location = store_location(s3["endpoint_url"], s3["bucket"], s3["prefix"])
        if s3["cache_dir"] and int(s3["cache_mb"]) < 1:
            raise ConfigError(f"{where}: s3.cache_mb must be at least 1 with s3.cache_dir set")
        cache = BlobCache(Path(s3["cache_dir"]), int(s3["cache_mb"]) * 2**20) if s3["cache_dir"] else None
        return cls(client, s3["bucket"], s3["prefix"], keys, location=location, threads=threads,
                   stale_upload_s=float(s3["stale_upload_s"]), cache=cache)

    # --- keys of objects ------------------------------------------------------------------------
    def _manifest_key(self, record_id: str) -> str:
        return f"{self.prefix}{MANIFESTS}{record_id}"

    def _object_key(self, record_id: str, upload: str, index: int) -> str:
        return f"{self.prefix}{OBJECTS}{record_id}/{upload}/{index:06d}"

    def _cache_name(self, key: str) -> str:
        """An object's name in the node's cache: its key under `objects/`."""
        return key[len(self.prefix) + len(OBJECTS):]

    def _cached(self, key: str, blob: bytes) -> None:
        if self._cache is not None:
            self._cache.put(self._cache_name(key), blob)

    def _get(self, key: str) -> bytes:
        return _call(f"GET {key}", lambda: self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def _head(self, key: str, confirm: bool = True) -> dict | None:
        """One object's metadata, or None when it is missing from a bucket that is there.

        S3 answers a HEAD in a missing bucket as it answers a missing object (404, no body), so a
        404 is confirmed with a HEAD of the bucket (`confirm`; a caller of many HEADs confirms once):
        a deleted or renamed bucket made records look deleted (dropped from the catalogue) and filed
        series look unfiled.
        """
        try:
            return _call(f"HEAD {key}", lambda: self._s3.head_object(Bucket=self.bucket, Key=key))
        except ClientError:
            if confirm:
                self.check()
            return None

    def _list(self, prefix: str) -> Iterator[dict]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        iterator = iter(pages)
        while True:
            page = _call(f"LIST {prefix}", lambda: next(iterator, None))
            if page is None:
                return
            yield from page.get("Contents", [])

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            _call("DELETE objects", partial(self._s3.delete_objects, Bucket=self.bucket,
                                            Delete={"Objects": batch, "Quiet": True}))

    # --- the record header (wrapped data key) -------------------------------------------------
    def _manifest_blob(self, record_id: str) -> bytes:
        try:
            return self._get(self._manifest_key(record_id))
        except ClientError as exc:
            raise FileNotFoundError(f"record {record_id} is not in the store") from exc

    def _open_manifest(self, record_id: str, blob: bytes) -> tuple[dict, str, bytes, bytes]:
        header, sealed = envelope.unpack_manifest(record_id, blob)
        data_key = self.keys.unwrap(header.get("wrapped", {}), f"record {record_id}")
        try:
            parts = tuple((int(first), str(part)) for first, part in header.get("parts", []))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"record {record_id}: manifest header names malformed parts") from exc
        with self._lock:
            self._headers[record_id] = _Header(header["upload"], data_key, parts)
        return header, header["upload"], data_key, sealed

    def _header(self, record_id: str) -> _Header:
        with self._lock:
            known = self._headers.get(record_id)
        if known is not None:
            return known
        self._open_manifest(record_id, self._manifest_blob(record_id))
        with self._lock:
            return self._headers[record_id]

    # --- the Store interface --------------------------------------------------------------------
    def exists(self, record_id: str) -> bool:
        if self._head(self._manifest_key(record_id)) is None:
            with self._lock:
                self._headers.pop(record_id, None)
            return False
        return True

    def write_record(self, record_id: str, files: list[bytes | Precompressed], manifest: Manifest) -> bool:
        if self.exists(record_id):
            return False
        upload, data_key = uuid.uuid4().hex, envelope.new_data_key()
        keys = [self._object_key(record_id, upload, i) for i in range(len(files))]

        def put(index: int) -> int:
            body = envelope.seal(data_key, record_id, str(index), files[index])
            _call(f"PUT {keys[index]}", lambda: self._s3.put_object(Bucket=self.bucket, Key=keys[index], Body=body))
            self._cached(keys[index], body)
            return len(body)

        commit = Commit(upload, 1)  # a new storing of the series
        body = replace(manifest, commit=commit).encode()
        header = {"upload": upload, "wrapped": self.keys.wrap(data_key)}
        blob = envelope.pack_manifest(header, envelope.seal(data_key, record_id, f"manifest:{upload}", body))
        try:
            with ThreadPoolExecutor(self._threads) as pool:
                written = sum(pool.map(put, range(len(files))))
        except BaseException:
            self._forget_upload(keys)
            raise
        # A commit that fails may still have reached the store (an answer lost on the way back):
        # its objects are then left to `cleanup`, which keeps them if the manifest names them.
        committed = self._commit(record_id, blob)
        if not committed:
            self._forget_upload(keys)
            return False
        with self._lock:
            self._headers[record_id] = _Header(upload, data_key)
            self._used_bytes += written + len(blob)
        self._committed(record_id, commit, new_lineage=True)
        return True

    def _put_objects(self, keys: list[str], bodies: list[bytes]) -> int:
        """PUT objects in parallel; returns the bytes written."""

        def put(index: int) -> int:
            _call(f"PUT {keys[index]}", partial(self._s3.put_object, Bucket=self.bucket, Key=keys[index],
                                                Body=bodies[index]))
            self._cached(keys[index], bodies[index])
            return len(bodies[index])

        with ThreadPoolExecutor(self._threads) as pool:
            return sum(pool.map(put, range(len(keys))))

    def append_files(self, record_id: str, first_blob: int, files: list[bytes | Precompressed],
                     entries: list[JournalEntry], expected_version: str) -> str:
        """Add files to a stored record (a series that grows), then its manifest object, with their
        entries added to its journal (`manifest` module doc), as the commit point.

        The new objects go under a fresh part id (never over another node's objects); the manifest
        is replaced only if it is still the one the entries continue (`If-Match`
        `expected_version`, its ETag). If another node changed or deleted the record meanwhile, the
        new objects are removed and StoreUnavailable (503, retry) is raised: the retry appends to
        the record as it is now. The series is not analysed here: the manifest's analysis is kept
        as it was, and its journal grows by the new entries (no analysis, one JSON pass).
        """
        part = uuid.uuid4().hex

        def grown(header: dict, data: dict, data_key: bytes) -> tuple[dict, bytes, list[str], list[bytes], Commit]:
            commit = Commit.from_json(data).next()
            data["version"] = JOURNAL_VERSION
            data["journal"] = [*data.get("journal", []), *(entry.to_json() for entry in entries)]
            data.update(commit.to_json())
            keys = [self._object_key(record_id, part, first_blob + i) for i in range(len(files))]
            bodies = [envelope.seal(data_key, record_id, str(first_blob + i), raw) for i, raw in enumerate(files)]
            parts = [*header.get("parts", []), [first_blob, part]]
            return ({**header, "parts": parts}, json.dumps(data, separators=(",", ":")).encode("utf-8"),
                    keys, bodies, commit)

        return self._replace(record_id, expected_version, grown)

    def replace_manifest(self, record_id: str, manifest: Manifest, expected_version: str) -> str:
        """Store `manifest` (the series' analysis, journal taken in) as the record's manifest, if the
        manifest object is still at `expected_version` (its ETag), else StoreUnavailable."""
        def analysed(header: dict, data: dict, data_key: bytes) -> tuple[dict, bytes, list[str], list[bytes], Commit]:
            commit = Commit.from_json(data).next()
            return header, replace(manifest, commit=commit).encode(), [], [], commit

        return self._replace(record_id, expected_version, analysed)

    def _replace(self, record_id: str, expected_version: str,
                 change: Callable[[dict, dict, bytes], tuple[dict, bytes, list[str], list[bytes], Commit]]) -> str:
        """Replace a record's manifest object by `change(header, body as JSON, data key)` -> (header,
        body, new object keys, their sealed bodies, the commit it makes), the objects written first,
        the manifest last with `If-Match`: the one commit point. Nothing is committed onto a
        manifest older than the latest this node noted (`generations`)."""
        key = self._manifest_key(record_id)
        try:
            reply = _call(f"GET {key}", partial(self._s3.get_object, Bucket=self.bucket, Key=key))
        except ClientError as exc:
            raise FileNotFoundError(f"record {record_id} is not in the store") from exc
        if reply["ETag"] != expected_version:
            raise StoreUnavailable(f"record {record_id} changed on another node since it was read; retry")
        header, upload, data_key, sealed = self._open_manifest(record_id, reply["Body"].read())
        data = json.loads(envelope.open_sealed(data_key, record_id, f"manifest:{upload}", sealed))
        if self._generations is not None:
            self._generations.continues(record_id, Commit.from_json(data),
                                        lambda: self.manifest_version(record_id) != expected_version)
        header, body, keys, bodies, commit = change(header, data, data_key)
        blob = envelope.pack_manifest(header, envelope.seal(data_key, record_id, f"manifest:{upload}", body))
        try:
            written = self._put_objects(keys, bodies) if keys else 0
            committed = _call(f"PUT {key}", partial(self._s3.put_object, Bucket=self.bucket, Key=key, Body=blob,
                                                    IfMatch=expected_version), expected=MISSING_CODES + CONFLICT_CODES)
        except ClientError as exc:
            self._forget_upload(keys)
            with self._lock:
                self._headers.pop(record_id, None)
            raise StoreUnavailable(f"record {record_id} changed on another node meanwhile; retry") from exc
        except BaseException:
            self._forget_upload(keys)
            raise
        parts = tuple((int(f), str(p)) for f, p in header.get("parts", []))
        with self._lock:
            self._headers[record_id] = _Header(upload, data_key, parts)
            self._used_bytes += written + len(blob)
        self._committed(record_id, commit)
        return committed["ETag"]

    def _commit(self, record_id: str, blob: bytes) -> bool:
        """Write the manifest only if none exists: the one step that makes the record visible."""
        key = self._manifest_key(record_id)
        try:
            _call(f"PUT {key}", lambda: self._s3.put_object(Bucket=self.bucket, Key=key, Body=blob, IfNoneMatch="*"),
                  expected=CONFLICT_CODES)
        except ClientError:
            return False  # another node stored the same record meanwhile
        return True

    def _forget_upload(self, keys: list[str]) -> None:
        """Best effort: objects left behind anyway are removed by `cleanup` once stale."""
        if self._cache is not None:
            self._cache.discard([self._cache_name(key) for key in keys])
        with contextlib.suppress(StoreUnavailable):
            self._delete_keys(keys)

    def read_manifest(self, record_id: str) -> Manifest:
        return self.read_manifest_versioned(record_id)[0]

    def read_manifest_versioned(self, record_id: str) -> tuple[Manifest, str]:
        """The manifest and its ETag, refused when it went back (`generations`)."""
        if self._generations is None:
            return self._read_versioned(record_id)
        return self._generations.checked(record_id, lambda: self._read_versioned(record_id))

    def _read_versioned(self, record_id: str) -> tuple[Manifest, str]:
        key = self._manifest_key(record_id)
        try:
            reply = _call(f"GET {key}", partial(self._s3.get_object, Bucket=self.bucket, Key=key))
        except ClientError as exc:
            raise FileNotFoundError(f"record {record_id} is not in the store") from exc
        return self._decoded_manifest(record_id, reply["Body"].read()), reply["ETag"]

    def _decoded_manifest(self, record_id: str, blob: bytes) -> Manifest:
        _, upload, data_key, sealed = self._open_manifest(record_id, blob)
        return Manifest.decode(envelope.open_sealed(data_key, record_id, f"manifest:{upload}", sealed))

    def manifest_version(self, record_id: str) -> str | None:
        reply = self._head(self._manifest_key(record_id))
        return None if reply is None else reply["ETag"]

    def manifest_versions(self) -> dict[str, str]:
        start = len(self.prefix) + len(MANIFESTS)
        return {o["Key"][start:]: o["ETag"] for o in self._list(self.prefix + MANIFESTS)}

    def read_file(self, record_id: str, index: int, sha256: str, verify: bool = True) -> bytes:
        """The original bytes of file `index`; StoreError when altered, StoreUnavailable when unreachable.

        As in the local store, `verify=False` (decoding into RAM) relies on the GCM tag and zstd's
        frame checksum; the SHA-256 is checked for bytes that leave the node. A damaged copy in
        the node's cache is dropped and the object read again from the bucket.
        """
        key, data_key, blob, cached = self._read_object(record_id, index, retry=True)
        try:
            data = envelope.open_sealed(data_key, record_id, str(index), blob)
        except StoreError:
            if not cached or self._cache is None:
                raise
            self._cache.discard([self._cache_name(key)])
            _, data_key, blob, _ = self._read_object(record_id, index, retry=True)
            data = envelope.open_sealed(data_key, record_id, str(index), blob)
        if verify and hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"record {record_id} file {index}: checksum mismatch")
        return data

    def _read_object(self, record_id: str, index: int, retry: bool) -> tuple[str, bytes, bytes, bool]:
        """A file's key, data key, sealed object and whether it came from the node's cache; a
        header cached before the record was stored again (another upload id) is read anew once."""
        header = self._header(record_id)
        key = self._object_key(record_id, header.folder_of(index), index)
        if self._cache is not None:
            cached = self._cache.get(self._cache_name(key))
            if cached is not None:
                return key, header.data_key, cached, True
        try:
            blob = self._get(key)
        except ClientError as exc:
            with self._lock:
                self._headers.pop(record_id, None)
            if retry:
                return self._read_object(record_id, index, retry=False)
            raise StoreError(f"record {record_id} file {index}: object {key} is missing") from exc
        self._cached(key, blob)
        return key, header.data_key, blob, False

    def delete(self, record_id: str) -> bool:
        """Remove the manifest (the record disappears for every node at once), then its objects; its
        storing is buried before (`RecordStore.delete` in store/local.py says why)."""
        if not self.exists(record_id):
            return False
        if self._generations is not None:  # its storing is buried first: put back, it is refused
            self._generations.deleted(record_id, self._stored_commit(record_id))
        key = self._manifest_key(record_id)
        _call(f"DELETE {key}", lambda: self._s3.delete_object(Bucket=self.bucket, Key=key))
        with self._lock:
            self._headers.pop(record_id, None)
        if self._cache is not None:
            self._cache.drop_record(record_id)
        self._delete_keys([o["Key"] for o in self._list(f"{self.prefix}{OBJECTS}{record_id}/")]
                          + [f"{self.prefix}{FILED}{record_id}", f"{self.prefix}{UNFILED}{record_id}"])
        return True

    def _stored_commit(self, record_id: str) -> Commit | None:
        """The commit of the record's manifest object, for `Generations.deleted`; None when it does
        not read (gone meanwhile, damaged, or wrapped by a key-encryption key this node lacks: deleted
        all the same, as it was before its commit was read here, and as the local store deletes an
        unreadable record). A bucket out of reach is raised: the deletion could not be made either."""
        try:
            blob = self._manifest_blob(record_id)
        except FileNotFoundError:
            return None
        try:
            return self._decoded_manifest(record_id, blob).commit
        except (StoreUnavailable, StoreError, ManifestVersionError, ValueError, KeyError, TypeError):
            return None

    def quarantine(self, record_id: str, reason: str) -> str | None:
        """Take a damaged record out of service for every node: its manifest is copied to
        `quarantine/<record id>-<random>/manifest` with a `reason.txt`, then deleted; the objects
        stay (clean-up leaves quarantined records alone) for IT to inspect or delete."""
        source = self._manifest_key(record_id)
        target = f"{self.prefix}{QUARANTINE}{record_id}-{uuid.uuid4().hex[:8]}/"
        try:
            _call(f"COPY {source}", lambda: self._s3.copy_object(
                Bucket=self.bucket, Key=target + "manifest", CopySource={"Bucket": self.bucket, "Key": source}))
        except ClientError:
            return None  # quarantined or deleted meanwhile
        _call(f"PUT {target}reason.txt", lambda: self._s3.put_object(
            Bucket=self.bucket, Key=target + "reason.txt", Body=(reason + "\n").encode("utf-8")))
        _call(f"DELETE {source}", lambda: self._s3.delete_object(Bucket=self.bucket, Key=source))
        with self._lock:
            self._headers.pop(record_id, None)
        if self._cache is not None:  # the book keeps its latest commit: an older copy put back is refused
            self._cache.drop_record(record_id)
        return f"s3://{self.bucket}/{target}"

    def quarantined(self) -> list[str]:
        start = len(self.prefix) + len(QUARANTINE)
        return sorted({o["Key"][start:].split("/")[0] for o in self._list(self.prefix + QUARANTINE)})

    def record_ids(self) -> list[str]:
        start = len(self.prefix) + len(MANIFESTS)
        return sorted(o["Key"][start:] for o in self._list(self.prefix + MANIFESTS))

    def mark_filed(self, record_id: str) -> None:
        """An empty object `filed/<record id>`, seen by every node sharing the bucket (the work list
        is the institution's, not one node's); removed with the record."""
        if not self.exists(record_id):
            raise FileNotFoundError(f"record {record_id} is not in s3://{self.bucket}/{self.prefix}")
        key, unfiled = f"{self.prefix}{FILED}{record_id}", f"{self.prefix}{UNFILED}{record_id}"
        _call(f"PUT {key}", lambda: self._s3.put_object(Bucket=self.bucket, Key=key, Body=b""))
        _call(f"DELETE {unfiled}", lambda: self._s3.delete_object(Bucket=self.bucket, Key=unfiled))

    def unmark_filed(self, record_id: str) -> bool:
        """The object `unfiled/<record id>` in place of `filed/<record id>` (a HEAD first: S3 deletes
        a missing key silently; put before the delete, so a failure between leaves it filed)."""
        if not self.exists(record_id):
            raise FileNotFoundError(f"record {record_id} is not in s3://{self.bucket}/{self.prefix}")
        key, unfiled = f"{self.prefix}{FILED}{record_id}", f"{self.prefix}{UNFILED}{record_id}"
        if self._head(key) is None:
            return False
        _call(f"PUT {unfiled}", lambda: self._s3.put_object(Bucket=self.bucket, Key=unfiled, Body=b""))
        _call(f"DELETE {key}", lambda: self._s3.delete_object(Bucket=self.bucket, Key=key))
        return True

    def filed_among(self, record_ids: list[str]) -> set[str]:
        """A HEAD per record for a few (the work list's unfiled series, on every request), one listing
        of `filed/` for many: `filed/` names every series ever filed, so listing it for a handful would
        cost more with each series the institution files."""
        return self._marked_among(FILED, record_ids)

    def unfiled_among(self, record_ids: list[str]) -> set[str]:
        return self._marked_among(UNFILED, record_ids)

    def _marked_among(self, mark: str, record_ids: list[str]) -> set[str]:
        wanted = set(record_ids)
        if len(wanted) > FILED_HEAD_LIMIT:
            start = len(self.prefix) + len(mark)
            return {o["Key"][start:] for o in self._list(self.prefix + mark)} & wanted
        if not wanted:
            return set()
        with ThreadPoolExecutor(min(self._threads, len(wanted))) as pool:
            found = dict(zip(wanted, pool.map(lambda r: self._head(f"{self.prefix}{mark}{r}", confirm=False)
                                              is not None, wanted), strict=True))
        if not all(found.values()):
            self.check()  # the unmarked ones' 404s, confirmed once (`_head`)
        return {record_id for record_id, marked in found.items() if marked}

    def cleanup(self) -> int:
        """Delete uploads no manifest names once their newest object is older than `s3.stale_upload_s`.

        Fresh uploads are left alone: another node may be writing them right now.
        """
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        newest: dict[tuple[str, str], float] = {}
        used = 0
        start = len(self.prefix) + len(OBJECTS)
        for item in self._list(self.prefix + OBJECTS):
            record_id, _, rest = item["Key"][start:].partition("/")
            group = (record_id, rest.partition("/")[0])
            groups[group].append(item["Key"])
            newest[group] = max(newest.get(group, 0.0), item["LastModified"].timestamp())
            used += int(item["Size"])
        stale_before = time.time() - self._stale_upload_s
        committed = set(self.record_ids())
        kept_aside = {name.rsplit("-", 1)[0] for name in self.quarantined()}
        uploads_of: dict[str, int] = defaultdict(int)
        for record_id, _ in groups:
            uploads_of[record_id] += 1
        removed = 0
        for (record_id, upload), keys in groups.items():
            if newest[(record_id, upload)] > stale_before or record_id in kept_aside:
                continue
            if record_id in committed and (uploads_of[record_id] == 1 or upload in self._committed_uploads(record_id)):
                continue  # a stored record's only upload is the one its manifest names: no GET needed
            self._delete_keys(keys)
            removed += 1
        with self._lock:
            self._used_bytes = used
        return removed

    def _committed_uploads(self, record_id: str) -> set[str]:
        """The upload and part ids the record's manifest names (read anew: another node may have appended)."""
        with self._lock:
            self._headers.pop(record_id, None)
        try:
            return self._header(record_id).folders()
        except FileNotFoundError:
            return set()

    def used_bytes(self) -> int:
        """Bytes of this institution's objects as of the last cleanup, plus what this node wrote since."""
        with self._lock:
            return self._used_bytes

    def check(self) -> None:
        """The bucket answers and our credentials are accepted (one cheap HEAD); a missing bucket is
        StoreUnavailable too. What anyone may read of it (`/readyz`, `StoreUnavailable.public`) is a fixed
        sentence: the client library's text names the endpoint's URL and the bucket."""
        try:
            _call(f"HEAD bucket {self.bucket}", lambda: self._s3.head_bucket(Bucket=self.bucket), expected=())
        except StoreUnavailable as exc:
            log.warning("the S3 store does not answer: %s", exc)
            exc.public = ("the object store does not answer, or refuses this node's bucket or credentials "
                          "(the node's log says which)")
            raise

    # --- key rotation ---------------------------------------------------------------------------
    def rewrap(self) -> int:
        """Wrap every record's data key with the current KEK; returns how many headers were rewritten.

        Only the manifest objects change (a conditional overwrite, so a record deleted meanwhile is
        not brought back); image objects are untouched. Afterwards the old KEKs may be retired.
        """
        rewritten = 0
        for record_id in self.record_ids():
            key = self._manifest_key(record_id)
            try:
                reply = _call(f"GET {key}", partial(self._s3.get_object, Bucket=self.bucket, Key=key))
            except ClientError:
                continue  # deleted meanwhile
            blob = reply["Body"].read()
            header, _, data_key, sealed = self._open_manifest(record_id, blob)
            if header["wrapped"].get("kek") == self.keys.current_id:
                continue
            new_blob = envelope.pack_manifest({**header, "wrapped": self.keys.wrap(data_key)}, sealed)
            try:
                _call(f"PUT {key}", partial(self._s3.put_object, Bucket=self.bucket, Key=key, Body=new_blob,
                                            IfMatch=reply["ETag"]), expected=MISSING_CODES + CONFLICT_CODES)
            except ClientError:
                continue  # deleted meanwhile
            rewritten += 1
        return rewritten
