"""A real sagittal acquisition through the node (demo_data/mr-sag-head-48: 48 slices of a Siemens 3T
T1 MPRAGE acquired sagittal, tilted about 15 degrees; see its SOURCE.txt).

The plane geometry the record publishes (`planes`) is worked out by hand from the files' Image
Orientation (Patient) and positions; the acquisition plane is `sagittal` (the stored frames), the
axial and coronal planes are reformats 48 columns wide. Frames decode to pydicom's pixels, each
frame takes its own window, the reformats hold the stored voxels where the layout says, and 3D
views from the side show the head as their edge labels say.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from daemons.render.imaging.pixels import GrayParams, Modality, Window, render_gray_reference
from tests.render.conftest import build_node, close_node

DEMO = Path(__file__).resolve().parents[2] / "demo_data" / "mr-sag-head-48"
FRAMES, ROWS, COLUMNS = 48, 256, 256
PIXEL_MM, SLICE_MM = 0.859375, 0.9
# Row cosines (0.054, 0.965, 0.257): columns run posterior and a little superior; column cosines
# (0.018, 0.256, -0.967): rows run inferior and a little posterior; the normal (-0.999, 0.057,
# -0.004) and the positions step towards the patient's right (x falls 0.8985 mm a slice). Edge
# labels name every axis over 0.1 of the direction, largest first: the tilt shows as a second letter.
SAGITTAL_EDGES = {"top": "SA", "right": "PS", "bottom": "IP", "left": "AI"}
EXPECTED = {
    # the acquisition plane: the stored frames, as acquired
    "slices": {"count": FRAMES, "columns": COLUMNS, "rows": ROWS, "column_mm": PIXEL_MM, "row_mm": PIXEL_MM,
               "width_mm": 220.0, "height_mm": 220.0, "edges": SAGITTAL_EDGES, "index_direction": "R",
               "location_mm": {"first": 12.182, "step": -0.898549}},
    # cut across the stored rows (one plane per row, 0.859 mm apart, head to feet); across: the
    # frames with the patient's right on the left of the screen; down: the stored columns (A to P)
    "axial": {"count": ROWS, "columns": FRAMES, "rows": COLUMNS, "column_mm": SLICE_MM, "row_mm": PIXEL_MM,
              "width_mm": FRAMES * SLICE_MM, "height_mm": 220.0,
              "edges": {"top": "AI", "right": "L", "bottom": "PS", "left": "R"}, "index_direction": "IP",
              "location_mm": {"first": 96.149, "step": -0.830589}},
    # cut across the stored columns (anterior to posterior); down: the stored rows (S to I)
    "coronal": {"count": COLUMNS, "columns": FRAMES, "rows": ROWS, "column_mm": SLICE_MM, "row_mm": PIXEL_MM,
                "width_mm": FRAMES * SLICE_MM, "height_mm": 220.0,
                "edges": {"top": "SA", "right": "L", "bottom": "IP", "left": "R"}, "index_direction": "PS",
                "location_mm": {"first": -108.567, "step": 0.829308}},
}
EXPECTED["sagittal"] = EXPECTED["slices"]


@pytest.fixture(scope="module")
def files() -> list[pydicom.Dataset]:
    """The bundled files in the node's frame order (positions along the normal: Instance Number)."""
    datasets = [pydicom.dcmread(path) for path in sorted(DEMO.glob("*.dcm"))]
    assert len(datasets) == FRAMES
    return sorted(datasets, key=lambda ds: int(ds.InstanceNumber))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, token_keys):
    """One node with the series loaded, shared by this module's tests (a load takes a while)."""
    node = build_node(tmp_path_factory.mktemp("sagittal-node"), token_keys)
    reply = node.upload(sorted(DEMO.glob("*.dcm")))
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(300)
    yield node, record_id
    close_node(node)


def get(node, path: str):
    reply = node.client.get(path, headers=node.headers())
    assert reply.status_code == 200, (path, reply.data[:300])
    return reply


def test_the_published_planes_are_those_of_a_sagittal_acquisition(loaded):
    node, record_id = loaded
    meta = get(node, f"/api/v1/records/{record_id}").json
    assert meta["stack_direction"] == "R" and meta["modality"] == "MR" and meta["frames"] == FRAMES
    planes = meta["planes"]
    assert set(planes) == set(EXPECTED)
    for name, want in EXPECTED.items():
        got = planes[name]
        for key, value in want.items():
            if key == "location_mm":
                assert got[key] == pytest.approx(value, abs=1e-3), name
            elif isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-6), (name, key)
            else:
                assert got[key] == value, (name, key)
        assert got["measurable"] is True, name
    # as radiologists read a sagittal image: anterior on the left, head at the top
    assert {edge: label[0] for edge, label in planes["sagittal"]["edges"].items()} == {
        "top": "S", "right": "P", "bottom": "I", "left": "A"}


