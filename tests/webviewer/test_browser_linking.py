"""Linked viewports in Chromium against the real daemons (docs/viewer.md, "Linked views").

Reference lines: in the 2×2 CT layout each viewport shows where the active viewport's slice cuts
it, at the fraction of the image that patient position lies at, for axial, coronal and sagittal
acquisitions; none on a parallel plane or on 3D. Synchronised scrolling: scrolling the axial view
moves a second axial view to the same patient position and leaves the coronal and sagittal views alone.

The acquisitions are synthetic stacks (tests/render/synthetic.py) with different counts and
spacings on every axis, so a swapped axis or a flipped direction shows; the screenshot is of the
bundled real CT.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.webviewer.helpers import derived_series, login, new_patient, shot, uploaded_record, uploaded_stack
from tests.webviewer.test_browser_geometry import phantom

pytestmark = pytest.mark.browser

ROWS, COLS, SLICES = 40, 32, 36
PIXEL_SPACING = (0.9, 1.2)
SLICE_SPACING = 1.5
ORIENTATIONS = {"axial": (1, 0, 0, 0, 1, 0), "coronal": (1, 0, 0, 0, 0, -1), "sagittal": (0, 1, 0, 0, 0, -1)}
ORIGINS = {"axial": (-19.0, -18.0, -26.0), "coronal": (-19.0, -26.0, 18.0), "sagittal": (26.0, -19.0, 18.0)}
K = 9   # the active viewport's slice in the reference line test
# Where slice K of the acquisition (slot 0, the acquired slices) cuts the coronal (slot 1) and the
# sagittal (slot 2) view, hand-computed: the reformat has one pixel per slice, so slice k lies at
# (k + 0.5) / SLICES from the edge its slices start at.
# - axial: slices run upwards (feet first); both views have S at the top, so from the top edge.
# - coronal: slices run posterior (normal +y); the coronal view is parallel (no line), the
#   sagittal one has A on its left, the first slice's side.
# - sagittal: slices run to the patient's right (normal -x); the sagittal view is parallel, the
#   coronal one has R on its left, the last slice's side.
FROM_START = (K + 0.5) / SLICES
EXPECTED_LINES = {
    "axial": {1: ("horizontal", 1 - FROM_START), 2: ("horizontal", 1 - FROM_START)},
    "coronal": {1: None, 2: ("vertical", FROM_START)},
    "sagittal": {1: ("vertical", 1 - FROM_START), 2: None},
}
LOC = re.compile(r"Loc (-?\d+\.\d) mm")


@pytest.fixture(scope="module")
def acquisitions(deployment, tmp_path_factory):
    return {name: uploaded_stack(deployment, tmp_path_factory.mktemp(f"linking-{name}"), f"{name} linking",
                                 orientation, count=SLICES, rows=ROWS, cols=COLS, pixel_spacing=PIXEL_SPACING,
                                 slice_spacing=SLICE_SPACING, origin=ORIGINS[name], values=phantom)
            for name, orientation in ORIENTATIONS.items()}


def viewport(page, slot: int):
    return page.locator(f"#viewports .viewport[data-slot='{slot}']")


def wait_painted(page, slot: int, plane: str, index: int | None = None) -> None:
    page.wait_for_function(
        "([slot, plane, index]) => { const v = document.querySelector(`#viewports .viewport[data-slot='${slot}']`);"
        " return v && v.dataset.shownPlane === plane && (index === null || v.dataset.shownIndex === String(index)); }",
        arg=[slot, plane, index], polling=100, timeout=60000)


def open_2x2(page, deployment, record, link_name: str = "Open") -> None:
    page.set_default_timeout(30000)   # a shared test machine may be slow to reformat
    login(page, deployment)
    page.goto(f"/#/patients/{record['patient']['id']}")
    try:  # the patient page asks the institution and the node: slow on a loaded machine
        page.get_by_role("link", name=link_name).first.click(timeout=60000)
    except PlaywrightTimeout:
        raise AssertionError(f"no {link_name!r} link on the patient page within 60 s; it showed: "
                             f"{page.locator('main').inner_text()[:2000]!r}") from None
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)
    assert page.locator("#viewports").get_attribute("data-layout") == "2x2"
    for slot, plane in enumerate(["native", "coronal", "sagittal", "3d"]):
        wait_painted(page, slot, plane)


def line_on_screen(page, slot: int) -> tuple[str, float] | None:
    """The reference line drawn on a viewport: its orientation and where it lies on the image on
    screen (fraction of the image's height or width, measured from the pixels on the page)."""
    lines = viewport(page, slot).locator(".reference-line")
    if lines.count() == 0:
        return None
    assert lines.count() == 1
    orientation = lines.get_attribute("data-orientation")
    box = lines.bounding_box()
    image = viewport(page, slot).locator("canvas").bounding_box()
    if orientation == "horizontal":
        assert box["width"] == pytest.approx(image["width"], abs=3)
        return orientation, (box["y"] + box["height"] / 2 - image["y"]) / image["height"]
    assert box["height"] == pytest.approx(image["height"], abs=3)
    return orientation, (box["x"] + box["width"] / 2 - image["x"]) / image["width"]


@pytest.mark.parametrize("acquisition", ["axial", "coronal", "sagittal"])
def test_reference_lines_cut_the_other_views_at_the_active_slice(page, deployment, acquisitions, acquisition):
    open_2x2(page, deployment, acquisitions[acquisition])
    viewport(page, 0).click()
    page.locator("#slice").fill(str(K))
    wait_painted(page, 0, "native", K)
    for slot in (1, 2):
        expected = EXPECTED_LINES[acquisition][slot]
        found = line_on_screen(page, slot)
        if expected is None:
            assert found is None, (acquisition, slot, found)
            continue
        assert found is not None, (acquisition, slot)
        assert found[0] == expected[0], (acquisition, slot, found)
        assert found[1] == pytest.approx(expected[1], abs=0.01), (acquisition, slot, found)
    # none on the active viewport itself nor on 3D
    assert viewport(page, 0).locator(".reference-line").count() == 0
    assert viewport(page, 3).locator(".reference-line").count() == 0
    # the lines follow the active viewport's slice: one slice further is 1/SLICES further on
    before = {slot: line_on_screen(page, slot) for slot in (1, 2)}
    viewport(page, 0).focus()   # the keys of the viewer, not of the slider
    page.keyboard.press("ArrowDown")
    wait_painted(page, 0, "native", K + 1)
    for slot in (1, 2):
        if before[slot] is None:
            continue
        after = line_on_screen(page, slot)
        assert abs(after[1] - before[slot][1]) == pytest.approx(1 / SLICES, abs=0.005), (acquisition, slot)
    # X turns them off and on again
    page.keyboard.press("x")
    assert page.locator("#reference-lines").get_attribute("aria-pressed") == "false"
    assert page.locator(".reference-line").count() == 0
    page.keyboard.press("x")
    assert page.locator(".reference-line").count() == sum(1 for v in EXPECTED_LINES[acquisition].values() if v)
    assert not page.js_errors


def location(page, slot: int) -> str:
    match = LOC.search(viewport(page, slot).locator(".corner.bl").inner_text())
    assert match, viewport(page, slot).locator(".corner.bl").inner_text()
    return match.group(1)


def test_linked_scrolling_moves_parallel_views_only(page, deployment, acquisitions):
    open_2x2(page, deployment, acquisitions["axial"])
    # the 3D viewport becomes a second axial view
    viewport(page, 3).click()
    page.locator("#plane").select_option("axial")
    wait_painted(page, 3, "axial")
    others = {slot: viewport(page, slot).get_attribute("data-shown-index") for slot in (1, 2)}
    axial_before = viewport(page, 3).get_attribute("data-shown-index")

    # not linked: scrolling the acquired slices moves nothing else
    viewport(page, 0).click()
    page.locator("#slice").fill("5")
    wait_painted(page, 0, "native", 5)
    assert viewport(page, 3).get_attribute("data-shown-index") == axial_before

    viewport(page, 0).focus()
    page.keyboard.press("l")
    assert page.locator("#sync-scroll").get_attribute("aria-pressed") == "true"
    for target in (7, 20):
        page.locator("#slice").fill(str(target))
        wait_painted(page, 0, "native", target)
        page.wait_for_function(
            "(loc) => { const v = document.querySelector(\"#viewports .viewport[data-slot='3']\");"
            " return v && v.querySelector('.corner.bl').innerText.includes(`Loc ${loc} mm`); }",
            arg=location(page, 0), polling=100, timeout=30000)
        # the acquired slice 0 lies at z = -26 mm, SLICE_SPACING apart
        assert float(location(page, 0)) == pytest.approx(-26.0 + target * SLICE_SPACING, abs=0.05)
    # coronal and sagittal were left alone
    assert {slot: viewport(page, slot).get_attribute("data-shown-index") for slot in (1, 2)} == others

    # and the other way round: scrolling the axial reformat moves the acquired slices
    viewport(page, 3).click()
    page.keyboard.press("Home")
    page.wait_for_function(
        "() => { const v = document.querySelector(\"#viewports .viewport[data-slot='0']\");"
        " return v.dataset.shownIndex === '0' || v.dataset.shownIndex === '35'; }", polling=100, timeout=30000)
    # the linked view can paint before the scrolled one shows its own new position: wait until both
    # corners name a location and they agree (they never did in a run that fails here)
    page.wait_for_function(
        "() => { const loc = (s) => (document.querySelector(`#viewports .viewport[data-slot='${s}'] .corner.bl`)"
        " || {}).innerText?.match(/Loc (-?[0-9.]+) mm/)?.[1];"
        " return loc(0) !== undefined && loc(0) === loc(3); }", polling=100, timeout=30000)
    assert location(page, 0) == location(page, 3)
    assert not page.js_errors


def test_screenshot_2x2_ct_with_reference_lines(page, deployment, ct_series, tmp_path_factory, shots):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("linking-ct"), first=20, count=60)
    record = {"patient": patient, **uploaded_record(deployment, patient, files, "CT abdomen (reference lines)")}
    open_2x2(page, deployment, record, link_name="Open CT")
    viewport(page, 0).click()
    page.locator("#slice").fill("40")
    wait_painted(page, 0, "native", 40)
    assert line_on_screen(page, 1)[0] == "horizontal"
    assert line_on_screen(page, 2)[0] == "horizontal"
    shot(page, shots, "42-viewer-ct-2x2-reference-lines", full_page=False)
    # the coronal view active: its slice cuts the axial slices and the sagittal view vertically
    viewport(page, 1).click()
    assert line_on_screen(page, 0)[0] == "horizontal"
    assert line_on_screen(page, 2)[0] == "vertical"
    shot(page, shots, "43-viewer-ct-2x2-reference-lines-coronal-active", full_page=False)
    assert not page.js_errors
