"""A real sagittal acquisition in the viewer (demo_data/mr-sag-head-48: 48 slices of a Siemens 3T T1
MPRAGE acquired sagittal, tilted about 15 degrees; see its SOURCE.txt), in Chromium against the
real daemons, on a desktop and a phone viewport.

The geometry is worked out by hand from the files (tests/render/test_real_sagittal.py checks the
node publishes it): the stored slices are the sagittal plane (48 slices 0.9 mm apart, 256 x 256
pixels of 0.859 mm, so 220 x 220 mm); the axial and coronal reformats cut across the stored rows
and columns (256 planes each) and are 48 x 0.9 = 43.2 mm wide by 220 mm high. Each view must take
its slider range, aspect and millimetres from that geometry, and label its edges as radiologists
expect a sagittal image: anterior on the left, head at the top (the tilt adds a second letter).
Screenshots in test-artifacts/webviewer/.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pydicom
import pytest

from tests.webviewer.browser import DESKTOP, PHONE
from tests.webviewer.helpers import login, new_patient, shot, uploaded_record
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser

DEMO_SAG = Path(__file__).resolve().parents[2] / "demo_data" / "mr-sag-head-48"
SLICES, FIRST_INSTANCE = 48, 73
PIXEL_MM, SLICE_MM = 0.859375, 0.9
# plane: (slider count, width mm, height mm, edges top/right/bottom/left, how the index runs)
VIEWS = {
    "native": (SLICES, 256 * PIXEL_MM, 256 * PIXEL_MM, ("SA", "PS", "IP", "AI"), "left first (L → R)"),
    "sagittal": (SLICES, 256 * PIXEL_MM, 256 * PIXEL_MM, ("SA", "PS", "IP", "AI"), "left first (L → R)"),
    "axial": (256, SLICES * SLICE_MM, 256 * PIXEL_MM, ("AI", "L", "PS", "R"), "head first (S → I)"),
    "coronal": (256, SLICES * SLICE_MM, 256 * PIXEL_MM, ("SA", "L", "IP", "R"), "anterior first (A → P)"),
}
EDGES = ("top", "right", "bottom", "left")


@pytest.fixture(scope="module")
def sagittal(deployment):
    patient = new_patient(deployment)
    files = sorted(DEMO_SAG.glob("*.dcm"))
    assert len(files) == SLICES
    return {"patient": patient, **uploaded_record(deployment, patient, files, "MR head T1 sagittal", modality="MR")}


@pytest.fixture(scope="module")
def file_windows() -> dict[int, tuple[int, int]]:
    """Instance Number -> (width, level) of the file's own window: every slice has its own."""
    windows = {}
    for path in DEMO_SAG.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        windows[int(ds.InstanceNumber)] = (round(float(ds.WindowWidth)), round(float(ds.WindowCenter)))
    return windows


def toolbar(page, phone: bool, open_it: bool) -> None:
    """On a phone the tools are in a collapsible bar: open it to choose, close it to read the image."""
    if phone and (page.locator("#tools-toggle").get_attribute("aria-expanded") == "true") != open_it:
        page.locator("#tools-toggle").click()


def window_on_screen(page) -> tuple[int, int]:
    text = page.locator("#viewport .corner.bl").inner_text()
    found = re.search(r"W (\d+)\s+L (-?\d+)", text)
    assert found, text
    return int(found[1]), int(found[2])


def measure(page, horizontal: bool, fraction: float = 0.8) -> float:
    """Draw a line across `fraction` of the image's width (or height) through its middle; the
    distance the viewer labels it with."""
    image = page.locator("#viewport .view-image").bounding_box()
    if horizontal:
        start = (image["x"] + image["width"] * (1 - fraction) / 2, image["y"] + image["height"] / 2)
        end = (start[0] + image["width"] * fraction, start[1])
    else:
        start = (image["x"] + image["width"] / 2, image["y"] + image["height"] * (1 - fraction) / 2)
        end = (start[0], start[1] + image["height"] * fraction)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=5)
    page.mouse.up()
    label = page.locator("#viewport .measure-label").last.text_content()
    return float(label.removesuffix(" mm"))


