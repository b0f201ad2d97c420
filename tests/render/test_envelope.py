"""Envelope encryption of shared-store objects: data keys wrapped by KEKs, rotation, tampering."""

from __future__ import annotations

import os

import pytest

from daemons.render.store import envelope
from daemons.render.store.envelope import KeyRing
from daemons.render.store.interface import StoreUnavailable
from daemons.render.store.local import StoreError

RECORD = "ab" * 32


def test_seal_round_trip_and_binding_to_record_and_part():
    key = envelope.new_data_key()
    blob = envelope.seal(key, RECORD, "3", b"pixels" * 1000)
    assert envelope.open_sealed(key, RECORD, "3", blob) == b"pixels" * 1000
    assert b"pixels" not in blob
    for record, part in ((RECORD, "4"), ("cd" * 32, "3")):  # moved to another place: refused
        with pytest.raises(StoreError, match="authentication failed"):
            envelope.open_sealed(key, record, part, blob)
    damaged = bytearray(blob)
    damaged[-20] ^= 1
    with pytest.raises(StoreError, match="authentication failed"):
        envelope.open_sealed(key, RECORD, "3", bytes(damaged))
    with pytest.raises(StoreError, match="not a store object"):
        envelope.open_sealed(key, RECORD, "3", b"garbage")


def test_rotation_old_keks_unwrap_new_wraps_with_the_current_one():
    old, new = os.urandom(32), os.urandom(32)
    data_key = envelope.new_data_key()
    wrapped_old = KeyRing(old).wrap(data_key)
    ring = KeyRing(new, (old,))
    assert ring.unwrap(wrapped_old, "r") == data_key
    assert ring.wrap(data_key)["kek"] == envelope.kek_id(new) != wrapped_old["kek"]
    with pytest.raises(StoreUnavailable, match="does not have"):
        KeyRing(new).unwrap(wrapped_old, "r")
    altered = dict(wrapped_old, key=wrapped_old["key"][:-4] + ("AAAA" if wrapped_old["key"][-4:] != "AAAA" else "BBBB"))
    with pytest.raises(StoreError):
        ring.unwrap(altered, "r")
    with pytest.raises(StoreError, match="malformed"):
        ring.unwrap({"kek": "x"}, "r")


def test_manifest_header_round_trip_and_damage():
    header = {"upload": "u1", "wrapped": {"kek": "k", "key": "a2V5"}}
    blob = envelope.pack_manifest(header, b"sealed")
    assert envelope.unpack_manifest(RECORD, blob) == (header, b"sealed")
    for bad in (b"nope", envelope.MAGIC + b"\x00\x00\x00\x05{bad}", envelope.MAGIC + b"\x00\x00\x00\x02{}"):
        with pytest.raises(StoreError):
            envelope.unpack_manifest(RECORD, bad)
