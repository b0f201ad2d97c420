"""Hostile input to WADO-RS and the rendered resources, in-process: every bad request is a 4xx with
the JSON error body (or the DICOMweb status the standard gives), never a 500, and nothing of a study
is told to a caller without a valid token.

One node for the module (its studies are stored once); each test reads only.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid

from daemons.render.dicomweb import multipart
from shared.tokens import generate_signing_keypair
from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import STOW_TYPE, body_of, parts_of, stow
from tests.render.conftest import NodeHarness, build_node, close_node
from tests.render.synthetic import new_instance, to_bytes

OCTETS = "multipart/related; type=application/octet-stream"


class Stored:
    """The node and the UIDs of what it holds: a CT series (RLE, with a sequence holding a bulk value),
    and a study whose first series (by SeriesNumber) is a report, second an image series."""

    def __init__(self, harness: NodeHarness):
        self.node = harness
        files = synthetic_series(2, syntax=RLELossless, rows=16, cols=16)
        ds = pydicom.dcmread(io.BytesIO(files[0]))
        item = Dataset()
        item.add_new(0x00091010, "OB", b"\1" * 4096)  # over the bulk threshold: a BulkDataURI
        ds.add_new(0x00082112, "SQ", [item])
        files[0] = to_bytes(ds)
        self.study, self.series, self.sop = uids(files[0])
        self.other_sop = uids(files[1])[2]
        assert stow(harness, body_of(files)).status_code == 200

        self.mixed_study = generate_uid()
        images = []
        for raw in synthetic_series(3, study=self.mixed_study):
            image = pydicom.dcmread(io.BytesIO(raw))
            image.SeriesNumber = 2
            images.append(to_bytes(image))
        report = new_instance("1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR: no pixel data
        report.StudyInstanceUID, report.SeriesInstanceUID = self.mixed_study, generate_uid()
        report.Modality, report.SeriesNumber = "SR", 1
        report.PatientID, report.PatientName = "DW-TEST", "Web^Dicom"
        reply = stow(harness, body_of([to_bytes(report), *images]))
        assert reply.status_code == 200, reply.get_data(as_text=True)
        self.image_series = uids(images[0])[1]

    @property
    def instance(self) -> str:
        return f"/dicomweb/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    def get(self, path: str, accept: str | None = None, headers: dict[str, str] | None = None, **params):
        sent = self.node.headers() if headers is None else headers
        if accept is not None:
            sent = {**sent, "Accept": accept}
        reply = self.node.client.get(path, query_string=params, headers=sent)
        reply.get_data()  # a streamed answer is read whole, within its request
        return reply


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Stored:
    root = tmp_path_factory.mktemp("dicomweb-hostile")
    keys = root / "token.pem", root / "token.pub"
    generate_signing_keypair(*keys)
    harness = build_node(root, keys)
    yield Stored(harness)
    close_node(harness)


def assert_error(reply, status: int, code: str) -> dict:
    assert reply.status_code == status, reply.get_data(as_text=True)
    error = reply.get_json()["error"]
    assert error["code"] == code and error["message"]
    return error


# --- frame lists ---------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [
    "²",  # str.isdigit() is true, int() refuses it: was a 500
    "1,²",
    "%C2%B2",
    "1" * 5000,  # int() refuses more than 4300 digits: was a 500 on WADO-RS frames
    "१",  # a Devanagari one: int() reads it as 1
    "１",  # a fullwidth one
    " 1",
    "99999999999999999999",
    "0", "-1", "1,,2", "1-3", "1,", ",1", "%00", "01",
])
@pytest.mark.parametrize("resource", ["", "/rendered", "/thumbnail"])
def test_a_frame_list_is_ascii_frame_numbers_or_400_on_every_frames_resource(stored, frames, resource):
    reply = stored.get(f"{stored.instance}/frames/{frames}{resource}", OCTETS if not resource else None)
    error = assert_error(reply, 400, "validation_error")
    assert "frame list" in error["message"]


def test_frame_list_limits_and_unknown_frames(stored):
    over = ",".join(str(n) for n in range(1, 1002))
    assert "at most 1000" in assert_error(stored.get(f"{stored.instance}/frames/{over}", OCTETS), 400,
                                          "validation_error")["message"]
    within = ",".join(str(n) for n in range(1, 1001))  # within the limit: frame 2 of a single frame is 404
    assert_error(stored.get(f"{stored.instance}/frames/{within}", OCTETS), 404, "not_found")
    for resource in ("", "/rendered", "/thumbnail"):
        assert_error(stored.get(f"{stored.instance}/frames/2{resource}", OCTETS if not resource else None),
                     404, "not_found")


def test_frames_that_cannot_be_sent_apart_are_406_before_the_answer_starts(stored):
    """1-bit pixels whose frames do not end on a byte: the 406 was raised while the 200 streamed (a
    broken answer, gunicorn's own 500 page). The whole pixel data as bulk data is refused alike."""
    [raw] = synthetic_series(1, rows=3, cols=3)
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = b"\x5a\x01"  # 9 bits, padded to an even length
    ds["PixelData"].VR = "OB"
    assert stow(stored.node, body_of([to_bytes(ds)])).status_code == 200
    instance = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    for path in ("/frames/1", "/bulk/7FE00010"):
        assert_error(stored.get(instance + path, OCTETS), 406, "not_acceptable")


def test_an_instance_whose_series_was_deleted_meanwhile_is_404_not_500(stored):
    """A retrieve that found the catalogue's rows just before a DELETE took the files (the store goes
    first) read a missing blob: FileNotFoundError, a 500."""
    [raw] = synthetic_series(1)
    study, series, sop = uids(raw)
    assert stow(stored.node, body_of([raw])).status_code == 200
    the_node = stored.node.app.extensions["sivr_node"]
    [row] = the_node.models.catalogue.Series.select().where(the_node.models.catalogue.Series.series_uid == series)
    the_node.store.delete(row.id)
    for path, accept in (("", None), ("/frames/1", OCTETS)):
        assert_error(stored.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}{path}", accept),
                     404, "not_found")


