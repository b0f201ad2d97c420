"""A DELETE of a series racing the work done on that very series (attack table rows 70 to 75).

Each race is made deterministic: the function at the race point is wrapped so that the other
request (another worker's thread, its own database connection) runs at that moment, and is waited
for until it has finished, or until it waits on the series' lock (it then goes on once the first
one is over). After each race: no 5xx and no DIMSE failure caused by it, nothing half stored (the
store folder, the record row and the catalogue rows of a series go and come together), an instance
acknowledged after the DELETE is findable, and the audit log names only what was done.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from werkzeug.test import TestResponse

from daemons.render.api import key_images
from daemons.render.ingest import service
from daemons.render.ingest.service import INGEST_EXTENSION, Actor, Ingest
from daemons.render.records import _file_prefix
from daemons.render.shared_frames import SUFFIX
from tests.render.conftest import NodeHarness, database_overrides
from tests.render.dimse_peers import SCP, close_archive, open_archive
from tests.render.synthetic import dataset, to_bytes

PEER = Actor("dicom:MODALITY", "MODALITY", "127.0.0.1")
BOUNDARY = "sivr-delete-race"
STUDY = "1.2.826.0.1.3680043.99.70"
SUCCESS = {"c-store": 0x0000, "stow-rs": 200, "upload": 200}


class Racer:
    """`work` in a thread of its own, as another request, worker or association makes it."""

    def __init__(self, work: Callable[[], Any], held: bool = False):
        self.work = work
        self.outcome: list[Any] = []
        self.done = threading.Event()
        self.at_series_lock = threading.Event()  # set when it asks for the series' lock
        # `held`: it takes the series' lock only once `go` is set (the other request answered)
        self.go = threading.Event()
        if not held:
            self.go.set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.outcome.append(self.work())
        except BaseException as exc:  # raised again by `result`, in the test's thread
            self.outcome.append(exc)
        finally:
            self.done.set()

    def run_now(self, until_series_lock: bool = True, limit_s: float = 5.0) -> None:
        """Start it, and wait until it is done, or (`until_series_lock`) waits on its series' lock
        (which the caller holds: it goes on once the caller lets go), at most `limit_s`."""
        self.thread.start()
        deadline = time.monotonic() + limit_s
        while not self.done.is_set() and time.monotonic() < deadline:
            if until_series_lock and self.at_series_lock.is_set():
                return
            self.done.wait(0.01)

    def result(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the racing request never finished"
        if isinstance(self.outcome[0], BaseException):
            raise self.outcome[0]
        return self.outcome[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request, make_node) -> Iterator[NodeHarness]:
    """A node with its DICOM listener, its catalogue on SQLite or PostgreSQL; no series completes
    by itself during a test (`complete_due` is called where a test needs it)."""
    harness = open_archive(make_node, dicom__series_complete_s=3600.0, **database_overrides(request, request.param))
    yield harness
    close_archive(harness)


@pytest.fixture
def racers(monkeypatch) -> list[Racer]:
    """The racers of a test, each told when its thread asks for a series' lock (where a held one waits)."""
    started: list[Racer] = []
    original = Ingest._lock_for

    def lock_for(self: Ingest, series_uid: str):
        for racer in started:
            if racer.thread is threading.current_thread():
                racer.at_series_lock.set()
                assert racer.go.wait(30), "the other request never answered"
        return original(self, series_uid)

    monkeypatch.setattr(Ingest, "_lock_for", lock_for)
    return started


def racing(racers: list[Racer], work: Callable[[], Any], held: bool = False) -> Racer:
    racers.append(Racer(work, held))
    return racers[-1]


def the_node(harness: NodeHarness):
    return harness.app.extensions["sivr_node"]


def ct(series: str, position: int) -> Dataset:
    ds = dataset(16, 16, series=series, position=float(position))
    ds.StudyInstanceUID, ds.PatientID, ds.InstanceNumber = STUDY, "RACE-PATIENT", position + 1
    return ds


