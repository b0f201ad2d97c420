"""C-GET and C-MOVE on a render node, misbehaving peers and the DIMSE metrics, with real peers on loopback:
dcmtk `getscu`, `movescu` and `storescp` (the move destination), and pynetdicom (issues 11 and 16)."""

from __future__ import annotations

import io
import re
import shutil
import socket
import struct
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from daemons.deployment import LocalDeployment, dicom_endpoint, free_port, free_ports, init_deployment
from shared.audit_export import atna_event
from tests.render.dimse_peers import CALLER, SCP, c_get, close_archive, echo, open_archive
from tests.render.synthetic import big_endian_copy, dataset, progressive_jpeg_instance, stack, to_bytes

REPO = Path(__file__).resolve().parents[2]
CT = REPO / "demo_data" / "ct-chest-100"
pytestmark = pytest.mark.skipif(shutil.which("getscu") is None or shutil.which("storescp") is None,
                                reason="dcmtk (getscu, movescu, storescp) absent")


@pytest.fixture
def retrieval(make_node, tmp_path):
    """A node with two C-MOVE destinations: BITEXACT (a storescp accepting JPEG 2000 lossless) and
    PLAIN (a storescp accepting uncompressed syntaxes only); short timeouts, 4 associations at most."""
    bitexact, plain, nobody = free_ports(3)
    ports = {"BITEXACT": bitexact, "PLAIN": plain}
    down = f"DOWN=127.0.0.1:{nobody}"  # nothing listens there
    harness = open_archive(make_node, [CALLER, "BADPEER"],
                           dicom__destinations=[f"{title}=127.0.0.1:{p}" for title, p in ports.items()] + [down],
                           dicom__max_associations=4, dicom__max_associations_per_address=4,
                           dicom__network_timeout_s=3.0, dicom__acse_timeout_s=2.0,
                           dicom__request_timeout_s=2.0,
                           dicom__dimse_timeout_s=5.0)
    harness.destinations = {}
    scps = []
    for title, dest_port in ports.items():
        folder = tmp_path / title
        folder.mkdir()
        syntax = ["+xv"] if title == "BITEXACT" else []
        scps.append(subprocess.Popen(["storescp", "-aet", title, *syntax, "+B", "-od", str(folder), str(dest_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        harness.destinations[title] = folder
    for dest_port in ports.values():
        wait_port(dest_port)
    yield harness
    for scp in scps:
        scp.terminate()
        scp.wait(10)
    close_archive(harness)


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def dcmtk(tool: str, port: int, *args: str, caller: str = CALLER) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-v", "-aet", caller, "-aec", SCP, *args, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=300)


def ct_files() -> list[Path]:
    return sorted(CT.glob("*.dcm"))


def seed(harness) -> tuple[str, str, list[Path]]:
    """The demo CT uploaded (one series): its study UID, series UID and files."""
    files = ct_files()
    assert harness.upload(files).status_code == 201
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(header.StudyInstanceUID), str(header.SeriesInstanceUID), files


def body(path: Path) -> bytes:
    """A Part 10 file's data set, without its preamble and file meta information."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def received(folder: Path) -> dict[str, Path]:
    """Files a dcmtk tool wrote, by SOP Instance UID."""
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in folder.iterdir()}


def originals(files: list[Path]) -> dict[str, Path]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}


def audit_details(harness, action: str) -> list[str]:
    audit = harness.app.extensions["sivr_node"].models.AuditEntry
    return [row.detail for row in audit.select().where(audit.action == action)]


def metrics_text(harness) -> str:
    response = harness.client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_move_study_bit_exact_and_series_decompressed(retrieval):
    study_uid, series_uid, files = seed(retrieval)
    by_uid = originals(files)
    # study level to a destination that accepts the stored JPEG 2000 lossless: the stored bytes
    moved = dcmtk("movescu", retrieval.dicom_port, "-S", "-aem", "BITEXACT", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={study_uid}")
    assert moved.returncode == 0, moved.stderr
    got = received(retrieval.destinations["BITEXACT"])
    assert set(got) == set(by_uid)
    for uid, path in got.items():
        assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
        assert body(path) == body(by_uid[uid]), uid
    details = audit_details(retrieval, "dicom.move")
    assert details == ["level=STUDY destination=BITEXACT instances=100 completed=100 warning=0 failed=0"]
    # series level to a destination that takes uncompressed data only: decompressed, same pixels
    moved = dcmtk("movescu", retrieval.dicom_port, "-S", "-aem", "PLAIN", "-k", "QueryRetrieveLevel=SERIES",
                  "-k", f"StudyInstanceUID={study_uid}", "-k", f"SeriesInstanceUID={series_uid}")
    assert moved.returncode == 0, moved.stderr
    got = received(retrieval.destinations["PLAIN"])
    assert set(got) == set(by_uid)
    for uid in list(got)[:5]:
        sent, original = pydicom.dcmread(got[uid]), pydicom.dcmread(by_uid[uid])
        assert not sent.file_meta.TransferSyntaxUID.is_compressed
        assert sent.SOPInstanceUID == original.SOPInstanceUID  # lossless: the same instance
        assert np.array_equal(sent.pixel_array, original.pixel_array)
    text = metrics_text(retrieval)
    assert re.search(r'sivr_dicom_operations_total\{operation="move",status="0x0000"\} 2\.0', text)
    assert re.search(r'sivr_dicom_suboperations_total\{operation="move",result="completed"\} 200\.0', text)
    assert 'sivr_dicom_associations_total{result="accepted"}' in text
    assert 'sivr_dicom_operation_seconds_count{operation="move"} 2.0' in text


def test_move_unknown_destination_no_match_and_bad_identifier(retrieval):
    study_uid, _, _ = seed(retrieval)
    unknown = dcmtk("movescu", retrieval.dicom_port, "-S", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={study_uid}")
    assert "Refused: MoveDestinationUnknown" in unknown.stdout + unknown.stderr
    assert audit_details(retrieval, "dicom.move_refused") == ["destination=NOWHERE is not in dicom.destinations"]
    # a configured destination that cannot be reached: 0xA801 too, audited with every instance failed
    assert pynetdicom_move(retrieval.dicom_port, "DOWN", "STUDY", StudyInstanceUID=study_uid)[0] == 0xA801
    assert audit_details(retrieval, "dicom.move") == [
        "level=STUDY destination=DOWN instances=100 completed=0 warning=0 failed=100"]
    status = pynetdicom_move(retrieval.dicom_port, "BITEXACT", "STUDY", StudyInstanceUID="1.2.3.999")
    assert status == (0x0000, 0, 0, 0)
    assert not list(retrieval.destinations["BITEXACT"].iterdir())
    # a retrieval needs the unique key of its level: no key, no archive-wide move
    assert pynetdicom_move(retrieval.dicom_port, "BITEXACT", "STUDY", PatientName="*")[0] == 0xA900
    assert pynetdicom_move(retrieval.dicom_port, "BITEXACT", "PATIENT", PatientID="x")[0] == 0xA900  # study root
    assert not list(retrieval.destinations["BITEXACT"].iterdir())
    assert 'sivr_dicom_operations_total{operation="move",status="0xA801"} 2.0' in metrics_text(retrieval)


def refusal_counts(status: pydicom.Dataset) -> tuple[int, dict[str, int | None]]:
    """A final response's status and its sub-operation counts as sent (None: absent)."""
    counts = {keyword: (None if status.get(keyword) is None else int(status.get(keyword)))
              for keyword in ("NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
                              "NumberOfWarningSuboperations", "NumberOfFailedSuboperations")}
    return int(status.Status), counts


def last_response(port: int, service: str, query: pydicom.Dataset, destination: str = "BITEXACT") -> pydicom.Dataset:
    """The final response of a study root C-GET (taking CT, uncompressed) or C-MOVE by pynetdicom."""
    ae = AE(ae_title=CALLER)
    model = {"get": StudyRootQueryRetrieveInformationModelGet,
             "move": StudyRootQueryRetrieveInformationModelMove}[service]
    ae.add_requested_context(model)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    assert assoc.is_established
    responses = (assoc.send_c_get(query, model) if service == "get"
                 else assoc.send_c_move(query, destination, model))
    statuses = [status for status, _ in responses]
    assoc.release()
    return statuses[-1]


@pytest.mark.parametrize("service", ["get", "move"])
def test_refused_retrievals_count_no_sub_operation(retrieval, service, tmp_path):
    """A retrieval refused before any C-STORE sub-operation (no unique key, a PATIENT level on the
    study root, more UIDs than the node matches, an unknown destination) reported 'Number of Failed
    Sub-operations = 1' (pynetdicom counts the one it was told of as failed): no sub-operation was
    invoked, so none completed, failed or warned (PS3.7 9.3.3.2, 9.3.4.2: the counts are of the
    C-STORE sub-operations invoked). Nothing matched is a success with all counts 0."""
    study_uid, _, _ = seed(retrieval)
    too_many = "\\".join(f"1.2.3.{n}" for n in range(50_001))
    refused = [(identifier("STUDY", PatientName="*"), "BITEXACT", 0xA900),
               (identifier("PATIENT", PatientID="x"), "BITEXACT", 0xA900),
               (identifier("STUDY", StudyInstanceUID=too_many), "BITEXACT", 0xA701)]
    if service == "move":
        refused.append((identifier("STUDY", StudyInstanceUID=study_uid), "NOWHERE", 0xA801))
    for query, destination, expected in refused:
        status, counts = refusal_counts(last_response(retrieval.dicom_port, service, query, destination))
        assert status == expected, hex(status)
        assert all(count in (None, 0) for count in counts.values()), (hex(status), counts)
    status, counts = refusal_counts(last_response(retrieval.dicom_port, service,
                                                  identifier("STUDY", StudyInstanceUID="1.2.3.404")))
    assert status == 0x0000 and {k: v for k, v in counts.items() if v is not None} == {
        "NumberOfCompletedSuboperations": 0, "NumberOfWarningSuboperations": 0, "NumberOfFailedSuboperations": 0}
    assert not list(retrieval.destinations["BITEXACT"].iterdir())
    # dcmtk's tools end cleanly on a refusal, and read no failed sub-operation from it
    args = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*"]
    done = (dcmtk("getscu", retrieval.dicom_port, *args, "-od", str(tmp_path)) if service == "get"
            else dcmtk("movescu", retrieval.dicom_port, *args, "-aem", "BITEXACT"))
    said = done.stdout + done.stderr
    assert "Released" in said or "Releasing Association" in said, said
    assert "Aborting" not in said and "Abort" not in said, said
    assert not re.search(r"Failed Sub-?[Oo]perations? *[:=] *[1-9]", said), said
    # nor do the metrics count a failed sub-operation
    assert not re.search(rf'sivr_dicom_suboperations_total{{{{operation="{service}",result="failed"}}}} [1-9]',
                         metrics_text(retrieval))


def pynetdicom_move(port: int, destination: str, level: str, **keys) -> tuple[int, int, int, int]:
    """(status, completed, warning, failed) of a study root C-MOVE."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    last = None
    for status, _ in assoc.send_c_move(identifier(level, **keys), destination,
                                       StudyRootQueryRetrieveInformationModelMove):
        last = status
    assoc.release()
    return outcome(last)


def identifier(level: str, **keys) -> pydicom.Dataset:
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def outcome(status) -> tuple[int, int, int, int]:
    return (status.Status, *(int(status.get(k, 0) or 0) for k in (
        "NumberOfCompletedSuboperations", "NumberOfWarningSuboperations", "NumberOfFailedSuboperations")))


def pynetdicom_get(port: int, syntaxes: list[str], level: str, model=StudyRootQueryRetrieveInformationModelGet,
                   cancel_after: int | None = None, **keys) -> tuple[tuple[int, int, int, int], dict[str, bytes]]:
    """A C-GET receiving CT instances in `syntaxes` only: its final status and what arrived, by SOP Instance UID."""
    last, stored = c_get(port, identifier(level, **keys), [(CTImageStorage, syntaxes)], model, cancel_after)
    return outcome(last), stored


def test_get_series_and_instance_bit_exact_study_decompressed(retrieval, tmp_path):
    study_uid, series_uid, files = seed(retrieval)
    by_uid = originals(files)
    # pynetdicom proposing the stored JPEG 2000 lossless only: the stored bytes, series level
    status, stored = pynetdicom_get(retrieval.dicom_port, ["1.2.840.10008.1.2.4.90"], "SERIES",
                                    SeriesInstanceUID=series_uid)
    assert status == (0x0000, 100, 0, 0)
    assert set(stored) == set(by_uid)
    assert all(stored[uid] == body(path) for uid, path in by_uid.items())
    # one instance (image level), patient root, by dcmtk getscu proposing uncompressed syntaxes: decompressed
    one = sorted(by_uid)[7]
    folder = tmp_path / "get"
    folder.mkdir()
    got = dcmtk("getscu", retrieval.dicom_port, "-P", "-od", str(folder), "-k", "QueryRetrieveLevel=IMAGE",
                "-k", f"PatientID={pydicom.dcmread(files[0], stop_before_pixels=True).PatientID}",
                "-k", f"StudyInstanceUID={study_uid}", "-k", f"SeriesInstanceUID={series_uid}",
                "-k", f"SOPInstanceUID={one}")
    assert got.returncode == 0, got.stderr
    arrived = received(folder)
    assert list(arrived) == [one]
    sent, original = pydicom.dcmread(arrived[one]), pydicom.dcmread(by_uid[one])
    assert not sent.file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(sent.pixel_array, original.pixel_array)
    # the whole study by getscu (study root)
    whole = tmp_path / "study"
    whole.mkdir()
    got = dcmtk("getscu", retrieval.dicom_port, "-S", "-od", str(whole), "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={study_uid}")
    assert got.returncode == 0, got.stderr
    assert set(received(whole)) == set(by_uid)
    assert audit_details(retrieval, "dicom.get")[-1] == "level=STUDY instances=100 completed=100 warning=0 failed=0"
    text = metrics_text(retrieval)
    assert 'sivr_dicom_operations_total{operation="get",status="0x0000"} 3.0' in text
    assert 'sivr_dicom_suboperations_total{operation="get",result="completed"} 201.0' in text


def test_get_unsupported_syntax_no_match_cancel_and_unknown_caller(retrieval, tmp_path):
    _, series_uid, files = seed(retrieval)
    patient_id = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID)
    # the patient (patient root) to a receiver of JPEG-LS only: the node can neither send the stored
    # JPEG 2000 nor make JPEG-LS
    status, stored = pynetdicom_get(retrieval.dicom_port, ["1.2.840.10008.1.2.4.80"], "PATIENT",
                                    model=PatientRootQueryRetrieveInformationModelGet, PatientID=patient_id)
    assert status == (0xA702, 0, 0, 100) and not stored
    assert audit_details(retrieval, "dicom.get")[-1] == "level=PATIENT instances=100 completed=0 warning=0 failed=100"
    assert atna_event("dicom.get") == ("110106", "R")
    # no match: success, nothing sent
    status, stored = pynetdicom_get(retrieval.dicom_port, ["1.2.840.10008.1.2.1"], "SERIES",
                                    SeriesInstanceUID="1.2.3.404")
    assert status == (0x0000, 0, 0, 0) and not stored
    # the unique key of the level is required; a study root model has no PATIENT level
    assert pynetdicom_get(retrieval.dicom_port, ["1.2.840.10008.1.2.1"], "SERIES", Modality="CT")[0][0] == 0xA900
    assert pynetdicom_get(retrieval.dicom_port, ["1.2.840.10008.1.2.1"], "PATIENT", PatientID="x")[0][0] == 0xA900
    # cancelled after a few sub-operations
    status, stored = pynetdicom_get(retrieval.dicom_port, ["1.2.840.10008.1.2.4.90"], "SERIES", cancel_after=3,
                                    SeriesInstanceUID=series_uid)
    assert status[0] == 0xFE00 and 3 <= len(stored) < 100
    # a caller that is not in dicom.allowed_callers is rejected at association
    refused = dcmtk("getscu", retrieval.dicom_port, "-S", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=SERIES",
                    "-k", f"SeriesInstanceUID={series_uid}", caller="STRANGER")
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr
    assert not list(tmp_path.glob("CT*"))
    # pynetdicom tells of a rejection (audit row, counter) after it has sent it to the caller
    rejected = 'sivr_dicom_associations_total{result="rejected"} 1.0'
    deadline = time.monotonic() + 10
    while not (audit_details(retrieval, "dicom.reject") and rejected in metrics_text(retrieval)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(audit_details(retrieval, "dicom.reject")) == 1
    text = metrics_text(retrieval)
    assert 'sivr_dicom_operations_total{operation="get",status="0xA702"} 1.0' in text
    assert rejected in text


def test_get_with_some_sub_operations_failed_is_a_warning(retrieval):
    """One instance the receiver takes (JPEG 2000 as stored), one it cannot (stored uncompressed,
    the receiver takes JPEG 2000 only): 0xB000, counts 1 and 1, the failed one listed."""
    first = ct_files()[0]
    assert retrieval.upload([first]).status_code == 201
    header = pydicom.dcmread(first, stop_before_pixels=True)
    study_uid = str(header.StudyInstanceUID)
    plain = dataset(series="1.2.826.0.1.88.1")
    plain.StudyInstanceUID, plain.PatientID = study_uid, header.PatientID  # a study belongs to one patient
    assert retrieval.upload([("plain.dcm", to_bytes(plain))]).status_code == 201
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.4.90"])
    arrived = []
    assoc = ae.associate("127.0.0.1", retrieval.dicom_port, ae_title=SCP,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, lambda event: arrived.append(event.request) or 0x0000)])
    responses = list(assoc.send_c_get(identifier("STUDY", StudyInstanceUID=study_uid),
                                      StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    status, failed_list = responses[-1]
    assert outcome(status) == (0xB000, 1, 0, 1) and len(arrived) == 1
    assert failed_list.FailedSOPInstanceUIDList == plain.SOPInstanceUID  # a list of one: a single value
    assert sorted(audit_details(retrieval, "dicom.get")) == [
        "level=STUDY instances=1 completed=0 warning=0 failed=1",
        "level=STUDY instances=1 completed=1 warning=0 failed=0"]


def as_received(encoded: bytes, syntax: str) -> pydicom.Dataset:
    """A data set a C-GET received (encoded in `syntax`, no file meta), readable as a file."""
    ds = pydicom.dcmread(io.BytesIO(encoded), force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def test_instances_pydicom_cannot_decompress_reach_an_uncompressed_receiver(retrieval):
    """Stored Explicit VR Big Endian, or in the retired JPEG Full Progression only the node's libjpeg
    reads: a receiver taking Implicit VR Little Endian only got neither (pydicom's `decompress` has no
    decoder for .55, and pynetdicom does not convert byte order), so both sub-operations failed. Now
    transcoded as WADO-RS does, with the same values and the same SOP Instance UID."""
    little = dataset(8, 8, series=generate_uid())
    little.StudyInstanceUID = generate_uid()
    big_raw, big = big_endian_copy(to_bytes(little))
    pixels = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    jpeg_raw, jpeg, decoded = progressive_jpeg_instance(pixels)
    cases = [("big.dcm", big_raw, big, little.pixel_array), ("progressive.dcm", jpeg_raw, jpeg, decoded)]
    for name, raw, ds, expected in cases:
        assert retrieval.upload([(name, raw)]).status_code == 201
        status, stored = pynetdicom_get(retrieval.dicom_port, [str(ImplicitVRLittleEndian)], "SERIES",
                                        StudyInstanceUID=ds.StudyInstanceUID, SeriesInstanceUID=ds.SeriesInstanceUID)
        assert status == (0x0000, 1, 0, 0), name
        sent = as_received(stored[str(ds.SOPInstanceUID)], str(ImplicitVRLittleEndian))
        assert sent.SOPInstanceUID == ds.SOPInstanceUID
        assert np.array_equal(sent.pixel_array, expected), name
    assert np.frombuffer(sent_private(retrieval, big), "<u2").tolist() == list(range(1, 9))


def sent_private(harness, ds: pydicom.Dataset) -> bytes:
    """The private OW element of `big_endian_copy` as a C-GET in Explicit VR Little Endian receives it."""
    syntax = str(ExplicitVRLittleEndian)
    _, stored = pynetdicom_get(harness.dicom_port, [syntax], "IMAGE", StudyInstanceUID=ds.StudyInstanceUID,
                               SeriesInstanceUID=ds.SeriesInstanceUID, SOPInstanceUID=ds.SOPInstanceUID)
    return as_received(stored[str(ds.SOPInstanceUID)], syntax)[0x00091011].value


@pytest.fixture
def odd_receivers(make_node):
    """A node whose C-MOVE destination ODD is a pynetdicom storage SCP answering each C-STORE with the
    next status of `harness.answers` (0x0000 once they run out), as is the C-GET caller's own SCP;
    one series of five instances stored."""
    port = free_port()
    harness = open_archive(make_node, dicom__destinations=[f"ODD=127.0.0.1:{port}"])
    harness.answers = []

    def answer(event) -> int:
        return harness.answers.pop(0) if harness.answers else 0x0000

    destination = AE(ae_title="ODD")
    destination.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = destination.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, answer)])
    harness.answer = answer
    harness.series_uid = generate_uid()
    assert harness.upload(stack((1, 0, 0, 0, 1, 0), count=5, series=harness.series_uid)).status_code == 201
    yield harness
    server.shutdown()
    close_archive(harness)


def test_sub_operations_answered_with_no_storage_status_fail_alike_in_dimse_audit_and_metrics(odd_receivers):
    """A receiver answering C-STORE with 0xFE00 (Cancel, no storage status): pynetdicom counted those
    sub-operations as nothing, so a C-GET that stored nothing ended in success with no counts while
    the audit said failed; 0x0107 (a general warning) was a warning to pynetdicom, a failure to the
    audit. Now each is one outcome everywhere."""
    harness, series = odd_receivers, {"SeriesInstanceUID": odd_receivers.series_uid}

    def get() -> tuple[tuple[int, int, int, int], list[str]]:
        ae = AE(ae_title=CALLER)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
        assoc = ae.associate("127.0.0.1", harness.dicom_port, ae_title=SCP,
                             ext_neg=[build_role(CTImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, harness.answer)])
        status, failed = list(assoc.send_c_get(identifier("SERIES", **series),
                                               StudyRootQueryRetrieveInformationModelGet))[-1]
        assoc.release()
        listed = failed.get("FailedSOPInstanceUIDList", []) if failed is not None else []
        # one UID is a single value, none an empty one
        return outcome(status), [uid for uid in ([listed] if isinstance(listed, str) else listed) if uid]

    harness.answers = [0xFE00] * 5
    status, failed = get()
    assert status == (0xA702, 0, 0, 5) and len(set(failed)) == 5
    harness.answers = [0xFE00, 0xFE00]
    status, failed = get()
    assert status == (0xB000, 3, 0, 2) and len(failed) == 2
    harness.answers = [0x0107] * 5
    assert get() == ((0xB000, 0, 5, 0), [])
    harness.answers = [0xFE00] * 5
    assert pynetdicom_move(harness.dicom_port, "ODD", "SERIES", **series) == (0xA702, 0, 0, 5)
    assert audit_details(harness, "dicom.get") == [
        "level=SERIES instances=5 completed=0 warning=0 failed=5",
        "level=SERIES instances=5 completed=3 warning=0 failed=2",
        "level=SERIES instances=5 completed=0 warning=5 failed=0"]
    assert audit_details(harness, "dicom.move") == [
        "level=SERIES destination=ODD instances=5 completed=0 warning=0 failed=5"]
    text = metrics_text(harness)
    assert 'sivr_dicom_operations_total{operation="get",status="0xA702"} 1.0' in text
    assert 'sivr_dicom_operations_total{operation="get",status="0xB000"} 2.0' in text
    assert 'sivr_dicom_operations_total{operation="get",status="0x0000"}' not in text
    assert 'sivr_dicom_operations_total{operation="move",status="0xA702"} 1.0' in text
    assert 'sivr_dicom_suboperations_total{operation="get",result="failed"} 7.0' in text
    assert 'sivr_dicom_suboperations_total{operation="get",result="warning"} 5.0' in text
    assert 'sivr_dicom_suboperations_total{operation="move",result="failed"} 5.0' in text


# --- misbehaving peers -------------------------------------------------------------------------------


def http_ok(harness) -> bool:
    return harness.client.get("/healthz").status_code == 200


@contextmanager
def association(port: int, caller: str = "BADPEER"):
    ae = AE(ae_title=caller)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.abort()


def pdata_fragments(ds: pydicom.Dataset, context_id: int, max_pdu: int = 4096) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE request of `ds`, encoded as a peer would send them."""
    from io import BytesIO

    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode
    from pynetdicom.pdu import P_DATA_TF

    primitive = C_STORE()
    primitive.MessageID, primitive.Priority = 1, 2
    primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    primitive.DataSet = BytesIO(encode(ds, True, True))
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    fragments = []
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        fragments.append(pdu.encode())
    return fragments


def test_aborted_and_truncated_stores_leave_nothing_listener_and_http_keep_serving(retrieval):
    cat = retrieval.app.extensions["sivr_node"].models.catalogue
    big = dataset(rows=128, cols=128, series="1.2.826.0.1.77.1")
    # 1. a peer that sends most of a C-STORE data set (P-DATA fragments), then A-ABORT
    with association(retrieval.dicom_port) as assoc:
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
        fragments = pdata_fragments(big, context.context_id)
        assert len(fragments) > 4
        for fragment in fragments[:-2]:
            assoc.dul.socket.send(fragment)
    # 2. a peer that sends half a PDU, then closes its socket
    with association(retrieval.dicom_port) as assoc:
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
        fragments = pdata_fragments(big, context.context_id)
        assoc.dul.socket.send(fragments[0])
        assoc.dul.socket.send(fragments[1][: len(fragments[1]) // 2])
        assoc.dul.socket.socket.close()
    time.sleep(0.5)
    assert cat.Instance.select().count() == 0 and cat.Series.select().count() == 0
    assert not list((retrieval.root / "store").glob("*/*.bin"))
    assert echo(retrieval.dicom_port) and http_ok(retrieval)
    assert 'sivr_dicom_associations_total{result="aborted"}' in metrics_text(retrieval)


def test_stalled_peers_are_dropped_and_floods_refused(retrieval):
    port = retrieval.dicom_port
    # a peer that associates, then says nothing: aborted after dicom.network_timeout_s (3 s)
    with association(port) as silent:
        assert silent.is_established and http_ok(retrieval)
        deadline = time.monotonic() + 10
        while silent.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert silent.is_aborted
    # a peer that stops in the middle of a PDU: dropped too
    with association(port) as stalled:
        header = struct.pack(">BBL", 0x04, 0, 1000)  # P-DATA-TF announcing 1000 bytes
        stalled.dul.socket.send(header + b"\x00" * 10)
        deadline = time.monotonic() + 10
        while stalled.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not stalled.is_established
    # a raw TCP connection that never sends an A-ASSOCIATE-RQ: closed after dicom.request_timeout_s
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.settimeout(10)
        started = time.monotonic()
        try:
            closed = raw.recv(1024) == b""
        except ConnectionResetError:
            closed = True
        assert closed and time.monotonic() - started < 9
    # a flood beyond dicom.max_associations (4): the fifth is refused, the node keeps serving
    held = [AE(ae_title="BADPEER") for _ in range(4)]
    for ae in held:
        ae.add_requested_context(Verification)
        ae.network_timeout = None
    open_ones = [ae.associate("127.0.0.1", port, ae_title=SCP) for ae in held]
    try:
        assert all(a.is_established for a in open_ones)
        assert not echo(port)
    finally:
        for a in open_ones:
            a.release()
    time.sleep(0.3)
    assert echo(port) and http_ok(retrieval)
    text = metrics_text(retrieval)
    assert re.search(r'sivr_dicom_associations_total\{result="rejected"\} [1-9]', text)
    assert re.search(r'sivr_dicom_associations_total\{result="aborted"\} [1-9]', text)


def test_destinations_are_checked_at_start(make_node):
    from daemons.render.dimse.retrieve import Destination, parse_destinations
    from daemons.render.settings import KEYS
    from shared.config import ConfigError, build_config

    config = build_config("render", KEYS, {"dicom": {"destinations": ["PACS=[::1]:104", " WS7 = ws7.example:11112",
                                                                     "SAFE=tls://[::1]:2762"]}})
    assert parse_destinations(config) == {"PACS": Destination("::1", 104), "WS7": Destination("ws7.example", 11112),
                                          "SAFE": Destination("::1", 2762, tls=True)}
    for bad in ("PACS", "=host:104", "PACS=host:0", "PACS=:104", "A_TITLE_LONGER_THAN_16=h:1", "PACS=tls://:104",
                "PACS=tls://host"):
        with pytest.raises(ConfigError, match="destinations"):
            parse_destinations(build_config("render", KEYS, {"dicom": {"destinations": [bad]}}))

    with pytest.raises(ConfigError, match="destinations"):
        make_node(dicom__port=free_port(), dicom__allowed_callers=[CALLER], dicom__destinations=["NOPORT=host"])
    with pytest.raises(ConfigError, match="network_timeout_s"):
        make_node(dicom__port=free_port(), dicom__allowed_callers=[CALLER], dicom__network_timeout_s=0.0)


def test_a_served_node_keeps_answering_https_while_peers_flood_and_stall(tmp_path):
    """The real daemon (gunicorn, TLS): associations up to dicom.max_associations (10, from two addresses
    and two calling AE titles: one of each may hold dicom.max_associations_per_address, 5), each stalled
    in the middle of a PDU, then one more (refused); HTTPS keeps answering throughout, and the DICOM side
    serves again once the peers go."""
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True, hold_ports=True)
    endpoint = dicom_endpoint(layout.first("render"))
    port, title = int(endpoint["port"]), endpoint["ae_title"]
    with LocalDeployment(layout, layers=("render",)) as deployment:
        url = deployment.url("render")

        def https(path: str) -> requests.Response:
            return requests.get(f"{url}{path}", verify=deployment.ca_cert, timeout=10)

        assert https("/healthz").ok and echo(port, called=title)
        peers = []
        for index in range(10):
            ae = AE(ae_title=(CALLER, "STORESCU")[index % 2])  # two of the deployment's listed callers
            ae.add_requested_context(Verification)
            ae.network_timeout = None
            assoc = ae.associate("127.0.0.1", port, ae_title=title, bind_address=(f"127.0.0.{2 + index % 2}", 0))
            assert assoc.is_established
            assoc.dul.socket.send(struct.pack(">BBL", 0x04, 0, 1000) + b"\x00" * 10)  # half a P-DATA-TF
            peers.append(assoc)
        try:
            assert not echo(port, called=title)
            assert https("/healthz").ok
        finally:
            for assoc in peers:
                assoc.abort()
        deadline = time.monotonic() + 10
        while not echo(port, called=title) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert echo(port, called=title) and https("/healthz").ok
        assert re.search(r'sivr_dicom_associations_total\{result="rejected"\} [1-9]', https("/metrics").text)
