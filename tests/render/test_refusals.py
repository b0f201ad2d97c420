"""Valid, displayable images the node used to refuse (issue 14, correctness 3), built with pydicom.

12-bit JPEG Extended and retired progressive JPEG, a big-endian segmented palette, a Modality LUT
encoded OW, Pixel Spacing 0\\0, and a multi-frame file with some short or undecodable frames.
Real files (NEMA WG04 NM1_JPLY, the retired .53/.55 CT slices) are checked in
test_dcmtk_compare.py when ../shared/data is present.
"""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from daemons.render.imaging.decode import decode_frames
from daemons.render.ingest.series_analysis import parse_upload
from daemons.render.ingest.upload_checks import UploadError
from tests.render.synthetic import dataset, to_bytes
from tests.render.test_dcmtk_compare import LIMITS

SIDE = 32


def _decoded(raw: bytes, frame: int = 0) -> np.ndarray:
    parsed = parse_upload([("f.dcm", raw)], LIMITS)
    layout = parsed.manifest.render.layout
    return next(decode_frames(raw, layout, [frame], parsed.files[0].pixel_offset))[1]


def _jpeg_file(syntax: str, frames: list[bytes], bits: int) -> bytes:
    ds = dataset(SIDE, SIDE, pixels=False)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, bits - 1, 0
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    return to_bytes(ds)


def _ramp(top: int) -> np.ndarray:
    return (np.add.outer(np.arange(SIDE), np.arange(SIDE)) * top // (2 * SIDE - 2)).astype(np.uint16)


def test_12_bit_jpeg_extended_is_decoded():
    ramp = _ramp(4095)
    raw = _jpeg_file(pydicom.uid.JPEGExtended12Bit, [imagecodecs.jpeg8_encode(ramp, level=95, bitspersample=12)], 12)
    decoded = _decoded(raw)
    assert decoded.dtype == np.uint16 and np.abs(decoded.astype(int) - ramp).max() <= 8


def test_retired_progressive_jpeg_is_decoded_not_415():
    ramp = _ramp(255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, "JPEG", quality=95, progressive=True)
    raw = _jpeg_file("1.2.840.10008.1.2.4.55", [out.getvalue()], 8)
    decoded = _decoded(raw)
    assert np.abs(decoded.astype(int) - ramp).max() <= 4


def _segmented_palette(big_endian: bool) -> bytes:
    ds = dataset(4, 4, pixels=False)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(0, 256, 16, dtype=np.uint8).tobytes()
    for offset, end in enumerate((65535, 0, 30000)):
        ds.add_new(0x00281101 + offset, "US", [256, 0, 16])
        segments = np.array([0, 1, 0, 1, 255, end], dtype=">u2" if big_endian else "<u2")  # discrete, linear
        ds.add_new(0x00281221 + offset, "OW", segments.tobytes())
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=not big_endian, enforce_file_format=True)
    return out.getvalue()


def test_a_big_endian_segmented_palette_renders_like_its_little_endian_twin():
    little, big = _decoded(_segmented_palette(False)), _decoded(_segmented_palette(True))
    assert little.shape == (4, 4, 3) and little[3, 3, 0] > 200
    np.testing.assert_array_equal(little, big)


def _modality_lut_file(vr: str) -> bytes:
    ds = dataset(4, 4, pixels=False)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = np.arange(16, dtype=np.uint16).tobytes()
    item = Dataset()
    item.add_new(0x00283002, "US", [16, 0, 16])
    table = np.arange(16, dtype="<u2") * 1000
    item.add_new(0x00283006, vr, table.tobytes() if vr == "OW" else table.tolist())
    item.ModalityLUTType = "HU"
    ds.ModalityLUTSequence = [item]
    return to_bytes(ds)


