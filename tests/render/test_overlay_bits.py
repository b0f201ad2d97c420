"""Overlay planes are read bit by bit where they fall on the image (daemons.render.imaging.overlays):
an overlay's size is its own, not the image's, so a large one must cost what the image shows."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pack_bits

from daemons.render.imaging.overlays import overlay_mask
from tests.render.synthetic import dataset, to_bytes


def _overlay(ds: Dataset, rows: int, cols: int, data: bytes, origin=(1, 1), frames: int | None = None,
             frame_origin: int = 1) -> Dataset:
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", list(origin))
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    if frames is not None:
        ds.add_new(0x60000015, "IS", frames)
        ds.add_new(0x60000051, "US", frame_origin)
    ds.add_new(0x60003000, "OW", data)
    return ds


def _reference(ds: Dataset, frame: int, rows: int, cols: int) -> np.ndarray | None:
    """The mask as pydicom's whole-overlay unpacking (`Dataset.overlay_array`) places it."""
    count = int(ds.get(0x60000015).value) if 0x60000015 in ds else 0
    first = int(ds[0x60000051].value) - 1 if 0x60000051 in ds else 0
    if count and not first <= frame < first + count:
        return None
    bitmap = ds.overlay_array(0x6000)
    if bitmap.ndim == 3:
        bitmap = bitmap[frame - first]
    top, left = (int(v) - 1 for v in ds[0x60000050].value)
    mask = np.zeros((rows, cols), dtype=bool)
    for r in range(max(top, 0), min(top + bitmap.shape[0], rows)):
        for c in range(max(left, 0), min(left + bitmap.shape[1], cols)):
            mask[r, c] = bitmap[r - top, c - left] != 0
    return mask


@pytest.mark.parametrize("shape, origin, frames", [
    ((7, 13), (1, 1), None), ((7, 13), (-2, 4), None), ((9, 5), (3, -1), 3), ((1, 29), (6, -7), 4),
    ((20, 20), (-3, -3), 2), ((5, 3), (9, 9), None),
])
def test_the_bits_read_are_the_bits_pydicom_unpacks(shape, origin, frames):
    """Overlays of odd sizes (rows crossing byte boundaries), several frames following bit after
    bit, origins above, left of and beyond the image: the same mask as unpacking them whole."""
    rng = np.random.default_rng(sum(shape) + origin[0])
    bits = rng.integers(0, 2, size=shape[0] * shape[1] * (frames or 1), dtype=np.uint8)
    ds = _overlay(Dataset(), *shape, pack_bits(bits), origin, frames, frame_origin=2 if frames else 1)
    for frame in range(6):
        expected = _reference(ds, frame, 8, 11)
        found = overlay_mask(ds, frame, 8, 11)
        if expected is None:
            assert found is None, frame
        else:
            assert found is not None and np.array_equal(found, expected), frame


def test_a_short_overlay_is_skipped_not_read_beyond_its_data():
    ds = _overlay(Dataset(), 16, 16, bytes(31))  # 32 bytes needed
    assert overlay_mask(ds, 0, 16, 16) is None


def overlay_request(node, record_id: str, frame: int = 0) -> tuple[np.ndarray, int]:
    """The frame drawn with its overlays, and the bytes the request held at its peak."""
    tracemalloc.start()
    try:
        reply = node.client.get(f"/api/v1/records/{record_id}/frames/{frame}?overlays=true&format=png",
                                headers=node.headers())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply.status_code == 200, reply.json
    return np.asarray(Image.open(io.BytesIO(reply.data))), peak


def test_a_large_overlay_over_a_small_image_costs_what_the_image_shows(node):
    """A 64x64 CT whose overlay plane is 8192 x 8192 bits (8 MB in the file; the largest plane the
    node shows, test_overlay_bounds): the frame drawn with its overlays unpacked the whole plane, a
    byte a bit (64 MB for one request; a 16384 x 16384 plane 256 MB). Now the request holds about
    the file it reads."""
    size = 8192
    ds = dataset(64, 64)
    ds.PixelSpacing = [1.0, 1.0]
    _overlay(ds, size, size, np.full(size * size // 8, 0x55, dtype=np.uint8).tobytes())
    record_id, _ = node.load([("overlay.dcm", to_bytes(ds))])
    _, peak = overlay_request(node, record_id)
    packed = size * size // 8
    assert peak < 3 * packed, f"{peak / 2**20:.0f} MiB held for a {packed / 2**20:.0f} MiB overlay"


def test_the_overlays_of_a_multi_frame_file_are_read_from_the_store_once(node, monkeypatch):
    """Each frame's first overlay request read and parsed the whole stored file: scrolling a
    multi-frame file with its overlays on read it once a frame (a 300 MB enhanced file, 300 frames:
    90 GB). Now a file's overlay planes are kept parsed while it is among the last asked for."""
    frames = 20
    ds = dataset(32, 32)
    ds.NumberOfFrames = frames
    ds.PixelData = np.zeros((frames, 32, 32), dtype=np.int16).tobytes()
    _overlay(ds, 32, 32, np.full(32 * 32 * frames // 8, 0x0F, dtype=np.uint8).tobytes(), frames=frames)
    record_id, _ = node.load([("multiframe.dcm", to_bytes(ds))])
    store = node.app.extensions["sivr_node"].store
    reads = []
    read_file = store.read_file
    monkeypatch.setattr(store, "read_file", lambda *args, **kwargs: reads.append(args) or read_file(*args, **kwargs))
    shown = []
    for frame in range(frames):
        image, _ = overlay_request(node, record_id, frame)
        shown.append(image)
    assert len(reads) == 1, f"the file was read {len(reads)} times for {frames} frames' overlays"
    assert all(np.array_equal(image, shown[0]) for image in shown)
    assert (shown[0] == 255).any(), "the overlay is drawn"
