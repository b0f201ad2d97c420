"""WADO-RS pixel data and bulk data of a study, a series or an instance (PS3.18 10.4.1.1.5-6,
10.4.3.3.5-6): `/pixeldata` and `/bulkdata` under each of the three resources.

Before: all six were 404 (no such route), and a study asked for as `multipart/related;
type="application/octet-stream"` was 406 without saying where its pixel data is. The current edition
answers a study, series or instance resource with instances only (Table 10.4.1-1; bulk data "was
previously listed in this table"): that 406 stays, now naming the resources that hold it.

Each part holds one instance's pixel data (or one bulk data value) and names it by Content-Location:
the element's BulkDataURI in the metadata, or, for a frame sent as stored compressed, the frame's URL.
The form is chosen by the frames' rule, per stored syntax, before the answer starts; the access check
and audit are the frames' (a token of another institution reads them as it reads frames).
"""

from __future__ import annotations

import io
import uuid

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import RLELossless, generate_uid

from daemons.render.dicomweb import multipart
from shared.tokens import generate_signing_keypair
from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import body_of, stow
from tests.render.conftest import NodeHarness, build_node, close_node
from tests.render.synthetic import to_bytes

OCTETS = 'multipart/related; type="application/octet-stream"'
AS_STORED = f"{OCTETS}; transfer-syntax=*"
SIDE_VALUE = b"\1\2\3\4" * 1024  # over the bulk threshold: a BulkDataURI of the metadata


