"""STOW-RS and WADO-RS (issue 12): bad input refused whole in-process, then dicomweb-client against the
real daemons (gunicorn + TLS): store, retrieve bit-exact and transcoded, metadata, frames, bulk data."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pydicom
import pytest
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid
from requests import HTTPError

from daemons.render.ingest.service import series_record_id
from tests.conftest import DEMO_CT
from tests.dicomweb.conftest import synthetic_series, uids

EXPLICIT_LE = str(ExplicitVRLittleEndian)
BOUNDARY = "test-boundary-7d1f"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
ANY_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def body_of(files: list[bytes], part_type: str = "application/dicom") -> bytes:
    out = b""
    for raw in files:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + raw + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def stow(harness, body: bytes, path: str = "/dicomweb/studies", content_type: str = STOW_TYPE, headers=None):
    return harness.client.post(path, data=body, headers={**(headers or harness.headers()), "Content-Type":
                                                          content_type, "Accept": "application/dicom+json"})


def parts_of(response) -> list[tuple[str, bytes]]:
    """(Content-Type, content) of each part of a multipart/related answer (Flask test response)."""
    return raw_parts(response.headers["Content-Type"], response.get_data())


def raw_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    chunks = body.split(f"--{boundary}".encode())
    parts = []
    for chunk in chunks[1:-1]:
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        kind = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-type")][0]
        parts.append((kind, content[:-2]))
    return parts


def instance_count(harness) -> int:
    with harness.app.app_context():
        return harness.app.extensions["sivr_node"].models.catalogue.Instance.select().count()


# --- in-process: the rules -----------------------------------------------------------------------
def test_stow_stores_and_wado_returns_the_same_bytes(node):
    files = synthetic_series(3, rows=32, cols=32)
    study, series, _ = uids(files[0])
    reply = stow(node, body_of(files))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    answer = reply.get_json()
    stored = answer["00081199"]["Value"]
    assert {item["00081155"]["Value"][0] for item in stored} == {uids(f)[2] for f in files}
    assert answer["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{study}")
    assert stored[0]["00081190"]["Value"][0].startswith(f"{answer['00081190']['Value'][0]}/series/{series}/")
    retrieved = node.client.get(f"/dicomweb/studies/{study}/series/{series}", headers={**node.headers(), **ANY_DICOM})
    assert retrieved.status_code == 200
    assert retrieved.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert sorted(content for _, content in parts_of(retrieved)) == sorted(files)
    unquoted = f"multipart/related; type=application/dicom; boundary={BOUNDARY}"
    again = stow(node, body_of(files[:1]), path=f"/dicomweb/studies/{study}", content_type=unquoted)  # a no-op
    assert again.status_code == 200 and instance_count(node) == 3


def test_whole_files_leave_by_any_door_for_physicians_only_and_admins_see_the_rest(node):
    """One rule (shared.roles.ORIGINAL_FILE_READERS) for `/original` and WADO-RS retrieve: an
    administrator of any institution got the bit-exact files through WADO-RS while `/original`
    refused them; frames, bulk data and metadata stay open to every role, as rendered images are."""
    files = synthetic_series(2, rows=32, cols=32)
    study, series, sop = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    instance = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    (record,) = node.client.get("/api/v1/records", headers=node.headers("instadmin")).get_json()["items"]
    record_id = record["id"]
    for role, institution in (("instadmin", None), ("sysadmin", None), ("instadmin", str(uuid.uuid4()))):
        headers = node.headers(role, institution)
        for path in (f"/dicomweb/studies/{study}", f"/dicomweb/studies/{study}/series/{series}", instance,
                     f"/api/v1/records/{record_id}/original"):
            reply = node.client.get(path, headers={**headers, **ANY_DICOM})
            assert reply.status_code == 403 and reply.get_json()["error"]["code"] == "forbidden", (role, path)
        for path in (f"{instance}/metadata", f"{instance}/frames/1", f"{instance}/bulk/7FE00010"):
            assert node.client.get(path, headers=headers).status_code == 200, (role, path)
    for path in (f"/dicomweb/studies/{study}", instance, f"/api/v1/records/{record_id}/original"):
        assert node.client.get(path, headers={**node.headers(), **ANY_DICOM}).status_code == 200, path


def test_metadata_has_bulk_data_uris_and_frames_decode(node):
    files = synthetic_series(2, syntax=RLELossless, rows=32, cols=32)
    study, series, sop = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    meta = node.client.get(f"/dicomweb/studies/{study}/series/{series}/metadata", headers=node.headers())
    assert meta.status_code == 200 and meta.headers["Content-Type"] == "application/dicom+json"
    items = meta.get_json()
    assert len(items) == 2 and items[0]["00080018"]["Value"][0] in {uids(f)[2] for f in files}
    assert items[0]["00083002"]["Value"] == [str(RLELossless)]
    bulk = items[0]["7FE00010"]["BulkDataURI"]
    assert "/bulk/7FE00010" in bulk
    frame_url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    native = node.client.get(frame_url, headers={**node.headers(), "Accept":
                                                 'multipart/related; type="application/octet-stream"'})
    original = pydicom.dcmread(io.BytesIO(files[0]))
    [(kind, content)] = parts_of(native)
    assert kind == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    assert content == original.pixel_array.astype("<i2").tobytes()
    stored = node.client.get(frame_url, headers={**node.headers(), "Accept":
                                                 'multipart/related; type="application/octet-stream"; '
                                                 'transfer-syntax=*'})
    [(kind, content)] = parts_of(stored)
    assert kind == f"image/dicom-rle; transfer-syntax={RLELossless}"
    assert content == get_frame(original.PixelData, 0, number_of_frames=1)
    transcoded = node.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                                 headers={**node.headers(), "Accept": 'multipart/related; type="application/dicom"'})
    [(kind, content)] = parts_of(transcoded)
    assert kind == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    decoded = pydicom.dcmread(io.BytesIO(content))
    assert decoded.file_meta.TransferSyntaxUID == EXPLICIT_LE and decoded.SOPInstanceUID == sop
    assert np.array_equal(decoded.pixel_array, original.pixel_array)
    series_url = f"/dicomweb/studies/{study}/series/{series}"
    dicom_in = 'multipart/related; type="application/dicom"; transfer-syntax='
    in_rle = node.client.get(series_url, headers={**node.headers(), "Accept": f"{dicom_in}{RLELossless}"})
    assert sorted(content for _, content in parts_of(in_rle)) == sorted(files)
    in_jls = node.client.get(series_url, headers={**node.headers(), "Accept": f"{dicom_in}{JPEGLSLossless}"})
    assert in_jls.status_code == 406
    jls = node.client.get(frame_url, headers={**node.headers(), "Accept":
                                              'multipart/related; type="image/jls"; transfer-syntax='
                                              f'{JPEGLSLossless}'})
    assert jls.status_code == 406 and jls.get_json()["error"]["code"] == "not_acceptable"


@pytest.mark.parametrize("content_type, status", [
    ("application/dicom", 415),
    ("multipart/form-data; boundary=x", 415),
    (f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}', 415),
    ('multipart/related; type="application/dicom"', 400),
    ("multipart/related; type=application/dicom+json; boundary=x", 415),
])
def test_wrong_media_types_store_nothing(node, content_type, status):
    reply = stow(node, body_of(synthetic_series(1)), content_type=content_type)
    assert reply.status_code == status and "error" in reply.get_json()
    assert instance_count(node) == 0


@pytest.mark.parametrize("mangle", [
    lambda body: body[:-200],  # truncated: no close delimiter
    lambda body: body.replace(b"\r\n\r\n", b"\r\n", 1),  # a part without the end of its headers
    lambda body: f"--{BOUNDARY}--\r\n".encode(),  # no parts
    lambda body: b"",
    lambda body: body.replace(BOUNDARY.encode(), b"other-boundary"),
])
def test_malformed_multipart_is_400_and_stores_nothing(node, mangle):
    reply = stow(node, mangle(body_of(synthetic_series(2))))
    assert reply.status_code == 400, reply.get_data(as_text=True)
    assert reply.get_json()["error"]["code"] == "malformed_multipart"
    assert instance_count(node) == 0


def test_non_dicom_and_foreign_study_parts_fail_each_and_store_nothing(node):
    files = synthetic_series(2)
    study = uids(files[0])[0]
    other_study = synthetic_series(1)
    body = body_of([b"this is not DICOM at all" * 10]) [:-len(f"--{BOUNDARY}--\r\n")] + body_of(other_study)
    reply = stow(node, body, path=f"/dicomweb/studies/{study}")
    assert reply.status_code == 409
    failed = reply.get_json()["00081198"]["Value"]
    assert sorted(item["00081197"]["Value"][0] for item in failed) == [0xA900, 0xC000]
    assert "not a DICOM file" in reply.headers["Warning"]
    assert instance_count(node) == 0
    wrong_part = body_of(files, part_type="application/json")
    assert stow(node, wrong_part).status_code == 409 and instance_count(node) == 0


def test_a_stow_request_parses_each_uncompressed_instance_once(node, monkeypatch):
    """The part read for its UIDs is the parse the ingest checks and stores: no second parse, nor a
    second walk of the file for duplicated elements."""
    from daemons.render.ingest import upload_checks

    files = synthetic_series(5)
    parses, walks = [], []
    parse, walk, read = upload_checks._parse_file, upload_checks.data_element_generator, pydicom.dcmread
    monkeypatch.setattr(upload_checks, "_parse_file", lambda name, raw, limits: parses.append(raw) or
                        parse(name, raw, limits))
    monkeypatch.setattr(upload_checks, "data_element_generator", lambda *a, **k: walks.append(1) or walk(*a, **k))
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: parses.append(a[0]) or read(*a, **k))
    reply = stow(node, body_of(files))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert len(parses) == 5 and sorted(parses) == sorted(files) and walks == []
    assert instance_count(node) == 5
    record = reply.get_json()["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in record] == [uids(raw)[2] for raw in files]
    store = node.app.extensions["sivr_node"].store
    manifest = store.read_manifest(series_record_id(node.institution_id, uids(files[0])[1]))
    assert sorted(entry.name for entry in manifest.files) == sorted(uids(raw)[2] for raw in files)  # named by UID


def test_a_refused_instance_is_reported_and_the_others_stored(node):
    files = synthetic_series(4)
    study, series, _ = uids(files[0])
    assert stow(node, body_of(files[:1])).status_code == 200
    clash = pydicom.dcmread(io.BytesIO(files[0]))
    clash.PatientName = "Changed^Content"  # same SOP Instance UID, different bytes: never replaced
    out = io.BytesIO()
    clash.save_as(out, enforce_file_format=True)
    reply = stow(node, body_of([files[1], out.getvalue(), files[2], files[3]]), path=f"/dicomweb/studies/{study}")
    assert reply.status_code == 202, reply.get_data(as_text=True)
    answer = reply.get_json()
    assert len(answer["00081199"]["Value"]) == 3
    [failed] = answer["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [uids(files[0])[2]] and failed["00081197"]["Value"] == [0xA900]
    assert instance_count(node) == 4
    with node.app.app_context():  # the refusal names its instance: tried and audited once, not at each halving
        audit = node.app.extensions["sivr_node"].models.AuditEntry
        assert audit.select().where(audit.action == "instance.conflict").count() == 1


def test_an_instance_whose_uid_is_stored_in_another_series_is_refused(node):
    """The same SOP Instance UID in another series of the same study: refused (0xA900) and audited,
    the other instances of the request stored."""
    files = synthetic_series(2)
    study, _, _ = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    others = synthetic_series(2, study=study)
    reused = pydicom.dcmread(io.BytesIO(others[0]))
    reused.SOPInstanceUID = reused.file_meta.MediaStorageSOPInstanceUID = uids(files[1])[2]
    out = io.BytesIO()
    reused.save_as(out, enforce_file_format=True)
    reply = stow(node, body_of([out.getvalue(), others[1]]), path=f"/dicomweb/studies/{study}")
    assert reply.status_code == 202, reply.get_data(as_text=True)
    [failed] = reply.get_json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [uids(files[1])[2]] and failed["00081197"]["Value"] == [0xA900]
    assert instance_count(node) == 3
    with node.app.app_context():
        audit = node.app.extensions["sivr_node"].models.AuditEntry
        assert audit.select().where(audit.action == "instance.conflict").count() == 1


def test_upload_and_stow_of_one_series_land_in_one_record(node):
    files = synthetic_series(4)
    study, series, _ = uids(files[0])
    uploaded = node.upload([(f"f{i}.dcm", raw) for i, raw in enumerate(files[:2])])
    assert uploaded.status_code == 201, uploaded.get_data(as_text=True)
    assert stow(node, body_of(files[2:])).status_code == 200
    with node.app.app_context():
        cat = node.app.extensions["sivr_node"].models.catalogue
        [row] = list(cat.Series.select().where(cat.Series.series_uid == series))
        assert row.id == uploaded.get_json()["id"] and row.instance_count == 4
        audit = node.app.extensions["sivr_node"].models.AuditEntry
        appended = list(audit.select().where(audit.action == "record.append", audit.object_id == row.id))
        assert len(appended) == 1 and appended[0].detail == "added=2 unchanged=0"  # STOW audited as uploads are


def test_oversized_body_is_413_and_stores_nothing(make_node):
    harness = make_node(limits__max_upload_mb=1, limits__max_files=3)
    try:
        big = synthetic_series(3, rows=512, cols=512)  # 3 x 512 KiB of pixels: over 1 MiB
        reply = stow(harness, body_of(big))
        assert reply.status_code == 413 and reply.get_json()["error"]["code"] == "over_limits"
        many = stow(harness, body_of(synthetic_series(4)))
        assert many.status_code == 413 and "more than 3 instances" in many.get_json()["error"]["message"]
        assert instance_count(harness) == 0
    finally:
        harness.registry.shutdown()
        harness.app.extensions["sivr_view_audit"].close()
        harness.app.extensions["sivr_node"].decoder.close()


def test_storing_is_for_physicians_of_this_institution_only(node):
    """The browser upload's rule (`shared.roles.INSTANCE_STORERS`): STOW-RS stored the instances of
    an administrator, also of a system administrator of another institution, which the upload refused."""
    reply = stow(node, body_of(synthetic_series(1)), headers=node.headers("physician", str(uuid.uuid4())))
    assert reply.status_code == 403 and instance_count(node) == 0
    for role, institution in (("sysadmin", str(uuid.uuid4())), ("sysadmin", None), ("instadmin", None)):
        headers = node.headers(role, institution)
        for door in (stow(node, body_of(synthetic_series(1)), headers=headers),
                     node.upload([("a.dcm", synthetic_series(1)[0])], headers=headers)):
            assert door.status_code == 403 and door.get_json()["error"]["code"] == "forbidden", role
    assert instance_count(node) == 0
    assert stow(node, body_of(synthetic_series(1))).status_code == 200


def test_unknown_uids_and_bad_frames_are_4xx(node):
    files = synthetic_series(1)
    study, series, sop = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    headers = node.headers()
    unknown = generate_uid()
    for path in (f"/studies/{unknown}", f"/studies/{unknown}/metadata", f"/studies/{study}/series/{unknown}",
                 f"/studies/{study}/series/{series}/instances/{unknown}",
                 f"/studies/{study}/series/{series}/instances/{unknown}/frames/1",
                 f"/studies/{study}/series/{series}/instances/{sop}/frames/2",
                 f"/studies/{study}/series/{series}/instances/{sop}/bulk/00100010"):
        reply = node.client.get(f"/dicomweb{path}", headers=headers)
        assert reply.status_code == 404, path
        assert reply.get_json()["error"]["code"] == "not_found"
    for frames in ("0", "1,x", "-1"):
        reply = node.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
                                headers=headers)
        assert reply.status_code in (400, 404), frames
    reply = node.client.get(f"/dicomweb/studies/{study}", headers={**headers, "Accept": "image/png"})
    assert reply.status_code == 406
    assert node.client.get(f"/dicomweb/studies/{study}").status_code == 401


def test_reads_are_audited_per_series(node):
    files = synthetic_series(1)
    study, series, _ = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    assert node.client.get(f"/dicomweb/studies/{study}/metadata", headers=node.headers()).status_code == 200
    audit = node.app.extensions["sivr_view_audit"]
    audit.flush()
    with node.app.app_context():
        models = node.app.extensions["sivr_node"].models
        rows = list(models.AuditEntry.select().where(models.AuditEntry.action == "record.view"))
    assert any(json.loads(row.detail)["dicomweb"] == 1 for row in rows)


# --- dicomweb-client against the real daemons ------------------------------------------------------
@pytest.mark.slow
def test_dicomweb_client_store_and_retrieve(dicomweb):
    """The bundled real CT (JPEG 2000 lossless): stored as sent, transcoded on request, frames either way.

    Other tests of the session may store more of this series on the node: checks are per instance sent."""
    client = dicomweb("physician")
    sent = [path.read_bytes() for path in sorted(DEMO_CT.glob("*.dcm"))[:12]]
    datasets = [pydicom.dcmread(io.BytesIO(raw)) for raw in sent]
    study, series, sop = uids(sent[0])
    answer = client.store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == len(sent) and "FailedSOPSequence" not in answer

    exact = client.retrieve_series(study, series, media_types=(("application/dicom", "*"),))
    as_stored = {ds.SOPInstanceUID: ds for ds in exact}
    for original in datasets:
        kept = as_stored[original.SOPInstanceUID]
        assert kept.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert kept.PixelData == original.PixelData and kept.PatientName == original.PatientName
    raw = client._session.get(f"{client.base_url}/studies/{study}/series/{series}", headers=ANY_DICOM, timeout=120)
    assert set(sent) <= {content for _, content in raw_parts(raw.headers["Content-Type"], raw.content)}
    whole = client.retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert len(whole) >= len(sent)

    instance = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", EXPLICIT_LE),))
    assert instance.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert np.array_equal(instance.pixel_array, datasets[0].pixel_array)

    metadata = client.retrieve_series_metadata(study, series)
    assert {ds.SOPInstanceUID for ds in datasets} <= {m["00080018"]["Value"][0] for m in metadata}
    first = next(m for m in metadata if m["00080018"]["Value"][0] == sop)
    assert client.retrieve_instance_metadata(study, series, sop)["00080018"] == first["00080018"]
    assert len(client.retrieve_study_metadata(study)) >= len(sent)
    pixels = datasets[0].pixel_array
    native_pixels = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    octets = ("application/octet-stream",)
    assert client.retrieve_bulkdata(first["7FE00010"]["BulkDataURI"], media_types=octets) == [native_pixels]
    as_stored = client.retrieve_bulkdata(first["7FE00010"]["BulkDataURI"])  # */*: the stored frame
    assert as_stored == [get_frame(datasets[0].PixelData, 0, number_of_frames=1)]

    [native] = client.retrieve_instance_frames(study, series, sop, [1], media_types=octets)
    assert native == native_pixels
    syntax = str(datasets[0].file_meta.TransferSyntaxUID)
    assert syntax == "1.2.840.10008.1.2.4.90"
    [compressed] = client.retrieve_instance_frames(study, series, sop, [1], media_types=(("image/jp2", syntax),))
    assert compressed == get_frame(datasets[0].PixelData, 0, number_of_frames=1)


@pytest.mark.slow
def test_dicomweb_client_jpeg_ls_frames_and_bad_requests(dicomweb):
    client = dicomweb("physician")
    files = synthetic_series(2, syntax=JPEGLSLossless, rows=32, cols=32)
    study, series, sop = uids(files[0])
    client.store_instances([pydicom.dcmread(io.BytesIO(raw)) for raw in files])
    original = pydicom.dcmread(io.BytesIO(files[0]))
    [jls] = client.retrieve_instance_frames(study, series, sop, [1], media_types=(("image/jls", str(JPEGLSLossless)),))
    assert jls == get_frame(original.PixelData, 0, number_of_frames=1)
    [native] = client.retrieve_instance_frames(study, series, sop, [1], media_types=("application/octet-stream",))
    assert native == original.pixel_array.astype("<u2").tobytes()
    with pytest.raises(HTTPError) as refused:
        client.retrieve_series(generate_uid(), generate_uid())
    assert refused.value.response.status_code == 404
    with pytest.raises(HTTPError) as refused:
        client.store_instances([pydicom.dcmread(io.BytesIO(synthetic_series(1)[0]))], study_instance_uid=study)
    assert refused.value.response.status_code == 409  # its study is not the one named


@pytest.mark.slow
def test_stow_from_another_institution_is_403_over_tls(deployment, node_url):
    from daemons.demo import ApiClient, new_user

    admin = deployment.client("admin")
    other = deployment.layout.institutions[1]["id"]
    credentials = new_user(admin, deployment.url("toplevel"), other, "dr.elsewhere", "physician")
    session = ApiClient(deployment, **credentials).session
    files = synthetic_series(1)
    reply = session.post(f"{node_url}/dicomweb/studies", data=body_of(files), timeout=60,
                         headers={"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"})
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "forbidden"
    study = uids(files[0])[0]
    assert session.get(f"{node_url}/dicomweb/studies/{study}/metadata", timeout=60).status_code == 404


@pytest.mark.slow
def test_c_store_and_stow_of_one_series_land_in_one_record(deployment, dicomweb, node_url):
    """Two instances sent by a modality over DIMSE, two more by STOW-RS: one series, one record."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from daemons.deployment import DEMO_DICOM_CALLERS, dicom_endpoint

    patient = f"DW-{uuid.uuid4().hex[:8]}"
    files = synthetic_series(4)
    datasets = [pydicom.dcmread(io.BytesIO(raw)) for raw in files]
    for ds in datasets:
        ds.PatientID = patient
    study, series, _ = uids(files[0])
    endpoint = dicom_endpoint(next(i for i in deployment.layout.instances if i.name == "render-1-1"))
    ae = AE(ae_title=DEMO_DICOM_CALLERS[0])
    ae.add_requested_context(CTImageStorage, str(ExplicitVRLittleEndian))
    assoc = ae.associate(endpoint["host"], endpoint["port"], ae_title=endpoint["ae_title"])
    assert assoc.is_established
    assert [assoc.send_c_store(ds).Status for ds in datasets[:2]] == [0, 0]
    assoc.release()
    client = dicomweb("physician")
    answer = client.store_instances(datasets[2:], study_instance_uid=study)
    assert len(answer.ReferencedSOPSequence) == 2
    assert len(client.retrieve_series_metadata(study, series)) == 4
    records = deployment.client("physician").call(
        "GET", f"{node_url}/api/v1/records", params={"patient_id_dicom": patient}).json()
    assert records["total"] == 1 and records["items"][0]["files"] == 4


