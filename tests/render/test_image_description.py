"""What the node says about each image besides its pixels: edge orientation, the window applied,
and where each slice lies (instance number, position, order) — the viewer's labels come from here.

Synthetic stacks (axial, coronal, sagittal, oblique, none) through the real node (Flask test
client, real store and loader)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom.uid import generate_uid

from daemons.render.api.mpr3d import render_state
from daemons.render.stacks import find_stack
from daemons.render.store.manifest import Manifest
from tests.render.synthetic import dataset, to_bytes

AXIAL = (1, 0, 0, 0, 1, 0)
CORONAL = (1, 0, 0, 0, 0, -1)
SAGITTAL = (0, 1, 0, 0, 0, -1)
C30, S30 = math.cos(math.radians(30)), math.sin(math.radians(30))
OBLIQUE = (C30, S30, 0, 0, 0, -1)   # a coronal turned 30 degrees towards the patient's left side


def stack(orientation, count: int = 4, spacing: float = 2.5, modality: str = "CT", window=None,
          instances_descending: bool = True, rows: int = 8, cols: int = 8) -> list[tuple[str, bytes]]:
    """`count` parallel slices along the normal of `orientation` (None: no orientation at all),
    uploaded in shuffled order; the scanner numbered them head first (instance 1 = highest)."""
    series = generate_uid()
    normal = np.cross(orientation[:3], orientation[3:]) if orientation else np.array([0, 0, 1])
    files = []
    for k in range(count):
        ds = dataset(rows, cols, series=series, orientation=orientation or AXIAL)
        ds.Modality = modality
        if orientation is None:
            del ds.ImageOrientationPatient
            del ds.ImagePositionPatient
        else:
            ds.ImagePositionPatient = [float(v) for v in (-10.0 + normal * k * spacing)]
        ds.InstanceNumber = count - k if instances_descending else k + 1
        ds.SliceThickness = spacing
        ds.PixelData = (np.arange(rows * cols, dtype=np.int16).reshape(rows, cols) * (k + 1) * 7).tobytes()
        if window:
            ds.WindowCenter, ds.WindowWidth = window
        files.append((f"s{k}.dcm", to_bytes(ds)))
    return files[::2] + files[1::2]


def upload(node, files) -> dict:
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    return reply.json


def load(node, record_id: str) -> None:
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)


def labels(response) -> dict[str, str] | None:
    value = response.headers.get("X-Orientation")
    return None if value is None else dict(part.split("=") for part in value.split(","))


@pytest.mark.parametrize("orientation, expected", [
    (AXIAL, {"top": "A", "right": "L", "bottom": "P", "left": "R"}),
    (CORONAL, {"top": "S", "right": "L", "bottom": "I", "left": "R"}),
    (SAGITTAL, {"top": "S", "right": "P", "bottom": "I", "left": "A"}),
    (OBLIQUE, {"top": "S", "right": "LP", "bottom": "I", "left": "RA"}),
], ids=["axial", "coronal", "sagittal", "oblique"])
def test_slices_say_which_patient_direction_each_edge_faces(node, orientation, expected):
    meta = upload(node, stack(orientation))
    load(node, meta["id"])
    for query in ("", "?region=0.25,0.25,0.75,0.75&size=64x64"):
        reply = node.client.get(f"/api/v1/records/{meta['id']}/frames/1{query}", headers=node.headers())
        assert reply.status_code == 200
        assert labels(reply) == expected, query


def test_a_reformat_and_a_slice_of_the_same_plane_agree(node):
    """A sagittal acquisition's own slices and its sagittal reformat face the same way."""
    meta = upload(node, stack(SAGITTAL, count=6))
    load(node, meta["id"])
    frame = node.client.get(f"/api/v1/records/{meta['id']}/frames/2", headers=node.headers())
    mpr = node.client.get(f"/api/v1/records/{meta['id']}/mpr/sagittal/2", headers=node.headers())
    assert mpr.status_code == 200, mpr.json
    assert labels(frame) == labels(mpr) == {"top": "S", "right": "P", "bottom": "I", "left": "A"}


def test_without_an_orientation_no_edge_is_labelled(node):
    meta = upload(node, stack(None, count=3))
    load(node, meta["id"])
    for path in ("frames/0", "mpr/coronal/0", "volume?size=32x32"):
        reply = node.client.get(f"/api/v1/records/{meta['id']}/{path}", headers=node.headers())
        assert reply.status_code == 200, (path, reply.json)
        assert "X-Orientation" not in reply.headers, path


def window_of(response) -> tuple[float, float]:
    center, width = (float(v) for v in response.headers["X-Window"].split(","))
    return center, width