@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_a_real_sagittal_acquisition_in_the_viewer(browser, deployment, sagittal, file_windows, shots, screen):
    phone = screen == "phone"
    options = {"viewport": PHONE, "is_mobile": True, "has_touch": True} if phone else {"viewport": DESKTOP}
    context = browser.new_context(base_url=deployment.url("web"), **options)
    context.set_default_timeout(60000)   # a shared test machine may be slow to reformat
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, deployment)
        page.goto(f"/#/patients/{sagittal['patient']['id']}")
        page.get_by_role("link", name="Open").first.click()
        page.locator("#viewport[data-load-state=ready]").wait_for()
        wait_shown(page, "d.shownPlane === 'native'")

        # 2D: the stored slice, numbered as the scanner numbered it, with its own window
        counter = re.search(r"(\d+) / (\d+) · Im (\d+)", page.locator("#slice-out").inner_text())
        assert counter and int(counter[2]) == SLICES and int(counter[3]) == FIRST_INSTANCE + int(counter[1]) - 1
        assert window_on_screen(page) == file_windows[int(counter[3])]
        toolbar(page, phone, True)
        page.locator("#slice").fill("30")
        wait_shown(page, "d.shownPlane === 'native' && d.shownIndex === '30' && d.shownKey.includes('format=webp')")
        assert window_on_screen(page) == file_windows[FIRST_INSTANCE + 30]
        assert f"Im {FIRST_INSTANCE + 30} · Loc {12.182 - 30 * 0.898549:.1f} mm · Th 0.90 mm" \
            == page.locator("#slice-info").inner_text()

        for plane, (count, width_mm, height_mm, edges, order) in VIEWS.items():
            toolbar(page, phone, True)
            page.get_by_role("button", name="Measure", exact=True).click()
            page.locator("#plane").select_option(plane)
            wait_shown(page, "d.shownPlane === arg", plane)
            # the slider runs over the plane's own index range, and its middle is shown
            assert page.locator("#slice").get_attribute("max") == str(count - 1), plane
            page.locator("#slice").fill(str(count // 2))
            wait_shown(page, "d.shownPlane === arg[0] && d.shownIndex === arg[1] && d.shownKey.includes('format=webp')",
                       [plane, str(count // 2)])
            assert page.locator("#slice-out").inner_text().split(" · ")[0] == f"{count // 2 + 1} / {count}", plane
            assert order in page.locator("#view-info").inner_text(), plane
            # orientation markers on every edge: as computed from the files; for the acquisition
            # plane, anterior left and head up, as radiologists read a sagittal image
            assert tuple(page.locator(f"#orient-{edge}").inner_text() for edge in EDGES) == edges, plane
            toolbar(page, phone, False)
            # the aspect of the physical plane, not of its pixel counts
            image = page.locator("#viewport .view-image").bounding_box()
            assert image["width"] / image["height"] == pytest.approx(width_mm / height_mm, rel=0.03), plane
            # millimetres across (pixel spacing on the sagittal plane, slice spacing on the
            # reformats) and down (pixel spacing everywhere)
            across = measure(page, horizontal=True)
            assert math.isclose(across, 0.8 * width_mm, rel_tol=max(0.02, 3 / image["width"])), (plane, across)
            down = measure(page, horizontal=False)
            assert math.isclose(down, 0.8 * height_mm, rel_tol=max(0.02, 3 / image["height"])), (plane, down)
            shot(page, shots, f"sagittal-mr-{screen}-{plane}", full_page=False)
            toolbar(page, phone, True)
            page.get_by_role("button", name="Clear measurements").click()

        # 3D of the sagittal stack opens seen from the front, turned 30 degrees and from 20 above
        # (the viewer's start): labelled on every edge, the front view's letters first
        page.locator("#plane").select_option("3d")
        wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('render=still')")
        labels = tuple(page.locator(f"#orient-{edge}").inner_text() for edge in EDGES)
        assert tuple(label[0] for label in labels) == ("S", "L", "I", "R"), labels
        toolbar(page, phone, False)
        shot(page, shots, f"sagittal-mr-{screen}-3d", full_page=False)
    finally:
        context.close()
    assert not errors, errors