def stored_series(harness: NodeHarness, count: int = 1) -> tuple[str, str]:
    """A series of `count` instances sent one by one (a growing series): (record id, Series Instance UID)."""
    series = generate_uid()
    with harness.app.app_context():
        ingest = harness.app.extensions[INGEST_EXTENSION]
        record_id = ""
        for position in range(count):
            record_id = ingest.add([(f"{position}.dcm", to_bytes(ct(series, position)))], PEER).record_id
    return record_id, series


def delete(harness: NodeHarness, record_id: str) -> int:
    """DELETE the series as an administrator of its institution (who may delete what a peer sent)."""
    return harness.app.test_client().delete(f"/api/v1/records/{record_id}",
                                            headers=harness.headers("instadmin")).status_code


def append(harness: NodeHarness, door: str, ds: Dataset) -> int:
    """Send one instance through `door`: its DIMSE status or its HTTP status."""
    if door == "c-store":
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", harness.dicom_port, ae_title=SCP)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        return int(status.Status) if status else -1
    raw = to_bytes(ds)
    client = harness.app.test_client()
    if door == "stow-rs":
        body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + raw
                + f"\r\n--{BOUNDARY}--\r\n".encode())
        return client.post("/dicomweb/studies", data=body, headers={
            **harness.headers(), "Accept": "application/dicom+json",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}).status_code
    return client.post("/api/v1/records", data={"files": [(io.BytesIO(raw), "race.dcm")]},
                       headers=harness.headers(), content_type="multipart/form-data").status_code


def succeeded(door: str, status: int) -> bool:
    return status == SUCCESS[door] or (door == "upload" and status == 201)


def frames_files(harness: NodeHarness, record_id: str) -> list[str]:
    return [path.name for path in harness.registry.runtime.folder.glob(f"{_file_prefix(record_id)}.*{SUFFIX}")]


def audited(harness: NodeHarness, action: str, record_id: str, detail: str = "") -> int:
    audit = the_node(harness).models.AuditEntry
    return (audit.select().where((audit.action == action) & (audit.object_id == record_id)
                                 & audit.detail.contains(detail)).count())


def whole_or_gone(harness: NodeHarness, record_id: str) -> bool:
    """Nothing half stored: the store folder, the record row and the catalogue's series are all
    there (the catalogue listing every instance the store holds) or all gone, with its key images
    and its decoded frames. True: there."""
    node = the_node(harness)
    cat, models = node.models.catalogue, node.models
    in_store = node.store.exists(record_id)
    row = models.StoredRecord.select().where(models.StoredRecord.id == record_id).exists()
    series = cat.Series.select().where(cat.Series.id == record_id).exists()
    instances = {i.sop_instance_uid for i in cat.Instance.select().where(cat.Instance.series == record_id)}
    assert in_store == row == series, (f"half stored: store folder {in_store}, record row {row}, "
                                       f"catalogue series {series}")
    if not in_store:
        assert not instances, f"catalogue rows of a deleted series: {instances}"
        assert not models.KeyImage.select().where(models.KeyImage.record_id == record_id).exists()
        assert not frames_files(harness, record_id), "decoded frames of a deleted series left on the node"
        return False
    stored = {entry.sop_instance_uid for entry in node.store.read_manifest(record_id).every_file}
    assert instances == stored, f"catalogue {sorted(instances)} against store {sorted(stored)}"
    return True


DOORS = ["c-store", "stow-rs", "upload"]


