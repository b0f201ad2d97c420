"""Stored-only instances (issue 11 "accepting others as stored-only", issue 12 STOW): an instance in a
transfer syntax the node cannot decode is kept bit-exact, catalogued and retrieved, never rendered.

Real peers on loopback (dcmtk `storescu`, pynetdicom) against an in-process node with its listener,
and its HTTP API (upload, STOW-RS, QIDO-RS, WADO-RS, rendered) through the app.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    HEVCMP51,
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    EncapsulatedPDFStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    VideoEndoscopicImageStorage,
)

from daemons.deployment import free_ports
from daemons.render.dimse.listener import accepted_syntaxes, decodable_syntaxes
from daemons.render.imaging.decode import syntax_decodable
from daemons.render.ingest.series_analysis import analyse_files, journal_entry
from daemons.render.ingest.upload_checks import Limits, check_upload
from daemons.render.store.manifest import Manifest
from tests.render.dimse_peers import CALLER, SCP, c_get, close_archive, open_archive
from tests.render.synthetic import dataset, new_instance, to_bytes

PRIVATE_SYNTAX = "1.2.826.0.1.3680043.9.7433.99.1"  # a vendor's private syntax: nobody can decode it
WADO = "/dicomweb/studies"


@pytest.fixture
def archive(make_node):
    harness = open_archive(make_node)
    yield harness
    close_archive(harness)


def video(syntax: str, series: str | None = None, study: str | None = None) -> Dataset:
    """A video endoscopy instance in `syntax`, its pixel data an encapsulated stream of junk bytes."""
    ds = new_instance(VideoEndoscopicImageStorage)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PatientID, ds.PatientName, ds.Modality = "SO-1", "Stored^Only", "ES"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), series or generate_uid()
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.FrameTime = 480, 640, 25, 40
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_PARTIAL_420", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(range(256)) * 8])
    ds["PixelData"].VR = "OB"
    return ds


def ct_slices(series: str, count: int = 4) -> list[Dataset]:
    slices = []
    for k in range(count):
        ds = dataset(16, 16, series=series, position=float(k))
        ds.StudyInstanceUID, ds.PatientID, ds.InstanceNumber = "1.2.3.77", "SO-2", k + 1
        slices.append(ds)
    return slices


def private_slice(series: str, position: float) -> Dataset:
    """A CT slice of the series in a private syntax, its pixel data encapsulated junk."""
    ds = ct_slices(series, 1)[0]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImagePositionPatient, ds.InstanceNumber = [0, 0, position], 99
    ds.file_meta.TransferSyntaxUID = PRIVATE_SYNTAX
    ds.PixelData = encapsulate([b"\xde\xad\xbe\xef" * 40])
    ds["PixelData"].VR = "OB"
    return ds


def private_bytes(ds: Dataset) -> bytes:
    """A file in the private syntax (encoded as explicit VR little endian, as its vendor would)."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()


def write(ds: Dataset, folder: Path) -> Path:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    return path


def body(raw: bytes) -> bytes:
    """A Part 10 file's data set, without its preamble and file meta (whose group length says where it ends)."""
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00"
    return raw[144 + int.from_bytes(raw[140:144], "little"):]


def stow(harness, files: list[bytes], study: str | None = None):
    boundary = "sivr-stored-only"
    parts = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + raw + b"\r\n"
                     for raw in files)
    return harness.client.post(f"{WADO}{'/' + study if study else ''}", data=parts + f"--{boundary}--\r\n".encode(),
                               headers={**harness.headers(), "Accept": "application/dicom+json",
                                        "Content-Type": f'multipart/related; type="application/dicom"; '
                                                        f'boundary={boundary}'})


def wado_instance(harness, ds: Dataset, accept: str):
    path = f"{WADO}/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    return harness.client.get(path, headers={**harness.headers(), "Accept": accept})


def only_part(reply) -> bytes:
    """The one part of a multipart/related answer."""
    boundary = reply.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    part = reply.data.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1][:-2]


def record_of(harness, series_uid: str) -> str:
    cat = harness.app.extensions["sivr_node"].models.catalogue
    return cat.Series.get(cat.Series.series_uid == series_uid).id


def assert_stored_only(reply, syntax: str) -> None:
    assert reply.status_code == 415, reply.data[:300]
    error = reply.json["error"]
    assert error["code"] == "stored_only" and syntax in error["message"], error


