"""Envelope encryption of records kept in a shared object store.

Each record gets its own random 256-bit data key. The objects of the record are zstandard-compressed
and sealed with AES-256-GCM under that data key (the record id and the part name as associated
data, so an object moved to another record or position fails authentication like a modified one).
The data key itself is wrapped with AES key wrap (RFC 3394, which carries its own integrity check)
by the node's key-encryption key (KEK); the KEK's id is stored beside the wrapped key.

Rotating the KEK therefore never touches the image objects: new records are wrapped with the new
KEK, old ones unwrap with any KEK still listed in `storage.old_key_files`, and `sivr store rewrap`
rewrites only each record's small header under the current KEK, after which the old KEK can go.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from daemons.render.store.interface import StoreUnavailable
from daemons.render.store.local import KEY_BYTES, Precompressed, StoreError, load_key, open_blob, seal_blob

MAGIC = b"SIVRENV1"
WRAP_ALGORITHM = "A256KW"


def kek_id(kek: bytes) -> str:
    """A KEK's public id: a hash prefix, so ids need no registry and never reveal the key."""
    return hashlib.sha256(b"sivr-kek-id:" + kek).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRing:
    """The current KEK (wraps new data keys) and older ones still accepted for unwrapping."""

    current: bytes
    older: tuple[bytes, ...] = ()

    @classmethod
    def from_files(cls, current: Path, older: list[str] | tuple[str, ...] = ()) -> KeyRing:
        """Load KEK files (each 32 bytes, mode 0600, checked by `storage.load_key`)."""
        return cls(load_key(Path(current)), tuple(load_key(Path(p)) for p in older))

    @property
    def current_id(self) -> str:
        return kek_id(self.current)

    def wrap(self, data_key: bytes) -> dict[str, str]:
        """The data key wrapped by the current KEK, with the KEK's id beside it."""
        return {"alg": WRAP_ALGORITHM, "kek": self.current_id,
                "key": base64.b64encode(aes_key_wrap(self.current, data_key)).decode("ascii")}

    def unwrap(self, wrapped: dict[str, str], where: str) -> bytes:
        """The data key; StoreError when no known KEK has that id or the wrapped key was altered."""
        try:
            wanted, blob = wrapped["kek"], base64.b64decode(wrapped["key"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{where}: malformed wrapped data key") from exc
        for kek in (self.current, *self.older):
            if kek_id(kek) == wanted:
                try:
                    return aes_key_unwrap(kek, blob)
                except InvalidUnwrap as exc:
                    raise StoreError(f"{where}: the wrapped data key fails its integrity check") from exc
        # not StoreError: the record is intact, this node's configuration lacks a key (503, never
        # quarantined, which would take it from every node sharing the store)
        raise StoreUnavailable(f"{where}: wrapped by key-encryption key {wanted}, which this node does not "
                               "have (add the old key file to storage.old_key_files)")


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _aad(record_id: str, part: str) -> bytes:
    return f"sivr-object:{record_id}:{part}".encode("ascii")


def seal(data_key: bytes, record_id: str, part: str, data: bytes | Precompressed) -> bytes:
    """`MAGIC | nonce | AES-GCM(zstd(data))` with the record id and part as associated data."""
    return seal_blob(AESGCM(data_key), MAGIC, _aad(record_id, part), data)


def open_sealed(data_key: bytes, record_id: str, part: str, blob: bytes) -> bytes:
    """The original bytes of a sealed object; StoreError when modified, moved or truncated."""
    return open_blob(AESGCM(data_key), MAGIC, _aad(record_id, part), blob, f"record {record_id} {part}")


def pack_manifest(header: dict, sealed: bytes) -> bytes:
    """The manifest object: a length-prefixed JSON header (wrapped key, upload id), then the sealed body."""
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return MAGIC + struct.pack(">I", len(raw)) + raw + sealed


def unpack_manifest(record_id: str, blob: bytes) -> tuple[dict, bytes]:
    """Header and sealed body of a manifest object; StoreError when it is not one.

    The header is not encrypted but cannot be altered unnoticed: the wrapped key carries AES key
    wrap's integrity check, and the upload id names the objects the body's checksums must match.
    """
    start = len(MAGIC) + 4
    if not blob.startswith(MAGIC) or len(blob) < start:
        raise StoreError(f"record {record_id} manifest: not a store object (damaged or replaced)")
    (length,) = struct.unpack(">I", blob[len(MAGIC):start])
    try:
        header = json.loads(blob[start:start + length])
    except ValueError as exc:
        raise StoreError(f"record {record_id} manifest: damaged header") from exc
    if not isinstance(header, dict) or not isinstance(header.get("upload"), str):
        raise StoreError(f"record {record_id} manifest: damaged header")
    return header, blob[start + length:]