class Archive:
    """A study of two 64x64 CT series, one Explicit VR Little Endian (its first instance also holds a
    4 kB value in a sequence item), one RLE Lossless."""

    def __init__(self, harness: NodeHarness):
        self.node = harness
        self.study = generate_uid()
        native = synthetic_series(2, study=self.study, rows=64, cols=64)
        ds = pydicom.dcmread(io.BytesIO(native[0]))
        item = Dataset()
        item.add_new(0x00091010, "OB", SIDE_VALUE)
        ds.add_new(0x00082112, "SQ", [item])
        native[0] = to_bytes(ds)
        rle = synthetic_series(2, syntax=RLELossless, study=self.study, rows=64, cols=64)
        self.files = {uids(raw)[2]: raw for raw in native + rle}
        self.native, self.rle = uids(native[0])[1], uids(rle[0])[1]
        self.native_sops = [uids(raw)[2] for raw in native]
        self.rle_sops = [uids(raw)[2] for raw in rle]
        reply = stow(harness, body_of(native + rle))
        assert reply.status_code == 200, reply.get_data(as_text=True)

    def series(self, series: str) -> str:
        return f"/dicomweb/studies/{self.study}/series/{series}"

    def get(self, path: str, accept: str | None = OCTETS, headers: dict[str, str] | None = None):
        sent = dict(self.node.headers() if headers is None else headers)
        if accept is not None:
            sent["Accept"] = accept
        reply = self.node.client.get(path, headers=sent)
        reply.get_data()  # a streamed answer is read whole, within its request
        return reply

    def metadata_uri(self, sop: str, *keys: str | int) -> str:
        """A BulkDataURI the instance's metadata gives (`keys` walk the DICOM JSON to it)."""
        series = self.native if sop in self.native_sops else self.rle
        found = self.get(f"{self.series(series)}/instances/{sop}/metadata", None).get_json()[0]
        for key in keys:
            found = found[key]
        return found["BulkDataURI"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:
    root = tmp_path_factory.mktemp("dicomweb-bulkdata")
    keys = root / "token.pem", root / "token.pub"
    generate_signing_keypair(*keys)
    harness = build_node(root, keys)
    yield Archive(harness)
    close_node(harness)


def parts(reply) -> list[multipart.Part]:
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.headers["Content-Type"].startswith("multipart/related")
    return multipart.split_related(reply.get_data(), multipart.boundary_of(reply.headers["Content-Type"]), 1000)


def native_pixels(raw: bytes) -> bytes:
    """The instance's pixel data as native little-endian values (decoded where stored compressed)."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    return np.ascontiguousarray(ds.pixel_array).astype(ds.pixel_array.dtype.newbyteorder("<")).tobytes()


def test_the_pixel_data_of_a_study_is_one_part_per_instance_named_by_its_bulk_data_uri(archive):
    answer = parts(archive.get(f"/dicomweb/studies/{archive.study}/pixeldata"))
    by_sop = {part.headers["content-location"].split("/instances/")[1].split("/")[0]: part for part in answer}
    assert len(answer) == len(by_sop) and set(by_sop) == set(archive.files)  # one part per instance
    for sop, part in by_sop.items():
        assert part.headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
        if sop in archive.native_sops:  # the value as stored: named by its BulkDataURI
            assert part.headers["content-location"] == archive.metadata_uri(sop, "7FE00010")
        else:  # decoded a frame at a time: each part named by its frame (here one a part)
            assert part.headers["content-location"].endswith(f"/series/{archive.rle}/instances/{sop}/frames/1")
        assert bytes(part.content) == native_pixels(archive.files[sop])
    stored = pydicom.dcmread(io.BytesIO(archive.files[archive.native_sops[1]]))
    assert bytes(by_sop[archive.native_sops[1]].content) == stored.PixelData  # uncompressed: bit-exact


def test_the_pixel_data_of_a_series_and_of_an_instance(archive):
    series = parts(archive.get(f"{archive.series(archive.rle)}/pixeldata"))
    assert [bytes(part.content) for part in series] == [native_pixels(archive.files[sop]) for sop in archive.rle_sops]
    sop = archive.native_sops[0]
    [one] = parts(archive.get(f"{archive.series(archive.native)}/instances/{sop}/pixeldata"))
    assert bytes(one.content) == pydicom.dcmread(io.BytesIO(archive.files[sop])).PixelData
    assert one.headers["content-location"] == archive.metadata_uri(sop, "7FE00010")
    unknown = generate_uid()
    for path in (f"/dicomweb/studies/{unknown}/pixeldata", f"{archive.series(unknown)}/bulkdata",
                 f"{archive.series(archive.rle)}/instances/{unknown}/pixeldata"):
        reply = archive.get(path)
        assert reply.status_code == 404 and reply.get_json()["error"]["code"] == "not_found", path


def test_compressed_pixel_data_as_stored_is_a_part_per_frame_named_by_the_frame(archive):
    answer = parts(archive.get(f"{archive.series(archive.rle)}/pixeldata", AS_STORED))
    assert len(answer) == len(archive.rle_sops)
    for part, sop in zip(answer, archive.rle_sops, strict=True):
        ds = pydicom.dcmread(io.BytesIO(archive.files[sop]))
        [stored_frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
        assert part.headers["content-type"] == f"image/dicom-rle; transfer-syntax={RLELossless}"
        assert bytes(part.content) == stored_frame
        location = part.headers["content-location"]
        assert location.endswith(f"/series/{archive.rle}/instances/{sop}/frames/1")
        [named] = parts(archive.get(location[location.index("/dicomweb/"):], AS_STORED))  # names this very part
        assert bytes(named.content) == stored_frame


def test_the_bulk_data_of_a_series_is_every_bulk_data_uri_of_its_metadata(archive):
    answer = parts(archive.get(f"{archive.series(archive.native)}/bulkdata"))
    first, second = archive.native_sops
    expected = [(archive.metadata_uri(first, "00082112", "Value", 0, "00091010"), SIDE_VALUE),
                (archive.metadata_uri(first, "7FE00010"), native_pixels(archive.files[first])),
                (archive.metadata_uri(second, "7FE00010"), native_pixels(archive.files[second]))]
    assert [(part.headers["content-location"], bytes(part.content)) for part in answer] == expected
    assert answer[0].headers["content-type"] == "application/octet-stream"
    study = parts(archive.get(f"/dicomweb/studies/{archive.study}/bulkdata"))
    assert len(study) == 3 + len(archive.rle_sops)
    instance = f"{archive.series(archive.native)}/instances/{first}/bulkdata"
    assert [bytes(part.content) for part in parts(archive.get(instance))] == [value for _, value in expected[:2]]
    small = synthetic_series(1, rows=16, cols=16)  # 512 bytes of pixel data: inline in the metadata, no bulk data
    assert stow(archive.node, body_of(small)).status_code == 200
    study, series, sop = uids(small[0])
    reply = archive.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/bulkdata")
    assert reply.status_code == 404 and "inline" in reply.get_json()["error"]["message"]


@pytest.mark.parametrize("accept", [
    'multipart/related; type="image/jls"',  # JPEG-LS: the node never compresses
    f"{OCTETS}; transfer-syntax=1.2.840.10008.1.2.4.80",
])
def test_a_compressed_series_asked_for_in_a_syntax_it_cannot_be_sent_in_is_406_naming_what_it_can(archive, accept):
    series = archive.series(archive.rle)
    for path in (f"{series}/pixeldata", f"{series}/bulkdata", f"{series}/instances/{archive.rle_sops[0]}/pixeldata",
                 f"/dicomweb/studies/{archive.study}/pixeldata", f"/dicomweb/studies/{archive.study}/bulkdata"):
        reply = archive.get(path, accept)
        assert reply.status_code == 406, (path, reply.get_data(as_text=True))
        error = reply.get_json()["error"]
        assert error["code"] == "not_acceptable"
        assert "application/octet-stream" in error["message"] and "transfer-syntax=*" in error["message"]
        if "/series/" in path:  # a study names the first of its syntaxes refused (its native series may come first)
            assert RLELossless in error["message"] and "image/dicom-rle" in error["message"]


def test_a_study_asked_for_as_octet_stream_is_406_naming_the_resources_that_hold_it(archive):
    reply = archive.get(f"/dicomweb/studies/{archive.study}")
    assert reply.status_code == 406
    assert "/pixeldata" in reply.get_json()["error"]["message"]


def test_tokens_get_the_same_answer_as_for_the_frames(archive):
    """Reading pixel data is open across institutions as frames are (audited); a token not for this node,
    or none, is the frames' 401."""
    node = archive.node
    elsewhere, _ = node.issuer.issue(str(uuid.uuid4()), "u", "physician", node.institution_id,
                                     audience="https://render-9.test")
    instance = f"{archive.series(archive.native)}/instances/{archive.native_sops[0]}"
    tokens = {"foreign physician": node.headers("physician", str(uuid.uuid4())),
              "foreign administrator": node.headers("instadmin", str(uuid.uuid4())),
              "sysadmin": node.headers("sysadmin", str(uuid.uuid4())),
              "another node's": {"Authorization": f"Bearer {elsewhere}"}, "none": {}}
    for who, headers in tokens.items():
        frames = archive.get(f"{instance}/frames/1", headers=headers)
        for path in (f"{instance}/pixeldata", f"{instance}/bulkdata", f"{archive.series(archive.native)}/pixeldata",
                     f"/dicomweb/studies/{archive.study}/bulkdata"):
            reply = archive.get(path, headers=headers)
            assert reply.status_code == frames.status_code, (who, path, reply.get_data(as_text=True))
            if frames.status_code != 200:
                refused, expected = reply.get_json()["error"], frames.get_json()["error"]
                assert (refused["code"], refused["message"]) == (expected["code"], expected["message"]), (who, path)


def test_dicomweb_client_reads_a_series_pixel_data_over_tls(dicomweb, node_url):
    """dicomweb-client has no call of its own for these resources; its `retrieve_bulkdata` takes any
    URL, and decodes the multipart answer of the real daemons (gunicorn, TLS) into the parts' bytes."""
    files = synthetic_series(2, syntax=RLELossless, rows=64, cols=64)
    study, series, _ = uids(files[0])
    client = dicomweb("physician")
    client.store_instances([pydicom.dcmread(io.BytesIO(raw)) for raw in files])
    url = f"{node_url}/dicomweb/studies/{study}/series/{series}/pixeldata"
    values = client.retrieve_bulkdata(url, media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert values == [native_pixels(raw) for raw in files]
    frames = client.retrieve_bulkdata(url, media_types=(("application/octet-stream", "*"),))
    assert frames == [next(generate_frames(pydicom.dcmread(io.BytesIO(raw)).PixelData, number_of_frames=1))
                      for raw in files]


def test_a_bare_octet_stream_takes_the_parts_of_bulkdata_as_it_does_of_pixeldata(archive):
    """Before: a bare `Accept: application/octet-stream` was 200 on `/pixeldata` but 406 on `/bulkdata`, even
    for an instance of one bulk value: both are resources of (possibly) several parts, and a bare type names
    their parts' type on both (`accept.Offer.loose`)."""
    native, rle = archive.series(archive.native), archive.series(archive.rle)
    for path in (f"{native}/instances/{archive.native_sops[1]}/bulkdata",  # one bulk value: its pixel data
                 f"{native}/instances/{archive.native_sops[0]}/bulkdata", f"{rle}/bulkdata",
                 f"/dicomweb/studies/{archive.study}/bulkdata",
                 f"{native}/instances/{archive.native_sops[1]}/pixeldata"):
        answer = parts(archive.get(path, "application/octet-stream"))
        assert answer and all(part.headers["content-type"].startswith("application/octet-stream") for part in answer)
    answer = parts(archive.get(f"{native}/bulkdata", "application/octet-stream"))
    assert [bytes(part.content) for part in answer][0] == SIDE_VALUE
    refused = archive.get(f"{native}/bulkdata", "application/octet-stream;q=0, application/dicom")
    assert refused.status_code == 406 and refused.get_json()["error"]["code"] == "not_acceptable"


def test_octet_stream_is_required_only_where_a_value_other_than_pixel_data_is_bulk_data(archive):
    """Before: `Accept: image/dicom-rle` (or image/jp2) on the bulk data of compressed instances whose one bulk
    value is their pixel data was 406 "bulk data is sent as application/octet-stream parts"; it is the frames
    as stored. Only a value other than pixel data needs an application/octet-stream part."""
    for accept in ("image/dicom-rle", 'multipart/related; type="image/dicom-rle"'):
        for path in (f"{archive.series(archive.rle)}/bulkdata",
                     f"{archive.series(archive.rle)}/instances/{archive.rle_sops[0]}/bulkdata"):
            answer = parts(archive.get(path, accept))
            assert [part.headers["content-type"] for part in answer] == \
                [f"image/dicom-rle; transfer-syntax={RLELossless}"] * len(answer), (path, accept)
    ds = pydicom.dcmread(io.BytesIO(synthetic_series(1, syntax=RLELossless, rows=64, cols=64)[0]))
    item = Dataset()
    item.add_new(0x00091010, "OB", SIDE_VALUE)
    ds.add_new(0x00082112, "SQ", [item])
    assert stow(archive.node, body_of([to_bytes(ds)])).status_code == 200
    study, series, sop = uids(to_bytes(ds))
    instance = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    reply = archive.get(f"{instance}/bulkdata", 'multipart/related; type="image/dicom-rle"')
    assert reply.status_code == 406, reply.get_data(as_text=True)
    error = reply.get_json()["error"]
    assert (error["code"], error["message"]) == (
        "not_acceptable", "values other than pixel data are sent as application/octet-stream: add it to Accept")
    answer = parts(archive.get(f"{instance}/bulkdata", 'multipart/related; type="image/dicom-rle", '
                               'multipart/related; type="application/octet-stream"; q=0.5'))
    assert [part.headers["content-type"].split(";")[0] for part in answer] == ["application/octet-stream",
                                                                                "image/dicom-rle"]
    assert bytes(answer[0].content) == SIDE_VALUE


@pytest.mark.parametrize(("resource", "accept"), [
    ("rle/bulkdata", None), ("rle/bulkdata", "*/*"), ("rle/pixeldata", None), ("rle/pixeldata", AS_STORED),
    ("native/bulkdata", None), ("native/pixeldata", None), ("study/pixeldata", None), ("study/bulkdata", None),
    ("study/pixeldata", AS_STORED), ("rle/bulkdata", "image/dicom-rle"),
])
def test_the_answer_type_is_that_of_its_first_part(archive, resource, accept):
    """RFC 2387: `type` is the root (first) part's media type. Before: a `/bulkdata` answer (and a study's
    `/pixeldata` of several forms) said type="application/octet-stream" while its parts were image/dicom-rle."""
    where, what = resource.split("/")
    base = f"/dicomweb/studies/{archive.study}" if where == "study" else archive.series(getattr(archive, where))
    reply = archive.get(f"{base}/{what}", accept)
    answer = parts(reply)
    declared = multipart.media_type(reply.headers["Content-Type"])[1]["type"]
    assert declared == multipart.media_type(answer[0].headers["content-type"])[0], reply.headers["Content-Type"]