def test_every_image_says_which_window_it_was_rendered_with(node):
    """An MR without a window in its files: the automatic window is named, so a drag starts there."""
    meta = upload(node, stack(AXIAL, modality="MR"))
    assert meta["default_window"] is None
    load(node, meta["id"])
    default = node.registry.get_loaded(meta["id"]).default_voi  # the automatic window of the upload
    auto = (default.center, default.width)
    base = f"/api/v1/records/{meta['id']}"
    assert window_of(node.client.get(f"{base}/frames/0", headers=node.headers())) == pytest.approx(auto)
    assert window_of(node.client.get(f"{base}/mpr/coronal/3", headers=node.headers())) == pytest.approx(auto)
    # a projection's is measured on the projection (api_3d.Render3D.projection_window), not the slices'
    record = node.registry.get_loaded(meta["id"])
    with node.app.app_context():
        projected = render_state(node.app).projection_window(record, find_stack(record.manifest, None), "mip")
    assert window_of(node.client.get(f"{base}/volume?size=32x32&mode=mip",
                                     headers=node.headers())) == pytest.approx((projected.center, projected.width))
    assert "X-Window" not in node.client.get(f"{base}/volume?size=32x32&mode=dvr", headers=node.headers()).headers
    # a requested window or preset is the one named
    asked = node.client.get(f"{base}/frames/0?window=100,300", headers=node.headers())
    assert window_of(asked) == (100.0, 300.0)
    preset = node.client.get(f"{base}/mpr/axial/0?preset=ct_lung", headers=node.headers())
    assert window_of(preset) == (-600.0, 1500.0)


def test_the_files_own_window_is_named_when_it_applies(node):
    meta = upload(node, stack(AXIAL, window=(40, 400)))
    load(node, meta["id"])
    reply = node.client.get(f"/api/v1/records/{meta['id']}/frames/0", headers=node.headers())
    assert window_of(reply) == (40.0, 400.0)


def test_each_slice_publishes_its_instance_number_and_position(node):
    meta = upload(node, stack(AXIAL, count=4, spacing=2.5))
    record = node.client.get(f"/api/v1/records/{meta['id']}", headers=node.headers()).json
    # position order (feet to head) is the reverse of the scanner's head-first numbering
    assert [s["instance"] for s in record["slices"]] == [4, 3, 2, 1]
    assert [s["location_mm"] for s in record["slices"]] == [-10.0, -7.5, -5.0, -2.5]
    assert record["slices"][1]["position"] == [-10.0, -10.0, -7.5]
    assert record["stack_direction"] == "S"
    assert record["slice_thickness"] == 2.5
    listed = node.client.get("/api/v1/records", headers=node.headers("instadmin")).json["items"]
    assert "slices" not in listed[0] and listed[0]["stack_direction"] == "S"


def test_sagittal_stack_order_and_location_use_the_normals_axis(node):
    meta = upload(node, stack(SAGITTAL, count=3, spacing=4.0))
    # SAGITTAL's normal is -x (towards the patient's right): frames run from left to right
    assert meta["stack_direction"] == "R"
    assert [s["location_mm"] for s in meta["slices"]] == [-10.0, -14.0, -18.0]


def test_a_manifest_stored_before_slices_existed_still_serves(node):
    meta = upload(node, stack(AXIAL))
    the_node = node.app.extensions["sivr_node"]
    stored, version = the_node.store.read_manifest_versioned(meta["id"])
    old = stored.to_json()
    del old["version"]
    for key in ("slices", "stack_direction", "slice_thickness"):
        old["meta"].pop(key)
    old["render"].pop("orientation_known")
    the_node.store.replace_manifest(meta["id"], Manifest.from_json(old), version)
    the_node.forget(meta["id"])
    record = node.client.get(f"/api/v1/records/{meta['id']}", headers=node.headers())
    assert record.status_code == 200 and "slices" not in record.json
    load(node, meta["id"])
    frame = node.client.get(f"/api/v1/records/{meta['id']}/frames/0", headers=node.headers())
    assert labels(frame) == {"top": "A", "right": "L", "bottom": "P", "left": "R"}


def test_window_presets_say_which_modality_they_are_for(node):
    presets = node.client.get("/api/v1/presets", headers=node.headers()).json["window"]
    assert presets["ct_lung"] == {"center": -600.0, "width": 1500.0, "modality": "CT"}
    assert all(p["modality"] for p in presets.values())


def test_browsers_of_another_origin_may_read_the_description_headers(make_node):
    harness = make_node(cors__origins=["https://viewer.example"])
    try:
        meta = upload(harness, stack(AXIAL))
        load(harness, meta["id"])
        reply = harness.client.get(f"/api/v1/records/{meta['id']}/frames/0",
                                   headers={**harness.headers(), "Origin": "https://viewer.example"})
        exposed = {h.strip() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"X-Orientation", "X-Window", "X-Render-Ms"} <= exposed
    finally:
        harness.registry.shutdown()
