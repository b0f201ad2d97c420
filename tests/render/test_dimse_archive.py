"""DICOM archive on a render node: real dcmtk and pynetdicom peers on loopback (issue 11, first slice)."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from daemons.deployment import free_port
from daemons.render.dimse.listener import DICOM_FD_ENV, set_protocol_logging
from daemons.render.ingest.service import series_record_id
from daemons.render.models import upgrade
from tests.render.dimse_peers import CALLER, SCP, close_archive, echo, open_archive
from tests.render.synthetic import dataset, to_bytes

REPO = Path(__file__).resolve().parents[2]
CT = REPO / "demo_data" / "ct-chest-100"
pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk (storescu, findscu, echoscu) absent")


@pytest.fixture
def archive(make_node):
    harness = open_archive(make_node, [CALLER, "BADPEER"])
    yield harness
    close_archive(harness)


def dcmtk(tool: str, port: int, *args: str, caller: str = CALLER, files=()) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-aet", caller, "-aec", SCP, *args, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=300)


def ct_files() -> list[Path]:
    return sorted(CT.glob("*.dcm"))


def catalogue(harness):
    return harness.app.extensions["sivr_node"].models.catalogue


def echo_ok(port: int) -> bool:
    return dcmtk("echoscu", port).returncode == 0


def test_echo_and_unknown_caller_rejected(archive):
    assert echo_ok(archive.dicom_port)
    refused = dcmtk("echoscu", archive.dicom_port, caller="STRANGER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr


def test_ct_sent_in_two_associations_grows_one_series(archive):
    files = ct_files()
    assert len(files) == 100
    first = dcmtk("storescu", archive.dicom_port, "-xv", files=files[:50])
    assert first.returncode == 0, first.stderr
    cat = catalogue(archive)
    series = list(cat.Series.select())
    assert len(series) == 1 and series[0].instance_count == 50
    record_id = series[0].id
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    assert record_id == series_record_id(archive.institution_id, uid)
    # one audit entry per stored instance, written by the ingest and naming it (no second "dicom.*" one)
    audit = archive.app.extensions["sivr_node"].models.AuditEntry
    stored = [(row.action, row.object_id, row.detail.rpartition("sop_instance_uid=")[2], row.username)
              for row in audit.select().where(audit.action.startswith("record.")
                                              | audit.action.startswith("dicom.store")).order_by(audit.at)]
    sent = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files[:50]]
    assert sorted(stored) == sorted([("record.upload" if index == 0 else "record.append", record_id, uid, CALLER)
                                     for index, uid in enumerate(sent)])
    second = dcmtk("storescu", archive.dicom_port, "-xv", files=files[50:])
    assert second.returncode == 0, second.stderr
    series = list(cat.Series.select())
    assert [s.id for s in series] == [record_id] and series[0].instance_count == 100
    assert cat.Instance.select().count() == 100
    # renderable over HTTP: load + frame
    meta = archive.client.get(f"/api/v1/records/{record_id}", headers=archive.headers()).get_json()
    assert meta["frames"] == 100 and meta["files"] == 100
    assert archive.client.post(f"/api/v1/records/{record_id}/load", headers=archive.headers()).status_code == 202
    frame = archive.client.get(f"/api/v1/records/{record_id}/frames/50?format=png", headers=archive.headers())
    assert frame.status_code == 200 and frame.data[:4] == b"\x89PNG"
    # the same files again: a no-op, still one series of 100
    again = dcmtk("storescu", archive.dicom_port, "-xv", files=files[:3])
    assert again.returncode == 0 and cat.Instance.select().count() == 100
    resent = [row.detail for row in audit.select().where(audit.action == "record.upload_again")]
    assert sorted(resent) == sorted(f"instances=1 sop_instance_uid={uid}" for uid in sent[:3])
    # C-FIND at study, series and image level (dcmtk findscu, study root)
    study = dcmtk("findscu", archive.dicom_port, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                  "-k", "PatientName", "-k", "StudyDate=19000101-", "-k", "NumberOfStudyRelatedInstances",
                  "-k", "ModalitiesInStudy")
    assert study.returncode == 0
    assert re.search(r"\(0020,1208\) IS \[100 ?\]", study.stderr + study.stdout)
    assert "CT" in study.stderr + study.stdout
    found = dcmtk("findscu", archive.dicom_port, "-S", "-k", "QueryRetrieveLevel=SERIES",
                  "-k", f"SeriesInstanceUID={uid}", "-k", "Modality", "-k", "NumberOfSeriesRelatedInstances")
    assert re.search(r"\(0020,1209\) IS \[100 ?\]", found.stderr + found.stdout)
    images = pynetdicom_find(archive.dicom_port, "IMAGE", SeriesInstanceUID=uid, SOPInstanceUID="", InstanceNumber="7")
    assert len(images) == 1 and images[0].InstanceNumber == 7


def pynetdicom_find(port: int, level: str, **keys) -> list:
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    replies = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
    answers = [identifier for status, identifier in replies if status and status.Status == 0xFF00]
    assoc.release()
    return answers


def _store(port: int, ds, abort: bool = False) -> int:
    ae = AE(ae_title="BADPEER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    if abort:
        assoc.abort()
    else:
        assoc.release()
    return status.Status if status else -1


def test_malformed_and_conflicting_instances_refused_listener_keeps_serving(archive):
    good = dataset(series="1.2.826.0.1.99.1", position=0.0)
    good.InstanceNumber = 1
    assert _store(archive.dicom_port, good) == 0x0000
    cat = catalogue(archive)
    assert cat.Instance.select().count() == 1
    # a different instance under the same SOPInstanceUID: refused, audited, nothing replaced
    other = dataset(series="1.2.826.0.1.99.1", position=5.0)
    other.SOPInstanceUID = good.SOPInstanceUID
    other.file_meta.MediaStorageSOPInstanceUID = good.SOPInstanceUID
    assert _store(archive.dicom_port, other) == 0xA900
    assert cat.Instance.select().count() == 1
    audit = archive.app.extensions["sivr_node"].models.AuditEntry
    assert audit.select().where(audit.action == "instance.conflict").count() == 1
    # the same SOP Instance UID in another series: the same refusal (a UID names one instance)
    moved = dataset(series="1.2.826.0.1.99.3", position=0.0)
    moved.SOPInstanceUID = good.SOPInstanceUID
    moved.file_meta.MediaStorageSOPInstanceUID = good.SOPInstanceUID
    assert _store(archive.dicom_port, moved) == 0xA900
    assert cat.Instance.select().count() == 1
    assert audit.select().where(audit.action == "instance.conflict").count() == 2
    # a new series of another patient under the stored study: refused the same way (a study has one patient)
    stranger = dataset(series="1.2.826.0.1.99.4", position=0.0)
    stranger.StudyInstanceUID, stranger.PatientID = good.StudyInstanceUID, "SOMEONE-ELSE"
    assert _store(archive.dicom_port, stranger) == 0xA900
    assert cat.Instance.select().count() == 1
    assert audit.select().where(audit.action == "study.conflict").count() == 1
    # a malformed dataset (pixel data shorter than its dimensions): cannot understand, nothing stored
    bad = dataset(series="1.2.826.0.1.99.2")
    bad.PixelData = bad.PixelData[:10]
    assert _store(archive.dicom_port, bad) in (0xC000, 0xA900)
    # a peer that aborts right after its C-STORE request of a broken file
    assert _store(archive.dicom_port, bad, abort=True) in (0xC000, 0xA900)
    assert cat.Series.select().count() == 1 and cat.Instance.select().count() == 1
    assert echo_ok(archive.dicom_port)


def test_upgrade_indexes_records_of_current_upload_path(make_node, tmp_path):
    """A store made by uploads is indexed by `upgrade` with every record id unchanged."""
    harness = make_node(root=tmp_path)
    files = ct_files()[:5]
    first = harness.upload(files)
    assert first.status_code == 201
    record_id = first.get_json()["id"]
    single = harness.upload([("a.dcm", to_bytes(dataset(series="1.2.826.0.1.77")))])
    assert single.status_code == 201
    ids = {record_id, single.get_json()["id"]}
    cat = catalogue(harness)
    cat.Instance.delete().execute()
    cat.Series.delete().execute()  # as a store made before the catalogue existed
    harness.registry.shutdown()
    harness.app.extensions["sivr_view_audit"].close()
    harness.app.extensions["sivr_node"].decoder.close()
    from daemons.render.settings import KEYS
    from shared.config import build_config
    config = build_config("render", KEYS, {
        "database": {"url": f"sqlite:///{tmp_path}/render.db"}, "node": {"institution_id": harness.institution_id},
        "storage": {"dir": str(tmp_path / "store"), "key_file": str(tmp_path / "store.key")}}, None)
    upgrade(config)
    assert {s.id for s in cat.Series.select()} == ids
    assert cat.Instance.select().count() == 6
    assert (tmp_path / "render.db").stat().st_mode & 0o077 == 0
    # browser upload of more of the same series adds to it, same id
    grown = make_node(root=tmp_path, institution_id=harness.institution_id).upload(ct_files()[5:8])
    assert grown.status_code == 201 and grown.get_json()["id"] == record_id and grown.get_json()["files"] == 8


def test_upgrade_from_schema_6_clears_the_dates_indexed_that_are_none(make_node, tmp_path):
    """`sivr db upgrade render` on a store of schema 6 whose catalogue kept `2024-01-` (cut from
    `2024-01-05`): the value is cleared, the valid ones stay (the migration: tests/render/test_matching.py)."""
    import sqlite3

    from tests.render.conftest import close_node

    harness = make_node(root=tmp_path)
    odd, fine = dataset(series="1.2.826.0.1.78"), dataset(series="1.2.826.0.1.79")
    odd.StudyInstanceUID, fine.StudyInstanceUID = "1.2.826.0.1.78.0", "1.2.826.0.1.79.0"
    odd.StudyDate = fine.StudyDate = "20240105"
    for ds in (odd, fine):
        assert harness.upload([("a.dcm", to_bytes(ds))]).status_code == 201
    close_node(harness)
    with sqlite3.connect(tmp_path / "render.db") as db:  # as schema 6 indexed `2024-01-05`
        db.execute("UPDATE dicom_study SET study_date = '2024-01-' WHERE study_uid = ?", (odd.StudyInstanceUID,))
        db.execute("UPDATE schema_version SET version = 6 WHERE layer = 'render'")
    from daemons.render.settings import KEYS
    from shared.config import build_config
    config = build_config("render", KEYS, {
        "database": {"url": f"sqlite:///{tmp_path}/render.db"}, "node": {"institution_id": harness.institution_id},
        "storage": {"dir": str(tmp_path / "store"), "key_file": str(tmp_path / "store.key")}}, None)
    assert upgrade(config) == 7
    with sqlite3.connect(tmp_path / "render.db") as db:
        dates = dict(db.execute("SELECT study_uid, study_date FROM dicom_study"))
    assert dates == {odd.StudyInstanceUID: "", fine.StudyInstanceUID: "20240105"}


def test_upload_conflict_is_409_and_cstore_joins_an_uploaded_series(archive):
    """A browser upload and a C-STORE land in the same series; a changed instance is refused by both doors."""
    first = dataset(series="1.2.826.0.1.55", position=0.0)
    uploaded = archive.upload([("a.dcm", to_bytes(first))])
    assert uploaded.status_code == 201
    record_id = uploaded.get_json()["id"]
    changed = dataset(series="1.2.826.0.1.55", position=0.0)
    changed.PixelData = bytes(len(changed.PixelData))
    changed.SOPInstanceUID = first.SOPInstanceUID
    changed.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    refused = archive.upload([("b.dcm", to_bytes(changed))])
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "instance_conflict"
    assert archive.upload([("a.dcm", to_bytes(first))]).status_code == 200  # identical again: a no-op
    second = dataset(series="1.2.826.0.1.55", position=2.0)
    assert _store(archive.dicom_port, second) == 0x0000
    meta = archive.client.get(f"/api/v1/records/{record_id}", headers=archive.headers()).get_json()
    assert meta["files"] == 2 and meta["frames"] == 2
    assert [s["position"][2] for s in meta["slices"]] == [0.0, 2.0]
    original = archive.client.get(f"/api/v1/records/{record_id}/original?index=1", headers=archive.headers())
    assert original.status_code == 200
    assert pydicom.dcmread(io.BytesIO(original.data)).SOPInstanceUID == second.SOPInstanceUID


def test_an_uploaded_instance_sent_again_by_a_modality_is_a_no_op(archive, tmp_path):
    """The same instance by C-STORE after a browser upload: its file meta names another sender, and
    dcmtk's storescu writes the data set anew (other bytes, same attributes). It is the instance
    sent again, a success and a no-op, not a conflict; a changed value is still refused."""
    path = ct_files()[1]
    uploaded = archive.upload([path])
    assert uploaded.status_code == 201, uploaded.get_json()
    sent = dcmtk("storescu", archive.dicom_port, "-xv", files=[path])
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert catalogue(archive).Instance.select().count() == 1
    changed = pydicom.dcmread(path)
    changed.PatientName = "Someone^Else"
    changed.save_as(tmp_path / "changed.dcm", enforce_file_format=True)
    refused = dcmtk("storescu", archive.dicom_port, "-v", "-xv", files=[tmp_path / "changed.dcm"])
    assert refused.returncode != 0 and "DataSetDoesNotMatchSOPClass" in refused.stdout + refused.stderr
    assert catalogue(archive).Instance.select().count() == 1


def test_a_listener_without_allowed_callers_is_a_config_error(make_node):
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match="allowed_callers"):
        make_node(dicom__port=free_port(), dicom__allowed_callers=[])


def test_a_stored_but_uncatalogued_series_is_indexed_then_grows(archive):
    """A crash between the store write and the catalogue rows: the next instance indexes the folder first."""
    first = dataset(series="1.2.826.0.1.66", position=0.0)
    record_id = archive.upload([("a.dcm", to_bytes(first))]).get_json()["id"]
    models = archive.app.extensions["sivr_node"].models
    models.catalogue.Instance.delete().execute()
    models.catalogue.Series.delete().execute()
    models.StoredRecord.delete().execute()
    assert _store(archive.dicom_port, dataset(series="1.2.826.0.1.66", position=1.0)) == 0x0000
    series = list(models.catalogue.Series.select())
    assert [s.id for s in series] == [record_id] and series[0].instance_count == 2
    assert models.StoredRecord.get_by_id(record_id).files == 2


def test_the_listener_answers_without_nagle_delays(archive):
    """Each DIMSE answer is two small writes (command, then data set): the node's sockets have
    TCP_NODELAY, or every answer waits ~40 ms for the peer's delayed ACK."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", archive.dicom_port, ae_title=SCP)
    try:
        assert association.is_established
        server = archive.app.extensions["sivr_dimse"].servers[0]
        accepted = server.active_associations
        assert accepted, "the listener holds no association"
        for assoc in accepted:
            assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        association.release()


