"""The viewer against render nodes that answer single objects of another shape (docs/operations.md,
attacks 81-84).

A render node that is broken or taken over answers the record's metadata (RecordMeta), its load
status, an ROI's statistics or its presets with `null`, a string where a count belongs, a frame
count of 10^9, a spacing of 1e400 (Infinity once parsed), a negative or zero size, an unknown
state. Each test serves such an answer through Playwright's request interception (`page.route`)
in place of the node's own, built from its real answer where it has one, and checks what a person
sees: a message naming the node, the endpoint and what is wrong (or, for presets, a viewer that
opens without them), a viewer that stops asking, a page that still answers clicks, and no uncaught
error in the page (the `page` fixture fails a test on any).
"""

from __future__ import annotations

import copy
from urllib.parse import urlsplit

import pytest

from tests.webviewer.helpers import login, opened_record
from tests.webviewer.hostile_answers import INFINITE, serve, set_in, still_usable

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def ct(deployment, ct_series, tmp_path_factory):
    """A record the viewer opens, its RecordMeta as the node answers it (the real answer changed)."""
    record = opened_record(deployment, ct_series, tmp_path_factory.mktemp("hostile-ct"), 64,
                           "CT for the hostile-object tests")
    record["meta"] = deployment.client("physician").call("GET", f"{record['node']['url']}/{record['path']}").json()
    return record


# each: how the record's metadata is changed, and the field the message must name
RECORD_ATTACKS = {
    "null": (lambda meta: None, "the record is no object"),
    "frames-a-billion": (set_in("frames", 10**9), "slices has 4 entries for 1000000000 frames"),
    "frames-text": (set_in("frames", "4"), "frames is no count"),
    "rows-a-million": (set_in("rows", 10**6), "rows is more than 65535"),
    "modality-number": (set_in("modality", 5), "modality is no text"),
    "window-text": (set_in("default_window", "40,400"), "default_window is no object"),
    "slice-null": (set_in("slices.0", None), "slices[0] is no object"),
    "planes-null-entry": (set_in("planes.axial", None), "planes.axial is no object"),
    "spacing-infinite": (set_in("planes.axial.spacing_mm", INFINITE), "planes.axial.spacing_mm is no finite number"),
    "width-negative": (set_in("planes.slices.width_mm", -350.0), "planes.slices.width_mm is negative"),
    "width-zero": (set_in("planes.coronal.width_mm", 0), "planes.coronal.width_mm is 0"),
    "plane-a-million-wide": (set_in("planes.sagittal.columns", 10**6), "planes.sagittal.columns is more than 65535"),
    "stack-phases-null": (set_in("stacks.0.phases", None), "stacks[0].phases is no list"),
    "stack-frame-outside": (set_in("stacks.0.frames.0", 10**9), "stacks[0].frames[0] is no frame of the record"),
    "another-record": (set_in("id", "0" * 32), "id names another record than the one asked for"),
}


