"""A reload keeps the reading, in Chromium against the real daemons (docs/viewer.md, "Layouts and
the active viewport"). Before, the viewer read `?slice=` when it opened and never wrote the reading
back: a reload mid-reading (a network hiccup, a phone tab the OS discarded) opened the hanging
protocol at slice 1 again, window and layout gone. An edited link's values open the protocol.
The record: 12 slices of the bundled real CT with fresh UIDs (the CT hanging protocol, 2×2).
"""

from __future__ import annotations

import pytest

from tests.render import synthetic_stacks as synth
from tests.webviewer.helpers import derived_series, login, new_patient, uploaded_record
from tests.webviewer.test_browser_geometry import open_loaded
from tests.webviewer.test_browser_image_tools import markers
from tests.webviewer.test_browser_layouts import open_viewer, viewport, wait_painted
from tests.webviewer.test_browser_viewer import shown, wait_shown

pytestmark = pytest.mark.browser

SLICES = 12
FULL_QUALITY = "d.shownKey && d.loadState === 'ready' && !d.shownKey.includes('quality=60')"


@pytest.fixture(scope="module")
def record(deployment, ct_series, tmp_path_factory):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("reload-reading"), first=40, count=SLICES)
    return {"patient": patient, **uploaded_record(deployment, patient, files, "CT chest (reload)")}


def test_a_reload_keeps_the_slice_window_layout_and_active_viewport(page, deployment, record):
    open_viewer(page, deployment, record)
    wait_painted(page, 0, "native")
    entries = page.evaluate("history.length")
    page.locator("#layout").select_option("1x2")
    viewport(page, 1).click()                      # the second viewport (the coronal) is read ...
    page.locator("#plane").select_option("native")  # ... on the stored slices
    page.locator("#viewport").focus()
    for _ in range(7):
        page.keyboard.press("ArrowDown")
    wait_shown(page, f"d.shownIndex === '7' && {FULL_QUALITY}")
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + 60, steps=3)
    page.mouse.up()
    windowed = wait_shown(page, f"d.shownKey.includes('window=') && {FULL_QUALITY}")
    window = windowed["query"]["window"]
    page.wait_for_function("w => location.hash.includes(`window=${encodeURIComponent(w)}`)", arg=window, polling=100)
    assert page.evaluate("history.length") == entries, "the reading replaces the entry: scrolling fills no history"

    page.reload()
    after = wait_shown(page, f"d.shownIndex === '7' && {FULL_QUALITY}")
    assert page.locator("#viewports").get_attribute("data-layout") == "1x2"
    assert page.locator("#layout").input_value() == "1x2"
    assert page.locator("#viewport").get_attribute("data-slot") == "1", "the viewport being read is the active one"
    assert after["plane"] == "native" and after["path"].endswith("/frames/7")
    assert after["query"]["window"] == window
    assert page.locator("#window-preset").input_value() == "custom"
    assert page.locator("#slice-out").inner_text().startswith(f"8 / {SLICES}")


def test_a_reload_keeps_a_reformat_and_its_slice(page, deployment, record):
    """The view was not kept: a reload on a coronal reformat reopened the protocol's plane at its middle."""
    open_viewer(page, deployment, record)
    wait_painted(page, 1, "coronal")
    viewport(page, 1).click()
    page.locator("#viewport").focus()
    middle = shown(page)["index"]
    for _ in range(5):
        page.keyboard.press("ArrowDown")
    wait_shown(page, f"d.shownPlane === 'coronal' && d.shownIndex === '{middle + 5}' && {FULL_QUALITY}")
    page.wait_for_function("i => location.hash.includes('plane=coronal') && location.hash.includes(`slice=${i}`)",
                           arg=middle + 5, polling=100)
    page.reload()
    after = wait_shown(page, f"d.shownIndex === '{middle + 5}' && {FULL_QUALITY}")
    assert after["plane"] == "coronal" and "/mpr/coronal/" in after["path"]
    assert page.locator("#viewport").get_attribute("data-slot") == "1"


def test_a_reload_keeps_a_preset_window_as_that_preset(page, deployment, record):
    """Only a dragged window was kept: a reload after choosing the bone preset showed the default window."""
    open_viewer(page, deployment, record)
    wait_painted(page, 0, "native")
    page.locator("#window-preset").select_option("preset:ct_bone")
    bone = wait_shown(page, f"d.shownKey.includes('window=') && {FULL_QUALITY}")["query"]["window"]
    page.wait_for_function("w => location.hash.includes(`window=${encodeURIComponent(w)}`)", arg=bone, polling=100)
    page.reload()
    assert wait_shown(page, f"d.shownKey.includes('window=') && {FULL_QUALITY}")["query"]["window"] == bone
    assert page.locator("#window-preset").input_value() == "preset:ct_bone"


