"""WADO-RS answers that decode or re-encode what is stored: instances stored big-endian, in the
retired JPEG syntaxes pydicom cannot decode, and uncompressed YBR_FULL_422 frames. Each gave a 500 or
wrong bytes (found by attacking the DICOMweb door); the node now decodes them as it renders them."""

from __future__ import annotations

import base64
import io

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRBigEndian, generate_uid

from tests.dicomweb.conftest import synthetic_series
from tests.dicomweb.test_stow_wado import body_of, parts_of, stow
from tests.render.synthetic import big_endian_copy, dataset, progressive_jpeg_instance

OCTETS = {"Accept": "multipart/related; type=application/octet-stream"}


def path_of(ds: pydicom.Dataset) -> str:
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def get(node, path: str, headers: dict | None = None):
    return node.client.get(path, headers={**node.headers(), **(headers or {})})


def test_an_instance_stored_big_endian_is_answered_little_endian(node):
    """Default retrieve re-encodes it as Explicit VR Little Endian (pydicom's save_as refused to change
    the byte order: a 500, for the instance and its whole study); its pixels, /metadata InlineBinary
    and bulk data read little-endian (PS3.18 F.2.7), as the stored values were."""
    [little] = synthetic_series(1, rows=8, cols=8)
    expected = pydicom.dcmread(io.BytesIO(little)).pixel_array
    raw, ds = big_endian_copy(little)
    assert stow(node, body_of([raw])).status_code == 200
    for path in (path_of(ds), f"/dicomweb/studies/{ds.StudyInstanceUID}"):
        answer = get(node, path)
        assert answer.status_code == 200, answer.get_data()[:300]
        [(_, sent)] = parts_of(answer)
        copy = pydicom.dcmread(io.BytesIO(sent))
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert np.array_equal(copy.pixel_array, expected)
        assert np.frombuffer(copy[0x00091011].value, "<u2").tolist() == list(range(1, 9))
    metadata = get(node, f"{path_of(ds)}/metadata").get_json()[0]
    inline = metadata["00091011"]["InlineBinary"]
    assert np.frombuffer(base64.b64decode(inline), "<u2").tolist() == list(range(1, 9))
    [(_, bulk)] = parts_of(get(node, f"{path_of(ds)}/bulk/00091011", OCTETS))
    assert np.frombuffer(bulk, "<u2").tolist() == list(range(1, 9))
    [(_, frame)] = parts_of(get(node, f"{path_of(ds)}/frames/1", OCTETS))
    assert frame == expected.astype(expected.dtype.newbyteorder("<")).tobytes()


def test_frames_and_instances_of_a_syntax_only_the_nodes_decoder_reads_are_decoded(node):
    """The node renders JPEG Full Progression with libjpeg, but /frames, bulk pixel data and the
    default (decompressed) retrieve used pydicom's decoders only, which have none: 500s."""
    pixels = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    raw, ds, decoded = progressive_jpeg_instance(pixels)
    assert stow(node, body_of([raw])).status_code == 200
    assert get(node, f"{path_of(ds)}/rendered", {"Accept": "image/png"}).status_code == 200
    for sub in ("/frames/1", "/bulk/7FE00010"):
        answer = get(node, path_of(ds) + sub, OCTETS)
        assert answer.status_code == 200, (sub, answer.get_data()[:300])
        [(content_type, frame)] = parts_of(answer)
        assert "transfer-syntax=1.2.840.10008.1.2.1" in content_type
        assert frame == decoded.tobytes()
    answer = get(node, path_of(ds))
    assert answer.status_code == 200, answer.get_data()[:300]
    [(_, sent)] = parts_of(answer)
    copy = pydicom.dcmread(io.BytesIO(sent))
    assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and copy.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(copy.pixel_array, decoded)


def test_uncompressed_ybr_full_422_frames_are_sent_whole(node):
    """Two luminance samples share one Cb and one Cr: a frame is Rows x Columns x 2 bytes, not x 3.
    Frame 1 was sent with half of frame 2, and frame 2 was cut in half."""
    rows, cols = 4, 6
    ds = dataset(rows, cols, series=generate_uid())
    ds.StudyInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.NumberOfFrames = 2
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            del ds[keyword]
    frames = [bytes((n * 7 + k) % 256 for k in range(rows * cols * 2)) for n in range(2)]
    ds.PixelData = b"".join(frames)
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert stow(node, body_of([out.getvalue()])).status_code == 200
    for number, expected in enumerate(frames, start=1):
        [(_, frame)] = parts_of(get(node, f"{path_of(ds)}/frames/{number}", OCTETS))
        assert frame == expected


def test_a_multi_frame_instance_of_a_retired_jpeg_syntax_keeps_its_frames_when_decompressed(node):
    """Decompressed, a multi-frame file keeps NumberOfFrames (an Enhanced or multi-frame object must
    have it, also with one frame) and every frame."""
    pixels = (np.arange(16 * 16).reshape(16, 16) * 3 % 251).astype(np.uint8)
    for frames in (1, 3):
        raw, ds, decoded = progressive_jpeg_instance(pixels, frames)
        assert stow(node, body_of([raw])).status_code == 200
        [(_, sent)] = parts_of(get(node, path_of(ds)))
        copy = pydicom.dcmread(io.BytesIO(sent))
        assert int(copy.NumberOfFrames) == frames
        assert np.array_equal(copy.pixel_array, np.stack([decoded] * 3) if frames == 3 else decoded)


def test_big_endian_colour_keeps_its_planar_configuration_and_colour_space(node):
    """Re-encoded by decoding, a big-endian planar RGB or YBR_FULL instance came out interleaved or
    as RGB while its attributes still said planar or YBR: pixels the attributes misdescribe. Its
    pixel data is now byte-swapped as it is stored (8-bit: as stored), in frames and retrieve alike."""
    rgb = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10
    for photometric, planar in (("RGB", 1), ("YBR_FULL", 0)):
        stored = rgb.transpose(2, 0, 1).copy() if planar else rgb
        ds = dataset(2, 4, series=generate_uid())
        ds.StudyInstanceUID = generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, planar
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
            if keyword in ds:
                del ds[keyword]
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=True)  # big endian, as its file meta says
        answer = stow(node, body_of([out.getvalue()]))
        assert answer.status_code == 200, answer.get_json()
        [(_, frame)] = parts_of(get(node, f"{path_of(ds)}/frames/1", OCTETS))
        assert frame == stored.tobytes(), photometric
        [(_, sent)] = parts_of(get(node, path_of(ds)))
        copy = pydicom.dcmread(io.BytesIO(sent))
        assert (copy.PhotometricInterpretation, copy.PlanarConfiguration) == (photometric, planar)
        assert copy.PixelData == stored.tobytes()


def test_each_frame_of_a_big_endian_multi_frame_instance_is_its_own_samples(node):
    """A frame is cut from the stored bytes and only its words swapped: each of three 16-bit frames
    comes back as its little-endian samples."""
    frames = [np.arange(12, dtype=np.int16).reshape(3, 4) * (n + 1) - 5 for n in range(3)]
    ds = dataset(3, 4, series=generate_uid())
    ds.StudyInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.NumberOfFrames = 3
    ds.PixelData = b"".join(frame.astype(">i2").tobytes() for frame in frames)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    answer = stow(node, body_of([out.getvalue()]))
    assert answer.status_code == 200, answer.get_json()
    for number, frame in enumerate(frames, start=1):
        [(_, sent)] = parts_of(get(node, f"{path_of(ds)}/frames/{number}", OCTETS))
        assert sent == frame.astype("<i2").tobytes(), number