def test_a_modality_lut_encoded_ow_is_read_like_its_us_twin():
    ow = parse_upload([("ow.dcm", _modality_lut_file("OW"))], LIMITS).manifest.render.modality_lut
    us = parse_upload([("us.dcm", _modality_lut_file("US"))], LIMITS).manifest.render.modality_lut
    assert ow == us and ow["data"][:3] == [0, 1000, 2000]


def test_pixel_spacing_zero_is_unknown_spacing_with_a_warning(node):
    ds = dataset(4, 6)
    ds.PixelSpacing = [0, 0]
    reply = node.upload([("zero.dcm", to_bytes(ds))])
    assert reply.status_code == 201, reply.json
    assert reply.json["pixel_spacing"] is None
    assert any("PixelSpacing" in w and "mm" in w for w in reply.json["warnings"])
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert node.registry.get_loaded(record_id).wait_complete(30)
    image = node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers())
    assert image.status_code == 200 and Image.open(io.BytesIO(image.data)).size == (6, 4)  # square pixels


def test_negative_pixel_spacing_is_still_refused():
    ds = dataset(4, 4)
    ds.PixelSpacing = [-1, 1]
    with pytest.raises(UploadError, match="negative"):
        parse_upload([("neg.dcm", to_bytes(ds))], LIMITS)


def _short_multiframe() -> bytes:
    ds = dataset(4, 4, pixels=False)
    ds.NumberOfFrames = 4
    ds.PixelData = np.arange(4 * 16, dtype=np.int16)[: 2 * 16 + 4].tobytes()  # frames 2 and 3 cut
    return to_bytes(ds)


def _partly_undecodable_multiframe() -> bytes:
    ds = dataset(SIDE, SIDE, pixels=False)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    good = imagecodecs.jpeg8_encode(_ramp(4095), level=95, bitspersample=12)
    ds.NumberOfFrames = 3
    ds.PixelData = encapsulate([good, good[:40], good])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGExtended12Bit
    return to_bytes(ds)


@pytest.mark.parametrize("build, bad", [(_short_multiframe, [2, 3]), (_partly_undecodable_multiframe, [1])])
def test_a_multiframe_file_with_bad_frames_serves_the_good_ones_and_names_the_bad(node, build, bad):
    reply = node.upload([("multi.dcm", build())])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert any("cannot be shown" in w for w in reply.json["warnings"])
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(30)
    status = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json
    assert status["state"] == "ready" and [e["frame"] for e in status["errors"]] == bad
    frames = reply.json["frames"]
    for index in range(frames):
        image = node.client.get(f"/api/v1/records/{record_id}/frames/{index}", headers=node.headers())
        if index in bad:
            assert image.status_code == 422 and image.json["error"]["code"] == "frame_error"
            assert f"frame {index}" in image.json["error"]["message"]
        else:
            assert image.status_code == 200, image.json
    mpr = node.client.get(f"/api/v1/records/{record_id}/mpr/axial/0", headers=node.headers())
    assert mpr.status_code == 422 and mpr.json["error"]["code"] == "incomplete_record"


def test_a_multiframe_file_with_more_pixel_data_than_its_frames_is_still_refused(node):
    """Short frames are kept (a cut file), but data that cannot be any frame layout of the declared
    dimensions (issue 13 item 10) is refused, also for a multi-frame file."""
    ds = dataset(4, 4, pixels=False)
    ds.NumberOfFrames = 4
    ds.PixelData = np.arange(5 * 16, dtype=np.int16).tobytes()  # a fifth frame's worth too much
    reply = node.upload([("long.dcm", to_bytes(ds))])
    assert reply.status_code == 422, reply.json
    assert "long.dcm" in reply.json["error"]["message"] and "dimensions" in reply.json["error"]["message"]


def test_a_single_frame_truncated_file_is_still_refused():
    ds = dataset(4, 4, pixels=False)
    ds.PixelData = np.arange(8, dtype=np.int16).tobytes()
    with pytest.raises(UploadError) as caught:
        parse_upload([("cut.dcm", to_bytes(ds))], LIMITS)
    assert caught.value.code == "truncated"
