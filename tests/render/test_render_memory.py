"""What one image or reading request holds in memory beside the decoded frames (which the node's budget counts).

Frames whose values take no lookup table (32-bit, float) and every reformat go through the float
pipeline (`daemons.render.imaging.pixels.display_bytes`): taken whole, it held about 24 bytes a
pixel in temporaries, so an 8192 x 8192 frame or reformat (the largest `limits.max_rows` and
`max_columns` allow) cost 1.5 GB per request, a few requests at once more than the node's memory,
and a 64 x 64 thumbnail of it as much as the full image. Windowed in chunks it holds a few bytes
a pixel: the 8-bit image, and for a reformat its plane's stored values.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tests.render.synthetic import dataset, to_bytes

SIDE = 2048
#: Bytes a pixel of the image one request may allocate at its peak (traced by tracemalloc, as
#: NumPy reports its arrays to it): the 8-bit image, a reformat's plane of int16 (2), a chunk.
MAX_BYTES_PER_PIXEL = 8


def _slices(bits: int, count: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(7)
    files = []
    for k in range(count):
        ds = dataset(SIDE, SIDE, series="1.2.826.0.1.3680043.8.498.57.1", pixels=False, position=float(k))
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelSpacing = [0.5, 0.5]
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.InstanceNumber = k + 1
        values = rng.integers(-1000, 3000, size=(SIDE, SIDE), dtype=np.int32 if bits == 32 else np.int16)
        ds.PixelData = values.tobytes()
        files.append((f"{k}.dcm", to_bytes(ds)))
    return files


def _peak_bytes(node, url: str) -> int:
    tracemalloc.start()
    try:
        reply = node.client.get(url, headers=node.headers())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply.status_code == 200, reply.json
    return peak


@pytest.mark.parametrize(("what", "bits", "count", "path"), [
    ("a 32-bit frame", 32, 1, "frames/0"),
    ("a reformat", 16, 3, "mpr/axial/1"),
])
@pytest.mark.parametrize("query", ["window=40,400&size=64x64", "window=40,400&voi_function=sigmoid&size=64x64",
                                   "size=64x64"])
def test_an_image_request_holds_a_few_bytes_a_pixel_whatever_the_output_size(node, what, bits, count, path, query):
    record_id, _ = node.load(_slices(bits, count))
    node.client.get(f"/api/v1/records/{record_id}/{path}?size=8x8", headers=node.headers())  # one-time work
    peak = _peak_bytes(node, f"/api/v1/records/{record_id}/{path}?{query}")
    assert peak <= MAX_BYTES_PER_PIXEL * SIDE * SIDE, f"{what}: {peak / SIDE / SIDE:.1f} bytes a pixel"


@pytest.mark.parametrize(("bits", "count", "path"), [(32, 1, "frames/0"), (16, 3, "mpr/axial/1")])
@pytest.mark.parametrize("shape", ["rect", "ellipse"])
def test_an_roi_over_the_whole_image_holds_a_few_bytes_a_pixel(node, bits, count, path, shape):
    """ROI statistics (`imaging.probe.shape_stats`) read the shape's values in chunks too: the whole
    shape's float values and deviations, and an ellipse's float distances, were 16 to 32 bytes a pixel."""
    record_id, _ = node.load(_slices(bits, count))
    url = f"/api/v1/records/{record_id}/{path}/stats?shape={shape}&x0=0&y0=0&x1={SIDE}&y1={SIDE}"
    node.client.get(url.replace(f"x1={SIDE}&y1={SIDE}", "x1=2&y1=2"), headers=node.headers())  # one-time work
    peak = _peak_bytes(node, url)
    assert peak <= MAX_BYTES_PER_PIXEL * SIDE * SIDE, f"{path} {shape}: {peak / SIDE / SIDE:.1f} bytes a pixel"
    stats = node.client.get(url, headers=node.headers()).json
    assert stats["count"] == SIDE * SIDE if shape == "rect" else 0.78 * SIDE * SIDE < stats["count"] < SIDE * SIDE
    assert -1000 <= stats["min"] < stats["mean"] < stats["max"] <= 3000 and 1000 < stats["sd"] < 1300
