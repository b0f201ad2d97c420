"""The viewer on sagittal and coronal acquisitions, in Chromium against the real daemons.

The viewer once assumed every acquisition was axial: on a sagittal stack its "axial" slider ran
over the frames, images were drawn at the wrong aspect and distances were wrong. Each view must
now take its slider range, aspect and millimetres from the node's published plane geometry.

The acquisitions are synthetic (rows, columns and slices of different counts and spacings, so a
swapped axis shows), of one object defined in patient coordinates: a box of soft tissue with a
bright marker sphere at its anterior, superior right corner.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.webviewer.helpers import login, shot, uploaded_stack
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser

ROWS, COLS, SLICES = 60, 48, 36
PIXEL_SPACING = (0.9, 1.2)   # rows 0.9 mm apart, columns 1.2 mm apart
SLICE_SPACING = 1.5
ORIENTATIONS = {"sagittal": (0, 1, 0, 0, 0, -1), "coronal": (1, 0, 0, 0, 0, -1)}
# the first slice's corner, so that both stacks cover about -26..26 mm on every patient axis
ORIGINS = {"sagittal": (26.0, -28.0, 26.5), "coronal": (-28.0, -26.0, 26.5)}
EDGES = {"axial": ("A", "R"), "coronal": ("S", "R"), "sagittal": ("S", "A")}  # top and left edge


def phantom(x, y, z):
    """An ellipsoid of soft tissue in air, with a bright sphere anterior, superior, on the patient's right."""
    body = (x / 22) ** 2 + (y / 18) ** 2 + (z / 25) ** 2 < 1
    sphere = (x + 10) ** 2 + (y + 8) ** 2 + (z - 12) ** 2 < 36
    return np.where(sphere, 1000, np.where(body, 40 + (np.abs(x + y + z) % 20) * 3, -1000))


# Hand-computed (pixel spacing, counts and IOP above): index count and physical size (mm) of each
# view. Sagittal acquisition: frames run to the patient's right (x), columns posterior (y), rows
# inferior (z). Coronal acquisition: frames run posterior (y), columns left (x), rows inferior (z).
EXPECTED = {
    "sagittal": {
        "native": (SLICES, COLS * 1.2, ROWS * 0.9),
        "sagittal": (SLICES, COLS * 1.2, ROWS * 0.9),
        "axial": (ROWS, SLICES * 1.5, COLS * 1.2),     # right-left by anterior-posterior
        "coronal": (COLS, SLICES * 1.5, ROWS * 0.9),   # right-left by superior-inferior
    },
    "coronal": {
        "native": (SLICES, COLS * 1.2, ROWS * 0.9),
        "coronal": (SLICES, COLS * 1.2, ROWS * 0.9),
        "axial": (ROWS, COLS * 1.2, SLICES * 1.5),     # right-left by anterior-posterior
        "sagittal": (COLS, SLICES * 1.5, ROWS * 0.9),  # anterior-posterior by superior-inferior
    },
}


@pytest.fixture(scope="module")
def acquisitions(deployment, tmp_path_factory):
    return {name: uploaded_stack(deployment, tmp_path_factory.mktemp(f"geometry-{name}"), f"{name} acquisition",
                                 orientation, count=SLICES, rows=ROWS, cols=COLS, pixel_spacing=PIXEL_SPACING,
                                 slice_spacing=SLICE_SPACING, origin=ORIGINS[name], values=phantom)
            for name, orientation in ORIENTATIONS.items()}


def open_loaded(page, deployment, record) -> None:
    login(page, deployment)
    page.goto(f"/#/patients/{record['patient']['id']}")
    page.get_by_role("link", name="Open").first.click()
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)


def measure(page, fraction: float = 0.6) -> float:
    """Draw a horizontal line across `fraction` of the image's width; the distance the viewer labels it with."""
    image = page.locator("#viewport .view-image").bounding_box()
    x0 = image["x"] + image["width"] * (1 - fraction) / 2
    y = image["y"] + image["height"] * 0.5
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x0 + image["width"] * fraction, y, steps=5)
    page.mouse.up()
    label = page.locator("#viewport .measure-label").last.text_content()
    return float(label.removesuffix(" mm"))


@pytest.mark.parametrize("acquisition", ["sagittal", "coronal"])
def test_sliders_aspect_and_distances_follow_the_served_geometry(page, deployment, acquisitions, shots, acquisition):
    page.set_default_timeout(30000)  # a shared test machine may be slow to reformat
    record = acquisitions[acquisition]
    open_loaded(page, deployment, record)
    page.get_by_role("button", name="Measure", exact=True).click()
    for plane in ("native", "axial", "coronal", "sagittal"):
        count, width_mm, height_mm = EXPECTED[acquisition][plane]
        page.locator("#plane").select_option(plane)
        wait_shown(page, "d.shownPlane === arg", plane)
        assert page.locator("#slice").get_attribute("max") == str(count - 1), plane
        # the last index exists (and one more is beyond the slider); then the middle one
        page.locator("#slice").fill(str(count - 1))
        wait_shown(page, "d.shownPlane === arg[0] && d.shownIndex === arg[1]", [plane, str(count - 1)])
        page.locator("#slice").fill(str(count // 2))
        wait_shown(page, "d.shownPlane === arg[0] && d.shownIndex === arg[1] && d.shownKey.includes('format=webp')",
                   [plane, str(count // 2)])
        assert page.locator("#slice-out").inner_text().split(" · ")[0] == f"{count // 2 + 1} / {count}", plane
        image = page.locator("#viewport .view-image").bounding_box()
        assert image["width"] / image["height"] == pytest.approx(width_mm / height_mm, rel=0.02), plane
        top, left = EDGES[acquisition if plane == "native" else plane]
        assert page.locator("#orient-top").inner_text() == top and page.locator("#orient-left").inner_text() == left
        info = page.locator("#slice-info").inner_text()
        assert "Loc " in info and " mm" in info, (plane, info)
        measured = measure(page)
        assert math.isclose(measured, 0.6 * width_mm, rel_tol=0.02), (plane, measured, 0.6 * width_mm)
        shot(page, shots, f"geometry-{acquisition}-acquisition-{plane}", full_page=False)
    page.get_by_role("button", name="Clear measurements").click()


def test_the_order_of_a_sagittal_stack_is_said_as_radiologists_say_it(page, deployment, acquisitions):
    """Frames of the sagittal acquisition run from the patient's left side to the right one
    (ascending position along the normal, which points right): "left first"; its axial reformat's
    index runs head to feet."""
    page.set_default_timeout(30000)
    open_loaded(page, deployment, acquisitions["sagittal"])
    wait_shown(page, "d.shownPlane === 'native'")
    assert "left first (L → R)" in page.locator("#view-info").inner_text()
    assert "Im 1" in page.locator("#slice-info").inner_text()
    page.locator("#plane").select_option("axial")
    wait_shown(page, "d.shownPlane === 'axial'")
    assert "head first (S → I)" in page.locator("#view-info").inner_text()
