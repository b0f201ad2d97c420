"""The plane geometry a record's metadata publishes (`planes`), against values computed by hand.

Synthetic stacks of 6 slices of 12 rows x 10 columns, pixel spacing 0.8 mm (rows) x 0.5 mm
(columns), 2 mm apart, the first at (-10, -20, 30), acquired axial, coronal and sagittal, through
the real node (Flask test client, real store and loader). Then: the reformats the node sends have
the published index range and aspect, and the published geometry is the 3D state's own.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pydicom
import pytest
from PIL import Image

from daemons.render.api.mpr3d import VolumeNode, VolumeRecord, render_state
from daemons.render.imaging.planes import plane_table, record_geometry
from daemons.render.records import LoadedRecord
from daemons.render.stacks import stack_manifest, stacks_of
from daemons.render.store.manifest import Manifest
from tests.manifests import sample_manifest
from tests.render.synthetic import stack

AXIAL = (1, 0, 0, 0, 1, 0)
CORONAL = (1, 0, 0, 0, 0, -1)   # rows run inferior; slices step posterior
SAGITTAL = (0, 1, 0, 0, 0, -1)  # columns run posterior, rows inferior; slices step to the patient's right

AXIAL_EDGES = {"top": "A", "right": "L", "bottom": "P", "left": "R"}
CORONAL_EDGES = {"top": "S", "right": "L", "bottom": "I", "left": "R"}
SAGITTAL_EDGES = {"top": "S", "right": "P", "bottom": "I", "left": "A"}


def plane(count, columns, column_mm, rows, row_mm, spacing, edges, direction, first, step) -> dict:
    return {"count": count, "columns": columns, "rows": rows, "column_mm": column_mm, "row_mm": row_mm,
            "width_mm": columns * column_mm, "height_mm": rows * row_mm, "spacing_mm": spacing,
            "measurable": True, "edges": edges, "index_direction": direction,
            "location_mm": {"first": first, "step": step}}


# Worked out by hand from the IOP: which stored axis each plane cuts across (count), which runs
# across (columns) and down (rows), and where index 0 lies on the plane's patient axis.
EXPECTED = {
    "axial": {
        # frames along +z (S); columns +x (L); rows +y (P): every plane is a plain cut
        "slices": plane(6, 10, 0.5, 12, 0.8, 2.0, AXIAL_EDGES, "S", 30.0, 2.0),
        "axial": plane(6, 10, 0.5, 12, 0.8, 2.0, AXIAL_EDGES, "S", 30.0, 2.0),
        "coronal": plane(12, 10, 0.5, 6, 2.0, 0.8, CORONAL_EDGES, "P", -20.0, 0.8),
        "sagittal": plane(10, 12, 0.8, 6, 2.0, 0.5, SAGITTAL_EDGES, "L", -10.0, 0.5),
    },
    "coronal": {
        # frames along +y (P); columns +x (L); rows -z (I)
        "slices": plane(6, 10, 0.5, 12, 0.8, 2.0, CORONAL_EDGES, "P", -20.0, 2.0),
        "axial": plane(12, 10, 0.5, 6, 2.0, 0.8, AXIAL_EDGES, "I", 30.0, -0.8),
        "coronal": plane(6, 10, 0.5, 12, 0.8, 2.0, CORONAL_EDGES, "P", -20.0, 2.0),
        "sagittal": plane(10, 6, 2.0, 12, 0.8, 0.5, SAGITTAL_EDGES, "L", -10.0, 0.5),
    },
    "sagittal": {
        # frames along -x (R); columns +y (P); rows -z (I); the axial and coronal planes run the
        # frames right to left, so the patient's right stays on the left of the screen
        "slices": plane(6, 10, 0.5, 12, 0.8, 2.0, SAGITTAL_EDGES, "R", -10.0, -2.0),
        "axial": plane(12, 6, 2.0, 10, 0.5, 0.8, AXIAL_EDGES, "I", 30.0, -0.8),
        "coronal": plane(10, 6, 2.0, 12, 0.8, 0.5, CORONAL_EDGES, "P", -20.0, 0.5),
        "sagittal": plane(6, 10, 0.5, 12, 0.8, 2.0, SAGITTAL_EDGES, "R", -10.0, -2.0),
    },
}
ORIENTATIONS = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL}


def upload(node, files) -> dict:
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    return reply.json


def get_meta(node, record_id: str) -> dict:
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 200
    return reply.json


def assert_planes(served: dict, expected: dict) -> None:
    assert set(served) == set(expected)
    for name, want in expected.items():
        got = served[name]
        for key, value in want.items():
            if isinstance(value, float) or key == "location_mm":
                assert got[key] == pytest.approx(value, abs=1e-6), (name, key)
            else:
                assert got[key] == value, (name, key)


@pytest.mark.parametrize("acquisition", ["axial", "coronal", "sagittal"])
def test_each_plane_of_an_acquisition_as_computed_by_hand(node, acquisition):
    meta = upload(node, stack(ORIENTATIONS[acquisition]))
    assert_planes(get_meta(node, meta["id"])["planes"], EXPECTED[acquisition])
    schemas = node.client.get("/api/v1/openapi.json").json["components"]["schemas"]
    assert "planes" in schemas["RecordMeta"]["properties"]
    for info in get_meta(node, meta["id"])["planes"].values():
        assert set(info) == set(schemas["PlaneGeometry"]["properties"]), "the OpenAPI document says what is served"
    listed = node.client.get("/api/v1/records", headers=node.headers("instadmin")).json["items"]
    assert listed and all("planes" not in item for item in listed), "lists stay small"


@pytest.mark.parametrize("acquisition", ["coronal", "sagittal"])
def test_reformats_have_the_published_range_and_aspect(node, acquisition):
    meta = upload(node, stack(ORIENTATIONS[acquisition]))
    record_id = meta["id"]
    planes = get_meta(node, record_id)["planes"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(60)
    # the published geometry is the one the 3D state renders with
    assert isinstance(node.app.extensions["sivr_node"], VolumeNode)  # what the 3D endpoints declare they use
    first = stacks_of(record.manifest)[0]
    prepared = render_state(node.app).prepared(record, first).geometry
    published = record_geometry(stack_manifest(record.manifest, first))
    assert prepared.shape == published.shape and prepared.spacing == published.spacing
    assert np.array_equal(prepared.axes, published.axes)
    for name in ("axial", "coronal", "sagittal"):
        info = planes[name]
        last = node.client.get(f"/api/v1/records/{record_id}/mpr/{name}/{info['count'] - 1}?format=png",
                               headers=node.headers())
        assert last.status_code == 200, (name, last.json)
        edges = dict(part.split("=") for part in last.headers["X-Orientation"].split(","))
        assert edges == info["edges"]
        width, height = Image.open(io.BytesIO(last.data)).size
        assert width / height == pytest.approx(info["width_mm"] / info["height_mm"], rel=0.1), name
        beyond = node.client.get(f"/api/v1/records/{record_id}/mpr/{name}/{info['count']}", headers=node.headers())
        assert beyond.status_code == 404, name  # the index names no plane
    frame = node.client.get(f"/api/v1/records/{record_id}/frames/0?format=png", headers=node.headers())
    width, height = Image.open(io.BytesIO(frame.data)).size
    assert width / height == pytest.approx(planes["slices"]["width_mm"] / planes["slices"]["height_mm"], rel=0.1)


def _manifest(slices, orientation=(1, 0, 0, 0, 1, 0), known=True, pixel_spacing=(0.8, 0.5)) -> Manifest:
    data = sample_manifest(len(slices), 12, 10, orientation=tuple(orientation)).to_json()
    data["meta"].update(pixel_spacing=pixel_spacing, slice_spacing=2.0, slices=slices)
    data["render"]["orientation_known"] = known
    return Manifest.from_json(data)


def test_frames_that_run_against_the_normal_keep_the_patient_the_right_way_up():
    """An enhanced file may list its frames head to feet: frame 0 is then the highest slice, and
    the axial index and the coronal and sagittal reformats must follow the positions, not the normal."""
    down = [{"instance": 1, "position": [0.0, 0.0, 10.0 - 2.0 * k], "location_mm": 10.0 - 2.0 * k} for k in range(6)]
    planes = plane_table(_manifest(down))
    assert planes["slices"]["index_direction"] == "I"
    assert planes["slices"]["location_mm"] == {"first": 10.0, "step": -2.0}
    assert planes["coronal"]["edges"] == CORONAL_EDGES
    assert planes["sagittal"]["edges"] == SAGITTAL_EDGES
    geometry = record_geometry(_manifest(down))
    assert list(geometry.axes[:, 2]) == [0.0, 0.0, -1.0]


def test_what_the_record_does_not_say_is_not_published():
    unknown = [{"instance": None, "position": None, "location_mm": None}] * 6
    planes = plane_table(_manifest(unknown, known=False, pixel_spacing=None))
    for name, info in planes.items():
        assert info["edges"] is None and info["index_direction"] is None and info["location_mm"] is None, name
        assert info["measurable"] is False
    assert planes["slices"]["column_mm"] == planes["slices"]["row_mm"] == 1.0  # square pixels, as 2D frames
    # orientation known but no positions: in-plane directions are known, the frame order is not
    planes = plane_table(_manifest(unknown))
    assert planes["slices"]["index_direction"] is None
    assert planes["coronal"]["index_direction"] == "P" and planes["coronal"]["edges"] == CORONAL_EDGES


def test_each_slice_carries_its_own_thickness(node):
    """The overlay's "Th" is the slice's own SliceThickness, which a series may vary."""
    thin = dict(stack(AXIAL, count=3, thickness=1.25))
    thick = dict(stack(AXIAL, count=3, thickness=3.0, series=_series_of(thin)))
    # slices 0 and 2 of one, slice 1 of the other
    meta = upload(node, [(name, (thick if name == "slice001.dcm" else thin)[name]) for name in thin])
    slices = get_meta(node, meta["id"])["slices"]
    assert [s["thickness_mm"] for s in slices] == [1.25, 3.0, 1.25]


def _series_of(files: dict[str, bytes]) -> str:
    return str(pydicom.dcmread(io.BytesIO(next(iter(files.values())))).SeriesInstanceUID)


def test_hostile_numbers_give_a_finite_table():
    """Non-finite spacing or positions in a manifest never reach the JSON (NaN is not JSON)."""
    nan = [{"instance": 1, "position": [float("nan"), 0.0, 0.0], "location_mm": None}] * 6
    planes = plane_table(_manifest(nan, pixel_spacing=(float("inf"), 0.5)))
    json.dumps(planes, allow_nan=False)
    assert planes["slices"]["measurable"] is False and planes["slices"]["location_mm"] is None


@pytest.mark.parametrize("spacing", [None, (0.0, 0.7, 0.7), (2.0, 0.8, 0.5)], ids=["unknown", "one-frame", "known"])
def test_2d_frames_and_reformats_share_one_spacing_rule(spacing):
    """Unknown pixel spacing counts as 1 mm, a missing slice spacing as the in-plane one: the loaded
    record's spacing (2D frames' aspect) is the published geometry's, from one rule."""
    manifest = sample_manifest(3, 4, 4, spacing=spacing)
    record = LoadedRecord(manifest.meta.id, manifest)
    assert all(record.frame_spacing(i) == tuple(record_geometry(manifest).spacing)[1:] for i in range(3))
    assert isinstance(record, VolumeRecord)  # what the 3D endpoints declare they read