def test_answers_are_described_for_the_log_only_at_debug_level(archive, monkeypatch):
    """pynetdicom dumps every C-FIND answer's data set to text (and every PDU and DIMSE message) even
    when its logger throws the text away: a third of a many-answer search's time. The node (at
    info level here) describes them only when it logs at debug level (pynetdicom's C-FIND answers
    are sent by `dimse.find_answers`, which does as pynetdicom would)."""
    described = []
    for module in ("pynetdicom.service_class", "daemons.render.dimse.find_answers"):
        monkeypatch.setattr(f"{module}.pretty_dataset", lambda ds: described.append(ds) or [])
    sent = dcmtk("storescu", archive.dicom_port, "-xv", files=ct_files()[:3])
    assert sent.returncode == 0, sent.stderr

    def answers_described() -> int:
        described.clear()
        images = pynetdicom_find(archive.dicom_port, "IMAGE", StudyInstanceUID="", SeriesInstanceUID="",
                                 SOPInstanceUID="")
        assert len(images) == 3
        return len([ds for ds in described if ds.get("SOPInstanceUID")])

    assert answers_described() == 0
    try:
        set_protocol_logging("debug")
        assert answers_described() == 3
    finally:
        set_protocol_logging("info")


def test_a_listener_on_an_inherited_socket_stops_without_closing_it_for_others(make_node, monkeypatch):
    """`sivr serve --dicom-fd`: the gunicorn master keeps the socket for the next worker. The worker's
    listener serves it, keeps the descriptor from its children, and stopping it leaves it listening."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        monkeypatch.setenv(DICOM_FD_ENV, str(held.fileno()))
        harness = open_archive(make_node, port=port)
        assert DICOM_FD_ENV not in os.environ
        assert echo(port)
        close_archive(harness)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # still listening: queued for the next worker
