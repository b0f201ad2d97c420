"""The default VOI: each slice and each enhanced frame its own; 2D, MPR and 3D one implementation.

All synthetic (pydicom): a series whose slices carry different windows, an enhanced multi-frame
file with per-frame and shared Frame VOI LUTs, SIGMOID and VOI-LUT-Sequence series for the
frame == axial MPR comparison, and a record stored with a manifest of the old form (no per-frame
VOIs), which must still render with the record's default.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from daemons.render.ingest.series_analysis import parse_upload
from daemons.render.store.local import RecordStore
from tests.render.synthetic import dataset, to_bytes
from tests.render.test_dcmtk_compare import LIMITS

ROWS = COLS = 16


def _series(windows: list[tuple[float, float, str] | None], lut: bool = False) -> list[tuple[str, bytes]]:
    files, series = [], generate_uid()  # each call its own series (a stored series grows by its UID)
    for i, window in enumerate(windows):
        ds = dataset(ROWS, COLS, position=float(i), pixels=False, series=series)
        ds.PixelData = (np.arange(ROWS * COLS, dtype=np.int16).reshape(ROWS, COLS) * 3 - 300 + 40 * i).tobytes()
        ds.PixelSpacing = [0.5, 0.5]
        ds.InstanceNumber = i + 1
        if window is not None:
            ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = window
        if lut:
            item = Dataset()
            item.LUTDescriptor = [1024, 0, 12]
            item.add_new(0x00283006, "US", [int(v) for v in (np.linspace(0, 1, 1024) ** 1.5 * 4095)])
            ds.VOILUTSequence = [item]
        files.append((f"s{i}.dcm", to_bytes(ds)))
    return files


def _load(node, files) -> str:
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert node.registry.get_loaded(record_id).wait_complete(30)
    return record_id


def _image(node, path: str) -> np.ndarray:
    reply = node.client.get(path, headers=node.headers())
    assert reply.status_code == 200, reply.json
    return np.asarray(Image.open(io.BytesIO(reply.data)))


def test_each_slice_of_a_series_takes_its_own_window_and_function(node):
    windows = [(-100.0, 400.0, "LINEAR"), (200.0, 100.0, "SIGMOID"), (0.0, 1000.0, "LINEAR_EXACT")]
    record_id = _load(node, _series(windows))
    for i, (center, width, function) in enumerate(windows):
        own = _image(node, f"/api/v1/records/{record_id}/frames/{i}")
        explicit = _image(node, f"/api/v1/records/{record_id}/frames/{i}"
                                f"?window={center},{width}&voi_function={function.lower()}")
        np.testing.assert_array_equal(own, explicit)
    first = _image(node, f"/api/v1/records/{record_id}/frames/1?window=-100,400")
    assert not np.array_equal(first, _image(node, f"/api/v1/records/{record_id}/frames/1"))


def test_a_slice_without_a_window_takes_the_records_default(node):
    record_id = _load(node, _series([(-100.0, 400.0, "LINEAR"), None]))
    np.testing.assert_array_equal(_image(node, f"/api/v1/records/{record_id}/frames/1"),
                                  _image(node, f"/api/v1/records/{record_id}/frames/1?window=-100,400"))


def _enhanced() -> bytes:
    ds = dataset(ROWS, COLS, pixels=False)
    ds.NumberOfFrames = 3
    ds.PixelData = np.concatenate([np.arange(ROWS * COLS, dtype=np.int16) * (k + 1) for k in range(3)]).tobytes()

    def voi(center, width, function=None) -> Dataset:
        item = Dataset()
        item.WindowCenter, item.WindowWidth = center, width
        if function:
            item.VOILUTFunction = function
        group = Dataset()
        group.FrameVOILUTSequence = [item]
        return group

    shared = voi(100.0, 50.0)
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [voi(50.0, 100.0), voi(300.0, 200.0, "SIGMOID"), Dataset()]
    return to_bytes(ds)


@pytest.mark.parametrize("index, query", [
    (0, "window=50,100"), (1, "window=300,200&voi_function=sigmoid"), (2, "window=100,50"),
])
def test_each_enhanced_frame_takes_its_frame_voi_lut_else_the_shared_one(node, index, query):
    record_id = _load(node, [("enhanced.dcm", _enhanced())])
    np.testing.assert_array_equal(_image(node, f"/api/v1/records/{record_id}/frames/{index}"),
                                  _image(node, f"/api/v1/records/{record_id}/frames/{index}?{query}"))


@pytest.mark.parametrize("kind", ["sigmoid", "voi_lut"])
def test_frame_equals_axial_mpr_without_a_window(node, kind):
    files = _series([(40.0, 400.0, "SIGMOID")] * 4) if kind == "sigmoid" else _series([None] * 4, lut=True)
    record_id = _load(node, files)
    for i in range(4):
        frame = _image(node, f"/api/v1/records/{record_id}/frames/{i}")
        mpr = _image(node, f"/api/v1/records/{record_id}/mpr/axial/{i}")
        assert frame.shape == mpr.shape
        np.testing.assert_array_equal(frame, mpr)


def test_a_record_stored_before_per_frame_vois_still_renders_with_the_record_default(make_node, tmp_path):
    files = _series([(-100.0, 400.0, "LINEAR"), (200.0, 100.0, "LINEAR")])
    parsed = parse_upload(files, LIMITS)
    manifest = dataclasses.replace(parsed.manifest, render=dataclasses.replace(
        parsed.manifest.render, frame_vois=None))  # what every manifest stored before them reads as
    root = tmp_path / "node"
    store = RecordStore.open(root / "store", root / "store.key")
    store.write_record(parsed.record_id, [f.raw for f in parsed.files], manifest)
    node = make_node(root=root)
    try:
        node.client.post(f"/api/v1/records/{parsed.record_id}/load", headers=node.headers())
        assert node.registry.get_loaded(parsed.record_id).wait_complete(30)
        for i in range(2):
            np.testing.assert_array_equal(
                _image(node, f"/api/v1/records/{parsed.record_id}/frames/{i}"),
                _image(node, f"/api/v1/records/{parsed.record_id}/frames/{i}?window=-100,400"))
    finally:
        node.registry.shutdown()


def test_the_manifest_stores_each_frames_voi_once_per_distinct_choice():
    files = _series([(-100.0, 400.0, "LINEAR"), (-100.0, 400.0, "LINEAR"), None])
    stored = parse_upload(files, LIMITS).manifest.render.frame_vois
    assert stored == {"choices": [{"center": -100.0, "width": 400.0, "function": "linear"}],
                      "frames": [0, 0, None]}
    assert pydicom.dcmread(io.BytesIO(files[0][1])).WindowWidth == 400


def test_the_3d_view_without_a_window_takes_the_projections_window_and_the_records_function(node):
    """A projection's default window is measured on the projection (api_3d.Render3D.projection_window),
    not the slices' window; the VOI function of the record's window stays."""
    record_id = _load(node, _series([(40.0, 400.0, "SIGMOID")] * 4))
    view = "mode=avg&azimuth=20&elevation=10&size=48x48"
    reply = node.client.get(f"/api/v1/records/{record_id}/volume?{view}", headers=node.headers())
    assert reply.status_code == 200 and reply.headers["X-Window"] != "40,400"
    window = reply.headers["X-Window"]
    np.testing.assert_array_equal(
        _image(node, f"/api/v1/records/{record_id}/volume?{view}"),
        _image(node, f"/api/v1/records/{record_id}/volume?{view}&window={window}&voi_function=sigmoid"))
    assert not np.array_equal(
        _image(node, f"/api/v1/records/{record_id}/volume?{view}"),
        _image(node, f"/api/v1/records/{record_id}/volume?{view}&window={window}"))

def test_x_window_names_each_frames_own_default_and_the_records_for_reformats(node):
    """The window a viewer's drag starts from (X-Window) is the one the image was rendered with:
    a slice's own default for frames, the record's default for MPR; none for a VOI LUT."""
    windows = [(-100.0, 400.0, "LINEAR"), (200.0, 100.0, "SIGMOID"), None]
    record_id = _load(node, _series(windows))
    headers = node.headers()
    for i, expected in enumerate(["-100,400", "200,100", "-100,400"]):
        reply = node.client.get(f"/api/v1/records/{record_id}/frames/{i}", headers=headers)
        assert reply.status_code == 200 and reply.headers["X-Window"] == expected, i
    for plane in ("axial/1", "coronal/3"):
        reply = node.client.get(f"/api/v1/records/{record_id}/mpr/{plane}", headers=headers)
        assert reply.status_code == 200 and reply.headers["X-Window"] == "-100,400", plane
    lut_id = _load(node, _series([None, None], lut=True))
    reply = node.client.get(f"/api/v1/records/{lut_id}/frames/0", headers=headers)
    assert reply.status_code == 200 and "X-Window" not in reply.headers


def test_a_series_that_grows_gives_each_frame_its_own_window_after_the_growth(node):
    """A series keeps its record id while it grows: what was parsed of its old manifest (each
    frame's VOI) must not outlive that manifest, or a slice inserted between two others shows
    its neighbour's window."""
    files = _series([(-100.0, 400.0, "LINEAR"), (200.0, 100.0, "LINEAR"), (0.0, 1000.0, "LINEAR")])
    record_id = _load(node, [files[0], files[2]])
    headers = node.headers()
    assert node.client.get(f"/api/v1/records/{record_id}/frames/1", headers=headers).headers["X-Window"] == "0,1000"
    assert node.upload([files[1]]).status_code in (200, 201)  # the middle slice arrives last
    node.client.post(f"/api/v1/records/{record_id}/load", headers=headers)
    assert node.registry.get_loaded(record_id).wait_complete(30)
    for i, expected in enumerate(["-100,400", "200,100", "0,1000"]):
        reply = node.client.get(f"/api/v1/records/{record_id}/frames/{i}", headers=headers)
        assert reply.status_code == 200 and reply.headers["X-Window"] == expected, i
