"""A WADO-RS resource of one item answered single-part to a bare media type (PS3.18 10.4.4: "the use
of a single part Media Type is permitted for resources which are a single response item"): an
instance asked for as `Accept: application/dicom` is its Part 10 file as the body, one frame asked
for as `application/octet-stream` (or its compressed type) is that frame's bytes, one bulk data value
the value. Before, each was sent as multipart/related (a boundary, part headers, then the bytes) to
a client that asked for none: `curl -H "Accept: application/dicom" …/instances/X > x.dcm` wrote a file
no DICOM reader opens (Orthanc refuses the bare type, 400; it never answers it multipart). The
multipart answer stays the default, and a study, a series or several frames stay multipart.

In-process against a real node app (tests/render/conftest.py)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, generate_uid

from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import body_of, parts_of, stow
from tests.render.conftest import build_node, close_node
from tests.render.synthetic import dataset, to_bytes

JLS = str(JPEGLSLossless)
EXPLICIT_LE = "1.2.840.10008.1.2.1"
OCTETS = "application/octet-stream"
BULK = b"\x01\x02" * 1024  # over 1024 bytes: a BulkDataURI of the metadata


class Stored:
    """A node holding a JPEG-LS series of two instances, and a native instance of three frames with a
    private bulk data value."""

    def __init__(self, node):
        self.node = node
        self.jls_files = synthetic_series(2, syntax=JPEGLSLossless, rows=16, cols=16)
        assert stow(node, body_of(self.jls_files)).status_code == 200
        study, series, sop = uids(self.jls_files[0])
        self.series = f"/dicomweb/studies/{study}/series/{series}"
        self.jls = f"{self.series}/instances/{sop}"
        ds = dataset(4, 4, series=generate_uid(), pixels=False)
        ds.StudyInstanceUID = generate_uid()
        ds.NumberOfFrames = 3
        ds.PixelData = np.arange(3 * 16, dtype=np.int16).tobytes()
        ds.add_new(0x00090010, "LO", "SIVR TEST")
        ds.add_new(0x00091011, "OB", BULK)
        assert stow(node, body_of([to_bytes(ds)])).status_code == 200
        self.native = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                       f"/instances/{ds.SOPInstanceUID}")

    def get(self, path: str, accept: str | None):
        reply = self.node.client.get(path, headers={**self.node.headers(), **({"Accept": accept} if accept else {})})
        reply.get_data()
        return reply


@pytest.fixture(scope="module")
def stored(tmp_path_factory, token_keys):
    node = build_node(tmp_path_factory.mktemp("single-part-node"), token_keys)
    yield Stored(node)
    close_node(node)


def _type(reply) -> str:
    return reply.headers.get("Content-Type", "")


def test_an_instance_asked_for_as_application_dicom_is_its_part10_file(stored):
    reply = stored.get(stored.jls, "application/dicom")
    assert reply.status_code == 200 and _type(reply) == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    sent = pydicom.dcmread(io.BytesIO(reply.get_data()))  # the body is the file, not a multipart answer
    assert sent.file_meta.TransferSyntaxUID == EXPLICIT_LE
    original = pydicom.dcmread(io.BytesIO(stored.jls_files[0]))
    assert np.array_equal(sent.pixel_array, original.pixel_array)


def test_an_instance_asked_for_as_stored_single_part_is_the_stored_bytes(stored):
    reply = stored.get(stored.jls, "application/dicom; transfer-syntax=*")
    assert reply.status_code == 200 and _type(reply) == f"application/dicom; transfer-syntax={JLS}"
    [(_, as_stored)] = parts_of(stored.get(stored.jls, 'multipart/related; type="application/dicom"; '
                                                       "transfer-syntax=*"))
    assert reply.get_data() == as_stored
    assert pydicom.dcmread(io.BytesIO(reply.get_data())).file_meta.TransferSyntaxUID == JLS


@pytest.mark.parametrize("accept", [None, "*/*", 'multipart/related; type="application/dicom"', "multipart/*",
                                    'application/dicom; q=0.5, multipart/related; type="application/dicom"'])
def test_the_multipart_answer_stays_the_default_of_an_instance(stored, accept):
    reply = stored.get(stored.jls, accept)
    assert reply.status_code == 200 and _type(reply).startswith('multipart/related; type="application/dicom"')
    [(kind, _)] = parts_of(reply)
    assert kind == f"application/dicom; transfer-syntax={EXPLICIT_LE}"


def test_multipart_refused_leaves_an_instance_its_single_part_answer(stored):
    """`multipart/related; type="*/*"; q=0, */*`: every multipart answer refused, anything else
    taken: 406 where the node had no single-part answer, the file now."""
    reply = stored.get(stored.jls, 'multipart/related; type="*/*"; q=0, */*')
    assert reply.status_code == 200 and _type(reply).startswith("application/dicom;")
    assert stored.get(stored.series, 'multipart/related; type="*/*"; q=0, */*').status_code == 406


def test_a_series_asked_for_as_application_dicom_stays_multipart(stored):
    reply = stored.get(stored.series, "application/dicom")
    assert reply.status_code == 200 and _type(reply).startswith('multipart/related; type="application/dicom"')
    assert len(parts_of(reply)) == 2


@pytest.mark.parametrize(("accept", "expected_type"), [
    (OCTETS, f"{OCTETS}; transfer-syntax={EXPLICIT_LE}"),
    ("image/jls", f"image/jls; transfer-syntax={JLS}"),
    (f"{OCTETS}; transfer-syntax=*", f"image/jls; transfer-syntax={JLS}"),
])
def test_one_frame_asked_for_single_part_is_its_bytes(stored, accept, expected_type):
    reply = stored.get(f"{stored.jls}/frames/1", accept)
    assert reply.status_code == 200 and _type(reply) == expected_type, (reply.status_code, _type(reply))
    multipart_accept = f'multipart/related; type="{accept.split(";")[0]}"' + (
        "; transfer-syntax=*" if "transfer-syntax" in accept else "")
    [(kind, frame)] = parts_of(stored.get(f"{stored.jls}/frames/1", multipart_accept))
    assert kind == expected_type and reply.get_data() == frame


def test_frames_of_a_native_instance_single_and_several(stored):
    one = stored.get(f"{stored.native}/frames/2", OCTETS)
    assert one.status_code == 200 and _type(one) == f"{OCTETS}; transfer-syntax={EXPLICIT_LE}"
    assert one.get_data() == np.arange(16, 32, dtype=np.int16).tobytes()
    several = stored.get(f"{stored.native}/frames/1,2", OCTETS)
    assert several.status_code == 200 and _type(several).startswith(f'multipart/related; type="{OCTETS}"')
    assert [frame for _, frame in parts_of(several)][1] == one.get_data()
    assert _type(stored.get(f"{stored.native}/frames/2", None)).startswith("multipart/related")


def test_a_bulk_data_value_asked_for_single_part_is_the_value(stored):
    reply = stored.get(f"{stored.native}/bulk/00091011", OCTETS)
    assert reply.status_code == 200 and _type(reply) == OCTETS and reply.get_data() == BULK
    default = stored.get(f"{stored.native}/bulk/00091011", None)
    assert _type(default).startswith(f'multipart/related; type="{OCTETS}"') and parts_of(default) == [(OCTETS, BULK)]
    assert stored.get(f"{stored.native}/bulk/00091011", "image/png").status_code == 406


def test_the_pixel_data_of_a_single_frame_instance_is_one_item(stored):
    reply = stored.get(f"{stored.jls}/bulk/7FE00010", "image/jls")
    assert reply.status_code == 200 and _type(reply) == f"image/jls; transfer-syntax={JLS}"
    several = stored.get(f"{stored.native}/bulk/7FE00010", OCTETS)  # three frames: multipart
    assert _type(several).startswith(f'multipart/related; type="{OCTETS}"') and len(parts_of(several)) == 3


def test_dicomweb_client_and_a_plain_http_client_against_the_real_daemons(deployment, dicomweb):
    """Through gunicorn and TLS: dicomweb-client's own retrievals (multipart, as it always asks) are
    unchanged, and the same session asking `application/dicom` gets the file, `application/octet-stream`
    on `frames/1` the frame's bytes."""
    files = synthetic_series(1, syntax=JPEGLSLossless, rows=16, cols=16)
    client = dicomweb()
    client.store_instances([pydicom.dcmread(io.BytesIO(raw)) for raw in files])
    study, series, sop = uids(files[0])
    assert client.retrieve_instance(study, series, sop).SOPInstanceUID == sop
    [frame] = client.retrieve_instance_frames(study, series, sop, [1], media_types=((OCTETS, EXPLICIT_LE),))
    url = f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}"
    whole = client._session.get(url, headers={"Accept": "application/dicom"}, timeout=60)
    assert whole.status_code == 200 and whole.headers["Content-Type"].startswith("application/dicom;")
    assert pydicom.dcmread(io.BytesIO(whole.content)).SOPInstanceUID == sop
    one = client._session.get(f"{url}/frames/1", headers={"Accept": OCTETS}, timeout=60)
    assert one.status_code == 200 and one.content == frame and len(frame) == 16 * 16 * 2


@pytest.mark.parametrize("accept", ["image/png", "application/dicom; q=0, */*"])
def test_an_instance_refused_is_told_both_of_its_answers(stored, accept):
    """The 406 of an instance said it was sent as multipart/related only, which sent a client that
    asked `image/png` away from the single-part `application/dicom` the instance also answers to."""
    reply = stored.get(stored.jls, accept)
    assert reply.status_code == 406
    message = reply.get_json()["error"]["message"]
    assert "application/dicom (its Part 10 file" in message and "only" not in message, message
    series = stored.get(stored.series, accept)  # a series is multipart only, and says so
    assert series.status_code == 406 and series.get_json()["error"]["message"].endswith("only")
