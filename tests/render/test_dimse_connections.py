"""One database connection per DICOM association (`dimse.connections`): opened once for all of an
association's messages, replaced when the database server dropped it, closed when the association
ends. On SQLite, and on PostgreSQL where a connection costs 10 ms."""

from __future__ import annotations

import time

import psycopg
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request, make_node):
    overrides = {}
    if request.param == "postgresql":
        overrides["database__url"] = request.getfixturevalue("pg_database_factory")()
    harness = open_archive(make_node, **overrides)
    harness.backend, harness.url = request.param, overrides.get("database__url")
    harness.database = harness.app.extensions["sivr_node"].models.database
    yield harness
    close_archive(harness)


def counted_connections(database, monkeypatch) -> list[str]:
    """The connections `database` opens from now on (one entry each)."""
    opened: list[str] = []
    connect = database._connect
    monkeypatch.setattr(database, "_connect", lambda: opened.append("opened") or connect())
    return opened


def find(assoc) -> list[int]:
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ""
    return [status.Status for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]


def associate(port: int):
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    return assoc


def others_connected(url: str) -> int:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND pid <> pg_backend_pid()").fetchone()[0]


def test_an_association_keeps_one_connection_and_closes_it_at_its_end(archive, monkeypatch):
    opened = counted_connections(archive.database, monkeypatch)
    assoc = associate(archive.dicom_port)
    for _ in range(4):
        assert find(assoc) == [0x0000]
    assert opened == ["opened"]  # the association's audit and queries, all on one connection
    if archive.backend == "postgresql":
        assert others_connected(archive.url) >= 1
    assoc.release()
    if archive.backend == "postgresql":  # closed with the association, not left for the thread's end
        deadline = time.monotonic() + 10
        while others_connected(archive.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert others_connected(archive.url) == 0


def test_a_connection_the_server_dropped_is_replaced_before_the_next_message(archive, monkeypatch):
    if archive.backend != "postgresql":
        pytest.skip("only a database server can drop a connection")
    opened = counted_connections(archive.database, monkeypatch)
    assoc = associate(archive.dicom_port)
    assert find(assoc) == [0x0000]
    with psycopg.connect(archive.url) as connection:  # as a server restart would
        connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    assert find(assoc) == [0x0000]
    assert opened == ["opened", "opened"]
    assoc.release()