def test_a_frame_found_undecodable_on_arrival_is_422_the_others_are_sent(node):
    import imagecodecs
    from pydicom.encaps import encapsulate

    from tests.render.synthetic import dataset, to_bytes

    ds = dataset(32, 32, series=generate_uid(), pixels=False)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    good = imagecodecs.jpeg8_encode(np.linspace(0, 4095, 32 * 32).astype(np.uint16).reshape(32, 32), level=95,
                                    bitspersample=12)
    ds.NumberOfFrames = 3
    ds.PixelData = encapsulate([good, good[:40], good])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGExtended12Bit
    raw = to_bytes(ds)
    study, series, sop = uids(raw)
    assert stow(node, body_of([raw])).status_code == 200
    frames = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames"
    octets = {**node.headers(), "Accept": "multipart/related; type=application/octet-stream"}
    [(_, first)] = parts_of(node.client.get(f"{frames}/1", headers=octets))
    assert len(first) == 32 * 32 * 2
    broken = node.client.get(f"{frames}/3,2", headers=octets)
    assert broken.status_code == 422 and broken.get_json()["error"]["code"] == "frame_error"
    assert "frame 2" in broken.get_json()["error"]["message"]


def test_metadata_leaves_the_process_wide_pydicom_validation_alone():
    """Serialising metadata must not switch pydicom's global reading validation (shared by every
    request thread and the parse pool): a concurrent parse would be made strict, and racing
    restores once left the whole process strict, refusing valid images afterwards."""
    from pydicom import config

    from daemons.render.dicomweb.metadata import instance_json

    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientName = "Doe^Jane"
    ds.add_new(0x00091010, "OB", b"\0" * 4096)
    # as read from a file: the raw bytes are converted only when the element is first used
    ds._dict[0x00280030] = pydicom.dataelem.RawDataElement(
        pydicom.tag.Tag(0x00280030), "DS", 12, b"not-a-number", 0, True, True
    )
    seen = []
    before = config.settings.reading_validation_mode

    original = pydicom.dataelem.DataElement.to_json_dict

    def spy(element, *args, **kwargs):
        seen.append(config.settings.reading_validation_mode)
        return original(element, *args, **kwargs)

    pydicom.dataelem.DataElement.to_json_dict = spy
    try:
        model = json.loads(instance_json(ds, "https://node/bulk"))
    finally:
        pydicom.dataelem.DataElement.to_json_dict = original
    assert set(seen) == {before}
    assert config.settings.reading_validation_mode == before
    assert model["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert model["00091010"]["BulkDataURI"].startswith("https://node/bulk/")
    assert "00280030" not in model, "a value that is not a number cannot be DICOM JSON DS"
    # a value of the wrong length for its VR (pydicom's BytesLengthException) is left out too
    ds._dict[0x00181088] = pydicom.dataelem.RawDataElement(pydicom.tag.Tag(0x00181088), "FD", 3, b"abc", 0, True, True)
    assert "00181088" not in json.loads(instance_json(ds, "https://node/bulk"))


def test_a_stored_copy_that_fails_its_check_is_422_for_instances_and_metadata(node):
    """WADO-RS instances and metadata read a stored file the same way (`resolve.read_instance`):
    a blob damaged on disk is refused with 422 store_corrupt naming the instance, never a 500."""
    files = synthetic_series(2, rows=16, cols=16)
    study, series, sop = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    record = node.app.extensions["sivr_node"].store.path_of(series_record_id(node.institution_id, series))
    for blob in record.glob("[0-9][0-9][0-9][0-9][0-9][0-9].bin"):  # the instances, not the manifest
        damaged = bytearray(blob.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        blob.write_bytes(bytes(damaged))
    base = f"/dicomweb/studies/{study}/series/{series}"
    for path, headers in ((f"{base}/instances/{sop}", ANY_DICOM), (f"{base}/metadata", {})):
        reply = node.client.get(path, headers={**node.headers(), **headers})
        assert reply.status_code == 422, (path, reply.get_data(as_text=True))
        assert reply.get_json()["error"]["code"] == "store_corrupt"


def test_a_new_series_in_another_patients_study_is_refused_whole_and_audited_once(node):
    """A study belongs to one patient: every instance of a new series of another patient under a
    stored study is refused (0xA900), in one refusal (not one per halving of the batch)."""
    files = synthetic_series(1)
    study, _, _ = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    others = []
    for raw in synthetic_series(4, study=study):
        ds = pydicom.dcmread(io.BytesIO(raw))
        ds.PatientID = "SOMEONE-ELSE"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        others.append(out.getvalue())
    reply = stow(node, body_of(others), path=f"/dicomweb/studies/{study}")
    assert reply.status_code == 409, reply.get_data(as_text=True)
    failed = reply.get_json()["00081198"]["Value"]
    assert sorted(item["00081197"]["Value"][0] for item in failed) == [0xA900] * 4
    assert instance_count(node) == 1
    with node.app.app_context():
        audit = node.app.extensions["sivr_node"].models.AuditEntry
        assert audit.select().where(audit.action == "study.conflict").count() == 1


@pytest.mark.parametrize("strangers_first", [True, False])
def test_a_series_refusal_speaks_for_every_file_whatever_the_part_order(node, strangers_first):
    """The files of a request agree on their patient before the series is refused as a whole:
    with another patient's instances first, the conflict of the first file failed the instances of
    the study's own patient too (stored when they came first)."""
    files = synthetic_series(1)
    study, _, _ = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    series = generate_uid()
    own = synthetic_series(2, study=study, series=series)
    strangers = []
    for raw in synthetic_series(2, study=study, series=series):
        ds = pydicom.dcmread(io.BytesIO(raw))
        ds.PatientID = "SOMEONE-ELSE"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        strangers.append(out.getvalue())
    parts = strangers + own if strangers_first else own + strangers
    reply = stow(node, body_of(parts), path=f"/dicomweb/studies/{study}")
    assert reply.status_code == 202, reply.get_data(as_text=True)
    stored = {item["00081155"]["Value"][0] for item in reply.get_json()["00081199"]["Value"]}
    assert stored == {uids(raw)[2] for raw in own}
    assert instance_count(node) == 3
