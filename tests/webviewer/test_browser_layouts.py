"""Viewport layouts in Chromium against a real render node (docs/viewer.md, "Layouts").

A CT opens with the hanging protocol (2×2: slices, coronal, sagittal, 3D), each viewport paints its
own view under its own label, window and slice are per viewport, a click makes a viewport the
active one (the toolbar follows it), the chooser and the keys switch layouts, and a phone gets
one viewport and no chooser. The record: 24 slices of the bundled real CT with fresh UIDs.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.webviewer.browser import PHONE
from tests.webviewer.helpers import derived_series, login, new_patient, shot, uploaded_record

pytestmark = pytest.mark.browser

SLICES = 24
CT_PROTOCOL = [("native", "Slices"), ("coronal", "Coronal"), ("sagittal", "Sagittal"), ("3d", "3D")]


@pytest.fixture(scope="module")
def record(deployment, ct_series, tmp_path_factory):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("layout-series"), first=30, count=SLICES)
    return {"patient": patient, **uploaded_record(deployment, patient, files, "CT chest (layout test)")}


def open_viewer(page, deployment, record):
    login(page, deployment)
    page.goto(f"/#/patients/{record['patient']['id']}")
    page.get_by_role("link", name=re.compile("Open CT")).click()
    page.locator("#viewports .viewport").first.wait_for()


def viewport(page, slot: int):
    return page.locator(f"#viewports .viewport[data-slot='{slot}']")


def wait_painted(page, slot: int, plane: str) -> None:
    try:
        page.wait_for_function(
            "([slot, plane]) => { const v = document.querySelector(`#viewports .viewport[data-slot='${slot}']`);"
            " return v && v.dataset.shownPlane === plane; }", arg=[slot, plane], polling=100, timeout=60000)
    except PlaywrightTimeout:
        state = page.evaluate(
            "() => ({viewports: [...document.querySelectorAll('#viewports .viewport')].map(v => ({...v.dataset})),"
            " status: document.querySelector('#status')?.textContent})")
        raise AssertionError(f"viewport {slot} never showed {plane!r} within 60 s; the page: {state}") from None


def test_ct_opens_2x2_hanging_protocol_all_painted(page, deployment, record, shots):
    open_viewer(page, deployment, record)
    assert page.locator("#viewports").get_attribute("data-layout") == "2x2"
    assert page.locator("#layout").input_value() == "2x2"
    assert page.locator("#viewports .viewport").count() == 4
    for slot, (plane, label) in enumerate(CT_PROTOCOL):
        wait_painted(page, slot, plane)
        corner = viewport(page, slot).locator(".corner.bl").inner_text()
        assert corner.startswith(label), (slot, corner)
        assert viewport(page, slot).locator("canvas").is_visible()
        assert viewport(page, slot).get_attribute("aria-label").startswith(f"{label} image, viewport {slot + 1}.")
    # ids belong to the active viewport only (the first), so each stays unique on the page
    assert page.locator("[id=viewport]").count() == 1
    assert page.locator("#viewport").get_attribute("data-slot") == "0"
    assert page.locator("[id=view-info]").count() == 1
    # every viewport's own orientation markers: the coronal one has S at the top, the sagittal one A or P at a side
    assert viewport(page, 1).locator(".orient-top").inner_text() == "S"
    assert viewport(page, 2).locator(".orient-left").inner_text() in ("A", "P")
    page.locator("#status").evaluate("el => el.textContent = ''")
    page.screenshot(path=str(shots / "40-viewer-ct-2x2-hanging-protocol.png"), full_page=False)


def test_click_activates_and_toolbar_acts_on_active_only(page, deployment, record):
    open_viewer(page, deployment, record)
    for slot, (plane, _) in enumerate(CT_PROTOCOL):
        wait_painted(page, slot, plane)
    coronal, first = viewport(page, 1), viewport(page, 0)
    coronal.click()
    assert "active" in (coronal.get_attribute("class") or "")
    assert "active" not in (first.get_attribute("class") or "")
    assert page.locator("#viewport").get_attribute("data-slot") == "1"
    assert page.locator("#plane").input_value() == "coronal"   # the toolbar shows the active viewport's view
    assert not page.locator("#slab").is_hidden()                 # reformat controls for a reformat

    # a window preset on the coronal viewport leaves the slices viewport's window alone
    before_first = first.get_attribute("data-shown-key")
    page.locator("#window-preset").select_option("preset:ct_lung")
    page.wait_for_function("() => (document.querySelector('#viewport').dataset.shownKey || '').includes('window=')",
                           polling=100)
    assert "window=" not in first.get_attribute("data-shown-key")
    assert first.get_attribute("data-shown-key") == before_first

    # a slice change in the slices viewport does not move the coronal one
    coronal_key = coronal.get_attribute("data-shown-key")
    first.click()
    assert page.locator("#plane").input_value() == "native"
    assert page.locator("#window-preset").input_value() == "auto"
    page.locator("#slice").fill("7")
    page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '7'", polling=100)
    assert coronal.get_attribute("data-shown-key") == coronal_key

    # V moves the active viewport on, keys act on the active one
    page.locator("#viewport").focus()
    page.keyboard.press("v")
    assert page.locator("#viewport").get_attribute("data-slot") == "1"


def test_switching_layouts_keeps_viewport_state(page, deployment, record, shots):
    open_viewer(page, deployment, record)
    wait_painted(page, 0, "native")
    page.locator("#slice").fill("5")
    page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '5'", polling=100)
    page.locator("#layout").select_option("1x2")
    assert page.locator("#viewports .viewport").count() == 2
    grid = page.locator("#viewports").bounding_box()
    a, b = viewport(page, 0).bounding_box(), viewport(page, 1).bounding_box()
    assert abs(a["y"] - b["y"]) < 2 and b["x"] > a["x"] + a["width"] - 2   # side by side
    assert a["width"] < grid["width"] * 0.55
    assert viewport(page, 0).get_attribute("data-shown-index") == "5"    # the kept viewport kept its slice

    page.locator("#viewport").focus()
    page.keyboard.press("3")   # 2x1: one above the other
    assert page.locator("#viewports").get_attribute("data-layout") == "2x1"
    a, b = viewport(page, 0).bounding_box(), viewport(page, 1).bounding_box()
    assert abs(a["x"] - b["x"]) < 2 and b["y"] > a["y"] + a["height"] - 2
    page.keyboard.press("1")
    assert page.locator("#viewports .viewport").count() == 1
    page.keyboard.press("4")
    assert page.locator("#viewports .viewport").count() == 4
    wait_painted(page, 3, "native")   # a viewport added by hand opens on the slices
    shot(page, shots, "41-viewer-layout-2x2-manual", full_page=False)


def test_phone_has_one_viewport_and_no_chooser(browser, deployment, record, shots):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, base_url=deployment.url("web"))
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_viewer(page, deployment, record)
        wait_painted(page, 0, "native")
        assert page.locator("#viewports .viewport").count() == 1
        assert page.locator("#viewports").get_attribute("data-layout") == "1x1"
        page.locator("#tools-toggle").click()
        assert page.locator("#layout").is_hidden()
        page.locator("#viewport").focus()
        page.keyboard.press("4")
        assert page.locator("#viewports .viewport").count() == 1
        shot(page, shots, "42-viewer-phone-one-viewport", full_page=False)
    finally:
        context.close()
    assert not errors, errors