# --- 1. a DELETE racing an append --------------------------------------------------------------
@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("point", ["checked", "written"])
def test_a_delete_while_an_append_writes_waits_for_it(archive, racers, monkeypatch, door, point):
    """The DELETE comes when an append has passed its checks (`checked`: it is about to write its
    blobs and journal part) or has written them (`written`: its catalogue rows come next). It ran
    at once: the append found the folder gone (a 503, a C-STORE failure) or, once written, filed
    its catalogue rows for a series gone from the store, and acknowledged an instance no one could
    read. It waits for the append now: the instance, acknowledged before the DELETE, goes with it."""
    record_id, series = stored_series(archive)
    node = the_node(archive)
    # held at the series' lock until the append is answered: an upload's answer reads the series
    # back, and would be a 404 if the DELETE took it first
    deleter = racing(racers, lambda: delete(archive, record_id), held=True)
    original = node.store.append_files

    def append_files(*args, **kwargs):
        if point == "checked":
            deleter.run_now()
        version = original(*args, **kwargs)
        if point == "written":
            deleter.run_now()
        return version

    monkeypatch.setattr(node.store, "append_files", append_files)
    sent = ct(series, 1)
    status = append(archive, door, sent)
    deleter.go.set()
    assert succeeded(door, status), f"{door} answered {status:#06x}" if door == "c-store" else status
    assert deleter.result() == 204
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)
        assert audited(archive, "record.append", record_id, sent.SOPInstanceUID) == 1  # it was stored
        assert audited(archive, "record.delete", record_id) == 1


@pytest.mark.parametrize("door", DOORS)
def test_an_append_while_a_delete_is_under_way_makes_the_series_anew(archive, racers, monkeypatch, door):
    """The append comes while the DELETE removes the series. It went on with the series being
    deleted: 404 (a C-STORE failure), the instance refused for a race. It waits for the DELETE
    now and stores the series anew: the instance it acknowledges is there to be found."""
    record_id, series = stored_series(archive)
    node = the_node(archive)
    sent = ct(series, 1)
    appender = racing(racers, lambda: append(archive, door, sent))
    original = node.store.delete

    def store_delete(record: str) -> bool:
        if not appender.thread.is_alive() and not appender.done.is_set():
            appender.run_now(until_series_lock=False, limit_s=2.0)
        return original(record)

    monkeypatch.setattr(node.store, "delete", store_delete)
    assert delete(archive, record_id) == 204
    status = appender.result()
    assert succeeded(door, status), f"{door} answered {status:#06x}" if door == "c-store" else status
    with archive.app.app_context():
        assert whole_or_gone(archive, record_id)
        cat = node.models.catalogue
        assert [i.sop_instance_uid for i in cat.Instance.select().where(cat.Instance.series == record_id)] == [
            sent.SOPInstanceUID]
        assert archive.client.get(f"/api/v1/records/{record_id}", headers=archive.headers()).status_code == 200


# --- 2. a DELETE racing a load, and a frame request after it -------------------------------------
def test_a_load_racing_a_delete_leaves_no_frames_of_the_series(archive, racers, monkeypatch):
    """The DELETE comes once a load has read the series' manifest, before it makes the decoded
    frames. The load made them after the DELETE had unlinked the series' frames: 202 and a
    `record.load` entry for a deleted series, its pixels decoded into the node's memory (counted
    in its budget, read by no one) until evicted. The load reads the series again now: 404."""
    record_id, _ = stored_series(archive, 2)
    deleter = racing(racers, lambda: delete(archive, record_id))
    registry = archive.registry
    original = registry._manifest_reader

    def read_manifest(record: str):
        manifest = original(record)
        if not deleter.thread.is_alive() and not deleter.done.is_set():
            deleter.run_now(until_series_lock=False)
        return manifest

    monkeypatch.setattr(registry, "_manifest_reader", read_manifest)
    loaded = archive.app.test_client().post(f"/api/v1/records/{record_id}/load", headers=archive.headers())
    assert deleter.result() == 204
    assert loaded.status_code == 404, loaded.json
    frame = archive.app.test_client().get(f"/api/v1/records/{record_id}/frames/0", headers=archive.headers())
    assert frame.status_code == 404, frame.json
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)
        assert audited(archive, "record.load", record_id) == 0


