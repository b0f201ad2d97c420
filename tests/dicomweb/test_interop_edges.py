"""DICOMweb answers a real client or browser misread: a list of modalities as dicomweb-client sends
it, q=0 in an Accept header beside a wildcard, and CORS on answers no DICOMweb route made.

In-process against a real node app (tests/render/conftest.py), and with dicomweb-client against
the real daemons (gunicorn + TLS) of the session deployment.
"""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, generate_uid

from daemons.render.dicomweb.accept import Asked
from daemons.render.dicomweb.syntax import EXPLICIT_LE, frame_choice, instance_syntax, json_answer, needs_stored_syntax
from shared.errors import ApiError
from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_qido import (
    JOHN,
    SERIES_A_CT,
    SERIES_A_MR,
    SERIES_B_CT,
    STUDY_A,
    STUDY_B,
    STUDY_UID,
    ZOE,
    qido,
    series_files,
    uids_of,
)
from tests.dicomweb.test_stow_wado import body_of, stow
from tests.render.conftest import build_node, close_node

VIEWER = "https://viewer.example:3000"
JLS = str(JPEGLSLossless)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, token_keys):
    """Study A (CT and MR), study B (CT): enough to tell a list of modalities from one modality."""
    node = build_node(tmp_path_factory.mktemp("interop-node"), token_keys, dicomweb__cors_origins=[VIEWER])
    for patient, study, series in [(ZOE, STUDY_A, SERIES_A_CT), (ZOE, STUDY_A, SERIES_A_MR),
                                   (JOHN, STUDY_B, SERIES_B_CT)]:
        reply = node.upload(series_files(2, patient=patient, study=study, series=series), headers=node.headers())
        assert reply.status_code == 201, reply.get_json()
    yield node
    close_node(node)


# --- a list of modalities, as dicomweb-client sends one -----------------------------------------

def test_modalities_in_study_repeated_is_the_list_it_names(archive):
    """dicomweb-client writes `search_filters={"ModalitiesInStudy": ["MR", "XA"]}` as the key repeated:
    it was 400 "given more than once", though the same list comma-separated is matched."""
    a, b = STUDY_A["StudyInstanceUID"], STUDY_B["StudyInstanceUID"]
    for query in ("ModalitiesInStudy=MR&ModalitiesInStudy=XA", "ModalitiesInStudy=MR,XA", "00080061=XA&00080061=MR"):
        assert uids_of(archive, f"/studies?{query}") == [a], query
    assert uids_of(archive, "/studies?ModalitiesInStudy=MR&ModalitiesInStudy=CT") == [a, b]
    assert uids_of(archive, "/series?ModalitiesInStudy=XA&ModalitiesInStudy=US") == []
    # a key that holds one value is still refused twice
    reply = qido(archive, "/studies?AccessionNumber=ACC-A&AccessionNumber=ACC-B")
    assert reply.status_code == 400 and "AccessionNumber" in reply.get_json()["error"]["message"]


def test_dicomweb_client_searches_for_a_list_of_modalities(deployment, dicomweb):
    study = generate_uid()
    files = synthetic_series(2, study=study)
    dicomweb().store_instances([pydicom.dcmread(io.BytesIO(raw)) for raw in files])
    admin = dicomweb("admin")
    found = admin.search_for_studies(search_filters={"StudyInstanceUID": study, "ModalitiesInStudy": ["MR", "CT"]})
    assert [item[STUDY_UID]["Value"][0] for item in found] == [study]
    assert admin.search_for_studies(search_filters={"StudyInstanceUID": study, "ModalitiesInStudy": ["MR", "XA"]}) == []


# --- q=0 beside a wildcard --------------------------------------------------------------------------

def test_a_range_given_q_0_is_refused_also_where_a_wildcard_takes_it_in():
    """RFC 9110 12.5.1: q=0 is "not acceptable", and the most specific range that matches decides."""
    assert json_answer(Asked.of("application/dicom+json;q=0, */*"), "x") == "application/json"
    assert json_answer(Asked.of("application/*, application/json;q=0"), "x") == "application/dicom+json"
    with pytest.raises(ApiError) as refused:
        json_answer(Asked.of("application/dicom+json;q=0, application/json;q=0, */*"), "x")
    assert refused.value.status == 406
    explicit_le_refused = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE};q=0, */*'
    with pytest.raises(ApiError):
        needs_stored_syntax(Asked.of(explicit_le_refused))
    assert instance_syntax(Asked.of("application/dicom;q=0, application/dicom; transfer-syntax=*"), JLS) == "*"
    choice = frame_choice(Asked.of("image/jls;q=0, */*"), JLS)
    assert (choice.stored, choice.part_type) == (False, "application/octet-stream")
    assert frame_choice(Asked.of("*/*"), JLS).part_type == "image/jls"