def find_instances(port: int, **keys) -> list[Dataset]:
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    answers = [identifier for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
               if status and status.Status == 0xFF00]
    assoc.release()
    return answers


def get_series(port: int, study: str, series: str, syntaxes: list[str],
               sop_classes=(VideoEndoscopicImageStorage,)) -> tuple[int, dict[str, bytes]]:
    """C-GET of a series receiving `sop_classes` instances in `syntaxes` (a context for each pair, so
    the node may send each instance in its own): final status, data sets by UID."""
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID, query.SeriesInstanceUID = "SERIES", study, series
    contexts = [(sop_class, [syntax]) for sop_class in sop_classes for syntax in syntaxes]
    last, arrived = c_get(port, query, contexts)
    return last.Status, arrived


def test_listener_accepts_every_known_syntax_decodable_first():
    syntaxes, decodable = accepted_syntaxes(), decodable_syntaxes()
    assert syntaxes[:len(decodable)] == decodable
    assert {str(MPEG2MPML), str(HEVCMP51), "1.2.840.10008.1.2.4.102"} <= set(syntaxes[len(decodable):])
    assert len(syntaxes) == len(set(syntaxes))
    stored_only = [syntax for syntax in syntaxes if not syntax_decodable(syntax)]
    assert syntaxes[-len(stored_only):] == stored_only  # every syntax the node can render comes first


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk (storescu) absent")
def test_video_by_storescu_is_stored_bit_exact_found_retrieved_never_rendered(archive, tmp_path):
    mpeg2 = video(MPEG2MPML)
    path = write(mpeg2, tmp_path)
    sent = subprocess.run(["storescu", "-v", "-xm", "-R", "-aet", CALLER, "-aec", SCP, "127.0.0.1",
                           str(archive.dicom_port), str(path)], capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "Received Store Response (Success)" in sent.stdout + sent.stderr

    # catalogued: C-FIND and QIDO-RS find it, with its attributes
    found = find_instances(archive.dicom_port, StudyInstanceUID=mpeg2.StudyInstanceUID)
    assert [str(a.SOPInstanceUID) for a in found] == [mpeg2.SOPInstanceUID]
    qido = archive.client.get(f"{WADO}/{mpeg2.StudyInstanceUID}/instances", headers=archive.headers())
    assert qido.status_code == 200 and [i["00080018"]["Value"][0] for i in qido.json] == [mpeg2.SOPInstanceUID]
    series_qido = archive.client.get(f"{WADO}/{mpeg2.StudyInstanceUID}/series", headers=archive.headers())
    assert series_qido.json[0]["00201209"]["Value"] == [1]  # Number of Series Related Instances

    # retrieved unchanged: C-GET accepting MPEG2 gets the very data set storescu sent
    status, arrived = get_series(archive.dicom_port, mpeg2.StudyInstanceUID, mpeg2.SeriesInstanceUID,
                                 [str(MPEG2MPML)])
    assert status == 0x0000 and arrived == {mpeg2.SOPInstanceUID: body(path.read_bytes())}
    # a peer that takes uncompressed syntaxes only cannot have it: the sub-operation fails cleanly
    status, arrived = get_series(archive.dicom_port, mpeg2.StudyInstanceUID, mpeg2.SeriesInstanceUID,
                                 [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)])
    assert status == 0xA702 and arrived == {}

    # WADO-RS: as stored (transfer-syntax=* or its own), not transcoded (406); its metadata
    for accept in ('multipart/related; type="application/dicom"; transfer-syntax=*',
                   f'multipart/related; type="application/dicom"; transfer-syntax={MPEG2MPML}'):
        reply = wado_instance(archive, mpeg2, accept)
        assert reply.status_code == 200, reply.data[:300]
        assert body(only_part(reply)) == body(path.read_bytes())
    refused = wado_instance(archive, mpeg2, 'multipart/related; type="application/dicom"')
    assert refused.status_code == 406 and "stored only" in refused.json["error"]["message"]
    instance = f"{WADO}/{mpeg2.StudyInstanceUID}/series/{mpeg2.SeriesInstanceUID}/instances/{mpeg2.SOPInstanceUID}"
    metadata = archive.client.get(f"{instance}/metadata", headers=archive.headers())
    assert metadata.status_code == 200 and metadata.json[0]["00280008"]["Value"] == [25]

    # never rendered: a clear 415 naming the syntax, from every image service
    record_id = record_of(archive, mpeg2.SeriesInstanceUID)
    series_path = f"{WADO}/{mpeg2.StudyInstanceUID}/series/{mpeg2.SeriesInstanceUID}"
    for url in (f"{instance}/rendered", f"{instance}/frames/1", f"{instance}/frames/1/rendered",
                f"{instance}/thumbnail", f"{series_path}/rendered", f"{series_path}/thumbnail",
                f"{series_path}/rendered/mpr/axial/0", f"/api/v1/records/{record_id}/frames/0",
                f"/api/v1/records/{record_id}/mpr/axial/0", f"/api/v1/records/{record_id}/volume"):
        assert_stored_only(archive.client.get(url, headers=archive.headers()), str(MPEG2MPML))
    assert_stored_only(archive.client.post(f"/api/v1/records/{record_id}/load", headers=archive.headers()),
                       str(MPEG2MPML))
    meta = archive.client.get(f"/api/v1/records/{record_id}", headers=archive.headers()).json
    assert (meta["stored_only"], meta["frames"], meta["files"], meta["stacks"]) == (1, 0, 0, [])
    status = archive.client.get(f"/api/v1/records/{record_id}/status", headers=archive.headers()).json
    assert status["stored_only"] == 1 and status["frames_total"] == 0


