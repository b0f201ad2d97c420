"""Text that no database holds (NUL, lone surrogates), in the paths and the instances DICOMweb takes,
on SQLite and on PostgreSQL: PostgreSQL refuses a NUL in any text parameter, so what SQLite answered
was a 500 there. Every such request is a 4xx (or the instance's own failure in a STOW-RS answer), and
the two databases answer alike.
"""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement

from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_hostile_stow import failures
from tests.dicomweb.test_stow_wado import body_of, instance_count, stow
from tests.render.conftest import database_overrides
from tests.render.synthetic import to_bytes

CANNOT_UNDERSTAND = 0xC000


@pytest.fixture(params=["sqlite", "postgresql"])
def node_on(request, make_node):
    """A node whose catalogue is on SQLite, then on PostgreSQL."""
    return make_node(**database_overrides(request, request.param))


def with_raw(raw: bytes, **values: bytes) -> bytes:
    """`raw` (a file) with each keyword's value set to the bytes given, as a file would carry them."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    for keyword, value in values.items():
        tag = tag_for_keyword(keyword)
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    return to_bytes(ds)


def test_path_uids_no_database_holds_are_404_not_500(node_on):
    """`/studies/1%00` was a 500 on PostgreSQL (the UID went to the query), a 404 on SQLite: a path
    naming what is no UID is 404 before any query (`dicomweb.resolve`), for every resource."""
    files = synthetic_series(1)
    assert stow(node_on, body_of(files)).status_code == 200
    study, series, sop = uids(files[0])
    for uid in ("1%00", "%00", "1.2%00.3"):
        paths = [f"/dicomweb/studies/{uid}", f"/dicomweb/studies/{uid}/metadata", f"/dicomweb/studies/{uid}/series",
                 f"/dicomweb/studies/{uid}/instances", f"/dicomweb/studies/{uid}/rendered",
                 f"/dicomweb/studies/{study}/series/{uid}", f"/dicomweb/studies/{study}/series/{uid}/instances",
                 f"/dicomweb/studies/{study}/series/{uid}/thumbnail",
                 f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/metadata",
                 f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/rendered"]
        for path in paths:
            reply = node_on.client.get(path, headers=node_on.headers())
            assert reply.status_code == 404, (path, reply.get_data(as_text=True))
            assert reply.get_json()["error"]["code"] == "not_found"
    assert node_on.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
                              headers=node_on.headers()).status_code == 200


@pytest.mark.parametrize("keyword", ["PatientID", "IssuerOfPatientID"])
def test_a_patient_id_or_issuer_holding_nul_is_refused_and_nothing_stored(node_on, keyword):
    """PostgreSQL: 500, SQLite: stored under a Patient ID holding NUL. The catalogue keys the patient
    by it, so the instance is refused as one with an over-long Patient ID is (`uids.identity_problem`)."""
    raw = with_raw(synthetic_series(1)[0], **{keyword: b"AB\x00CD "})
    reply = stow(node_on, body_of([raw]))
    assert reply.status_code == 409 and failures(reply) == [CANNOT_UNDERSTAND], reply.get_data(as_text=True)
    assert instance_count(node_on) == 0
    assert node_on.client.get("/api/v1/worklist", headers=node_on.headers()).get_json()["total"] == 0


def test_names_and_descriptions_holding_nul_are_indexed_as_u_fffd(node_on):
    """PostgreSQL: 500 for a NUL in any catalogued text (names, descriptions, accession number, study
    id), SQLite: stored with it. The catalogue indexes it as U+FFFD on both (`attributes.storable_text`);
    the file is kept as it came."""
    values = {"PatientName": b"Doe\x00^Jane ", "StudyDescription": b"Head\x00CT ", "SeriesDescription": b"Ax\x00ial ",
              "AccessionNumber": b"A\x00123 ", "StudyID": b"S\x001 ", "ReferringPhysicianName": b"Ref\x00^Doc "}
    raw = with_raw(synthetic_series(1)[0], **values)
    assert stow(node_on, body_of([raw])).status_code == 200, "stored"
    study, series, sop = uids(raw)
    admin = node_on.headers("instadmin")
    [answer] = node_on.client.get("/dicomweb/series?includefield=all", headers=admin).get_json()
    assert answer["00100010"]["Value"] == [{"Alphabetic": "Doe\ufffd^Jane"}]
    assert answer["00081030"]["Value"] == ["Head\ufffdCT"] and answer["0008103E"]["Value"] == ["Ax\ufffdial"]
    assert answer["00080050"]["Value"] == ["A\ufffd123"] and answer["00200010"]["Value"] == ["S\ufffd1"]
    assert answer["00080090"]["Value"] == [{"Alphabetic": "Ref\ufffd^Doc"}]
    found = node_on.client.get("/dicomweb/studies?PatientName=doe*", headers=admin).get_json()
    assert [item["0020000D"]["Value"] for item in found] == [[study]]
    whole = node_on.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                               headers={**node_on.headers(), "Accept": 'multipart/related; type="application/dicom"; '
                                        'transfer-syntax=*'})
    assert whole.status_code == 200 and raw in whole.get_data()  # the file as it came


def test_a_modality_holding_nul_is_kept_as_u_fffd_in_the_record_and_its_manifest(node_on):
    """The `stored_record` row keeps the manifest's modality: PostgreSQL, 500 for `C\\0T`; SQLite, the
    NUL in the work list and the record. The manifest states its text as the catalogue indexes it."""
    raw = with_raw(synthetic_series(1)[0], Modality=b"C\x00T ", PatientName=b"Doe\x00^Jane ")
    assert stow(node_on, body_of([raw])).status_code == 200
    [item] = node_on.client.get("/api/v1/worklist", headers=node_on.headers()).get_json()["items"]
    assert item["modality"] == item["series"]["modality"] == "C\ufffdT"
    assert item["patient"]["name"] == "Doe\ufffd^Jane"  # the manifest's, as the upload receipt states it
    record = node_on.client.get(f"/api/v1/records/{item['id']}", headers=node_on.headers()).get_json()
    assert record["modality"] == "C\ufffdT"


def test_a_refused_request_whose_path_holds_nul_is_a_403_audited(node_on):
    """A refused DICOMweb request is audited against the series its path names, which the audit looks
    up: with a NUL in the series UID that lookup was PostgreSQL's error in the refusal's audit hook (a
    500, the entry lost). It names the study (NUL kept as U+FFFD) and the answer stays the 403."""
    files = synthetic_series(1)
    assert stow(node_on, body_of(files)).status_code == 200
    study, _, _ = uids(files[0])
    admin = node_on.headers("instadmin")
    for path in (f"/dicomweb/studies/{study}/series/1%00", "/dicomweb/studies/1%00/series/1.2.3"):
        reply = node_on.client.get(path, headers=admin)
        assert reply.status_code == 403, (path, reply.get_data(as_text=True))
    denials = node_on.client.get("/api/v1/audit?action=access.denied", headers=admin).json["items"]
    assert {(entry["object_type"], entry["object_id"]) for entry in denials} >= {
        ("study", study), ("study", "1\ufffd")}
