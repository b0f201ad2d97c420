"""The peer address of an audit entry, whatever its length (docs/operations.md, attack 59)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from flask import Flask, g

from shared.audit import CLIENT_IP_CHARS, make_audit_model, record_audit, record_audit_many, stored_address
from shared.db import close_database, connect_database
from shared.tokens import Identity

#: An IPv6 link-local address with a zone id, as long as an interface name makes it, then some.
LONG_ADDRESS = "fe80::a00:27ff:fe4e:66a1%" + "veth-a1b2c3d4e5f6-" * 4


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[peewee.Database]:
    url = (f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_database_factory")())
    db = connect_database(url)
    yield db
    close_database(db)


def test_an_address_longer_than_the_column_is_cut_with_a_marker():
    assert len(LONG_ADDRESS) > CLIENT_IP_CHARS
    cut = stored_address(LONG_ADDRESS)
    assert len(cut) == CLIENT_IP_CHARS and cut == LONG_ADDRESS[:CLIENT_IP_CHARS - 1] + "…"
    assert stored_address("2001:db8::1") == "2001:db8::1"
    assert stored_address("a" * CLIENT_IP_CHARS) == "a" * CLIENT_IP_CHARS
    assert stored_address("10.0.0.1\x00") == "10.0.0.1\ufffd"


def test_every_entry_of_a_peer_with_a_long_address_is_written_cut(database: peewee.Database):
    """`request.remote_addr` (and a DICOM peer's address a caller names) longer than the column:
    PostgreSQL refused the insert, the entry was lost and the request answered 500."""
    model = make_audit_model(database)
    database.create_tables([model])
    with Flask(__name__).test_request_context(environ_base={"REMOTE_ADDR": LONG_ADDRESS}):
        g.identity = Identity("u-1", "doc", "physician", "i-1", "sid-1", 0, 0)
        record_audit(model, "patient.read", "patient", "p-1")
        record_audit_many(model, "record.search", [("record", "r-1"), ("record", "r-2")])
        record_audit(model, "dicom.store", "instance", "i-1", user_id="", username="CT01",
                     client_ip="CT01@" + LONG_ADDRESS)
    entries = {(entry.action, entry.object_id): entry.client_ip for entry in model.select()}
    cut = LONG_ADDRESS[:CLIENT_IP_CHARS - 1] + "…"
    assert entries == {("patient.read", "p-1"): cut, ("record.search", "r-1"): cut, ("record.search", "r-2"): cut,
                       ("dicom.store", "i-1"): ("CT01@" + LONG_ADDRESS)[:CLIENT_IP_CHARS - 1] + "…"}
