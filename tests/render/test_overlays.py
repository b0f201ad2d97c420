"""Overlay planes (60xx) drawn on request (`overlays=true`), as dcmtk's dcmj2pnm draws them."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels.utils import pack_bits

from tests.render.conftest import DICOM
from tests.render.synthetic import dataset, to_bytes

ROWS, COLS = 8, 10


def _with_overlay(frames: int = 1, overlay_frames: int | None = None, frame_origin: int = 1):
    ds = dataset(ROWS, COLS, pixels=False)
    ds.NumberOfFrames = frames
    ds.PixelData = np.zeros(frames * ROWS * COLS, dtype=np.int16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 0, 200
    bitmap = np.zeros((overlay_frames or 1, 3, 4), dtype=np.uint8)
    bitmap[:, 0, :] = 1  # a bar of 4 pixels on the overlay's first row
    bitmap[:, 2, 1] = 1
    ds.add_new(0x60000010, "US", 3)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [2, 5])  # 1-based row, column of the overlay's first pixel
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    if overlay_frames:
        ds.add_new(0x60000015, "IS", overlay_frames)
        ds.add_new(0x60000051, "US", frame_origin)
    ds.add_new(0x60003000, "OW", pack_bits(bitmap.ravel()))
    return ds


def _expected() -> np.ndarray:
    mask = np.zeros((ROWS, COLS), dtype=bool)
    mask[1, 4:8] = True
    mask[3, 5] = True
    return mask


def _frame(node, record_id: str, index: int, query: str = "") -> np.ndarray:
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/{index}?{query}", headers=node.headers())
    assert reply.status_code == 200, reply.json
    return np.asarray(Image.open(io.BytesIO(reply.data)))


def _load(node, ds) -> str:
    reply = node.upload([("overlay.dcm", to_bytes(ds))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert node.registry.get_loaded(record_id).wait_complete(30)
    return record_id


def test_overlay_is_drawn_white_at_its_origin_only_when_asked(node):
    record_id = _load(node, _with_overlay())
    plain = _frame(node, record_id, 0)
    drawn = _frame(node, record_id, 0, "overlays=true")
    assert (plain == 128).all()  # value 0 at window 0/200
    np.testing.assert_array_equal(drawn == 255, _expected())
    np.testing.assert_array_equal(drawn[~_expected()], plain[~_expected()])
    cropped = _frame(node, record_id, 0, "overlays=true&region=0.4,0,1,0.5")
    np.testing.assert_array_equal(cropped == 255, _expected()[0:4, 4:10])
    bad = node.client.get(f"/api/v1/records/{record_id}/frames/0?overlays=maybe", headers=node.headers())
    assert bad.status_code == 400


def test_a_multiframe_overlay_covers_the_frames_from_its_image_frame_origin(node):
    record_id = _load(node, _with_overlay(frames=3, overlay_frames=2, frame_origin=2))
    assert not (_frame(node, record_id, 0, "overlays=true") == 255).any()
    for index in (1, 2):
        np.testing.assert_array_equal(_frame(node, record_id, index, "overlays=true") == 255, _expected())


@pytest.mark.skipif(shutil.which("dcmj2pnm") is None, reason="dcmtk (dcmj2pnm) not installed")
def test_the_overlay_matches_dcmtk(node, tmp_path):
    ds = _with_overlay()
    path = tmp_path / "overlay.dcm"
    path.write_bytes(to_bytes(ds))
    subprocess.run(["dcmj2pnm", "--write-png", "+Wi", "1", str(path), str(tmp_path / "d.png")], check=True)
    theirs = np.asarray(Image.open(tmp_path / "d.png"))
    ours = _frame(node, _load(node, ds), 0, "overlays=true")
    assert np.abs(ours.astype(int) - theirs).max() <= 1


@pytest.mark.skipif(shutil.which("dcmj2pnm") is None, reason="dcmtk (dcmj2pnm) not installed")
def test_a_real_file_with_overlays_matches_dcmtk(node, tmp_path):
    path = DICOM / "pydicom-data" / "MR-SIEMENS-DICOM-WithOverlays.dcm"
    if not path.is_file():
        pytest.skip(f"real DICOM data absent: {path}")
    subprocess.run(["dcmj2pnm", "--write-png", "+Wi", "1", str(path), str(tmp_path / "d.png")], check=True)
    theirs = np.asarray(Image.open(tmp_path / "d.png"))
    reply = node.upload([path])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert node.registry.get_loaded(record_id).wait_complete(30)
    ours = _frame(node, record_id, 0, "overlays=true")
    assert (ours == 255).sum() > 100 and np.abs(ours.astype(int) - theirs).max() <= 1


def test_the_overlay_of_a_grown_series_is_read_from_its_own_file(node):
    """A series that grew stores files in arrival order, not slice order: each frame's overlay is
    read from the file the manifest names for that frame (its `blob`), not from the blob at its
    position."""
    plain = dataset(ROWS, COLS, position=10.0)
    plain.WindowCenter, plain.WindowWidth = 0, 200
    marked = _with_overlay()
    marked.ImagePositionPatient = [0, 0, 0.0]
    for ds, name in ((plain, "plain.dcm"), (marked, "marked.dcm")):  # the marked one arrives second
        reply = node.upload([(name, to_bytes(ds))])
        assert reply.status_code in (200, 201), reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert node.registry.get_loaded(record_id).wait_complete(30)
    meta = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json
    marked_index = next(i for i, s in enumerate(meta["slices"]) if s["position"][2] == 0.0)
    np.testing.assert_array_equal(_frame(node, record_id, marked_index, "overlays=true") == 255, _expected())
    assert not (_frame(node, record_id, 1 - marked_index, "overlays=true") == 255).any()


def test_a_plane_that_cannot_be_read_is_skipped_and_the_others_drawn(node):
    """Overlay Data shorter than the plane's rows and columns say (pydicom's ValueError), or an origin
    of one value: the frame was a 500 with overlays on, which the viewer always asks."""
    ds = _with_overlay()
    ds.add_new(0x60020010, "US", 16)
    ds.add_new(0x60020011, "US", 16)
    ds.add_new(0x60020040, "CS", "G")
    ds.add_new(0x60020100, "US", 1)
    ds.add_new(0x60020102, "US", 0)
    ds.add_new(0x60023000, "OW", b"\xff\xff")  # 16 bits for a 256-pixel plane
    ds.add_new(0x60040010, "US", 3)
    ds.add_new(0x60040011, "US", 4)
    ds.add_new(0x60040040, "CS", "G")
    ds.add_new(0x60040050, "SS", 3)  # an origin of one value, not (row, column)
    ds.add_new(0x60040100, "US", 1)
    ds.add_new(0x60040102, "US", 0)
    ds.add_new(0x60043000, "OW", b"\xff\xff")
    record_id = _load(node, ds)
    image = _frame(node, record_id, 0, "overlays=true")
    np.testing.assert_array_equal(image == 255, _expected())
