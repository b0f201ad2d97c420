"""One reading of Accept for every DICOMweb resource (`daemons.render.dicomweb.accept`), in-process
against a real node app over HTTP: WADO-RS instances (study, series, instance), frames, bulk data
and metadata, the rendered resources and thumbnails, QIDO-RS and the STOW-RS answer.

The rendered resources used to rank Accept ranges with specificities of their own, WADO-RS and the
JSON answers with `multipart.specificity`: `multipart/related; type="*/*"; q=0` refused multipart
answers on `/rendered` and was ignored by WADO-RS, which sent multipart. Each ranked ranges by their
q-value and took a range's first offer, so a more specific range of a lower q did not lower what it
names (`*/*, image/jpeg;q=0.5` was JPEG), and the `accept` query parameter was either ignored
(WADO-RS, QIDO-RS) or replaced the header even where it named nothing offered (rendered).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, generate_uid

from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import STOW_TYPE, body_of, parts_of, stow
from tests.render.conftest import NodeHarness, build_node, close_node
from tests.render.synthetic import dataset, to_bytes

JLS = str(JPEGLSLossless)
OCTETS = "application/octet-stream"
MULTIPART_REFUSED = 'multipart/related; type="*/*"; q=0, */*'


class Archive:
    """A node holding a JPEG-LS series of two instances and a native instance of three frames."""

    def __init__(self, node: NodeHarness):
        self.node = node
        files = synthetic_series(2, syntax=JPEGLSLossless, rows=16, cols=16)
        assert stow(node, body_of(files)).status_code == 200
        self.study, self.series, self.sop = uids(files[0])
        ds = dataset(4, 4, series=generate_uid(), pixels=False)
        ds.StudyInstanceUID = generate_uid()
        ds.NumberOfFrames = 3
        ds.PixelData = np.arange(3 * 16, dtype=np.int16).tobytes()
        assert stow(node, body_of([to_bytes(ds)])).status_code == 200
        self.multiframe = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                           f"/instances/{ds.SOPInstanceUID}")

    @property
    def instance(self) -> str:
        return f"/dicomweb/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    def resource(self, kind: str) -> str:
        """The path of one resource of each kind."""
        series = f"/dicomweb/studies/{self.study}/series/{self.series}"
        return {"study": f"/dicomweb/studies/{self.study}", "series": series, "instance": self.instance,
                "frames": f"{self.instance}/frames/1", "bulk": f"{self.instance}/bulk/7FE00010",
                "metadata": f"{series}/metadata", "qido": f"/dicomweb/studies/{self.study}/series",
                "rendered": f"{self.instance}/rendered", "thumbnail": f"{series}/thumbnail",
                "rendered frames": f"{self.multiframe}/frames/1,3/rendered",
                "mpr": f"{series}/rendered/mpr/axial/0"}[kind]

    def get(self, kind: str, header: str | None, **params):
        """`kind`'s resource asked for with the Accept header `header` (and query parameters)."""
        headers = {**self.node.headers(), **({"Accept": header} if header is not None else {})}
        reply = self.node.client.get(self.resource(kind), headers=headers, query_string=params)
        reply.get_data()
        return reply

    def store(self, accept: str):
        """A STOW-RS of a new instance with `accept`: the reply, and whether the instance is stored."""
        files = synthetic_series(1)
        reply = self.node.client.post("/dicomweb/studies", data=body_of(files), headers={
            **self.node.headers(), "Content-Type": STOW_TYPE, "Accept": accept})
        _, series, sop = uids(files[0])
        found = self.node.client.get(f"/dicomweb/studies/{uids(files[0])[0]}/series/{series}/instances",
                                     headers=self.node.headers())
        return reply, found.status_code == 200 and sop in found.get_data(as_text=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, token_keys) -> Archive:
    node = build_node(tmp_path_factory.mktemp("accept-node"), token_keys)
    yield Archive(node)
    close_node(node)


def _type(reply) -> str:
    return reply.headers.get("Content-Type", "")


def _refused(reply) -> bool:
    return reply.status_code == 406 and reply.get_json()["error"]["code"] == "not_acceptable"