def test_metadata_with_non_finite_numbers_is_json_with_nulls(stored):
    """A DS of NaN or an FD of infinity was written as bare NaN / Infinity, which no JSON parser takes
    (a browser's JSON.parse refused the whole series' metadata)."""
    [raw] = synthetic_series(1)
    ds = pydicom.dcmread(io.BytesIO(raw))
    with pydicom.config.disable_value_validation():
        ds.SliceLocation = "NaN"
    ds.add_new(0x00189089, "FD", [float("inf"), 1.5, float("-inf")])  # Diffusion Gradient Orientation
    assert stow(stored.node, body_of([to_bytes(ds)])).status_code == 200
    reply = stored.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata")
    assert reply.status_code == 200

    def refuse(constant: str):
        raise AssertionError(f"{constant} is no JSON")

    [model] = json.loads(reply.get_data(), parse_constant=refuse)
    assert model["00201041"]["Value"] == [None] and model["00189089"]["Value"] == [None, 1.5, None]


# --- bulk data paths -----------------------------------------------------------------------------
def test_the_bulk_data_uri_of_a_sequence_item_is_served(stored):
    meta = stored.get(f"{stored.instance}/metadata").get_json()[0]
    uri = meta["00082112"]["Value"][0]["00091010"]["BulkDataURI"]
    assert uri.endswith("/bulk/00082112/0/00091010")
    [(kind, content)] = parts_of(stored.get(f"{stored.instance}/bulk/00082112/0/00091010"))
    assert kind == "application/octet-stream" and content == b"\1" * 4096


@pytest.mark.parametrize("path", [
    "00082112/²/00091010",  # an item index str.isdigit() takes and int() refuses: was a 500
    "00082112/१/00091010",  # int() reads it as 1: named an item the path does not spell
    "00082112/%EF%BC%90/00091010",  # fullwidth 0
    f"00082112/{'1' * 5000}/00091010",  # int() refuses over 4300 digits: was a 500
    "00082112/99999999999/00091010", "00082112/-1/00091010", "00082112/0", "00082112/0/00091010/0",
    "0x082112/0/00091010", "+0082112/0/00091010", "0008_2112/0/00091010", "%EF%BC%90%EF%BC%90082112/0/00091010",
    "ZZZZZZZZ", "7FE00010/../..", "00100010", "a/b/c",
])
def test_a_bulk_data_path_that_names_no_bulk_value_is_404(stored, path):
    assert_error(stored.get(f"{stored.instance}/bulk/{path}"), 404, "not_found")