def test_hevc_and_mpeg2_by_pynetdicom_grow_one_stored_only_series(archive):
    series, study = generate_uid(), generate_uid()
    instances = [video(HEVCMP51, series, study), video(MPEG2MPML, series, study)]
    instances[1].InstanceNumber = 2
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(VideoEndoscopicImageStorage, [str(HEVCMP51)])
    ae.add_requested_context(VideoEndoscopicImageStorage, [str(MPEG2MPML)])
    assoc = ae.associate("127.0.0.1", archive.dicom_port, ae_title=SCP)
    assert assoc.is_established
    assert [assoc.send_c_store(ds).Status for ds in instances] == [0x0000, 0x0000]
    assoc.release()
    node = archive.app.extensions["sivr_node"]
    record_id = record_of(archive, series)
    manifest = node.manifest(record_id, fresh=True)
    assert [e.transfer_syntax for e in manifest.stored_only] == [str(HEVCMP51), str(MPEG2MPML)]
    assert manifest.meta.stored_only == 2 and manifest.files == ()
    status, arrived = get_series(archive.dicom_port, study, series, [str(HEVCMP51), str(MPEG2MPML)])
    assert status == 0x0000 and set(arrived) == {ds.SOPInstanceUID for ds in instances}


def test_mixed_series_renders_its_renderable_slices_and_counts_the_others(node):
    series = generate_uid()
    slices = ct_slices(series)
    kept = private_slice(series, 1.5)
    reply = node.upload([(f"s{k}.dcm", to_bytes(ds)) for k, ds in enumerate(slices[:2])]
                        + [("private.dcm", private_bytes(kept))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert (reply.json["stored_only"], reply.json["frames"], reply.json["files"]) == (1, 2, 2)
    # the series grows by STOW-RS, through the same ingest service
    grown = stow(node, [to_bytes(ds) for ds in slices[2:]])
    assert grown.status_code == 200, grown.json
    meta = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json
    assert (meta["stored_only"], meta["frames"], meta["files"]) == (1, 4, 4)
    assert [s["sop_instance_uid"] for s in meta["slices"]] == [ds.SOPInstanceUID for ds in slices]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
    status = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json
    assert (status["state"], status["stored_only"], status["frames_total"], status["errors"]) == \
        ("ready", 1, 4, [])
    assert node.client.get(f"/api/v1/records/{record_id}/frames/3", headers=node.headers()).status_code == 200
    series_path = f"{WADO}/1.2.3.77/series/{series}"
    rendered = node.client.get(f"{series_path}/rendered",
                               headers={**node.headers(), "Accept": 'multipart/related; type="image/png"'})
    assert rendered.status_code == 200 and rendered.data.count(b"\x89PNG") == 4
    assert node.client.get(f"{series_path}/thumbnail", headers=node.headers()).status_code == 200
    instance = f"{series_path}/instances/{kept.SOPInstanceUID}"
    assert_stored_only(node.client.get(f"{instance}/rendered", headers=node.headers()), PRIVATE_SYNTAX)
    assert_stored_only(node.client.get(f"{instance}/frames/1", headers=node.headers()), PRIVATE_SYNTAX)
    # kept bit-exact, found by QIDO-RS among the series' five instances
    reply = wado_instance(node, kept, 'multipart/related; type="application/dicom"; transfer-syntax=*')
    assert reply.status_code == 200 and only_part(reply) == private_bytes(kept)
    found = node.client.get(f"{series_path}/instances", headers=node.headers()).json
    assert len(found) == 5 and kept.SOPInstanceUID in {i["00080018"]["Value"][0] for i in found}


def test_original_gives_the_stored_only_files_after_the_images(node):
    """`/original?index=N` counts every instance of the series, its images' files first: a series of
    stored-only instances alone (a report, a private syntax) was a 500 there (file 0 of none), and
    `?index=0` a 400 "between 0 and -1"."""
    kept = private_slice(generate_uid(), 0.0)
    assert stow(node, [private_bytes(kept)]).status_code == 200
    record_id = record_of(node, kept.SeriesInstanceUID)
    for query in ("", "?index=0"):
        reply = node.client.get(f"/api/v1/records/{record_id}/original{query}", headers=node.headers())
        assert reply.status_code == 200 and reply.data == private_bytes(kept), reply.data[:300]
    beyond = node.client.get(f"/api/v1/records/{record_id}/original?index=1", headers=node.headers())
    assert beyond.status_code == 400 and "between 0 and 0" in beyond.json["error"]["message"]
    series = generate_uid()
    slices, mixed = ct_slices(series, 2), private_slice(series, 1.5)
    reply = node.upload([("a.dcm", to_bytes(slices[0])), ("b.dcm", to_bytes(slices[1])),
                         ("private.dcm", private_bytes(mixed))])
    assert reply.status_code == 201 and reply.json["files"] == 2, reply.json
    third = node.client.get(f"/api/v1/records/{reply.json['id']}/original?index=2", headers=node.headers())
    assert third.status_code == 200 and third.data == private_bytes(mixed)


def test_stow_of_private_syntax_alone_and_corrupt_decodable_refused(node):
    kept = private_slice(generate_uid(), 0.0)
    reply = stow(node, [private_bytes(kept)])
    assert reply.status_code == 200, reply.json
    record_id = reply.json["00081199"]["Value"] and record_of(node, kept.SeriesInstanceUID)
    assert node.app.extensions["sivr_node"].manifest(record_id).meta.stored_only == 1
    # a decodable syntax whose pixel data is corrupt is bad input, not a stored-only instance
    corrupt = dataset(16, 16, series=generate_uid())
    corrupt.file_meta.TransferSyntaxUID = RLELossless
    corrupt.PixelData = encapsulate([b"\x07\x00\x00\x00" + b"\xff" * 200])
    refused = stow(node, [to_bytes(corrupt)])
    assert refused.status_code == 409 and refused.json["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    upload = node.upload([("rle.dcm", to_bytes(corrupt))])
    assert upload.status_code == 422 and upload.json["error"]["code"] == "undecodable_pixels"


def test_manifest_without_stored_only_reads_as_before():
    """A manifest stored before stored-only instances existed has none (and writes none back)."""
    series = generate_uid()
    limits = Limits(1 << 30, 100, 4096, 4096, 1000, 1 << 30)
    files = check_upload([(f"s{k}.dcm", to_bytes(ds)) for k, ds in enumerate(ct_slices(series, 2))], limits)
    manifest = analyse_files(files, limits).manifest
    old = manifest.to_json()
    del old["meta"]["stored_only"]
    assert "stored_only" not in old
    read = Manifest.from_json(old)
    assert read.stored_only == () and read.meta.stored_only == 0 and read == manifest
    kept = check_upload([("p.dcm", private_bytes(private_slice(series, 3.0)))], limits)
    mixed = analyse_files([*files, *kept], limits).manifest
    assert Manifest.from_json(mixed.to_json()) == mixed and mixed.stored_only[0].transfer_syntax == PRIVATE_SYNTAX
    # an old series grown by a stored-only instance (a journal entry): its frames stay as they were
    grown = read.with_journal([journal_entry(kept[0], 2)])
    assert (grown.files, grown.meta.frames, grown.meta.files) == (read.files, 2, 2)
    assert [e.blob for e in grown.stored_only] == [2] and grown.meta.stored_only == 1
    assert grown.meta.size_bytes == read.meta.size_bytes + len(kept[0].raw)


def test_report_and_pdf_by_c_store_are_stored_only_and_an_image_without_pixels_still_refused(archive):
    series, study = generate_uid(), generate_uid()
    report = new_instance(BasicTextSRStorage)
    report.Modality, report.ValueType, report.InstanceNumber = "SR", "CONTAINER", 1
    report.ConceptNameCodeSequence = [Dataset()]
    report.ConceptNameCodeSequence[0].CodeValue = "18748-4"
    pdf = new_instance(EncapsulatedPDFStorage)
    pdf.Modality, pdf.MIMETypeOfEncapsulatedDocument, pdf.InstanceNumber = "DOC", "application/pdf", 2
    pdf.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    broken = dataset(series=series)  # a CT image without its pixels: a broken image, not a report
    del broken.PixelData
    for ds in (report, pdf, broken):
        ds.PatientID, ds.PatientName, ds.StudyInstanceUID, ds.SeriesInstanceUID = "SO-3", "Doc^Only", study, series
    ae = AE(ae_title=CALLER)
    for sop_class in (BasicTextSRStorage, EncapsulatedPDFStorage, broken.SOPClassUID):
        ae.add_requested_context(sop_class, str(ExplicitVRLittleEndian))
    assoc = ae.associate("127.0.0.1", archive.dicom_port, ae_title=SCP)
    assert assoc.is_established
    assert [assoc.send_c_store(ds).Status for ds in (report, pdf, broken)] == [0x0000, 0x0000, 0xA900]
    assoc.release()

    found = find_instances(archive.dicom_port, StudyInstanceUID=study)
    assert {str(a.SOPInstanceUID) for a in found} == {report.SOPInstanceUID, pdf.SOPInstanceUID}
    status, arrived = get_series(archive.dicom_port, study, series, [str(ExplicitVRLittleEndian)],
                                 (BasicTextSRStorage, EncapsulatedPDFStorage))
    assert status == 0x0000 and arrived == {ds.SOPInstanceUID: body(to_bytes(ds)) for ds in (report, pdf)}
    record_id = record_of(archive, series)
    meta = archive.client.get(f"/api/v1/records/{record_id}", headers=archive.headers()).json
    assert (meta["stored_only"], meta["frames"], meta["modality"]) == (2, 0, "SR")
    instance = f"{WADO}/{study}/series/{series}/instances/{pdf.SOPInstanceUID}"
    refused = archive.client.get(f"{instance}/rendered", headers=archive.headers())
    assert refused.status_code == 415 and "holds no image" in refused.json["error"]["message"]
    reply = wado_instance(archive, pdf, 'multipart/related; type="application/dicom"')
    assert reply.status_code == 200 and body(only_part(reply)) == body(to_bytes(pdf))


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk (storescp) absent")
def test_c_move_sends_it_in_its_own_syntax_or_fails_cleanly(make_node, tmp_path):
    ports = dict(zip(("VIDEO", "PLAIN"), free_ports(2), strict=True))
    harness = open_archive(make_node, dicom__destinations=[f"{title}=127.0.0.1:{p}" for title, p in ports.items()])
    scps = []
    try:
        for title, dest_port in ports.items():
            (tmp_path / title).mkdir()
            accept = ["+xm"] if title == "VIDEO" else []  # PLAIN: the uncompressed syntaxes only
            scps.append(subprocess.Popen(["storescp", "-aet", title, *accept, "-od", str(tmp_path / title),
                                          str(dest_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for dest_port in ports.values():
            wait_port(dest_port)
        mpeg2 = video(MPEG2MPML)
        raw = to_bytes(mpeg2)
        assert harness.upload([("video.dcm", raw)]).status_code == 201
        ae = AE(ae_title=CALLER)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        query = Dataset()
        query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", mpeg2.StudyInstanceUID
        final = {}
        for title in ports:
            assoc = ae.associate("127.0.0.1", harness.dicom_port, ae_title=SCP)
            assert assoc.is_established
            final[title] = [status.Status for status, _ in
                            assoc.send_c_move(query, title, StudyRootQueryRetrieveInformationModelMove)][-1]
            assoc.release()
        assert final == {"VIDEO": 0x0000, "PLAIN": 0xA702}
        [received] = list((tmp_path / "VIDEO").iterdir())
        assert body(received.read_bytes()) == body(raw)
        assert list((tmp_path / "PLAIN").iterdir()) == []
    finally:
        for scp in scps:
            scp.terminate()
            scp.wait(10)
        close_archive(harness)