# --- where the two definitions disagreed ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["study", "series"])
def test_multipart_refused_is_406_on_every_resource_that_answers_only_multipart(archive, kind):
    """`multipart/related; type="*/*"; q=0` is more specific than `*/*` (it names the outer type):
    every multipart answer is refused. WADO-RS read it as `*/*` itself and answered 200 multipart."""
    reply = archive.get(kind, MULTIPART_REFUSED)
    assert _refused(reply), (reply.status_code, _type(reply))


@pytest.mark.parametrize(("kind", "answered"), [
    # a resource of one item also answers single-part (PS3.18 10.4.4; tests/dicomweb/test_single_part.py)
    ("instance", "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"),
    ("frames", f"image/jls; transfer-syntax={JLS}"), ("bulk", f"image/jls; transfer-syntax={JLS}"),
    ("rendered", "image/jpeg"), ("thumbnail", "image/jpeg"), ("mpr", "image/jpeg"),
    ("metadata", "application/dicom+json"), ("qido", "application/dicom+json")])
def test_multipart_refused_leaves_the_single_part_answers(archive, kind, answered):
    reply = archive.get(kind, MULTIPART_REFUSED)
    assert reply.status_code == 200 and _type(reply) == answered, (reply.status_code, _type(reply))


def test_multipart_refused_on_several_rendered_frames_and_stow(archive):
    assert _refused(archive.get("rendered frames", MULTIPART_REFUSED))
    reply, stored = archive.store(MULTIPART_REFUSED)
    assert reply.status_code == 200 and _type(reply) == "application/dicom+json" and stored


@pytest.mark.parametrize(("kind", "part"), [
    ("instance", "application/dicom"), ("series", "application/dicom"), ("frames", "image/jls"),
    ("bulk", "image/jls"), ("rendered", "image/jpeg"), ("rendered frames", "image/jpeg")])
def test_multipart_wildcard_takes_any_multipart_answer(archive, kind, part):
    """`multipart/*` was a multipart answer on `/rendered`, 406 on WADO-RS."""
    reply = archive.get(kind, "multipart/*")
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert _type(reply).startswith(f'multipart/related; type="{part}"'), _type(reply)


@pytest.mark.parametrize("kind", ["metadata", "qido"])
def test_multipart_related_alone_is_no_json_answer(archive, kind):
    """`multipart/related` (no type) takes in multipart answers only; the DICOM JSON answer is not
    one (its multipart form, XML, is not offered): 406, where it was answered in JSON."""
    assert _refused(archive.get(kind, "multipart/related"))


def test_multipart_related_alone_is_406_for_stow_before_anything_is_stored(archive):
    reply, stored = archive.store("multipart/related")
    assert _refused(reply) and not stored


# --- the most specific range weighs, whatever its q ---------------------------------------------
@pytest.mark.parametrize(("kind", "accept", "answered"), [
    ("rendered", "*/*, image/jpeg;q=0.5", "image/png"),
    ("thumbnail", "image/*, image/jpeg;q=0.5", "image/png"),
    ("mpr", "*/*, image/jpeg;q=0.5", "image/png"),
    ("rendered", "image/png;q=0.4, image/*;q=0.5", "image/jpeg"),
    ("metadata", "*/*, application/dicom+json;q=0.5", "application/json"),
    ("qido", "application/*, application/dicom+json;q=0.5", "application/json"),
    ("frames", "*/*, multipart/related; type=image/jls; q=0.5", f'multipart/related; type="{OCTETS}"'),
    ("bulk", "multipart/related; type=*/*, image/jls;q=0.1", f'multipart/related; type="{OCTETS}"'),
    ("instance", 'multipart/related; type="application/dicom"; q=0.2, application/dicom; transfer-syntax=*; q=0.9',
     f"application/dicom; transfer-syntax={JLS}"),  # the bare type names the single-part file exactly
])
def test_a_more_specific_range_sets_the_weight_of_what_it_names(archive, kind, accept, answered):
    """RFC 9110 12.5.1: the most specific range that matches decides a type's q-value; a wildcard
    listed first does not raise a type another range weighs lower."""
    reply = archive.get(kind, accept)
    assert reply.status_code == 200 and _type(reply).startswith(answered), (reply.status_code, _type(reply))