# --- Accept headers ------------------------------------------------------------------------------
def test_a_malformed_q_value_does_not_reorder_the_other_ranges(stored):
    """`q=nan` once sorted anywhere and took the ranges after it out of order: here the stored RLE
    frame (q=0.9) must win over the decoded one (q=0.5)."""
    accept = (f"{OCTETS}; q=0.5, multipart/related; type=image/jls; q=nan, "
              "multipart/related; type=image/dicom-rle; q=0.9")
    [(kind, _)] = parts_of(stored.get(f"{stored.instance}/frames/1", accept))
    assert kind == f"image/dicom-rle; transfer-syntax={RLELossless}"
    for q, wins in (("nan", OCTETS), ("abc", OCTETS), ("", OCTETS), ("5", OCTETS), ("inf", OCTETS),
                    ("-1", "image/dicom-rle"), ("-inf", "image/dicom-rle")):
        accept = f"{OCTETS}; q={q}, multipart/related; type=image/dicom-rle; q=0.9"
        [(kind, _)] = parts_of(stored.get(f"{stored.instance}/frames/1", accept))
        assert kind.startswith(wins.removeprefix("multipart/related; type=")), q  # no number: 1; else 0..1


def test_ranges_that_all_refuse_are_406_not_anything(stored):
    """q=0 says "not this" (RFC 9110 12.4.2): an Accept whose every range has it was taken as no Accept
    at all, and the refused media type was sent."""
    series = f"/dicomweb/studies/{stored.study}/series/{stored.series}"
    for path, refused in ((stored.instance, 'multipart/related; type="application/dicom"'),
                          (f"{series}/metadata", "application/dicom+json"),
                          (f"{stored.instance}/frames/1", OCTETS),
                          (f"{stored.instance}/rendered", "image/jpeg")):
        assert_error(stored.get(path, f"{refused}; q=0"), 406, "not_acceptable")
        assert_error(stored.get(path, f"{refused};q=0, */*;q=0"), 406, "not_acceptable")
        assert stored.get(path, f"{refused}; q=0.1").status_code == 200, path


def test_q_values_weigh_alike_for_wado_and_rendered_resources():
    from daemons.render.dicomweb.accept import weight
    from daemons.render.dicomweb.multipart import media_type

    values = {"q=0.3": 0.3, "q=abc": 1.0, "q=nan": 1.0, "q=": 1.0, "q=5": 1.0, "q=inf": 1.0, "q=-1": 0.0,
              "q=-inf": 0.0, "": 1.0}
    for text, expected in values.items():
        assert weight(media_type(f"image/png; {text}")[1]) == expected, text


@pytest.mark.parametrize("accept", [
    'multipart/related; type="application/dicom"; q=abc', "multipart/related; type=", 'multipart/related; type="',
    'multipart/related; type="application/dicom', ";;;;", ",,,,", '"', 'multipart/related; type="multipart/related"',
    "text/html", "*/*;q=0", 'multipart/related; type="application/dicom"; transfer-syntax=junk',
    'multipart/related; type="application/dicom"; transfer-syntax=', "x" * 8000, "a," * 4000, '"' + ",a" * 3000,
    "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.2",
])
def test_odd_accept_headers_are_answered_or_406(stored, accept):
    series = f"/dicomweb/studies/{stored.study}/series/{stored.series}"
    for path in (series, f"{series}/metadata", f"/dicomweb/studies/{stored.study}/series",  # the last a QIDO-RS search
                 f"{stored.instance}/frames/1", f"{stored.instance}/bulk/7FE00010",
                 f"{stored.instance}/rendered", f"{stored.instance}/thumbnail"):
        reply = stored.get(path, accept)
        assert reply.status_code in (200, 406), (path, reply.get_data(as_text=True))
        if reply.status_code == 406:
            assert reply.get_json()["error"]["code"] == "not_acceptable"


# --- rendered resources of a study with a series without images -------------------------------
@pytest.mark.parametrize("accept", [None, "image/png", "multipart/related; type=image/png"])
@pytest.mark.parametrize("resource", ["rendered", "thumbnail"])
def test_a_study_rendered_skips_its_series_without_images(stored, resource, accept):
    """A report (or key-object, presentation-state) series has nothing to show: the study's rendered
    resources show its image series, never 415 because such a series sorts first."""
    reply = stored.get(f"/dicomweb/studies/{stored.mixed_study}/{resource}", accept)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    series = stored.get(f"/dicomweb/studies/{stored.mixed_study}/series/{stored.image_series}/{resource}", accept)
    assert reply.get_data() == series.get_data() or reply.mimetype == "multipart/related"


