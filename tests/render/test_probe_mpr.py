"""Readings on reformats: `GET /api/v1/records/{id}/mpr/{plane}/{index}/value` and `/stats` read
the stored values through the same plane layout the reformat image is cut with (mpr.cut_plane),
in the plane's pixel coordinates (planes[plane] columns x rows) and its own mm."""

from __future__ import annotations

import numpy as np
import pytest

from tests.render import synthetic_stacks as synth
from tests.render.synthetic import stack

AXIAL = (1, 0, 0, 0, 1, 0)
COUNT, ROWS, COLS = 6, 12, 10  # stored value at (slice k, row r, column c): r*16 + c*8 + k*100


def stored(k: int, r: int, c: int) -> int:
    return r * 16 + c * 8 + k * 100


@pytest.fixture()
def record_id(node):
    reply = node.upload(stack(AXIAL, count=COUNT, rows=ROWS, cols=COLS, pixel_spacing=(0.8, 0.5), slice_spacing=2.0))
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(30)
    return record_id


def get(node, record_id, path):
    return node.client.get(f"/api/v1/records/{record_id}/mpr/{path}", headers=node.headers())


def test_the_probe_on_a_coronal_and_a_sagittal_plane_reads_the_voxel(node, record_id):
    # coronal plane j is stored row j: patient's right on the left (columns as stored), head up
    # (the last slice, highest z, on the top row)
    reply = get(node, record_id, "coronal/7/value?x=3.5&y=1.2")
    assert reply.status_code == 200, reply.json
    assert reply.json == {"plane": "coronal", "index": 7, "x": 3, "y": 1, "stored": stored(COUNT - 2, 7, 3),
                          "value": stored(COUNT - 2, 7, 3), "unit": "HU"}
    # sagittal plane i is stored column i: anterior (row 0) on the left, head up
    reply = get(node, record_id, "sagittal/4/value?x=9&y=5")
    assert reply.json["value"] == stored(0, 9, 4)
    # an axial reformat of an axial stack is the stored slice
    assert get(node, record_id, "axial/2/value?x=6&y=11").json["value"] == stored(2, 11, 6)


def test_the_plane_size_is_the_one_published_for_it(node, record_id):
    planes = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json["planes"]
    coronal = planes["coronal"]
    assert (coronal["columns"], coronal["rows"]) == (COLS, COUNT)
    last = get(node, record_id, f"coronal/0/value?x={COLS - 0.5}&y={COUNT - 0.5}")
    assert last.status_code == 200 and last.json["value"] == stored(0, 0, COLS - 1)
    outside = get(node, record_id, f"coronal/0/value?x={COLS}&y=0")
    assert outside.status_code == 400 and outside.json["error"]["code"] == "validation_error"


def test_roi_statistics_on_a_coronal_plane_in_its_own_mm2(node, record_id):
    reply = get(node, record_id, "coronal/5/stats?shape=rect&x0=2&y0=1&x1=6&y1=3")
    assert reply.status_code == 200, reply.json
    values = np.array([[stored(COUNT - 1 - y, 5, x) for x in range(2, 6)] for y in range(1, 3)], dtype=float)
    body = reply.json
    assert body["count"] == 8 and body["mean"] == pytest.approx(values.mean())
    assert body["sd"] == pytest.approx(values.std())
    assert (body["min"], body["max"]) == (values.min(), values.max())
    assert body["area_mm2"] == pytest.approx(8 * 0.5 * 2.0)  # column 0.5 mm x slice spacing 2 mm
    sagittal = get(node, record_id, "sagittal/0/stats?shape=rect&x0=0&y0=0&x1=2&y1=1").json
    assert sagittal["area_mm2"] == pytest.approx(2 * 0.8 * 2.0)  # row 0.8 mm x slice spacing 2 mm


def test_a_slab_reading_is_of_the_slab_the_image_shows(node, record_id):
    # a 3-plane average slab of coronal planes 4..6 at (x 2, slice k): mean over rows 4..6
    reply = get(node, record_id, "coronal/5/value?x=2&y=0&slab=2.4&slab_mode=avg")
    assert reply.status_code == 200, reply.json
    assert reply.json["value"] == pytest.approx(np.mean([stored(COUNT - 1, r, 2) for r in (4, 5, 6)]))
    assert reply.json["stored"] is None or isinstance(reply.json["stored"], float)
    mip = get(node, record_id, "coronal/5/value?x=2&y=0&slab=2.4&slab_mode=mip").json
    assert mip["value"] == stored(COUNT - 1, 6, 2)


@pytest.mark.parametrize("path", [
    "oblique/0/value?x=1&y=1", "coronal/0/value?x=1", "coronal/0/stats?shape=star&x0=0&y0=0&x1=1&y1=1",
    "coronal/0/value?x=1&y=1&slab=-2", "coronal/0/value?x=1&y=1&slab_mode=sum",
])
def test_bad_plane_readings_are_400(node, record_id, path):
    reply = get(node, record_id, path)
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error", reply.json


def test_plane_readings_need_a_plane_that_exists_and_a_loaded_record(node, record_id):
    assert get(node, record_id, "coronal/12/value?x=1&y=1").status_code == 404
    assert node.client.get(f"/api/v1/records/{record_id}/mpr/coronal/0/value?x=1&y=1").status_code == 401
    reply = node.upload(stack(AXIAL, count=3))
    waiting = get(node, reply.json["id"], "coronal/0/value?x=1&y=1")
    assert waiting.status_code == 409 and waiting.json["error"]["code"] == "not_loaded"


def test_readings_on_a_reformat_of_the_second_stack_read_its_own_frames(node):
    """A field map (magnitude and phase stacks in one file): the probe on a coronal plane of stack 2
    reads stack 2's voxel (every frame is the constant value(stack, position))."""


    reply = node.upload([("fieldmap.dcm", synth.field_map(6))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
    meta = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json
    first, second = meta["stacks"][:2]
    values = set()
    for entry in (first, second):
        coronal = entry["planes"]["coronal"]
        answer = get(node, record_id, f"coronal/3/value?x=1&y={coronal['rows'] - 0.5}&stack={entry['id']}")
        assert answer.status_code == 200, answer.json
        values.add(answer.json["value"])
        stats = get(node, record_id, f"coronal/3/stats?shape=rect&x0=0&y0=0&x1={coronal['columns']}"
                                     f"&y1={coronal['rows']}&stack={entry['id']}").json
        assert stats["count"] == coronal["columns"] * coronal["rows"]
    assert len(values) == 2, "each stack is read from its own frames"
    assert {v // 1000 for v in values} == {0, 1}
    beyond = get(node, record_id, "coronal/3/value?x=1&y=1&stack=9")
    assert beyond.status_code == 404


def test_readings_on_a_time_point_copy_it_once_and_count_it(node):
    """A classic cine stored position by position: a time point's frames are not stored one after
    another, so its voxels are a copy. Readings share the reformat image's copy (made once per time
    point, counted in the record's memory) instead of copying the time point again at each reading."""
    positions, times = 4, 3
    reply = node.upload(synth.classic_cine(positions, times))
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(60)
    time_point = positions * record.pixels[0].nbytes
    for x in range(3):
        answer = get(node, record_id, f"coronal/1/value?x={x}&y=0&phase=1")
        assert answer.status_code == 200, answer.json
        assert answer.json["value"] == synth.value(0, positions - 1, 1)
    assert record.derived_bytes == time_point, "one counted copy of time point 1"
    assert get(node, record_id, "coronal/1?phase=1").status_code == 200
    assert record.derived_bytes == time_point, "the image cuts the same copy"