def test_the_acquisition_plane_is_served_as_stored_and_reformats_have_the_published_shape(loaded):
    node, record_id = loaded
    planes = get(node, f"/api/v1/records/{record_id}").json["planes"]
    middle = FRAMES // 2
    frame = get(node, f"/api/v1/records/{record_id}/frames/{middle}?format=png&window=300,600")
    sagittal = get(node, f"/api/v1/records/{record_id}/mpr/sagittal/{middle}?format=png&window=300,600")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(frame.data))),
                                  np.asarray(Image.open(io.BytesIO(sagittal.data))))
    for name in ("sagittal", "axial", "coronal"):
        info = planes[name]
        reply = get(node, f"/api/v1/records/{record_id}/mpr/{name}/{info['count'] // 2}?format=png")
        edges = dict(part.split("=") for part in reply.headers["X-Orientation"].split(","))
        assert edges == info["edges"], name
        width, height = Image.open(io.BytesIO(reply.data)).size
        assert width / height == pytest.approx(info["width_mm"] / info["height_mm"], rel=0.05), name
        beyond = node.client.get(f"/api/v1/records/{record_id}/mpr/{name}/{info['count']}", headers=node.headers())
        assert beyond.status_code == 404, name


@pytest.mark.parametrize("index", [0, 23, 47])
def test_frames_decode_to_pydicom_pixels_each_with_its_own_window(loaded, files, index):
    """Lossless JPEG 2000 decoded as pydicom decodes it, and drawn with that slice's own
    Window Center/Width (every slice of this series has another)."""
    node, record_id = loaded
    ds = files[index]
    stored = ds.pixel_array
    for x, y in ((128, 128), (60, 200), (255, 0)):
        value = get(node, f"/api/v1/records/{record_id}/frames/{index}/value?x={x}&y={y}").json
        assert value["stored"] == value["value"] == int(stored[y, x]), (x, y)
    reply = get(node, f"/api/v1/records/{record_id}/frames/{index}?format=png")
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert [float(v) for v in reply.headers["X-Window"].split(",")] == [center, width]
    shown = np.asarray(Image.open(io.BytesIO(reply.data))).astype(int)
    want = render_gray_reference(stored, GrayParams(Modality(), Window(center, width, "linear"), False)).astype(int)
    assert shown.shape == want.shape
    assert np.abs(shown - want).max() <= 1


def test_reformats_hold_the_stored_voxels_where_the_layout_puts_them(loaded, files):
    """Axial plane k is stored row k; its column j the frame 47 - j (the patient's right on the
    left); its row m the stored column m. Coronal plane k is stored column k, its rows the stored rows."""
    node, record_id = loaded
    volume = np.stack([ds.pixel_array for ds in files])   # frames, rows, columns
    for k, j, m in ((128, 10, 100), (90, 40, 180), (200, 0, 128)):
        axial = get(node, f"/api/v1/records/{record_id}/mpr/axial/{k}/value?x={j}&y={m}").json
        assert axial["stored"] == int(volume[FRAMES - 1 - j, k, m]), (k, j, m)
        coronal = get(node, f"/api/v1/records/{record_id}/mpr/coronal/{k}/value?x={j}&y={m}").json
        assert coronal["stored"] == int(volume[FRAMES - 1 - j, m, k]), (k, j, m)


def _outline(image: np.ndarray) -> np.ndarray:
    """The image cropped to the head (values over 15 % of its maximum) at 48 x 48: a projection's
    scale and margins then play no part in a comparison of shapes."""
    scaled = image.astype(float) / image.max()
    ys, xs = np.nonzero(scaled > 0.15)
    head = Image.fromarray(scaled[ys.min():ys.max() + 1, xs.min():xs.max() + 1] * 255).convert("L")
    return np.asarray(head.resize((48, 48), Image.BILINEAR), dtype=float)


def _likeness(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_outline(a).ravel(), _outline(b).ravel())[0, 1])


@pytest.mark.parametrize("azimuth", [90, -90])
def test_3d_views_from_the_side_show_the_head_as_their_edges_say(loaded, files, azimuth):
    """A MIP seen from the patient's left (right) is labelled anterior on the left (right) and head at
    the top, and shows the head so: it is more like the stored frames' own MIP (anterior left, head up;
    mirrored for the right side) than like that image mirrored or upside down. (The node projects in
    patient space, so the 15 degree tilt shows; the comparison of outlines tolerates it.)"""
    node, record_id = loaded
    reply = get(node, f"/api/v1/records/{record_id}/volume?mode=mip&azimuth={azimuth}&elevation=0"
                      "&size=256x256&render=still&format=png")
    edges = dict(part.split("=") for part in reply.headers["X-Orientation"].split(","))
    anterior_left = azimuth == 90
    assert edges == {"top": "S", "bottom": "I", "left": "A" if anterior_left else "P",
                     "right": "P" if anterior_left else "A"}
    projection = np.asarray(Image.open(io.BytesIO(reply.data)).convert("L"))
    stored = np.stack([ds.pixel_array for ds in files]).max(axis=0)   # rows inferior, columns posterior
    expected = stored if anterior_left else stored[:, ::-1]
    likeness = _likeness(projection, expected)
    assert likeness > _likeness(projection, expected[:, ::-1]) + 0.05, "mirrored front to back"
    assert likeness > _likeness(projection, expected[::-1, :]) + 0.05, "upside down"