def test_a_report_alone_is_still_415_stored_only(stored):
    report = new_instance("1.2.840.10008.5.1.4.1.1.88.11")
    report.StudyInstanceUID, report.SeriesInstanceUID = generate_uid(), generate_uid()
    report.Modality, report.PatientID = "SR", "DW-TEST"
    assert stow(stored.node, body_of([to_bytes(report)])).status_code == 200
    study, series, sop = uids(to_bytes(report))
    for path in (f"/dicomweb/studies/{study}/rendered", f"/dicomweb/studies/{study}/thumbnail",
                 f"/dicomweb/studies/{study}/series/{series}/rendered",
                 f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/thumbnail"):
        assert_error(stored.get(path), 415, "stored_only")
    assert_error(stored.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1", OCTETS),
                 404, "not_found")
    assert stored.get(f"/dicomweb/studies/{study}/metadata").status_code == 200


# --- UIDs in the path ----------------------------------------------------------------------------
def test_uids_that_name_nothing_or_mix_studies_are_404(stored):
    foreign_series = stored.image_series  # a series of another study
    paths = [f"/dicomweb/studies/{stored.mixed_study}/series/{stored.series}",
             f"/dicomweb/studies/{stored.study}/series/{foreign_series}/metadata",
             f"/dicomweb/studies/{stored.study}/series/{stored.series}/instances/{stored.mixed_study}",
             f"/dicomweb/studies/{stored.mixed_study}/series/{foreign_series}/instances/{stored.sop}/frames/1",
             f"/dicomweb/studies/{stored.mixed_study}/series/{stored.series}/instances/{stored.sop}/rendered",
             f"/dicomweb/studies/{stored.mixed_study}/series/{stored.series}/thumbnail"]
    for uid in ("%00", "%ED%A0%80", "%FF", "é" * 70, "x" * 5000, "1.2.3." + "9" * 80, "..", "%2e%2e"):
        paths += [f"/dicomweb/studies/{uid}", f"/dicomweb/studies/{uid}/metadata", f"/dicomweb/studies/{uid}/rendered",
                  f"/dicomweb/studies/{stored.study}/series/{uid}/thumbnail",
                  f"/dicomweb/studies/{stored.study}/series/{stored.series}/instances/{uid}/frames/1"]
    for path in paths:
        assert_error(stored.get(path, OCTETS if path.endswith("frames/1") else None), 404, "not_found")


# --- rendered parameters -------------------------------------------------------------------------
@pytest.mark.parametrize("params", [
    {"window": w} for w in ("nan,400,linear", "40,inf,linear", "40,-400,linear", "40,400,linear,5", "1e308,1,linear",
                            "40,400,LINEAR", ",,", "40,400,cubic")] + [
    {"viewport": v} for v in ("0,0", "-1,-1", "100000,100000", "a,b", "10,10,0,0", "10,10,16,0,1,1")] + [
    {"quality": q} for q in ("0", "101", "-1", "text", "50.5")] + [
    {"annotation": a} for a in (",", "everything")] + [{"invert": "maybe"}])
def test_bad_rendered_parameters_are_400_on_every_resource(stored, params):
    series = f"/dicomweb/studies/{stored.study}/series/{stored.series}"
    name = next(iter(params))
    paths = [f"{stored.instance}/rendered", f"{stored.instance}/frames/1/rendered", f"{series}/rendered",
             f"{series}/rendered/mpr/axial/0", f"{series}/rendered/volume"]
    if name == "viewport":
        paths += [f"{stored.instance}/thumbnail", f"/dicomweb/studies/{stored.study}/thumbnail"]
    for path in paths:
        reply = stored.get(path, **params)
        error = assert_error(reply, 400, "validation_error")
        assert name in error["message"], path


# --- tokens --------------------------------------------------------------------------------------
def _all_paths(stored: Stored, study: str) -> list[str]:
    series = f"/dicomweb/studies/{study}/series/{stored.series}"
    instance = f"{series}/instances/{stored.sop}"
    return [f"/dicomweb/studies/{study}", f"/dicomweb/studies/{study}/metadata", series, f"{series}/metadata",
            instance, f"{instance}/metadata", f"{instance}/frames/1", f"{instance}/bulk/7FE00010",
            f"{instance}/rendered", f"{instance}/thumbnail", f"{instance}/frames/1/rendered",
            f"{instance}/frames/1/thumbnail", f"{series}/rendered", f"{series}/thumbnail",
            f"/dicomweb/studies/{study}/rendered", f"/dicomweb/studies/{study}/thumbnail",
            f"{series}/rendered/mpr/axial/0", f"{series}/rendered/volume", f"/dicomweb/studies/{study}/series",
            f"{series}/instances", "/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"]


def test_without_a_valid_token_every_route_is_401_whether_the_study_exists_or_not(stored):
    """No existence oracle: a stored and an unknown study answer alike."""
    node = stored.node
    user = str(uuid.uuid4())
    expired, _ = node.issuer.issue(user, "u", "physician", node.institution_id, now=int(time.time()) - 10_000)
    elsewhere, _ = node.issuer.issue(user, "u", "physician", node.institution_id, audience="https://render-9.test")
    tokens = {"": "missing_token", "Bearer abc.def.ghi": "invalid_token", "Bearer ": "invalid_token",
              "Basic dXNlcjpwYXNz": "invalid_token", f"Bearer {expired}": "token_expired",
              f"Bearer {elsewhere}": "invalid_token", "Bearer a b c": "invalid_token"}
    for authorization, code in tokens.items():
        headers = {"Authorization": authorization} if authorization else {}
        for study in (stored.study, generate_uid()):
            for path in _all_paths(stored, study):
                reply = stored.get(path, headers=headers)
                assert_error(reply, 401, code)
            reply = node.client.post(f"/dicomweb/studies/{study}", data=body_of(synthetic_series(1)),
                                     headers={**headers, "Content-Type": STOW_TYPE})
            assert_error(reply, 401, code)


def test_reads_from_another_institution_are_open_and_stores_are_403(stored):
    """Reading images is open across institutions (audited, docs/conformance.md); QIDO without a
    patient is for the node's institution; the stored files leave whole for physicians only
    (shared.roles.ORIGINAL_FILE_READERS); storing is for the institution's users and administrators."""
    before = stored.get(f"/dicomweb/studies/{stored.study}/metadata").get_data()
    series = f"/dicomweb/studies/{stored.study}/series/{stored.series}"
    whole_files = {f"/dicomweb/studies/{stored.study}", series, f"{series}/instances/{stored.sop}"}
    for role in ("physician", "instadmin"):
        headers = stored.node.headers(role, institution_id=str(uuid.uuid4()))
        for path in _all_paths(stored, stored.study):
            reply = stored.get(path, headers=headers)
            if path in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances") or (
                    role == "instadmin" and path in whole_files):
                assert_error(reply, 403, "forbidden")
            else:
                assert reply.status_code == 200, (path, reply.get_data(as_text=True))
        files = synthetic_series(1, study=stored.study, series=stored.series)
        reply = stored.node.client.post("/dicomweb/studies", data=body_of(files),
                                        headers={**headers, "Content-Type": STOW_TYPE})
        assert_error(reply, 403, "forbidden")
    assert stored.get(f"/dicomweb/studies/{stored.study}/metadata").get_data() == before  # nothing stored


