"""The catalogue's writes against other workers' commits on one SQLite file (a node of several workers)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pydicom
from peewee import SqliteDatabase

from daemons.render.catalogue.index import InstanceHeader, index_series
from daemons.render.models import make_models


def test_indexing_a_series_is_not_overtaken_by_another_workers_commit(tmp_path):
    """index_series reads rows, then writes. In a deferred SQLite transaction, another worker's
    commit landing between the two made the write fail at once with "database is locked" (a 500
    for that upload, seen by the upload fuzzer on a two-worker node); it holds the write lock from
    its start, so the other worker's write waits for it instead."""
    path = tmp_path / "catalogue.db"
    database = SqliteDatabase(str(path), pragmas={"journal_mode": "wal", "busy_timeout": 10_000})
    models = make_models(database)
    database.create_tables(models.all)
    database.execute_sql("CREATE TABLE other_worker (x INTEGER)")
    other = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
    written = threading.Event()

    def other_worker_commits() -> None:
        other.execute("INSERT INTO other_worker VALUES (1)")
        written.set()

    patient = models.catalogue.Patient
    original = patient.get_or_create.__func__

    def read_then_overtaken(cls, **kwargs):
        cls.select().count()  # this transaction has read
        threading.Thread(target=other_worker_commits).start()
        written.wait(0.5)  # the other worker commits now, unless this transaction holds the lock
        return original(cls, **kwargs)

    ds = pydicom.Dataset()
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P1", "1.2.3", "1.2.3.4"
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "CT"
    patient.get_or_create = classmethod(read_then_overtaken)
    try:
        with database.connection_context():
            index_series(models.catalogue, "r" * 64, [InstanceHeader(ds, "0" * 64, 0)])
    finally:
        del patient.get_or_create
    deadline = time.monotonic() + 10
    while not written.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert written.is_set(), "the other worker's write never went through"
    with database.connection_context():
        assert models.catalogue.Instance.select().count() == 1