@pytest.fixture(scope="module")
def jls(archive):
    """A JPEG-LS instance of 64x64 (its pixel data a BulkDataURI in its metadata)."""
    files = synthetic_series(1, syntax=JPEGLSLossless, rows=64, cols=64)
    reply = stow(archive, body_of(files))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    study, series, sop = uids(files[0])
    return archive, f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def _get(harness, path: str, accept: str):
    return harness.client.get(path, headers={**harness.headers(), "Accept": accept})


@pytest.mark.parametrize(("resource", "accept", "answered"), [
    ("/rendered", "image/jpeg;q=0, */*", "image/png"),
    ("/rendered", "image/jpeg;q=0, image/*", "image/png"),
    ("/rendered", "image/jpeg;q=0, image/png;q=0, image/*", "image/webp"),
    ("/thumbnail", "image/jpeg;q=0, */*", "image/png"),
    ("/rendered", "image/*;q=0, image/gif", "image/gif"),
    ("/metadata", "application/dicom+json;q=0, */*", "application/json"),
    ("/frames/1", "image/jls;q=0, */*", 'multipart/related; type="application/octet-stream"'),
])
def test_a_refused_media_type_is_not_sent_because_a_wildcard_matches(jls, resource, accept, answered):
    harness, instance = jls
    reply = _get(harness, instance + resource, accept)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.headers["Content-Type"].startswith(answered), reply.headers["Content-Type"]


@pytest.mark.parametrize(("resource", "accept"), [
    ("/rendered", "image/jpeg;q=0, image/png;q=0, image/webp;q=0, image/gif;q=0, image/*"),
    ("/metadata", "application/dicom+json;q=0, application/json;q=0, */*"),
    ("/frames/1", "image/jls;q=0, application/octet-stream;q=0, */*"),
    ("", (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE};q=0, '
          f"application/dicom; transfer-syntax={EXPLICIT_LE};q=0, */*")),  # the single-part form too
])
def test_everything_offered_refused_is_406_whatever_wildcard_follows(jls, resource, accept):
    harness, instance = jls
    reply = _get(harness, instance + resource, accept)
    assert reply.status_code == 406, (reply.status_code, reply.headers.get("Content-Type"))
    assert reply.get_json()["error"]["code"] == "not_acceptable"


def test_the_pixel_data_bulk_data_uri_negotiates_as_the_frames_do(jls):
    harness, instance = jls
    meta = _get(harness, instance + "/metadata", "application/dicom+json").get_json()[0]
    assert meta["7FE00010"]["BulkDataURI"].endswith("/bulk/7FE00010")
    reply = _get(harness, instance + "/bulk/7FE00010", "image/jls;q=0, */*")
    assert reply.status_code == 200 and 'type="application/octet-stream"' in reply.headers["Content-Type"]
    assert _get(harness, instance + "/bulk/7FE00010", "image/jls;q=0, application/octet-stream;q=0, */*"
                ).status_code == 406


# --- CORS on what no DICOMweb route answered ----------------------------------------------------

@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/dicomweb/studies/1.2/series/1.3/instances/1.4/pixeldata", 404),  # a resource SIVR does not offer
    ("GET", "/dicomweb", 404),
    ("DELETE", "/dicomweb/studies/1.2", 405),
    ("POST", "/dicomweb/studies/1.2/series", 405),
])
def test_answers_no_route_made_under_the_root_carry_cors_for_the_viewer(archive, method, path, status):
    """A blueprint's hooks run only for requests one of its routes matched: a 404 or 405 under
    the root reached the browser without Access-Control-Allow-Origin, a network error to the viewer."""
    reply = archive.client.open(path, method=method, headers={**archive.headers(), "Origin": VIEWER})
    assert reply.status_code == status
    assert reply.get_json()["error"]["code"] in ("not_found", "method_not_allowed")
    assert reply.headers.get("Access-Control-Allow-Origin") == VIEWER
    assert "Origin" in reply.headers.getlist("Vary")


def test_a_preflight_of_any_path_under_the_root_is_answered_and_others_are_not_dicomwebs(archive):
    reply = archive.client.options("/dicomweb/studies/1.2/series/1.3/instances/1.4/pixeldata", headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "GET"})
    assert reply.status_code == 204 and reply.headers["Access-Control-Allow-Origin"] == VIEWER
    assert "GET" in reply.headers["Access-Control-Allow-Methods"]
    elsewhere = archive.client.get("/api/v1/nothing-here", headers={"Origin": VIEWER})
    assert elsewhere.status_code == 404 and "Access-Control-Allow-Origin" not in elsewhere.headers
    stranger = archive.client.get("/dicomweb", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers
