"""C-GET and C-MOVE of a study one of whose series is damaged in the store (session 62).

A series whose manifest no longer authenticates is taken out of service at the read that finds it
(`Node.quarantine`): every HTTP and DICOMweb door answers 422 `store_corrupt`, moves it aside and
audits `record.quarantined`. The DIMSE door read the catalogue's rows and each instance's sealed
file and never the manifest, so a C-GET or C-MOVE sent the damaged series' instances as if nothing
were wrong, and the series stayed listed. Now a retrieval checks each series it sends, as the other
doors do: a damaged one is quarantined (audited once), its instances' sub-operations fail, the
others are sent, and the final response says which series failed and why (dcmtk shows it).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove

from daemons.deployment import free_port
from tests.render.dimse_peers import CALLER, SCP, c_get, close_archive, open_archive
from tests.render.synthetic import stack

DAMAGED = "1.2.826.0.1.3680043.10.1362.62.1"
INTACT = "1.2.826.0.1.3680043.10.1362.62.2"
#: C-GET and C-MOVE "Warning: sub-operations complete, one or more failures" (PS3.4 C.4.2.1.5)
SOME_FAILED = 0xB000


@pytest.fixture
def study(make_node):
    """A node holding one study of two series, the first's manifest damaged on disk afterwards; the
    C-MOVE destination DEST (`harness.destination_port`) is a pynetdicom storage SCP the test starts."""
    destination = free_port()
    harness = open_archive(make_node, storage__manifest_refresh_s=0,
                           dicom__destinations=[f"DEST=127.0.0.1:{destination}"])
    harness.destination_port = destination
    ids = {}
    for series in (DAMAGED, INTACT):
        reply = harness.upload(sorted(stack((1, 0, 0, 0, 1, 0), count=3, series=series)))
        assert reply.status_code == 201, reply.json
        ids[series] = reply.json["id"]
    manifest = harness.root / "store" / ids[DAMAGED] / "manifest.bin"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    harness.app.extensions["sivr_node"].forget(ids[DAMAGED])
    harness.ids = ids
    yield harness
    close_archive(harness)


def _audit(harness, action: str, record_id: str) -> list[str]:
    audit = harness.app.extensions["sivr_node"].models.AuditEntry
    return [row.detail for row in audit.select().where((audit.action == action) & (audit.object_id == record_id))]


def _study_query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3"  # the synthetic stacks' study
    return query


def test_a_damaged_series_is_quarantined_not_sent_and_the_rest_of_the_study_is(study):
    status, arrived = c_get(study.dicom_port, _study_query(), [(CTImageStorage, [ExplicitVRLittleEndian])])

    assert status is not None and status.Status == SOME_FAILED, status
    assert status.NumberOfCompletedSuboperations == 3 and status.NumberOfFailedSuboperations == 3, status
    assert DAMAGED not in str(arrived) and len(arrived) == 3
    damaged = study.ids[DAMAGED]
    assert status.ErrorComment == f"series {damaged[:16]} failed verification: ask IT", status
    # taken out of service as the other doors do it: moved aside, audited once, gone from the catalogue
    aside = list((study.root / "store" / ".quarantine").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(damaged)
    assert len(_audit(study, "record.quarantined", damaged)) == 1
    assert _audit(study, "dicom.get", damaged) == ["level=STUDY instances=3 completed=0 warning=0 failed=3"]
    assert study.client.get(f"/api/v1/records/{damaged}", headers=study.headers()).status_code == 404
    # asked again, the study holds only the intact series: all of it is sent
    status, arrived = c_get(study.dicom_port, _study_query(), [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert status.Status == 0x0000 and len(arrived) == 3
    assert len(_audit(study, "record.quarantined", damaged)) == 1


def test_a_move_sends_the_intact_series_only(study):
    """C-MOVE runs the same sub-operations: the destination gets the intact series, the caller the warning."""
    arrived: list[str] = []

    def on_store(event) -> int:
        arrived.append(str(event.dataset.SeriesInstanceUID))
        return 0x0000

    destination = AE(ae_title="DEST")
    destination.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    server = destination.start_server(("127.0.0.1", study.destination_port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        caller = AE(ae_title=CALLER)
        caller.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = caller.associate("127.0.0.1", study.dicom_port, ae_title=SCP)
        assert assoc.is_established
        statuses = [status for status, _ in assoc.send_c_move(_study_query(), "DEST",
                                                              StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
    finally:
        server.shutdown()
    final = statuses[-1]
    assert final.Status == SOME_FAILED and final.NumberOfFailedSuboperations == 3, final
    assert final.ErrorComment == f"series {study.ids[DAMAGED][:16]} failed verification: ask IT"
    assert arrived == [INTACT] * 3
    assert _audit(study, "dicom.move", study.ids[DAMAGED]) == [
        "level=STUDY destination=DEST instances=3 completed=0 warning=0 failed=3"]


@pytest.mark.skipif(shutil.which("getscu") is None, reason="dcmtk's getscu absent")
def test_getscu_shows_which_series_failed(study, tmp_path):
    """The intact series arrives and getscu shows the comment. (getscu 3.6.7 then fails its release:
    it reads no data set after a final C-GET-RSP, and the warning carries the Failed SOP Instance UID
    List the standard asks for, PS3.7 9.3.3.2; an SCU that reads it knows what to ask again.)"""
    got = subprocess.run(["getscu", "-d", "-aet", CALLER, "-aec", SCP, "-S", "-od", str(tmp_path),
                          "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3",
                          "127.0.0.1", str(study.dicom_port)],
                         capture_output=True, text=True, timeout=120)
    shown = got.stdout + got.stderr
    assert len(list(tmp_path.iterdir())) == 3, "the intact series arrives"
    # at debug level: "Response has status detail: (0000,0902) LO [series ... failed verification: ask IT]"
    assert f"series {study.ids[DAMAGED][:16]} failed verification" in shown, shown


def test_an_intact_study_is_not_slowed_by_a_manifest_read_per_instance(study):
    """The check reads each series' manifest once per retrieval (cached), not once per instance."""
    node = study.app.extensions["sivr_node"]
    calls: list[str] = []
    original = node.manifest

    def counting(record_id, *args, **kwargs):
        calls.append(record_id)
        return original(record_id, *args, **kwargs)

    node.manifest = counting
    query = _study_query()
    query.QueryRetrieveLevel = "SERIES"
    query.SeriesInstanceUID = INTACT
    status, arrived = c_get(study.dicom_port, query, [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert status.Status == 0x0000 and len(arrived) == 3
    assert calls == [study.ids[INTACT]]


def test_a_series_uid_of_no_series_is_no_match(study):
    query = _study_query()
    query.QueryRetrieveLevel = "SERIES"
    query.SeriesInstanceUID = generate_uid()
    status, arrived = c_get(study.dicom_port, query, [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert status.Status == 0x0000 and not arrived


def _series(uid: str) -> Dataset:
    query = _study_query()
    query.QueryRetrieveLevel = "SERIES"
    query.SeriesInstanceUID = uid
    return query


def test_the_damaged_series_alone_is_a702_naming_it(study):
    status, arrived = c_get(study.dicom_port, _series(DAMAGED), [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert not arrived and status.Status == 0xA702, status
    assert status.NumberOfFailedSuboperations == 3 and status.NumberOfCompletedSuboperations == 0, status
    assert status.ErrorComment == f"series {study.ids[DAMAGED][:16]} failed verification: ask IT", status


def test_a_series_gone_from_the_store_meanwhile_says_so(study):
    """Another node sharing the store deleted it after the catalogue matched it."""
    gone = study.ids[INTACT]
    shutil.rmtree(study.root / "store" / gone)
    study.app.extensions["sivr_node"].forget(gone)
    status, arrived = c_get(study.dicom_port, _series(INTACT), [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert not arrived and status.Status == 0xA702, status
    assert status.ErrorComment == f"series {gone[:16]} was deleted meanwhile", status


def test_a_series_this_node_cannot_read_says_so_not_retry_later(study):
    """Found by the session's review: one series' manifest this node cannot read (its file mode, a disk
    error; here a folder where the file was, as root reads any mode) is `RecordUnreadable`, which the
    HTTP door answers 503 naming the file and the fix. The DIMSE comment said the store could not be
    reached and to retry later, which retrying never fixes."""
    unreadable = study.ids[INTACT]
    manifest = study.root / "store" / unreadable / "manifest.bin"
    manifest.unlink()
    manifest.mkdir()
    study.app.extensions["sivr_node"].forget(unreadable)
    http = study.client.get(f"/api/v1/records/{unreadable}/frames/0", headers=study.headers())
    assert http.status_code == 503 and "check the disk" in http.get_json()["error"]["message"]
    status, arrived = c_get(study.dicom_port, _series(INTACT), [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert not arrived and status.Status == 0xA702, status
    assert status.ErrorComment == f"series {unreadable[:16]} cannot be read: ask IT", status