@pytest.mark.parametrize(("kind", "control", "value", "key"), [
    ("field map", "#stack-select", "2", "stack=2"),    # magnitude and phase stacks: the phase one read
    ("dynamic", "#time", "1", "phase=1"),               # two time points: the second read
])
def test_a_reload_keeps_the_stack_and_time_point_of_a_reformat(page, deployment, tmp_path, kind, control, value, key):
    """Neither was kept: a reload on the phase stack's axial slice 5 showed the magnitude stack's, and one
    on time point 2 showed time point 1 (the address named only the view and the slice)."""
    path = tmp_path / "stacks.dcm"
    path.write_bytes(synth.field_map(6) if kind == "field map" else synth.dynamic(times=2, positions=6))
    patient = new_patient(deployment)
    open_loaded(page, deployment, {"patient": patient, **uploaded_record(deployment, patient, [path], f"MR {kind}")})
    page.locator("#plane").select_option("axial")
    if control == "#time":
        page.locator(control).fill(value)
    else:
        page.locator(control).select_option(value)
    page.locator("#slice").fill("4")
    wait_shown(page, "d.shownIndex === '4' && d.shownKey.includes(arg)", key)
    page.wait_for_function("() => location.hash.includes('slice=4')", polling=100)
    page.reload()
    wait_shown(page, "d.shownPlane === 'axial' && d.shownIndex === '4' && d.shownKey.includes(arg)", key)
    assert page.locator(control).input_value() == value


@pytest.mark.parametrize(("query", "index"), [
    ("slice=-5&window=abc&layout=9x9&viewport=0", 0),
    ("slice=1e99&window=1e12,400&layout=constructor&viewport=9", SLICES - 1),
    ("plane=constructor&slice=2", 2),
])
def test_an_edited_address_opens_the_hanging_protocol(page, deployment, record, query, index):
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    refused = []
    page.on("response", lambda r: refused.append(r.status) if "/frames/" in r.url and r.status >= 400 else None)
    login(page, deployment)
    inst, node, meta = record["institution"], record["node"], record["meta"]
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={record['patient']['id']}&{query}")
    now = wait_shown(page, f"d.shownIndex === '{index}' && {FULL_QUALITY}")
    assert page.locator("#viewports").get_attribute("data-layout") == "2x2"
    assert page.locator("#viewports .viewport").count() == 4
    assert page.locator("#viewport").get_attribute("data-slot") == "0"
    assert "window" not in now["query"] and page.locator("#window-preset").input_value() == "auto"
    assert page.locator("#view-message").is_hidden() and page.locator("#alert").is_hidden()
    assert errors == [] and refused == []
    # the address now holds the reading on screen, not the edited values
    page.wait_for_function(f"() => location.hash.includes('slice={index}') && location.hash.includes('layout=2x2')",
                           polling=100)
    assert "window=" not in page.evaluate("location.hash") and shown(page)["index"] == index


def test_a_reload_keeps_a_slab_and_the_pictures_turn_in_every_viewport(page, deployment, record):
    """Session 62: a thick slab (20 mm MIP) on a reformat and a rotated, mirrored picture in another
    viewport were lost at a reload: the reformat came back thin, the picture upright. Both are kept
    per viewport now (`slab=20,mip`, `turn=1h`, and in a viewport's group `b20,mip`, `r1h`), read by
    the toolbar's own rules (viewport.js slabWidth, keptSlab, keptPictureTurn)."""
    open_viewer(page, deployment, record)
    wait_painted(page, 1, "coronal")
    viewport(page, 1).click()
    page.locator("#slab").fill("20")
    page.locator("#slab").dispatch_event("change")
    page.locator("#slab-mode").select_option("mip")
    wait_shown(page, "d.shownKey.includes('slab=20') && d.shownKey.includes('slab_mode=mip')")
    viewport(page, 0).click()                       # the native view: rotated a quarter, mirrored
    page.get_by_role("button", name="Rotate a quarter turn clockwise (])").click()
    page.get_by_role("button", name="Mirror left-right (H)").click()
    turned = markers(page)
    assert turned != {"top": "A", "right": "L", "bottom": "P", "left": "R"}, turned
    # written within 300 ms of the last change: the rotation alone may be in the address a moment before
    page.wait_for_function("() => /b20(%2C|,)mip/.test(location.hash) && /turn=[0-3]h/.test(location.hash)",
                           polling=100)

    page.reload()
    wait_painted(page, 0, "native")
    assert markers(page) == turned, "the active viewport's picture turned as it was"
    viewport(page, 1).click()
    thick = wait_shown(page, "d.shownPlane === 'coronal' && d.shownKey.includes('slab=20')")
    assert thick["query"]["slab_mode"] == "mip"
    assert page.locator("#slab").input_value() == "20" and page.locator("#slab-mode").input_value() == "mip"
    assert "slab 20 mm MIP" in page.locator("#view-info").inner_text()


@pytest.mark.parametrize("query", ["slab=1000,mip", "slab=20,sum", "slab=-5,avg", "slab=20", "turn=4", "turn=1x",
                                   "turn=hh"])
def test_an_edited_slab_or_turn_is_ignored(page, deployment, record, query):
    """Values no toolbar control makes open as the protocol would, bounded as the field bounds them
    (a 1,000 mm slab is the field's 100 mm at most: slabWidth)."""
    login(page, deployment)
    inst, node, meta = record["institution"], record["node"], record["meta"]
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={record['patient']['id']}"
              f"&viewport=2&plane=coronal&{query}")
    after = wait_shown(page, f"d.shownPlane === 'coronal' && {FULL_QUALITY}")
    if query == "slab=1000,mip":
        assert after["query"].get("slab") == "100" and after["query"].get("slab_mode") == "mip", after
    else:
        assert "slab" not in after["query"], after
    assert page.locator("#viewport .view-image").evaluate("e => getComputedStyle(e).transform") == "none"
    assert page.locator("#alert").is_hidden()
