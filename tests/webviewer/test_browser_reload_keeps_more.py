"""A reload and the browser's Back keep more of the reading, in Chromium against the real daemons
(docs/viewer.md, "A reload keeps the reading"). Before: a prior shown in the active viewport came
back as the current study (the address named only the record the page opened); a 3D view came back
as a MIP at its first turn; the browser's Back within 300 ms of the last scroll lost that scroll;
and "A" with nothing to align announced "Scrolling linked." before "Nothing to align".
One patient, two studies of slices of the bundled real CT (tests.webviewer.test_browser_priors
as_study): the current one and a prior in another frame of reference.
"""

from __future__ import annotations

import pytest

from tests.webviewer.test_browser_priors import current_and_prior, open_current, viewport, wait_record
from tests.webviewer.test_browser_viewer import shown, wait_shown

pytestmark = pytest.mark.browser

SLICES = 8
STILL = "d.shownKey && d.loadState === 'ready' && d.shownKey.includes('render=still')"


@pytest.fixture(scope="module")
def studies(deployment, ct_series, tmp_path_factory) -> dict:
    return current_and_prior(deployment, ct_series, tmp_path_factory.mktemp("reload-more"), SLICES)


def hash_has(page, *parts: str) -> None:
    page.wait_for_function("parts => parts.every(p => location.hash.includes(p))", arg=list(parts), polling=100)


def test_a_reload_keeps_a_prior_in_the_active_viewport_and_ignores_an_edited_one(page, deployment, studies):
    current, prior = studies["records"]["current"], studies["records"]["prior"]
    open_current(page, deployment, studies)
    viewport(page, 0).focus()
    page.keyboard.press("c")                        # the prior beside the current study, 1×2
    wait_record(page, 1, prior["meta"]["id"])
    viewport(page, 1).click()                       # the prior is read, two slices down
    page.locator("#viewport").focus()
    index = SLICES // 2 + 2
    for _ in range(2):
        page.keyboard.press("ArrowDown")
    wait_record(page, 1, prior["meta"]["id"], index)
    key = f"{prior['node']['id']}/{prior['meta']['id']}"
    hash_has(page, "viewport=2", f"series=%2C{key.replace('/', '%2F')}", f"slice={index}")

    page.reload()
    wait_record(page, 1, prior["meta"]["id"], index)
    wait_record(page, 0, current["meta"]["id"])
    assert page.locator("#viewport").get_attribute("data-slot") == "1", "the prior's viewport is the one read"
    assert page.locator("#viewports").get_attribute("data-layout") == "1x2"

    # an edited key (no series of the patient, or no key at all) is ignored: no request, no error
    foreign = "0" * 64
    asked = []
    page.on("request", lambda r: asked.append(r.url) if foreign in r.url else None)
    inst, node = current["institution"], current["node"]
    for series in (f",{node['id']}/{foreign}", "../x,constructor"):
        page.goto(f"/#/view/{inst['id']}/{node['id']}/{current['meta']['id']}?patient={studies['patient']['id']}"
                  f"&layout=1x2&viewport=2&series={series}&slice=3")
        page.locator("#series-panel .panel-studies[data-complete='true']").wait_for(state="attached", timeout=60000)
        wait_record(page, 1, current["meta"]["id"], 3)
        page.wait_for_function("() => !location.hash.includes('series=')", polling=100)
        assert "slice=3" in page.evaluate("location.hash")
        assert page.locator("#alert").is_hidden()
    assert asked == [] and not page.js_errors


def test_a_reload_keeps_the_3d_mode_preset_and_turn(page, deployment, studies):
    open_current(page, deployment, studies)
    viewport(page, 3).click()                       # the CT protocol's 3D view
    wait_shown(page, f"d.shownPlane === '3d' && {STILL}")
    page.locator("#volume-mode").select_option("dvr")
    presets = page.locator("#volume-preset option").evaluate_all("os => os.map(o => o.value)")
    preset = next(p for p in presets if p != page.locator("#volume-preset").input_value())
    page.locator("#volume-preset").select_option(preset)
    page.locator("#viewport").focus()
    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowDown"):
        page.keyboard.press(key)
    turned = (f"d.shownKey.includes('mode=dvr') && d.shownKey.includes('preset={preset}') "
              f"&& d.shownKey.includes('azimuth=60.0') && d.shownKey.includes('elevation=30.0') && {STILL}")
    wait_shown(page, turned)
    hash_has(page, "mode=dvr", f"preset={preset}", "azimuth=60.0", "elevation=30.0")
    page.reload()
    wait_shown(page, turned)
    assert page.locator("#volume-mode").input_value() == "dvr"
    assert page.locator("#volume-preset").input_value() == preset

    # edited values: the default mode, no preset the record lacks, no turn that is no number
    inst, node, meta = (studies["records"]["current"][k] for k in ("institution", "node", "meta"))
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={studies['patient']['id']}"
              "&viewport=4&mode=constructor&preset=__proto__&azimuth=abc&elevation=500")
    now = wait_shown(page, f"d.shownPlane === '3d' && {STILL}")
    assert (now["query"]["mode"], now["query"]["azimuth"], now["query"]["elevation"]) == ("mip", "30.0", "90.0")
    assert "preset" not in now["query"] and not page.js_errors


def test_the_browsers_back_right_after_a_scroll_keeps_it(page, deployment, studies):
    open_current(page, deployment, studies)
    start = shown(page)["index"]
    hash_has(page, f"slice={start}")
    page.locator("#viewport").focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.go_back()                                  # well within the 300 ms the address waits
    page.locator("#patient-name").wait_for()
    page.go_forward()
    assert wait_shown(page, f"d.shownIndex === '{start + 3}' && d.loadState === 'ready'")["plane"] == "native"


def test_a_with_nothing_to_align_says_only_that(page, deployment, studies):
    open_current(page, deployment, studies)         # 2×2: coronal, sagittal and 3D of one frame of reference
    page.locator("#status").evaluate(
        "el => { window.said = []; new MutationObserver(() => el.textContent && said.push(el.textContent))"
        ".observe(el, {childList: true, characterData: true, subtree: true}); }")
    page.locator("#viewport").focus()
    page.keyboard.press("a")
    page.wait_for_function("() => said.some(t => t.startsWith('Nothing to align'))", polling=50)
    page.wait_for_timeout(300)
    assert [t for t in page.evaluate("said") if "align" in t or "linked" in t] == [
        "Nothing to align: the other views show the same frame of reference or another plane."]
    assert page.locator("#sync-scroll").get_attribute("aria-pressed") == "false"