def test_the_stow_answer_weighs_as_the_other_json_answers(archive):
    reply, stored = archive.store("*/*, application/dicom+json;q=0.5")
    assert reply.status_code == 200 and _type(reply) == "application/json" and stored


def test_transfer_syntax_ranges_weigh_by_their_syntax(archive):
    """The instance as stored (q=0.9) over transcoded (q=0.2): the stored JPEG-LS bytes."""
    reply = archive.get("instance", 'multipart/related; type="application/dicom"; q=0.2, '
                                    'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.9')
    [(kind, raw)] = parts_of(reply)
    assert kind == f"application/dicom; transfer-syntax={JLS}"
    assert pydicom.dcmread(io.BytesIO(raw)).file_meta.TransferSyntaxUID == JLS
    decoded = archive.get("instance", 'application/dicom; transfer-syntax=*; q=0.1, application/dicom')
    assert _type(decoded) == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"  # single-part: the file


# --- the accept query parameter (PS3.18 8.7.8.1) -------------------------------------------------
@pytest.mark.parametrize(("kind", "parameter", "header", "answered"), [
    ("rendered", "text/html", "image/png", "image/png"),  # names nothing offered: the header decides
    ("thumbnail", "application/pdf", "image/webp", "image/webp"),
    ("rendered", "image/gif", "image/png", "image/gif"),  # names something offered: it decides
    ("metadata", "application/json", "application/dicom+json, application/json", "application/json"),
    ("qido", "application/json", "*/*", "application/json"),
    ("frames", f"multipart/related; type={OCTETS}", "*/*", f'multipart/related; type="{OCTETS}"'),
    ("instance", "multipart/related; type=application/dicom; transfer-syntax=*", "*/*",
     'multipart/related; type="application/dicom"'),
])
def test_the_accept_parameter_is_read_first_then_the_header(archive, kind, parameter, header, answered):
    reply = archive.get(kind, header, accept=parameter)
    assert reply.status_code == 200 and _type(reply).startswith(answered), (reply.status_code, _type(reply))
    if kind == "instance":
        assert parts_of(reply)[0][0] == f"application/dicom; transfer-syntax={JLS}"
    if kind == "qido":
        assert "accept" not in reply.headers.get("Warning", "")


@pytest.mark.parametrize("kind", ["instance", "frames", "metadata", "qido", "rendered"])
def test_the_accept_parameter_given_twice_is_400(archive, kind):
    headers = {**archive.node.headers(), "Accept": "*/*"}
    reply = archive.node.client.get(f"{archive.resource(kind)}?accept=image/png&accept=image/jpeg", headers=headers)
    assert reply.status_code == 400 and reply.get_json()["error"]["code"] == "validation_error"
    assert "accept" in reply.get_json()["error"]["message"]


# --- names are case-insensitive, parameters may be quoted --------------------------------------
@pytest.mark.parametrize(("kind", "accept", "answered"), [
    ("frames", 'MULTIPART/Related; TYPE="Application/Octet-Stream"', f'multipart/related; type="{OCTETS}"'),
    ("rendered", "IMAGE/PNG; Q=0.9", "image/png"),
    ("metadata", "Application/JSON; charset=utf-8", "application/json"),
    ("instance", r'multipart/related; type="application/dicom"; transfer-syntax="\*"',
     'multipart/related; type="application/dicom"'),
])
def test_media_type_names_are_case_insensitive(archive, kind, accept, answered):
    reply = archive.get(kind, accept)
    assert reply.status_code == 200 and _type(reply).startswith(answered), (reply.status_code, _type(reply))


@pytest.mark.timeout(60)
def test_an_accept_of_many_refusals_is_read_in_time_ranges_by_offers(archive):
    """Each range given q=0 was compared with every other range: 20,000 ranges, half of them refusals
    (270 KB: gunicorn joins repeated Accept lines of 8 KB into one header), held a worker 160 s for
    one metadata request; the 64 KB the front lets through, 3 to 6 s. Now ranges x offers."""
    accept = ", ".join(f"image/x-{i};q=0, application/x-{i}" for i in range(10_000)) + ", */*;q=0.1"
    for kind in ("metadata", "frames", "instance", "rendered"):
        started = time.perf_counter()
        assert archive.get(kind, accept).status_code == 200
        assert time.perf_counter() - started < 5, kind
