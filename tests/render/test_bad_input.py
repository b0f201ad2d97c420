"""Bad uploads: a 4xx whose code and message name the reason, and nothing stored."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def _dataset(rows: int = 8, cols: int = 8, series: str | None = None, pixels: bool = True,
             position: float = 0.0, orientation=(1, 0, 0, 0, 1, 0)) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series or "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [0, 0, position]
    if pixels:
        ds.PixelData = (np.arange(rows * cols, dtype=np.int16) + int(position)).tobytes()
    return ds


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _cases(dicom_dir: Path) -> dict[str, tuple[list[tuple[str, bytes]], int, str]]:
    huge = _dataset(pixels=False)
    huge.Rows, huge.Columns = 65535, 65535
    huge.PixelData = b"\x00" * 64
    many_frames = _dataset()
    many_frames.NumberOfFrames = 100000
    jpeg_process_10 = dicom_dir / "cornerstone-ct-ts-matrix" / (
        "CTImage.dcm_JPEGProcess10_12TransferSyntax_1.2.840.10008.1.2.4.55.dcm")  # no decoder exists
    short = _bytes(_dataset(rows=64, cols=64))
    garbage_rle = _dataset(position=1)
    garbage_rle.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    garbage_rle.PixelData = encapsulate([b"\x07\x00\x00\x00" + b"\xff" * 200])
    return {
        "garbage RLE beside a good slice": ([("a.dcm", _bytes(_dataset())), ("rle.dcm", _bytes(garbage_rle))],
                                            422, "undecodable_pixels"),
        "not DICOM": ([("notes.dcm", b"this is a text file, not an image" * 10)], 400, "not_dicom"),
        "no pixels": ([("report.dcm", _bytes(_dataset(pixels=False)))], 422, "no_pixel_data"),
        "truncated MR": ([("MR_truncated.dcm", (dicom_dir / "pydicom" / "MR_truncated.dcm").read_bytes())],
                         422, "truncated"),
        "cut short": ([("cut.dcm", short[: len(short) - 1000])], 422, "truncated"),
        "huge dimensions": ([("huge.dcm", _bytes(huge))], 413, "over_limits"),
        "too many frames": ([("frames.dcm", _bytes(many_frames))], 413, "over_limits"),
        "undecodable syntax": ([("jpeg12.dcm", jpeg_process_10.read_bytes())], 415, "undecodable_syntax"),
        "empty file": ([("empty.dcm", b"")], 400, "empty_upload"),
        "mixed series": ([("a.dcm", _bytes(_dataset(series="1.2.3.4.1"))),
                          ("b.dcm", _bytes(_dataset(series="1.2.3.4.2", position=1)))], 422, "inconsistent_series"),
        "mixed sizes": ([("a.dcm", _bytes(_dataset())), ("b.dcm", _bytes(_dataset(rows=16, position=1)))],
                        422, "inconsistent_series"),
        "mixed orientation": ([("a.dcm", _bytes(_dataset())),
                               ("b.dcm", _bytes(_dataset(position=1, orientation=(0, 1, 0, 0, 0, -1))))],
                              422, "inconsistent_series"),
        "one bad file in a good series": ([("a.dcm", _bytes(_dataset())), ("b.txt", b"%PDF-1.4 not dicom" * 20)],
                                          400, "not_dicom"),
        "an empty file in a good series": ([("a.dcm", _bytes(_dataset())), ("nothing.dcm", b"")], 400, "empty_file"),
    }


CASE_NAMES = ["garbage RLE beside a good slice", "not DICOM", "no pixels", "truncated MR", "cut short", "huge dimensions", "too many frames",
              "undecodable syntax", "empty file", "mixed series", "mixed sizes", "mixed orientation",
              "one bad file in a good series", "an empty file in a good series"]


def _nothing_stored(node) -> None:
    assert node.client.get("/api/v1/records", headers=node.headers()).json["total"] == 0
    assert [p for p in (node.root / "store").iterdir()] == []


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_upload_is_refused_with_its_reason(node, dicom_dir, case):
    files, status, code = _cases(dicom_dir)[case]
    reply = node.upload(files)
    assert reply.status_code == status, reply.json
    error = reply.json["error"]
    assert error["code"] == code and len(error["message"]) > 10
    named = [name for name, data in files if name in error["message"]]
    assert named or code == "inconsistent_series" or code == "empty_upload"
    _nothing_stored(node)


def test_upload_without_files_field(node):
    reply = node.client.post("/api/v1/records", data={}, headers=node.headers(), content_type="multipart/form-data")
    assert reply.status_code == 400 and reply.json["error"]["code"] == "empty_upload"
    _nothing_stored(node)


def test_upload_over_the_size_limit(make_node):
    node = make_node(limits__max_upload_mb=1)
    big = _dataset(rows=1024, cols=1024)
    reply = node.upload([("big.dcm", _bytes(big))])
    assert reply.status_code == 413
    _nothing_stored(node)
    node.registry.shutdown()


def test_a_good_synthetic_series_is_accepted_and_sorted_by_position(node):
    files = [(f"{i}.dcm", _bytes(_dataset(position=z))) for i, z in enumerate([5.0, -2.5, 0.0, 2.5])]
    reply = node.upload(files)
    assert reply.status_code == 201 and reply.json["frames"] == 4 and reply.json["slice_spacing"] == 2.5
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(30)
    assert [int(record.pixels[i][0, 0]) for i in range(4)] == [-2, 0, 2, 5]


def test_frames_with_their_own_rescale_become_float_modality_values(node):
    ds = _dataset(rows=4, cols=4, pixels=False)
    ds.NumberOfFrames = 2
    ds.PixelData = np.array([10] * 16 + [10] * 16, dtype=np.int16).tobytes()
    frames = []
    for slope, intercept in ((1.0, -5.0), (2.0, 100.0)):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = slope, intercept
        item = Dataset()
        item.PixelValueTransformationSequence = [transform]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    reply = node.upload([("enhanced.dcm", _bytes(ds))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(30)
    assert record.pixels.dtype == np.float32 and (record.rescale_slope, record.rescale_intercept) == (1.0, 0.0)
    assert record.pixels[0, 0, 0] == 5.0 and record.pixels[1, 0, 0] == 120.0
    image = node.client.get(f"/api/v1/records/{record_id}/frames/1?window=120,10", headers=node.headers())
    assert image.status_code == 200


def test_a_series_whose_files_disagree_on_rescale_keeps_float_modality_values(node):
    first, second = _dataset(rows=4, cols=4, position=0.0), _dataset(rows=4, cols=4, position=1.0)
    first.RescaleSlope, first.RescaleIntercept = 1, -1024
    second.RescaleSlope, second.RescaleIntercept = 0.5, 0
    reply = node.upload([("a.dcm", _bytes(first)), ("b.dcm", _bytes(second))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(30) and record.pixels.dtype == np.float32
    np.testing.assert_array_equal(record.pixels[0].ravel(), np.arange(16) - 1024.0)
    np.testing.assert_array_equal(record.pixels[1].ravel(), (np.arange(16) + 1) * 0.5)
