"""The value probe and the ROI tools in Chromium against the real daemons, on a synthetic CT whose
Hounsfield values are known at every pixel: HU = 100 * row + column (stored with intercept -1024),
so a reading names the pixel it was taken at and the viewer's screen-to-pixel mapping is checked."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.render.synthetic import dataset, to_bytes
from tests.webviewer.helpers import Fingers, new_patient, phone_context, phone_tool, shot, uploaded_record
from tests.webviewer.test_browser_geometry import open_loaded
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser

SIZE, SLICES, SPACING = 64, 3, 0.5


def hounsfield() -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    return rows * 100 + cols


@pytest.fixture(scope="module")
def ct(deployment, tmp_path_factory):
    folder = tmp_path_factory.mktemp("readings-ct")
    paths = []
    for k in range(SLICES):
        ds = dataset(SIZE, SIZE, series="1.2.826.0.1.3680043.8.498.15.1", position=k * 2.0)
        ds.PixelSpacing = [SPACING, SPACING]
        ds.SliceThickness = 2.0
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hounsfield() + 1024).astype(np.int16).tobytes()
        paths.append(folder / f"slice{k}.dcm")
        paths[-1].write_bytes(to_bytes(ds))
    patient = new_patient(deployment)
    return {"patient": patient, **uploaded_record(deployment, patient, paths, "CT with known values")}


def at_pixel(box: dict, column: float, row: float) -> tuple[float, float]:
    """The screen point of image coordinates (column, row) of the 64x64 frame shown whole."""
    return box["x"] + box["width"] * column / SIZE, box["y"] + box["height"] * row / SIZE


def test_probe_and_rois_show_the_servers_hounsfield_values(page, deployment, ct, shots):
    page.set_default_timeout(30000)
    open_loaded(page, deployment, ct)
    wait_shown(page, "d.shownPlane === 'native'")
    box = page.locator("#viewport .view-image").bounding_box()

    page.keyboard.press("i")   # the probe's key
    assert page.get_by_role("button", name="Probe", exact=True).get_attribute("aria-pressed") == "true"
    probe = page.locator("#viewport .probe-value")
    for column, row in ((10, 20), (40, 5), (63, 63)):
        page.mouse.move(*at_pixel(box, column + 0.5, row + 0.5))
        hu = 100 * row + column
        page.wait_for_function("([el, text]) => el.textContent.startsWith(text)",
                               arg=[probe.element_handle(), f"({column}, {row}) {hu} HU"])
    assert "stored" in probe.inner_text()   # stored values differ from HU by the intercept

    page.get_by_role("button", name="Rectangle ROI", exact=True).click()
    page.mouse.move(*at_pixel(box, 8, 8))
    page.mouse.down()
    page.mouse.move(*at_pixel(box, 24, 16), steps=6)
    page.mouse.up()
    label = page.locator("#viewport .roi-label")
    # pixel centres inside: columns 8..23, rows 8..15 -> 128 pixels of 0.25 mm²
    values = hounsfield()[8:16, 8:24]
    # the overlay is redrawn (new elements) when the statistics come: look the label up each time
    page.wait_for_function("() => (document.querySelector('#viewport .roi-label') || {}).textContent"
                           "?.startsWith('Mean ')")
    assert label.nth(0).text_content() == f"Mean {values.mean():.1f} HU ± {values.std():.1f}"
    assert label.nth(1).text_content() == f"Min {values.min()} HU · Max {values.max()} HU"
    assert label.nth(2).text_content() == f"Area {128 * SPACING * SPACING:.1f} mm²"

    page.get_by_role("button", name="Ellipse ROI", exact=True).click()
    page.mouse.move(*at_pixel(box, 30, 30))
    page.mouse.down()
    page.mouse.move(*at_pixel(box, 50, 50), steps=6)
    page.mouse.up()
    page.wait_for_function("() => document.querySelectorAll('#viewport .roi-label').length === 6 && "
                           "document.querySelectorAll('#viewport .roi-label')[3].textContent.startsWith('Mean ')")
    assert page.locator("#viewport ellipse.roi").count() == 1
    # symmetric about image point (40, 40), i.e. about pixel (39.5, 39.5): HU 3989.5 on average
    mean = float(page.locator("#viewport .roi-label").nth(3).text_content().split()[1])
    assert mean == pytest.approx(39.5 * 100 + 39.5, abs=5)
    shot(page, shots, "readings-probe-and-rois", full_page=False)
    page.get_by_role("button", name="Clear measurements").click()
    assert page.locator("#viewport .roi-label").count() == 0


def test_probe_and_roi_on_reformats_read_the_planes_own_pixels(page, deployment, ct, shots):
    """Coronal plane j of this CT is stored row j (HU 100 * j + column); sagittal plane i is stored
    column i (HU 100 * row + i), anterior (row 0) on the left; each is SLICES pixels high."""
    page.set_default_timeout(30000)
    open_loaded(page, deployment, ct)
    page.locator("#plane").select_option("coronal")
    wait_shown(page, "d.shownPlane === 'coronal' && d.shownIndex === '32'")
    box = page.locator("#viewport .view-image").bounding_box()
    page.keyboard.press("i")
    probe = page.locator("#viewport .probe-value")
    for column in (10, 50):
        page.mouse.move(box["x"] + box["width"] * (column + 0.5) / SIZE, box["y"] + box["height"] * 0.5)
        page.wait_for_function("([el, text]) => el.textContent.startsWith(text)",
                               arg=[probe.element_handle(), f"({column}, {SLICES // 2}) {3200 + column} HU"])

    page.locator("#plane").select_option("sagittal")
    wait_shown(page, "d.shownPlane === 'sagittal' && d.shownIndex === '32'")
    box = page.locator("#viewport .view-image").bounding_box()
    page.get_by_role("button", name="Rectangle ROI", exact=True).click()
    page.mouse.move(box["x"] + box["width"] * 8 / SIZE, box["y"] + 1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 24 / SIZE, box["y"] + box["height"] - 1, steps=6)
    page.mouse.up()
    page.wait_for_function("() => (document.querySelector('#viewport .roi-label') || {}).textContent"
                           "?.startsWith('Mean ')")
    label = page.locator("#viewport .roi-label")
    rows = np.arange(8, 24) * 100 + 32   # rows 8..23 of stored column 32, on every slice
    mean = f"{rows.mean():.0f}" if rows.mean().is_integer() else f"{rows.mean():.1f}"  # as readings.js writes it
    assert label.nth(0).text_content() == f"Mean {mean} HU ± {rows.std():.1f}"
    # 16 x SLICES pixels of 0.5 mm (row spacing) by 2 mm (slice spacing)
    assert label.nth(2).text_content() == f"Area {16 * SLICES * SPACING * 2.0:.1f} mm²"
    shot(page, shots, "readings-on-sagittal-reformat", full_page=False)


def test_probe_and_rois_by_touch_on_a_phone(browser, deployment, ct, shots):
    """The same readings with a finger: a touch with the probe shows the value under it and keeps it
    once the finger is lifted; a drag draws the rectangle and the ellipse, with the node's values."""
    context = phone_context(browser, deployment)
    page = context.new_page()
    try:
        open_loaded(page, deployment, ct)
        wait_shown(page, "d.shownPlane === 'native'")
        fingers = Fingers(page)

        phone_tool(page, "Probe")
        box = page.locator("#viewport .view-image").bounding_box()
        fingers.tap(*at_pixel(box, 10.5, 20.5))
        probe = page.locator("#viewport .probe-value")
        page.wait_for_function("([el, text]) => !el.hidden && el.textContent.startsWith(text)",
                               arg=[probe.element_handle(), "(10, 20) 2010 HU"])
        page.wait_for_timeout(300)
        assert probe.is_visible() and probe.text_content().startswith("(10, 20) 2010 HU"), "kept once lifted"
        # the reading follows the finger and stays where it was lifted, even when the node answers
        # slower than the finger moves (the point last asked for is read once the node is free)
        page.route("**/value?*", lambda route: (time.sleep(0.3), route.continue_()))
        fingers.drag(at_pixel(box, 40.5, 5.5), at_pixel(box, 20.5, 30.5))
        page.wait_for_function("([el, text]) => el.textContent.startsWith(text)",
                               arg=[probe.element_handle(), "(20, 30) 3020 HU"])
        page.unroute("**/value?*")

        phone_tool(page, "Rectangle ROI")
        fingers.drag(at_pixel(box, 8, 8), at_pixel(box, 24, 16))
        page.wait_for_function("() => (document.querySelector('#viewport .roi-label') || {}).textContent"
                               "?.startsWith('Mean ')")
        values = hounsfield()[8:16, 8:24]
        assert page.locator("#viewport .roi-label").nth(0).text_content() == \
            f"Mean {values.mean():.1f} HU ± {values.std():.1f}"
        phone_tool(page, "Ellipse ROI")
        fingers.drag(at_pixel(box, 30, 30), at_pixel(box, 50, 50))
        page.wait_for_function("() => document.querySelectorAll('#viewport .roi-label').length === 6 && "
                               "document.querySelectorAll('#viewport .roi-label')[3].textContent.startsWith('Mean ')")
        assert page.locator("#viewport ellipse.roi").count() == 1
        shot(page, shots, "readings-phone-probe-and-rois", full_page=False)
    finally:
        context.close()