# --- 3. a DELETE racing a key image's PUT --------------------------------------------------------
@pytest.mark.parametrize("point", ["checked", "writing"])
def test_a_key_image_marked_while_its_series_is_deleted_is_not_kept(archive, racers, monkeypatch, point):
    """The DELETE comes once a PUT of a key image has found the series (`checked`), or while it
    writes the mark (`writing`). The mark was written after the DELETE had removed the series'
    marks: 200, a `record.key_image.mark` entry, and a mark of a deleted series kept, which a new
    series under the same Series Instance UID (the same record id) would show as its own. The mark
    is refused now (404) or written before the DELETE removes the series' marks."""
    record_id, _ = stored_series(archive, 2)
    node = the_node(archive)
    deleter = racing(racers, lambda: delete(archive, record_id))
    if point == "checked":
        original = key_images.exclusive_transaction

        def transaction(database, name: str):
            deleter.run_now(until_series_lock=False)
            return original(database, name)

        monkeypatch.setattr(key_images, "exclusive_transaction", transaction)
    else:
        model = node.models.KeyImage
        create = model.create.__func__

        def create_while_deleted(cls, **fields):
            deleter.run_now(until_series_lock=False, limit_s=2.0)  # the DELETE may wait for this transaction
            return create(cls, **fields)

        monkeypatch.setattr(model, "create", classmethod(create_while_deleted))
    marked = archive.app.test_client().put(f"/api/v1/records/{record_id}/key-images/native/0",
                                           headers=archive.headers())
    assert deleter.result() == 204
    assert marked.status_code == (404 if point == "checked" else 200), marked.json
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)
        assert audited(archive, "record.key_image.mark", record_id) == (0 if point == "checked" else 1)


# --- 4. a DELETE racing the series' analysis -----------------------------------------------------
def test_a_delete_while_the_series_complete_analysis_runs_waits_for_it(archive, racers, monkeypatch, caplog):
    """The DELETE comes while the "series complete" rule analyses the series. The analysis failed
    on the folder gone (an error logged) and put the series back to be completed: the watcher
    then failed on it again at every stable age, for ever. It waits for the analysis now."""
    record_id, _ = stored_series(archive, 3)
    ingest = archive.app.extensions[INGEST_EXTENSION]
    assert ingest.growing() == [record_id]
    deleter = racing(racers, lambda: delete(archive, record_id))
    original = service.analyse_files

    def analyse(*args, **kwargs):
        deleter.run_now()
        return original(*args, **kwargs)

    monkeypatch.setattr(service, "analyse_files", analyse)
    with archive.app.app_context():
        assert ingest.complete_due(float("inf")) == [record_id]
    assert deleter.result() == 204
    assert ingest.growing() == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)


def test_a_reader_analysing_a_series_deleted_meanwhile_is_told_404(archive, racers, monkeypatch):
    """A reader found the series grown (its journal pending) and analyses it; the DELETE came in
    between. The analysis read a folder gone: 500. 404 now."""
    record_id, _ = stored_series(archive, 3)
    node = the_node(archive)
    node.forget(record_id)  # no manifest cached: the reader reads it, pending
    deleter = racing(racers, lambda: delete(archive, record_id))
    original = node.settle

    def settle(record: str, series_uid: str):
        deleter.run_now(until_series_lock=False)
        return original(record, series_uid)

    monkeypatch.setattr(node, "settle", settle)
    read = archive.app.test_client().get(f"/api/v1/records/{record_id}", headers=archive.headers())
    assert deleter.result() == 204
    assert read.status_code == 404, read.json
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)


def test_a_growing_series_another_node_deleted_is_let_go(archive, caplog):
    """Another node sharing the store deletes a series that grew here. This node's "series complete"
    rule failed to analyse it (an error logged) and put it back, to fail again at every stable age,
    for ever. It lets it go now."""
    record_id, _ = stored_series(archive, 3)
    ingest, node = archive.app.extensions[INGEST_EXTENSION], the_node(archive)
    node.store.delete(record_id)  # as the other node deletes it
    with archive.app.app_context():
        assert ingest.complete_due(float("inf")) == []
    assert ingest.growing() == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


