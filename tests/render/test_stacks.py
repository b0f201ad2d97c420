"""Every stack its own volume (issue 14 item 4): the split of a record's frames into stacks, and the
MPR/3D of each stack at its own extent, through the real node (Flask test client, real store and
loader). The inputs are synthetic (tests/render/synthetic_stacks.py): a field map (magnitude +
phase at the same positions), a DTI-like file (4 b-values x 8 positions), a 2-time-point dynamic,
a classic series of two orientations and one whose every slice has its own orientation.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from daemons.render.ingest.series_analysis import parse_upload
from daemons.render.stacks import find_stack, stacks_of
from tests.manifests import sample_manifest
from tests.render import synthetic_stacks as synth
from tests.render.synthetic import stack as classic_stack
from tests.render.test_dcmtk_compare import LIMITS

POSITIONS = 6


def _stacks(files: list[tuple[str, bytes]]) -> list[dict]:
    return list(parse_upload(files, LIMITS).manifest.render.stacks or ())


def test_a_field_map_splits_into_magnitude_and_phase():
    stacks = _stacks([("fieldmap.dcm", synth.field_map(POSITIONS))])
    assert [(s["id"], s["label"]) for s in stacks] == [("1", "MAGNITUDE"), ("2", "PHASE")]
    assert stacks[0]["frames"] == [0, 2, 4, 6, 8, 10] and stacks[1]["frames"] == [1, 3, 5, 7, 9, 11]
    assert all(s["volume"] is None and s["slice_spacing"] == pytest.approx(synth.SLICE_MM) for s in stacks)


def test_dti_splits_by_b_value_each_in_spatial_order():
    stacks = _stacks([("dti.dcm", synth.dti(positions=8))])
    assert [s["label"] for s in stacks] == ["b=0", "b=500", "b=1000", "b=2000"]
    for number, entry in enumerate(stacks):
        assert entry["frames"] == [position * 4 + number for position in range(8)]
        assert entry["phases"] == [entry["frames"]] and entry["volume"] is None


def test_echo_times_are_stacks_of_their_own():
    stacks = _stacks([("echoes.dcm", synth.multi_echo((5.0, 10.0), POSITIONS))])
    assert [(s["label"], s["frames"]) for s in stacks] == [("TE=5", [0, 2, 4, 6, 8, 10]),
                                                           ("TE=10", [1, 3, 5, 7, 9, 11])]


def test_temporal_positions_are_the_cine_axis_of_one_stack():
    stacks = _stacks([("dynamic.dcm", synth.dynamic(times=2, positions=POSITIONS))])
    assert len(stacks) == 1
    assert stacks[0]["phases"] == [list(range(POSITIONS)), list(range(POSITIONS, 2 * POSITIONS))]
    assert stacks[0]["frames"] == list(range(POSITIONS)) and stacks[0]["volume"] is None


def test_a_classic_series_of_two_orientations_is_two_stacks():
    stacks = _stacks(synth.mixed_orientation_series(axial=5, sagittal=4))
    assert sorted(s["label"] for s in stacks) == ["axial", "sagittal"]
    assert sorted(len(s["frames"]) for s in stacks) == [4, 5] and all(s["volume"] is None for s in stacks)


def test_slices_that_form_no_volume_keep_the_reason():
    (mixed,) = _stacks(synth.oblique_series(5))
    assert "5 different orientations" in mixed["volume"]
    gap = classic_stack((1, 0, 0, 0, 1, 0), count=6)
    irregular = [f for f in gap if f[0] != "slice003.dcm"]  # a missing slice: one gap twice the others
    (entry,) = _stacks(irregular)
    assert "spacing varies" in entry["volume"]


def test_a_manifest_without_stacks_is_one_stack_of_all_frames():
    manifest = sample_manifest(frames=7)
    assert manifest.render.stacks is None  # as stored before stacks existed
    (only,) = stacks_of(manifest)
    assert only.frames == tuple(range(7)) and only.volume is None and find_stack(manifest, None) == only


# --- through the node ---------------------------------------------------------------------------



def _png(reply) -> np.ndarray:
    assert reply.status_code == 200, reply.json
    return np.asarray(Image.open(io.BytesIO(reply.data)))


@pytest.mark.parametrize("maker", ["field_map", "dti"])
def test_mpr_of_each_stack_has_the_single_stack_extent(node, maker):
    record_id, meta = node.load([(f"{maker}.dcm", getattr(synth, maker)(positions=POSITIONS))])
    stacks = meta["stacks"]
    assert len(stacks) > 1 and meta["frames"] == POSITIONS * len(stacks)
    images = []
    for entry in stacks:
        planes = entry["planes"]
        assert planes["axial"]["count"] == POSITIONS and planes["coronal"]["rows"] == POSITIONS
        assert planes["coronal"]["height_mm"] == pytest.approx(POSITIONS * synth.SLICE_MM)
        url = f"/api/v1/records/{record_id}/mpr/coronal/3?format=png&window=2000,4000&stack={entry['id']}"
        coronal = _png(node.client.get(url, headers=node.headers()))
        images.append(coronal)
        beyond = node.client.get(f"/api/v1/records/{record_id}/mpr/axial/{POSITIONS}?stack={entry['id']}",
                                 headers=node.headers())
        assert beyond.status_code == 404, "the stack has POSITIONS axial slices, not the record's frames"
    assert not np.array_equal(images[0], images[1]), "each stack reformats its own frames"
    assert meta["planes"]["axial"] == stacks[0]["planes"]["axial"], "the default reformats are the first stack's"
    assert meta["planes"]["slices"]["count"] == meta["frames"], "2D still pages through every frame"


def test_the_stack_parameter_is_checked(node):
    record_id, _ = node.load([("fieldmap.dcm", synth.field_map(POSITIONS))])
    unknown = node.client.get(f"/api/v1/records/{record_id}/mpr/axial/0?stack=9", headers=node.headers())
    assert unknown.status_code == 404 and "stack 9" in unknown.json["error"]["message"]
    bad = node.client.get(f"/api/v1/records/{record_id}/volume?stack=x", headers=node.headers())
    assert bad.status_code == 400 and bad.json["error"]["code"] == "validation_error"
    default = node.client.get(f"/api/v1/records/{record_id}/mpr/axial/0?format=png", headers=node.headers())
    first = node.client.get(f"/api/v1/records/{record_id}/mpr/axial/0?format=png&stack=1", headers=node.headers())
    second = node.client.get(f"/api/v1/records/{record_id}/mpr/axial/0?format=png&stack=2", headers=node.headers())
    assert default.data == first.data and default.headers["ETag"] != second.headers["ETag"]


def test_a_series_without_a_volume_refuses_mpr_and_3d_but_serves_every_frame(node):
    record_id, meta = node.load(synth.oblique_series(5))
    (entry,) = meta["stacks"]
    assert entry["volume"] is False and "orientations" in entry["no_volume_reason"]
    for url in (f"/api/v1/records/{record_id}/mpr/axial/0", f"/api/v1/records/{record_id}/volume"):
        reply = node.client.get(url, headers=node.headers())
        assert reply.status_code == 422 and reply.json["error"]["code"] == "no_volume"
        assert "orientations" in reply.json["error"]["message"]
    for frame in range(5):
        assert _png(node.client.get(f"/api/v1/records/{record_id}/frames/{frame}?format=png",
                                    headers=node.headers())).size


def _shifted(files: list[tuple[str, bytes]], sideways_mm: tuple[float, float, float]) -> list[tuple[str, bytes]]:
    """`files` (a stack from `classic_stack`) with slice k moved k x `sideways_mm` within its plane."""
    shifted = []
    for name, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        k = int(ds.InstanceNumber) - 1
        ds.ImagePositionPatient = [float(v) + k * d for v, d in zip(ds.ImagePositionPatient, sideways_mm, strict=True)]
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        shifted.append((name, out.getvalue()))
    return shifted


def test_a_gantry_tilted_stack_is_read_as_slices_not_as_a_sheared_volume(node):
    """A CT with a gantry tilt: the table steps 2 mm along the body while each slice lies 0.73 mm
    further along its own plane (20 degrees). It was taken as a volume whose slice axis is the normal:
    every reformat and 3D view sheared, coronal rows published 1.879 mm apart for 2.0. Now it is no
    volume, saying why, and every slice is still served; a shift under a pixel (rounding) is none."""
    tilt = float(np.tan(np.radians(20.0))) * 2.0
    tilted = _shifted(classic_stack((1, 0, 0, 0, 1, 0), count=6, slice_spacing=2.0), (0.0, tilt, 0.0))
    (entry,) = _stacks(tilted)
    assert "shifted in its plane" in entry["volume"] and "tilt of 20 degrees" in entry["volume"], entry["volume"]
    rounding = _shifted(classic_stack((1, 0, 0, 0, 1, 0), count=6, slice_spacing=2.0), (0.05, 0.05, 0.0))
    assert [s["volume"] for s in _stacks(rounding)] == [None]
    record_id, meta = node.load(tilted)
    (shown,) = meta["stacks"]
    assert shown["volume"] is False and "gantry tilt" in shown["no_volume_reason"]
    for url in (f"/api/v1/records/{record_id}/mpr/coronal/0", f"/api/v1/records/{record_id}/volume"):
        reply = node.client.get(url, headers=node.headers())
        assert reply.status_code == 422 and reply.json["error"]["code"] == "no_volume"
    for frame in range(6):
        assert _png(node.client.get(f"/api/v1/records/{record_id}/frames/{frame}?format=png",
                                    headers=node.headers())).size


@pytest.mark.parametrize("pixel_spacing, slice_spacing", [((1e4, 1e4), 2.0), ((0.8, 0.5), 1e5)])
def test_spacings_beyond_any_body_are_no_volume_not_a_500(node, pixel_spacing, slice_spacing):
    """Spacings the upload accepts (the largest pixel spacing, positions within a kilometre) whose
    stack is larger than any body: spacings of 1e300 mm made the 3D rays' step underflow
    (ZeroDivisionError, a 500); such files are now refused at upload (test_nonfinite_geometry).
    The stack is no volume, with the reason; its frames are still served."""
    record_id, meta = node.load(classic_stack((1, 0, 0, 0, 1, 0), count=3, pixel_spacing=pixel_spacing,
                                              slice_spacing=slice_spacing))
    (entry,) = meta["stacks"]
    assert entry["volume"] is False and "more than any body" in entry["no_volume_reason"]
    for url in (f"/api/v1/records/{record_id}/volume?size=64x64", f"/api/v1/records/{record_id}/mpr/axial/0"):
        reply = node.client.get(url, headers=node.headers())
        assert reply.status_code == 422 and reply.json["error"]["code"] == "no_volume", reply.json
    assert _png(node.client.get(f"/api/v1/records/{record_id}/frames/1?format=png", headers=node.headers())).size


def test_a_declared_slice_spacing_beyond_any_body_is_not_used(node):
    """Slices without positions take their spacing from SpacingBetweenSlices or SliceThickness: 1e299
    there made the 3D geometry NaN (a blank image). Such a value is no spacing; the in-plane one
    stands in, and the reformat is a real image."""
    files = []
    for name, raw in classic_stack((1, 0, 0, 0, 1, 0), count=3):
        ds = pydicom.dcmread(io.BytesIO(raw))
        del ds.ImagePositionPatient
        ds.SpacingBetweenSlices = ds.SliceThickness = 1e299
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append((name, out.getvalue()))
    record_id, meta = node.load(files)
    assert meta["slice_spacing"] < 1e3
    image = _png(node.client.get(f"/api/v1/records/{record_id}/mpr/coronal/0?format=png", headers=node.headers()))
    assert np.asarray(image).max() > 0


def test_a_mixed_orientation_series_reformats_each_stack_at_its_extent(node):
    record_id, meta = node.load(synth.mixed_orientation_series(axial=5, sagittal=4))
    counts = {entry["label"]: entry["planes"]["slices"]["count"] for entry in meta["stacks"]}
    assert counts == {"sagittal": 4, "axial": 5}
    for entry in meta["stacks"]:
        reply = node.client.get(f"/api/v1/records/{record_id}/volume?stack={entry['id']}&size=64x64",
                                headers=node.headers())
        assert reply.status_code == 200, reply.json


def test_a_dynamic_reformats_its_first_time_point_at_one_stack_extent(node):
    record_id, meta = node.load([("dynamic.dcm", synth.dynamic(times=2, positions=POSITIONS))])
    (entry,) = meta["stacks"]
    assert entry["phases"] == [list(range(POSITIONS)), list(range(POSITIONS, 2 * POSITIONS))]
    assert meta["planes"]["axial"]["count"] == POSITIONS and meta["planes"]["slices"]["count"] == 2 * POSITIONS
    axial = _png(node.client.get(f"/api/v1/records/{record_id}/mpr/axial/2?format=png&window=0,100",
                                 headers=node.headers()))
    frame = _png(node.client.get(f"/api/v1/records/{record_id}/frames/2?format=png&window=0,100",
                                 headers=node.headers()))
    assert np.array_equal(axial, frame), "axial slice 2 of the stack is frame 2 (time point 1), not a mix of times"


def test_dicomweb_reformats_and_3d_views_take_the_same_stack_parameter(node):
    record_id, meta = node.load([("fieldmap.dcm", synth.field_map(POSITIONS))])
    series = f"/dicomweb/studies/{meta['study_uid']}/series/{meta['series_uid']}/rendered"
    png = {**node.headers(), "Accept": "image/png"}
    for entry in meta["stacks"]:
        ours = node.client.get(f"/api/v1/records/{record_id}/mpr/coronal/3?format=png&stack={entry['id']}",
                               headers=node.headers())
        theirs = node.client.get(f"{series}/mpr/coronal/3?stack={entry['id']}", headers=png)
        assert np.array_equal(_png(ours), _png(theirs)), "one stack rule whatever the door"
        assert node.client.get(f"{series}/mpr/axial/{POSITIONS}?stack={entry['id']}", headers=png).status_code == 404
    assert node.client.get(f"{series}/mpr/axial/0?stack=9", headers=png).status_code == 404
    assert node.client.get(f"{series}/volume?stack=x", headers=png).status_code == 400
    assert node.client.get(f"{series}/volume?stack=2&viewport=64,64", headers=png).status_code == 200


def test_each_stack_reformats_in_its_own_default_window(node):
    """A field map's phase frames carry their own window: a reformat of the phase stack without a
    window takes it (the magnitude's would show the phase flat), the magnitude stack keeps the file's."""
    record_id, meta = node.load([("fieldmap.dcm", synth.field_map(POSITIONS, phase_window=(50, 120)))])
    for stack, window in (("1", "2000,4000"), ("2", "50,120")):
        base = f"/api/v1/records/{record_id}/mpr/coronal/3?format=png&stack={stack}"
        default = _png(node.client.get(base, headers=node.headers()))
        explicit = _png(node.client.get(f"{base}&window={window}", headers=node.headers()))
        assert np.array_equal(default, explicit), f"stack {stack} takes window {window}"
    whole = _png(node.client.get(f"/api/v1/records/{record_id}/mpr/coronal/3?format=png&stack=2&window=2000,4000",
                                 headers=node.headers()))
    assert not np.array_equal(whole, explicit), "the two windows show the phase differently"
