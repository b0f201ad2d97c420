"""One database connection per DICOM association (`dimse.connections`): taken once for all of an
association's messages, replaced when the database server dropped it, given back when the
association ends (closed on SQLite, back to the pool on PostgreSQL, where a connection costs 10 ms)."""

from __future__ import annotations

import time

import psycopg
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from tests.render.conftest import database_overrides
from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request, make_node):
    overrides = database_overrides(request, request.param)
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


def server_connections(url: str) -> set[int]:
    """The server processes of the other connections to the database at `url`."""
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND pid <> pg_backend_pid()").fetchall()
    return {pid for (pid,) in rows}


def wait_for_no_association(archive) -> None:
    server = archive.app.extensions["sivr_dimse"].servers[0]
    deadline = time.monotonic() + 10
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.active_associations


def test_an_association_keeps_one_connection_and_gives_it_back_at_its_end(archive, monkeypatch):
    opened = counted_connections(archive.database, monkeypatch)
    assoc = associate(archive.dicom_port)
    for _ in range(4):
        assert find(assoc) == [0x0000]
    assert opened == ["opened"]  # the association's audit and queries, all on one connection
    if archive.backend == "postgresql":
        during_first = server_connections(archive.url)
        assert during_first
    assoc.release()
    wait_for_no_association(archive)
    second = associate(archive.dicom_port)
    assert find(second) == [0x0000]
    if archive.backend == "postgresql":
        # given back to the node's pool at the first one's release: the same server connection
        # serves the second association, no new one (not left for the thread's end, not leaked)
        assert server_connections(archive.url) == during_first
    second.release()
    assert opened == ["opened", "opened"]


def refuse(archive, times: int) -> None:
    for _ in range(times):
        ae = AE(ae_title="NOT-ALLOWED")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assert ae.associate("127.0.0.1", archive.dicom_port, ae_title=SCP).is_rejected
        wait_for_no_association(archive)


def test_refused_associations_leave_no_connection_behind(archive):
    """An association refused for its caller ends without a release or an abort event, after its
    refusal was audited on the database; the connection of its ended thread must not stay in use."""
    if archive.backend != "postgresql":
        pytest.skip("counts the database server's connections")
    first = associate(archive.dicom_port)
    assert find(first) == [0x0000]
    first.release()
    refuse(archive, 6)
    assoc = associate(archive.dicom_port)
    assert find(assoc) == [0x0000]
    assert len(server_connections(archive.url)) <= 2  # the association's, and one idle in the pool
    assoc.release()


def test_refused_associations_reuse_the_pooled_connection(archive, monkeypatch):
    """A caller that is not allowed costs the node its refusal's audit row, not a new database
    connection (a password exchange on PostgreSQL) per attempt: the refused association gives its
    connection back."""
    if archive.backend != "postgresql":
        pytest.skip("counts the database server's new connections")
    refuse(archive, 1)
    created: list[str] = []
    connect = archive.database._adapter.connect
    monkeypatch.setattr(archive.database._adapter, "connect",
                        lambda *args, **kwargs: created.append("new") or connect(*args, **kwargs))
    refuse(archive, 5)
    assert created == []


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