# --- 5. two DELETEs of one series -------------------------------------------------------------------
def test_two_deletes_of_one_series_delete_it_once(archive, racers, monkeypatch):
    """A second DELETE comes while the first removes the series. Both were 204 and both audited
    as the series' deletion, though one deleted nothing. The second waits now, and is a 404."""
    record_id, _ = stored_series(archive)
    node = the_node(archive)
    second = racing(racers, lambda: delete(archive, record_id))
    original = node.store.delete

    def store_delete(record: str) -> bool:
        if not second.thread.is_alive() and not second.done.is_set():
            second.run_now()
        return original(record)

    monkeypatch.setattr(node.store, "delete", store_delete)
    first = delete(archive, record_id)
    assert sorted([first, second.result()]) == [204, 404]
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)
        assert audited(archive, "record.delete", record_id) == 1


# --- 6. a DELETE racing a listing -----------------------------------------------------------------
@pytest.mark.parametrize("listing", ["/api/v1/records", "/api/v1/worklist"])
def test_a_listing_that_meets_a_series_deleted_meanwhile_is_answered(archive, racers, monkeypatch, listing):
    """The DELETE comes once a listing (the node's records, its work list) has read the series'
    manifest to check it is intact, before it reads it again to describe it. The listing was a 404
    naming that one series, for every user of the node until the DELETE was over. It describes
    the series as it read it now (listed as it was when the listing began)."""
    record_id, _ = stored_series(archive)
    node = the_node(archive)
    deleter = racing(racers, lambda: delete(archive, record_id))
    original = node.manifest

    def manifest(record: str, *args, **kwargs):
        read = original(record, *args, **kwargs)
        if record == record_id and not deleter.thread.is_alive() and not deleter.done.is_set():
            deleter.run_now(until_series_lock=False)
        return read

    monkeypatch.setattr(node, "manifest", manifest)
    listed = archive.app.test_client().get(listing, headers=archive.headers("instadmin"))
    assert deleter.result() == 204
    assert listed.status_code == 200, listed.json
    assert [item["id"] for item in listed.json["items"]] == [record_id]
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)


# --- 7. a reader racing an upload, then the uploader's DELETE ----------------------------------------
@pytest.mark.parametrize("again", [False, True], ids=["first", "after-a-delete"])
def test_a_series_a_colleague_reads_while_it_is_uploaded_is_deleted_by_its_uploader(archive, racers, monkeypatch,
                                                                                   again):
    """A colleague's request names the series once the upload has written it to the store, before
    its row is in (a series uploaded anew after its DELETE, while a viewer still polls it). The
    node adopted it as stored by another node, with no uploader, and the upload kept that row: the
    uploader's DELETE was refused (403) and the work list said nobody sent it. The upload names
    its uploader now, whichever worker adopted the series."""
    uploader_id = str(uuid.uuid4())
    uploader, colleague = (archive.headers(user_id=user) for user in (uploader_id, str(uuid.uuid4())))
    sent = to_bytes(ct(generate_uid(), 0))
    client = archive.app.test_client()

    def upload() -> TestResponse:
        return client.post("/api/v1/records", data={"files": [(io.BytesIO(sent), "series.dcm")]}, headers=uploader,
                           content_type="multipart/form-data")

    if again:
        assert client.delete(f"/api/v1/records/{upload().json['id']}", headers=uploader).status_code == 204
    node = the_node(archive)
    original = node.store.write_record
    readers: list[Racer] = []

    def write_record(record: str, *args, **kwargs) -> bool:
        written = original(record, *args, **kwargs)
        readers.append(racing(racers, lambda: archive.app.test_client().get(
            f"/api/v1/records/{record}", headers=colleague).status_code))
        readers[0].run_now(until_series_lock=False)
        return written

    monkeypatch.setattr(node.store, "write_record", write_record)
    uploaded = upload()
    assert uploaded.status_code == 201, uploaded.json
    assert [reader.result() for reader in readers] == [200]  # the colleague met the series before its row
    record_id = uploaded.json["id"]
    worklist = client.get("/api/v1/worklist", headers=archive.headers("instadmin")).json["items"]
    assert [(item["id"], item["received_from"]) for item in worklist] == [(record_id, uploader_id)]
    assert client.delete(f"/api/v1/records/{record_id}", headers=uploader).status_code == 204
    with archive.app.app_context():
        assert not whole_or_gone(archive, record_id)
