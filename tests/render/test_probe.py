"""Value probe and ROI statistics: the pure module against numpy on synthetic frames, and the node's
`/value` and `/stats` endpoints on an uploaded synthetic CT with rescale (daemons.render.imaging.probe)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from daemons.render.imaging.pixels import LutTable, Modality
from daemons.render.imaging.probe import Calibration, shape_mask, shape_stats, value_at
from tests.render.synthetic import dataset, to_bytes

CT = Calibration(Modality(2.0, -1024.0), "HU", (0.5, 0.8))


def frame(rows: int = 20, cols: int = 30) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (r * 100 + c).astype(np.int16)


def test_value_applies_rescale_and_takes_the_pixel_holding_the_point():
    pixels = frame()
    reading = value_at(pixels, 7.9, 3.0, CT)
    assert reading == {"x": 7, "y": 3, "stored": 307, "value": 307 * 2 - 1024, "unit": "HU"}
    assert value_at(pixels, 0, 0, CT)["value"] == -1024


def test_value_through_a_modality_lut_and_for_float_frames():
    table = Calibration(Modality(lut=LutTable(0, 16, np.arange(4000, dtype=np.uint16) * 3)), None, None)
    assert value_at(frame(), 5, 2, table)["value"] == 205 * 3
    floats = Calibration(Modality(), "HU", None, stored=False)
    reading = value_at(np.full((4, 4), -12.5, np.float32), 1, 1, floats)
    assert reading["stored"] is None and reading["value"] == -12.5


@pytest.mark.parametrize("point", [(30, 0), (0, 20), (-0.1, 0), (29.99, 20.01)])
def test_a_point_outside_the_frame_is_refused(point):
    with pytest.raises(ValueError):
        value_at(frame(), *point, CT)


def test_rectangle_stats_equal_numpy_over_the_same_pixels():
    pixels = frame()
    stats = shape_stats(pixels, "rect", (2, 3, 12, 8), CT)  # pixels 2..11 x 3..7
    values = pixels[3:8, 2:12].astype(float) * 2 - 1024
    assert stats["count"] == values.size == 50
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["sd"] == pytest.approx(values.std())
    assert (stats["min"], stats["max"]) == (values.min(), values.max())
    assert stats["area_mm2"] == pytest.approx(50 * 0.5 * 0.8)
    assert stats["unit"] == "HU"
    assert shape_stats(pixels, "rect", (12, 8, 2, 3), CT) == stats  # corners in any order


def test_ellipse_mask_holds_exactly_the_pixel_centres_inside():
    rows, cols, box = 40, 50, (3.2, 5.7, 41.9, 33.1)
    window, mask = shape_mask("ellipse", box, rows, cols)
    full = np.zeros((rows, cols), bool)
    full[window] = mask
    y, x = np.mgrid[0:rows, 0:cols] + 0.5
    cx, cy, a, b = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    expected = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1
    assert np.array_equal(full, expected)
    assert abs(full.sum() - np.pi * a * b) < 0.05 * np.pi * a * b  # close to the true area


def test_a_shape_between_pixel_centres_is_empty_and_without_spacing_has_no_area():
    stats = shape_stats(frame(), "ellipse", (2.6, 2.6, 3.4, 3.4), Calibration(Modality(), None, None))
    assert stats["count"] == 0 and stats["mean"] is None and stats["area_mm2"] is None
    assert shape_stats(frame(), "rect", (0, 0, 1, 1), Calibration(Modality(), None, None))["area_mm2"] is None


def test_boxes_outside_the_frame_and_unknown_shapes_are_refused():
    with pytest.raises(ValueError):
        shape_mask("rect", (0, 0, 31, 5), 20, 30)
    with pytest.raises(ValueError):
        shape_mask("polygon", (0, 0, 1, 1), 20, 30)


# --- the node's endpoints -------------------------------------------------------------------------

def ct_file(photometric: str = "MONOCHROME2") -> bytes:
    ds = dataset(rows=20, cols=30)
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.PixelSpacing = [0.5, 0.8]
    ds.PixelData = frame().tobytes()
    return to_bytes(ds)


def loaded(node, photometric: str = "MONOCHROME2") -> str:
    reply = node.upload([("ct.dcm", ct_file(photometric))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    node.registry.get_loaded(record_id).wait_complete(30)
    return record_id


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_value_endpoint_gives_stored_and_hounsfield_values(node, photometric):
    record_id = loaded(node, photometric)
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/0/value?x=7.5&y=3", headers=node.headers())
    assert reply.status_code == 200, reply.json
    assert reply.json == {"frame": 0, "x": 7, "y": 3, "stored": 307, "value": 307 * 2 - 1024, "unit": "HU"}


def test_stats_endpoint_gives_numpy_statistics_in_hu_and_mm2(node):
    record_id = loaded(node)
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/0/stats?shape=rect&x0=2&y0=3&x1=12&y1=8",
                            headers=node.headers())
    assert reply.status_code == 200, reply.json
    values = frame()[3:8, 2:12].astype(float) * 2 - 1024
    assert reply.json["count"] == 50 and reply.json["area_mm2"] == pytest.approx(20.0)
    assert reply.json["mean"] == pytest.approx(values.mean()) and reply.json["sd"] == pytest.approx(values.std())
    ellipse = node.client.get(f"/api/v1/records/{record_id}/frames/0/stats?shape=ellipse&x0=0&y0=0&x1=30&y1=20",
                              headers=node.headers())
    assert ellipse.status_code == 200 and 0 < ellipse.json["count"] < 600


@pytest.mark.parametrize("query", [
    "value?x=30&y=0", "value?x=-1&y=0", "value?x=a&y=0", "value?y=0", "value?x=nan&y=1",
    "stats?shape=rect&x0=0&y0=0&x1=31&y1=5", "stats?shape=star&x0=0&y0=0&x1=1&y1=1",
    "stats?x0=0&y0=0&x1=1&y1=1", "stats?shape=rect&x0=0&y0=0&x1=1",
])
def test_ill_formed_or_out_of_range_readings_are_400(node, query):
    record_id = loaded(node)
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/0/{query}", headers=node.headers())
    assert reply.status_code == 400, reply.json
    assert reply.json["error"]["code"] == "validation_error"


def test_readings_need_the_record_loaded_and_a_frame_that_exists(node):
    reply = node.upload([("ct.dcm", ct_file())])
    record_id = reply.json["id"]
    not_loaded = node.client.get(f"/api/v1/records/{record_id}/frames/0/value?x=1&y=1", headers=node.headers())
    assert not_loaded.status_code == 409 and not_loaded.json["error"]["code"] == "not_loaded"
    missing = node.client.get(f"/api/v1/records/{record_id}/frames/3/value?x=1&y=1", headers=node.headers())
    assert missing.status_code == 404
    anonymous = node.client.get(f"/api/v1/records/{record_id}/frames/0/value?x=1&y=1")
    assert anonymous.status_code == 401


def test_readings_are_in_the_openapi_document(node):
    document = node.client.get("/api/v1/openapi.json", headers=node.headers()).json
    stats = document["paths"]["/api/v1/records/{id}/frames/{index}/stats"]["get"]
    assert {p["name"] for p in stats["parameters"]} == {"shape", "x0", "y0", "x1", "y1"}
    assert all(p["required"] for p in stats["parameters"])


def test_colour_images_have_no_values_to_read(node):
    ds = dataset(rows=4, cols=4)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(48))
    reply = node.upload([("rgb.dcm", to_bytes(ds))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    node.registry.get_loaded(record_id).wait_complete(30)
    for path in ("value?x=1&y=1", "stats?shape=rect&x0=0&y0=0&x1=2&y1=2"):
        answer = node.client.get(f"/api/v1/records/{record_id}/frames/0/{path}", headers=node.headers())
        assert answer.status_code == 422 and answer.json["error"]["code"] == "not_greyscale"


def test_readings_are_audited_as_views_of_kind_value(make_node):
    node = make_node(audit__flush_s=60)
    try:
        record_id = loaded(node)
        doctor = node.headers(user_id="d0c70000-0000-4000-8000-000000000001")
        for path in ("value?x=1&y=1", "value?x=2&y=2", "stats?shape=ellipse&x0=0&y0=0&x1=5&y1=5"):
            assert node.client.get(f"/api/v1/records/{record_id}/frames/0/{path}", headers=doctor).status_code == 200
        assert node.app.extensions["sivr_view_audit"].flush() == 1
        entries = node.client.get("/api/v1/audit", headers=node.headers(role="instadmin"),
                                  query_string={"action": "record.view"}).json["items"]
        assert [json.loads(e["detail"])["value"] for e in entries] == [3]
        assert entries[0]["object_id"] == record_id
    finally:
        node.registry.shutdown()
        node.app.extensions["sivr_view_audit"].close()