@pytest.mark.parametrize("attack", list(RECORD_ATTACKS), ids=list(RECORD_ATTACKS))
def test_a_record_of_another_shape_is_refused_naming_the_node(page, deployment, ct, attack):
    """Attack 81: a node's RecordMeta of another shape or with absurd numbers was drawn as it came:
    TypeErrors that left the viewer half drawn, a slider to 10^9, Infinity and negative sizes in
    its geometry. Now the viewer says which node sent what, and stays usable."""
    change, problem = RECORD_ATTACKS[attack]
    record_url = f"{ct['node']['url']}/{ct['path']}"

    body = change(copy.deepcopy(ct["meta"]))
    page.route(record_url, lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(ct["href"])
    alert = page.locator("#alert")
    alert.get_by_text("tell IT").wait_for(timeout=20_000)
    text = alert.inner_text()
    assert urlsplit(ct["node"]["url"]).netloc in text and ct["path"] in text, text
    assert problem in text, text
    assert page.locator("#viewport").count() == 0, "nothing of the record is drawn"
    still_usable(page)


LOADING = {"state": "loading", "frames_total": 4, "frames_ready": 0}

# each: the status the node answers while the record loads, and the field the message must name
STATUS_ATTACKS = {
    "null": (None, "the status is no object"),
    "state-unknown": ({**LOADING, "state": "paused"}, "state is none of"),
    "ready-text": ({**LOADING, "frames_ready": "all"}, "frames_ready is no count"),
    "ready-beyond-total": ({**LOADING, "state": "ready", "frames_ready": 10**9}, "frames_ready is more than 4"),
    "errors-null-entry": ({**LOADING, "state": "error", "errors": [None]}, "errors[0] is no object"),
    "errors-text": ({**LOADING, "state": "error", "errors": "disk on fire"}, "errors is no list"),
}


@pytest.mark.parametrize("attack", list(STATUS_ATTACKS), ids=list(STATUS_ATTACKS))
def test_a_load_status_of_another_shape_ends_the_polling_with_a_message(page, deployment, ct, attack):
    """Attack 82: a node whose load status was `null` or text was polled every second for ever, and
    one naming an unknown state left "Loading slices: 0 of 4" on screen for ever; an error entry of
    `null` threw in the page. Now the load fails saying which node sent what, and polling stops."""
    status, problem = STATUS_ATTACKS[attack]
    asked: list[str] = []

    def answer(route):
        asked.append(route.request.url)
        serve(route, deployment, LOADING if route.request.method == "POST" else status)

    page.route(lambda url: url.startswith(f"{ct['node']['url']}/{ct['path']}/load"), answer)
    page.route(lambda url: url.startswith(f"{ct['node']['url']}/{ct['path']}/status"), answer)
    login(page, deployment)
    page.goto(ct["href"])
    load_text = page.locator("#load-text")
    load_text.get_by_text("Loading failed").wait_for(timeout=20_000)
    text = load_text.inner_text()
    assert urlsplit(ct["node"]["url"]).netloc in text and f"{ct['path']}/status" in text, text
    assert problem in text, text
    # a poll the page sent before it failed may reach the route handler only now, on a busy machine
    page.wait_for_timeout(500)
    polls = len(asked)
    page.wait_for_timeout(2500)   # ten polling periods
    assert len(asked) == polls, "the node is asked no more"
    assert page.locator("#viewport[data-load-state=failed]").count() >= 1
    still_usable(page)


# each: the statistics the node answers for an ROI, and the field the message must name
STATS_ATTACKS = {
    "null": (None, "the statistics is no object"),
    "sd-text": ({"count": 128, "mean": 40.0, "sd": "wide", "min": 0, "max": 80, "area_mm2": 32.0, "unit": "HU"},
                "sd is no finite number"),
    "area-negative": ({"count": 128, "mean": 40.0, "sd": 2.0, "min": 0, "max": 80, "area_mm2": -32.0, "unit": "HU"},
                      "area_mm2 is negative"),
}


@pytest.mark.parametrize("attack", list(STATS_ATTACKS), ids=list(STATS_ATTACKS))
def test_roi_statistics_of_another_shape_are_named_not_thrown(page, deployment, ct, attack):
    """Attack 83: an ROI's statistics whose SD was text, or that were `null`, threw in the page at
    every redraw of the overlay (toFixed of a string), leaving the ROI half drawn. Now the
    statistics are refused, the viewer says which node sent what, and the ROI stays drawn."""
    stats, problem = STATS_ATTACKS[attack]
    page.route(lambda url: url.startswith(f"{ct['node']['url']}/{ct['path']}/frames/") and "/stats?" in url,
               lambda route: serve(route, deployment, stats))
    login(page, deployment)
    page.goto(ct["href"])
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60_000)
    image = page.locator("#viewport .view-image")
    image.wait_for(state="visible", timeout=20_000)   # ready can come before the first slice is painted
    box = image.bounding_box()
    page.get_by_role("button", name="Rectangle ROI", exact=True).click()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=6)
    page.mouse.up()
    status = page.locator("#status")
    status.get_by_text("could not be measured").wait_for(timeout=20_000)
    text = status.inner_text()
    assert urlsplit(ct["node"]["url"]).netloc in text and "/stats" in text and problem in text, text
    assert page.locator("#viewport rect.roi").count() == 1
    page.locator("#slice").fill("1")   # a redraw of the overlay
    page.locator("#slice").fill("0")
    page.locator("#viewport rect.roi").wait_for(timeout=10_000)   # the ROI of slice 1 drawn again
    still_usable(page)


# each: the presets the node answers; the viewer opens without the named windows they would give
PRESETS_ATTACKS = {
    "null": None,
    "window-null-entry": {"window": {"ct_lung": None}, "volume": ["ct_bone"], "volume_default": "ct_bone"},
    "window-text": {"window": "lung", "volume": [], "volume_default": ""},
}


@pytest.mark.parametrize("attack", list(PRESETS_ATTACKS), ids=list(PRESETS_ATTACKS))
def test_presets_of_another_shape_leave_the_viewer_without_named_windows(page, deployment, ct, attack):
    """Attack 84: a node's presets answer `null` threw before the viewer was drawn ("Something
    went wrong in the viewer": the record could not be opened at all); a named window `null`
    threw while the window choices were filled. Now such presets are not used, as when the node
    cannot be asked for them: the record opens with its own windows."""
    page.route(lambda url: url.startswith(f"{ct['node']['url']}/api/v1/presets"),
               lambda route: serve(route, deployment, PRESETS_ATTACKS[attack]))
    login(page, deployment)
    page.goto(ct["href"])
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60_000)
    values = page.locator("#window-preset option").evaluate_all("options => options.map(o => o.value)")
    assert values and not [v for v in values if v.startswith("preset:")], values
    assert page.locator("#alert").is_hidden()
    still_usable(page)