@pytest.mark.parametrize("resource, accept", [
    ("", None),
    ("/rendered", 'multipart/related; type="image/png"'),
])
def test_an_instance_found_damaged_once_the_answer_started_cuts_the_connection(stored, caplog, resource, accept):
    """A series answer streams its instances (or rendered frames) one by one; the status went out with
    the first. A later one found damaged ended the rendered answer without its close delimiter, as a
    whole HTTP answer, which dicomweb-client's decoder took as complete (the parts before it, the
    last with two stray bytes); WADO-RS raised a worker error (a logged traceback). Both now cut the
    connection (`multipart.AnswerCut`, which gunicorn ends as a reset connection), logged with what
    was sent."""
    raws = synthetic_series(3)
    study, series, _ = uids(raws[0])
    assert stow(stored.node, body_of(raws)).status_code == 200
    the_node = stored.node.app.extensions["sivr_node"]
    catalogue = the_node.models.catalogue
    [row] = catalogue.Series.select().where(catalogue.Series.series_uid == series)
    folder = the_node.store.path_of(row.id)
    for name in ("000001.bin", "000002.bin"):  # the first is read before the answer starts
        blob = bytearray((folder / name).read_bytes())
        blob[-1] ^= 0xFF
        (folder / name).write_bytes(bytes(blob))
    with pytest.raises(multipart.AnswerCut):
        stored.get(f"/dicomweb/studies/{study}/series/{series}{resource}", accept)
    assert "answer cut after 1 parts" in caplog.text
