"""MPR and 3D of any time point (issue 14 item 4, "expose temporal positions as a cine axis"): the
`phase` query parameter at every door (node API, reformat readings, DICOMweb rendered
extensions), each time point its own volume, and a classic cine series told apart by its clock.
Through the real node (Flask test client, real store and loader) on synthetic series
(tests/render/synthetic_stacks.py), whose every frame's pixels are `value(stack, position, time)`.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from daemons.render.api import query
from daemons.render.ingest.series_analysis import parse_upload
from tests.render import synthetic_stacks as synth
from tests.render.conftest import build_node, close_node
from tests.render.test_dcmtk_compare import LIMITS

POSITIONS, TIMES = 4, 3
WINDOW = "0,200"  # every value(0, position, time) of these series lies inside it, none saturates


def _stacks(files: list[tuple[str, bytes]]) -> list[dict]:
    return list(parse_upload(files, LIMITS).manifest.render.stacks or ())


# --- a classic cine series (single-frame files) -------------------------------------------------

@pytest.mark.parametrize("clock", ["TriggerTime", "TemporalPositionIdentifier", "AcquisitionTime"])
def test_a_classic_cine_is_split_into_time_points_by_its_clock(clock):
    (stack,) = _stacks(synth.classic_cine(POSITIONS, TIMES, clock))
    # record order is by position, then instance number: frame = position * TIMES + time
    assert stack["phases"] == [[p * TIMES + t for p in range(POSITIONS)] for t in range(TIMES)]
    assert stack["frames"] == stack["phases"][0] and stack["volume"] is None
    assert stack["slice_spacing"] == pytest.approx(synth.SLICE_MM)


def test_repeated_positions_that_no_clock_tells_apart_stay_no_volume_with_the_reason():
    (stack,) = _stacks(synth.classic_cine(POSITIONS, TIMES, None))
    assert stack["phases"] == [list(range(POSITIONS * TIMES))]
    assert f"{POSITIONS * TIMES} slices lie at {POSITIONS} positions" in stack["volume"]
    assert "Trigger Time" in stack["volume"]


def test_positions_repeated_unequally_are_no_time_points():
    files = [f for f in synth.classic_cine(POSITIONS, TIMES) if f[0] != "p2t1.dcm"]  # one image missing
    (stack,) = _stacks(files)
    assert len(stack["phases"]) == 1 and "repeated 2 to 3 times" in stack["volume"]


def test_a_single_position_cine_is_one_stack_of_one_slice_per_time_point():
    (stack,) = _stacks(synth.classic_cine(1, 5, "TriggerTime"))
    assert stack["phases"] == [[t] for t in range(5)] and stack["volume"] is None


# --- through the node ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(tmp_path_factory, token_keys):
    harness = build_node(tmp_path_factory.mktemp("phase-node"), token_keys)
    yield harness
    close_node(harness)


def _dynamic(times: tuple[int, ...]) -> list[tuple[str, bytes]]:
    """An enhanced dynamic of these time points (stored time by time: each time point's frames follow
    one another, so its volume is a view of the record's pixels)."""
    frames = [{"stack": 0, "position": p, "time": t} for t in times for p in range(POSITIONS)]
    return [("dynamic.dcm", synth.enhanced(frames, ["TemporalPositionIndex", "InStackPositionNumber"]))]


SERIES = {
    # (every time point, time point 1 alone as a series of its own)
    "enhanced": (lambda: _dynamic(tuple(range(TIMES))), lambda: _dynamic((1,))),
    # stored position by position: a time point's frames are every TIMES-th, so its volume is a copy
    "classic": (lambda: synth.classic_cine(POSITIONS, TIMES),
                lambda: [f for f in synth.classic_cine(POSITIONS, TIMES) if f[0].endswith("t1.dcm")]),
}




def _get(node, url: str, **headers):
    return node.client.get(url, headers={**node.headers(), **headers})


def _png(reply) -> np.ndarray:
    assert reply.status_code == 200, reply.json
    return np.asarray(Image.open(io.BytesIO(reply.data)))


@pytest.fixture(scope="module", params=list(SERIES))
def series(request, node):
    every, alone = SERIES[request.param]
    record_id, meta = node.load(every())
    alone_id, alone_meta = node.load(alone())
    assert len(meta["stacks"][0]["phases"]) == TIMES and len(alone_meta["stacks"][0]["phases"]) == 1
    return request.param, record_id, meta, alone_id


@pytest.mark.parametrize("view", ["mpr/coronal/5", "mpr/axial/2", "mpr/sagittal/4?slab=3&slab_mode=mip",
                                  "volume?mode=mip&size=48x48&azimuth=20", "volume?mode=avg&size=48x48"])
def test_each_time_point_is_its_own_volume(node, series, view):
    _, record_id, _, alone_id = series
    joiner = "&" if "?" in view else "?"
    base = f"{view}{joiner}format=png&window={WINDOW}"
    first = _png(_get(node, f"/api/v1/records/{record_id}/{base}"))
    explicit_first = _png(_get(node, f"/api/v1/records/{record_id}/{base}&phase=0"))
    second = _png(_get(node, f"/api/v1/records/{record_id}/{base}&phase=1"))
    alone = _png(_get(node, f"/api/v1/records/{alone_id}/{base}"))
    assert np.array_equal(first, explicit_first), "without phase: the first time point"
    assert not np.array_equal(first, second), "time point 1 is other pixels than time point 0"
    assert np.array_equal(second, alone), "time point 1 is the volume of its own frames alone"


def test_an_axial_reformat_of_a_time_point_is_its_frame(node, series):
    _, record_id, meta, _ = series
    frame = meta["stacks"][0]["phases"][2][1]
    axial = _png(_get(node, f"/api/v1/records/{record_id}/mpr/axial/1?format=png&window={WINDOW}&phase=2"))
    stored = _png(_get(node, f"/api/v1/records/{record_id}/frames/{frame}?format=png&window={WINDOW}"))
    assert np.array_equal(axial, stored)


def test_every_time_point_takes_the_stack_default_window(node, series):
    """No window: each time point is shown in the stack's one default, so a cine does not flicker."""
    _, record_id, _, _ = series
    for view in ("mpr/coronal/5?format=png", "volume?size=48x48"):
        joiner = "&" if "?" in view else "?"
        windows = {_get(node, f"/api/v1/records/{record_id}/{view}{joiner}phase={t}").headers["X-Window"]
                   for t in range(TIMES)}
        assert len(windows) == 1, windows


def test_reformat_readings_take_the_time_point(node, series):
    _, record_id, _, _ = series
    for time in range(TIMES):
        reading = _get(node, f"/api/v1/records/{record_id}/mpr/axial/2/value?x=3&y=4&phase={time}")
        assert reading.status_code == 200, reading.json
        assert reading.json["stored"] == synth.value(0, 2, time)


def test_copies_of_time_points_count_in_the_record_memory(node, series):
    kind, record_id, _, _ = series
    record = node.registry.get_loaded(record_id)
    for time in range(TIMES):
        assert _get(node, f"/api/v1/records/{record_id}/mpr/axial/0?phase={time}").status_code == 200
    copies = record.nbytes - record.pixels.nbytes
    if kind == "enhanced":
        assert copies == 0, "a time point stored in one run is a view of the record's pixels"
    else:
        assert copies == record.pixels.nbytes, "every time point copied once, and counted"
        assert node.registry.memory_used() >= 2 * record.pixels.nbytes


@pytest.mark.parametrize("path", ["mpr/axial/0", "mpr/axial/0/value?x=1&y=1", "volume?size=32x32"])
def test_a_time_point_out_of_range_is_404_and_a_malformed_one_400(node, series, path):
    _, record_id, _, _ = series
    joiner = "&" if "?" in path else "?"
    for bad in ("x", "1.5", "0x1", "１"):
        reply = _get(node, f"/api/v1/records/{record_id}/{path}{joiner}phase={bad}")
        assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error", bad
        assert "phase" in reply.json["error"]["message"]
    for missing in (TIMES, -1, 999999):
        reply = _get(node, f"/api/v1/records/{record_id}/{path}{joiner}phase={missing}")
        assert reply.status_code == 404 and reply.json["error"]["code"] == "not_found", missing
        assert f"time point {missing}" in reply.json["error"]["message"]
        assert f"0..{TIMES - 1}" in reply.json["error"]["message"], "the valid range is named"
    unknown_stack = _get(node, f"/api/v1/records/{record_id}/{path}{joiner}stack=9&phase=1")
    assert unknown_stack.status_code == 404 and "stack 9" in unknown_stack.json["error"]["message"]


def test_dicomweb_reformats_and_3d_views_take_the_same_phase(node, series):
    _, record_id, meta, _ = series
    rendered = f"/dicomweb/studies/{meta['study_uid']}/series/{meta['series_uid']}/rendered"
    for time in range(TIMES):
        ours = _png(_get(node, f"/api/v1/records/{record_id}/mpr/coronal/5?format=png&window=100,200"
                               f"&phase={time}"))
        theirs = _png(_get(node, f"{rendered}/mpr/coronal/5?window=100,200,linear&phase={time}",
                           Accept="image/png"))
        assert np.array_equal(ours, theirs), "one time point rule whatever the door"
        ours_3d = _png(_get(node, f"/api/v1/records/{record_id}/volume?format=png&size=48x48&window=100,200"
                                  f"&phase={time}"))
        theirs_3d = _png(_get(node, f"{rendered}/volume?viewport=48,48&window=100,200,linear&phase={time}",
                              Accept="image/png"))
        assert np.array_equal(ours_3d, theirs_3d)
    assert _get(node, f"{rendered}/mpr/axial/0?phase={TIMES}", Accept="image/png").status_code == 404
    assert _get(node, f"{rendered}/volume?phase=first", Accept="image/png").status_code == 400


def test_a_single_position_cine_shows_each_time_point(node):
    record_id, meta = node.load(synth.classic_cine(1, 5, "TriggerTime"))
    (stack,) = meta["stacks"]
    assert stack["volume"] is True and len(stack["phases"]) == 5
    for time in (0, 4):
        axial = _png(_get(node, f"/api/v1/records/{record_id}/mpr/axial/0?format=png&window={WINDOW}&phase={time}"))
        frame = _png(_get(node, f"/api/v1/records/{record_id}/frames/{stack['phases'][time][0]}?format=png"
                                f"&window={WINDOW}"))
        assert np.array_equal(axial, frame)


def test_the_openapi_document_lists_phase_wherever_stack_is(node):
    paths = node.client.get("/api/v1/openapi.json").json["paths"]
    with_stack = {path: [p["name"] for p in entry["get"]["parameters"]]
                  for path, entry in paths.items() if "get" in entry
                  and any(p.get("name") == "stack" for p in entry["get"].get("parameters", []))}
    assert len(with_stack) >= 6, sorted(with_stack)  # mpr, its value and stats, volume, DICOMweb mpr and volume
    assert all("phase" in names for names in with_stack.values()), with_stack
    documented = next(p for p in paths["/api/v1/records/{id}/volume"]["get"]["parameters"] if p["name"] == "phase")
    assert documented == query.PHASE.openapi()
