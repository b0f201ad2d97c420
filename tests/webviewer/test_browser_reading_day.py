"""A radiologist's working day in the viewer, in Chromium against the real daemons: what broke
when a reading went on through a change of screen (docs/viewer.md, "On a phone"). The record:
12 slices of the bundled real CT with fresh UIDs, which opens with the CT hanging protocol (2×2).
"""

from __future__ import annotations

import pytest

from tests.webviewer.browser import DESKTOP, PHONE
from tests.webviewer.helpers import derived_series, new_patient, uploaded_record
from tests.webviewer.test_browser_layouts import open_viewer, viewport, wait_painted

pytestmark = pytest.mark.browser

SLICES = 12


@pytest.fixture(scope="module")
def record(deployment, ct_series, tmp_path_factory):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("reading-day"), first=50, count=SLICES)
    return {"patient": patient, **uploaded_record(deployment, patient, files, "CT chest (reading day)")}


def test_narrowing_the_window_to_a_phone_keeps_the_viewport_being_read_alone(page, deployment, record):
    """Before: the 2×2 stayed, four 187 px viewports with no layout chooser (CSS hides it on a
    phone), under the series panel turned into a drawer over the whole screen."""
    open_viewer(page, deployment, record)
    wait_painted(page, 2, "sagittal")
    viewport(page, 2).click()                      # the sagittal reformat is the one being read
    page.locator("#viewport").focus()
    page.keyboard.press("ArrowUp")
    page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '255'", polling=100)

    page.set_viewport_size(PHONE)
    page.wait_for_function("() => document.querySelectorAll('#viewports .viewport').length === 1", polling=100)
    only = viewport(page, 0)
    assert only.get_attribute("data-plane") == "sagittal"
    assert only.get_attribute("data-shown-index") == "255"
    assert "active" in (only.get_attribute("class") or "")
    assert only.bounding_box()["width"] > 0.9 * PHONE["width"] - 20
    assert page.locator("#series-panel").is_hidden()          # the drawer does not cover the image
    assert page.locator("#series-toggle").get_attribute("aria-expanded") == "false"
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]

    # wide again: the layout chooser and the linked views are offered, and the keys work
    page.set_viewport_size(DESKTOP)
    page.locator("#layout").wait_for(state="visible")
    assert page.locator("#sync-scroll").is_visible()
    assert page.locator("#series-panel").is_visible()
    page.locator("#viewport").focus()
    page.keyboard.press("2")
    page.wait_for_function("() => document.querySelectorAll('#viewports .viewport').length === 2", polling=100)
    assert viewport(page, 0).get_attribute("data-shown-index") == "255"


def shown_key(page, predicate_js: str) -> str:
    """The active viewport's image key once `predicate_js` (of its dataset `d`) holds."""
    page.wait_for_function(f"() => {{ const d = document.querySelector('#viewport').dataset; return {predicate_js}; }}",
                           polling=100, timeout=60000)
    return page.locator("#viewport").get_attribute("data-shown-key")


def test_a_window_dragged_on_one_projection_stays_with_it(page, deployment, record):
    """Before: a window dragged on the MinIP (centre -1000 HU) came along to the MIP, which showed
    every ray through the body white; the window chosen on the slices came along to 3D likewise."""
    open_viewer(page, deployment, record)
    wait_painted(page, 3, "3d")
    viewport(page, 3).click()
    page.locator("#volume-mode").select_option("minip")
    shown_key(page, "d.shownKey.includes('mode=minip') && d.shownKey.includes('render=still')")
    page.get_by_role("button", name="Window", exact=True).click()
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 160, box["y"] + 130, steps=4)
    page.mouse.up()
    dragged = shown_key(page, "d.shownKey.includes('mode=minip') && d.shownKey.includes('window=')"
                              " && d.shownKey.includes('render=still')")
    minip_window = dragged.split("window=")[1].split("&")[0]

    page.locator("#volume-mode").select_option("mip")
    mip = shown_key(page, "d.shownKey.includes('mode=mip') && d.shownKey.includes('render=still')")
    assert "window=" not in mip, mip                        # the node's window measured on the MIP
    assert "(default)" in page.locator("#viewport .corner.bl").inner_text()
    assert page.locator("#window-preset").input_value() == "auto"

    page.locator("#volume-mode").select_option("minip")     # the MinIP keeps the window dragged on it
    back = shown_key(page, "d.shownKey.includes('mode=minip') && d.shownKey.includes('render=still')")
    assert f"window={minip_window}" in back, back

    # the slices' window is theirs too: a bone preset on the slices is not the 3D view's
    page.locator("#plane").select_option("native")
    page.locator("#window-preset").select_option("preset:ct_bone")
    shown_key(page, "d.shownPlane === 'native' && d.shownKey.includes('window=')")
    page.locator("#plane").select_option("3d")
    again = shown_key(page, "d.shownPlane === '3d' && d.shownKey.includes('render=still')")
    assert f"window={minip_window}" in again and "mode=minip" in again, again
    page.locator("#plane").select_option("coronal")        # a reformat shares the slices' window
    assert page.locator("#window-preset").input_value() == "preset:ct_bone"
