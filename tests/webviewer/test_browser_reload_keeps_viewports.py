"""A reload keeps every viewport, not only the active one, in Chromium against the real daemons
(docs/viewer.md, "A reload keeps the reading"). Before: in a 2×2 layout only the active viewport's
view, slice and window came back; the others were the hanging protocol's again (their middle slice,
the file's window), and views linked for scrolling, aligned across studies with "A", came back
unlinked and without their offset.
One patient, two studies of slices of the bundled real CT (tests.webviewer.test_browser_priors
as_study): the current one and a prior in another frame of reference.
"""

from __future__ import annotations

import pytest

from tests.webviewer.test_browser_priors import (
    OFFSET,
    current_and_prior,
    location,
    open_current,
    read,
    viewport,
    wait_record,
)

pytestmark = pytest.mark.browser

SLICES = 8


@pytest.fixture(scope="module")
def studies(deployment, ct_series, tmp_path_factory) -> dict:
    return current_and_prior(deployment, ct_series, tmp_path_factory.mktemp("reload-viewports"), SLICES)


def view_of(page, slot: int) -> dict:
    """What viewport `slot` shows once its full-quality image is on screen: view, slice, window, inverted."""
    page.wait_for_function(
        "slot => { const d = document.querySelector(`#viewports .viewport[data-slot='${slot}']`)?.dataset;"
        " return d && d.loadState === 'ready' && d.shownKey && !d.shownKey.includes('quality=60'); }",
        arg=slot, polling=100, timeout=60000)
    data = viewport(page, slot).evaluate("v => ({...v.dataset})")
    query = data["shownKey"].split("?")[-1].split("&")
    window = next((p[len("window="):] for p in query if p.startswith("window=")), None)
    return {"plane": data["shownPlane"], "index": data["shownIndex"], "window": window,
            "inverted": "invert=true" in query}


def test_a_reload_keeps_every_viewports_view_slice_and_window(page, deployment, studies):
    open_current(page, deployment, studies)         # 2×2: slices, coronal, sagittal, 3D
    first = {slot: view_of(page, slot) for slot in (1, 2)}
    read(page, 1)                                   # the coronal: three slices on, a preset window
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    preset = next(v for v in page.locator("#window-preset option").evaluate_all("os => os.map(o => o.value)")
                  if v.startswith("preset:"))
    page.locator("#window-preset").select_option(preset)
    read(page, 2)                                   # the sagittal becomes the axial, two slices up, inverted
    page.locator("#plane").select_option("axial")
    page.locator("#viewport").focus()
    for _ in range(2):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("n")
    read(page, 0)                                   # the slices, read last
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => ['v2=coronal', 'v3=axial', 'v4=3d'].every(p => location.hash.includes(p))",
                           polling=100)
    page.wait_for_timeout(400)                      # the last change written (READING_WRITE_MS)
    before = {slot: view_of(page, slot) for slot in range(4)}
    assert before[1]["plane"] == "coronal" and before[1]["index"] != first[1]["index"] and before[1]["window"]
    assert before[2]["plane"] == "axial" and before[2]["inverted"] and not before[1]["inverted"]

    page.reload()
    page.locator("#viewports .viewport[data-slot='3']").wait_for()
    after = {}
    for _ in range(100):                            # until every viewport shows its kept view
        after = {slot: view_of(page, slot) for slot in range(4)}
        if after == before:
            break
        page.wait_for_timeout(200)
    assert after == before
    assert page.locator("#viewport").get_attribute("data-slot") == "0"
    read(page, 1)
    assert page.locator("#window-preset").input_value() == preset, "a preset's window comes back as that preset"

    # an edited group is ignored value by value: the protocol's, never an exception
    inst, node, meta = (studies["records"]["current"][k] for k in ("institution", "node", "meta"))
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={studies['patient']['id']}"
              "&v2=constructor_sabc_w1e12,400_t-1_o1e99_itrue&v3=axial_s1e99_wabc_i&v4=3d_mx_a1e999_pct_nothing&v5=coronal_s2")
    page.wait_for_function("() => document.querySelector(\"#viewports .viewport[data-slot='1']\")"
                           "?.dataset.plane === 'native'")
    edited = {slot: view_of(page, slot) for slot in range(4)}
    assert edited[1] == {"plane": "native", "index": "0", "window": None, "inverted": False}
    assert (edited[2]["plane"], edited[2]["window"], edited[2]["inverted"]) == ("axial", None, False)
    read(page, 2)
    assert edited[2]["index"] == page.locator("#slice").get_attribute("max"), "a slice past the end is the last one"
    assert edited[3]["plane"] == "3d"
    assert page.locator("#viewports .viewport").count() == 4 and not page.js_errors


def test_a_reload_keeps_linked_scrolling_and_the_offset(page, deployment, studies):
    current, prior = studies["records"]["current"]["meta"]["id"], studies["records"]["prior"]["meta"]["id"]
    open_current(page, deployment, studies)
    viewport(page, 0).focus()
    page.keyboard.press("c")                        # the prior beside the current study, linked
    wait_record(page, 1, prior)
    read(page, 1)
    page.locator("#slice").fill("2")
    wait_record(page, 1, prior, 2)
    read(page, 0)
    page.keyboard.press("a")                        # the slices on screen are the same place
    note = viewport(page, 1).locator(".overlay-link").inner_text()
    assert OFFSET.search(note), note
    page.wait_for_function("() => location.hash.includes('link=1') && location.hash.includes('_o')", polling=100)
    page.wait_for_timeout(400)

    page.reload()
    wait_record(page, 1, prior, 2)
    wait_record(page, 0, current)
    assert page.locator("#sync-scroll").get_attribute("aria-pressed") == "true"
    page.wait_for_function("n => document.querySelector(\"#viewports .viewport[data-slot='1'] .overlay-link\")"
                           "?.innerText === n", arg=note, polling=100)
    start = {slot: location(page, slot) for slot in (0, 1)}
    index = int(viewport(page, 0).get_attribute("data-shown-index"))
    page.locator("#viewport").focus()
    page.keyboard.press("ArrowDown")                # the prior follows by the same millimetres
    wait_record(page, 0, current, index + 1)
    wait_record(page, 1, prior, 3)
    assert location(page, 0) - start[0] == pytest.approx(location(page, 1) - start[1], abs=0.06)
    assert not page.js_errors
