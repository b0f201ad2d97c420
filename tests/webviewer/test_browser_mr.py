"""A real MR in the viewer (demo_data/mr-head-24: 24 axial T1 slices of TCIA Vestibular-Schwannoma-SEG),
in Chromium against the real daemons, on a desktop and a phone viewport: orientation markers on
2D, MPR and 3D, only MR presets (no CT window or transfer function), the window drag starting from
the window on screen, the 3D defaults (an MR DVR preset; a MIP that is not a white blob, checked on
the pixels the node sent) and the slice numbering of the overlay; beside a CT, each viewport's 3D
offers its own modality's presets. Screenshots in test-artifacts/webviewer/.

A real sagittal acquisition is test_browser_sagittal's; synthetic ones are test_browser_geometry's.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.webviewer.browser import DESKTOP, PHONE
from tests.webviewer.helpers import Fingers, derived_series, login, new_patient, shot, uploaded_record
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser

DEMO_MR = Path(__file__).resolve().parents[2] / "demo_data" / "mr-head-24"
SLICES = 24
INSTANCES = range(49, 73)   # the files' Instance Numbers (SOURCE.txt)
EDGES = {"native": ("A", "R"), "axial": ("A", "R"), "coronal": ("S", "R"), "sagittal": ("S", "A")}  # top, left


@pytest.fixture(scope="module")
def mr(deployment):
    patient = new_patient(deployment)
    files = sorted(DEMO_MR.glob("*.dcm"))
    assert len(files) == SLICES
    return {"patient": patient, **uploaded_record(deployment, patient, files, "MR head T1", modality="MR")}


def window_on_screen(page) -> tuple[int, int]:
    """(width, level) the overlay says the image on screen was drawn with."""
    text = page.locator("#viewport .corner.bl").inner_text()
    found = re.search(r"W (\d+)\s+L (-?\d+)", text)
    assert found, text
    return int(found[1]), int(found[2])


def shown_image(deployment, mr, page) -> tuple[np.ndarray, dict]:
    """The image on screen as the node sends it (same request), and its headers."""
    key = page.locator("#viewport").get_attribute("data-shown-key")
    reply = deployment.client("physician").call("GET", f"{mr['node']['url'].rstrip('/')}/{key}")
    return np.asarray(Image.open(io.BytesIO(reply.content))), reply.headers


def toolbar(page, phone: bool, open_it: bool) -> None:
    """On a phone the tools are in a collapsible bar: open it to choose, close it to read the image."""
    if phone and (page.locator("#tools-toggle").get_attribute("aria-expanded") == "true") != open_it:
        page.locator("#tools-toggle").click()


def drag(page, dx: float, dy: float, phone: bool = False) -> None:
    """A drag across the middle of the active viewport: with a finger on a phone, else the mouse."""
    box = page.locator("#viewport").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    if phone:
        Fingers(page).drag((x, y), (x + dx, y + dy), steps=4)
        return
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=4)
    page.mouse.up()


@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_a_real_mr_in_the_viewer(browser, deployment, mr, shots, screen):
    phone = screen == "phone"
    options = {"viewport": PHONE, "is_mobile": True, "has_touch": True} if phone else {"viewport": DESKTOP}
    context = browser.new_context(base_url=deployment.url("web"), **options)
    context.set_default_timeout(60000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, deployment)
        page.goto(f"/#/patients/{mr['patient']['id']}")
        page.get_by_role("link", name="Open").first.click()
        page.locator("#viewport[data-load-state=ready]").wait_for()
        wait_shown(page, "d.shownPlane === 'native'")

        # 2D: orientation, numbering (position in the stack and the scanner's instance number)
        assert (page.locator("#orient-top").inner_text(), page.locator("#orient-left").inner_text()) == EDGES["native"]
        slice_out = page.locator("#slice-out").inner_text()
        counter = re.search(r"(\d+) / (\d+) · Im (\d+)", slice_out)
        assert counter and int(counter[2]) == SLICES and int(counter[3]) in INSTANCES, slice_out
        assert f"Slices {counter[1]} / {SLICES}" in page.locator("#viewport .corner.bl").inner_text()

        # MR windows: the file's and the automatic one, never a CT window (in HU)
        toolbar(page, phone, True)
        if phone:   # one viewport: no layouts, linked scrolling, reference lines or prior comparison
            for control in ("#layout", "#sync-scroll", "#reference-lines", "#compare-prior"):
                assert page.locator(control).is_hidden(), control
        choices = page.locator("#window-preset option").evaluate_all("os => os.map(o => o.value)")
        assert "file" in choices and not any(c.startswith("preset:") for c in choices), choices
        # the drag starts from the window on screen (the file's, 1168/606), not from a CT guess
        width, level = window_on_screen(page)
        assert (width, level) == (1168, 606)
        page.get_by_role("button", name="Window", exact=True).click()
        toolbar(page, phone, False)
        drag(page, 12, 0, phone)
        dragged = wait_shown(page, "d.shownKey.includes('window=')")
        center, new_width = (int(v) for v in dragged["query"]["window"].split(","))
        assert center == level and width < new_width < width * 1.2, dragged["query"]
        shot(page, shots, f"mr-{screen}-2d", full_page=False)
        toolbar(page, phone, True)
        page.locator("#window-preset").select_option("auto")

        # reformats: orientation of each plane
        for plane in ("coronal", "sagittal"):
            page.locator("#plane").select_option(plane)
            wait_shown(page, "d.shownPlane === arg", plane)
            top, left = EDGES[plane]
            assert page.locator("#orient-top").inner_text() == top and page.locator("#orient-left").inner_text() == left
            toolbar(page, phone, False)
            shot(page, shots, f"mr-{screen}-{plane}", full_page=False)
            toolbar(page, phone, True)

        # 3D MIP: a window measured on the projection, not a white blob
        page.locator("#plane").select_option("3d")
        wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('render=still')")
        assert page.locator("#orient-top").inner_text() and page.locator("#orient-left").inner_text()
        image, headers = shown_image(deployment, mr, page)
        grey = image if image.ndim == 2 else image[..., 0]
        head = grey[grey > 8]   # rays that met the head
        assert head.size > 0.05 * grey.size
        assert np.mean(head == 255) < 0.05 and np.mean((head > 40) & (head < 215)) > 0.3
        center, width = (float(v) for v in headers["X-Window"].split(","))
        assert window_on_screen(page) == (round(width), round(center))
        toolbar(page, phone, False)
        shot(page, shots, f"mr-{screen}-3d-mip", full_page=False)
        # the window tool drags a projection's window, from the one on screen
        toolbar(page, phone, True)
        page.get_by_role("button", name="Window", exact=True).click()
        toolbar(page, phone, False)
        drag(page, 12, 0, phone)
        dragged = wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('window=')")
        drag_center, drag_width = (int(v) for v in dragged["query"]["window"].split(","))
        assert drag_center == round(center) and width < drag_width < width * 1.2, (dragged["query"], width)

        # DVR: the MR preset the node names, and only MR presets offered
        toolbar(page, phone, True)
        page.locator("#volume-mode").select_option("dvr")
        dvr = wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('mode=dvr') && "
                               "d.shownKey.includes('render=still')")
        assert dvr["query"]["preset"] == "mr_soft_tissue" == page.locator("#volume-preset").input_value()
        offered = page.locator("#volume-preset option").evaluate_all("os => os.map(o => o.value)")
        assert {"mr_soft_tissue", "mr_angio"} <= set(offered) and not any(p.startswith("ct_") for p in offered)
        colour, _ = shown_image(deployment, mr, page)
        assert np.mean(colour.max(axis=-1) > 60) > 0.05, "an MR DVR must not be near-black"
        toolbar(page, phone, False)
        shot(page, shots, f"mr-{screen}-3d-dvr", full_page=False)
        # a drag (a finger on a phone) turns the volume
        drag(page, 40, 0, phone)
        turned = wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('mode=dvr') && "
                                  "d.shownKey.includes('render=still') && !d.shownKey.includes('azimuth=30.0')")
        assert float(turned["query"]["azimuth"]) > 30, turned["query"]
    finally:
        context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def ct_and_mr(deployment, ct_series, tmp_path_factory):
    """One patient with a CT (24 slices of the real CT) and the real MR (copies with fresh UIDs)."""
    patient = new_patient(deployment)
    ct_files = derived_series(ct_series, tmp_path_factory.mktemp("presets-ct"), first=30, count=24)
    ct = uploaded_record(deployment, patient, ct_files, "CT beside an MR")
    mr_files = derived_series(DEMO_MR, tmp_path_factory.mktemp("presets-mr"), first=0, count=SLICES)   # UIDs of its own
    mr = uploaded_record(deployment, patient, mr_files, "MR beside a CT", modality="MR")
    return {"patient": patient, "ct": ct, "mr": mr}


def viewport(page, slot: int):
    return page.locator(f"#viewports .viewport[data-slot='{slot}']")


def dvr_of_active(page) -> tuple[str, list[str], dict]:
    """Show the active viewport in 3D DVR: the preset chosen, those offered and the request shown."""
    page.locator("#plane").select_option("3d")
    page.locator("#volume-mode").select_option("dvr")
    shown = wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('mode=dvr')")
    offered = page.locator("#volume-preset option").evaluate_all("os => os.map(o => o.value)")
    return page.locator("#volume-preset").input_value(), offered, shown


def test_each_viewport_offers_its_own_modalitys_3d_presets(page, deployment, ct_and_mr, shots):
    """1×2, the CT on the left and the MR on the right, both in 3D DVR: each viewport's preset list and
    default are its record's modality's, and activating a viewport brings its list back; the node is
    asked once per modality."""
    page.set_default_timeout(60000)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url.split("modality=")[1])
            if "/api/v1/presets?modality=" in r.url else None)
    node = ct_and_mr["ct"]["node"]["url"].rstrip("/")
    doctor = deployment.client("physician")
    expected = {m: doctor.call("GET", f"{node}/api/v1/presets?modality={m}").json() for m in ("CT", "MR")}
    login(page, deployment)
    page.goto(f"/#/patients/{ct_and_mr['patient']['id']}")
    page.get_by_role("link", name=re.compile("^Open CT")).click()
    page.locator("#series-panel .panel-studies[data-complete='true']").wait_for(state="attached")
    viewport(page, 0).focus()
    page.keyboard.press("2")
    viewport(page, 1).click()
    page.locator(f"#series-panel .panel-series[data-record='{ct_and_mr['mr']['meta']['id']}']").click()
    page.locator(f"#viewports .viewport[data-slot='1'][data-record='{ct_and_mr['mr']['meta']['id']}']"
                 "[data-load-state=ready]").wait_for()

    mr_preset, mr_offered, mr_shown = dvr_of_active(page)
    assert mr_preset == expected["MR"]["volume_default"] == mr_shown["query"]["preset"] == "mr_soft_tissue"
    assert mr_offered == expected["MR"]["volume"] and not any(p.startswith("ct_") for p in mr_offered)

    viewport(page, 0).click()
    page.locator("#viewports .viewport[data-slot='0'][data-load-state=ready]").wait_for()
    ct_preset, ct_offered, ct_shown = dvr_of_active(page)
    assert ct_preset == expected["CT"]["volume_default"] == ct_shown["query"]["preset"]
    assert ct_offered == expected["CT"]["volume"] and not any(p.startswith("mr_") for p in ct_offered)

    viewport(page, 1).click()   # back to the MR: its list and its preset
    page.wait_for_function("() => document.querySelector('#volume-preset').value === 'mr_soft_tissue'")
    assert page.locator("#volume-preset option").evaluate_all("os => os.map(o => o.value)") == expected["MR"]["volume"]
    assert sorted(asked) == ["CT", "MR"], asked
    shot(page, shots, "mr-beside-ct-3d-presets", full_page=False)
