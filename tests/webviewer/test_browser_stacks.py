"""A file of several stacks in the viewer, in Chromium against the real daemons (issue 14 item 4).

A synthetic field map (magnitude and phase frames at the same 6 positions, tests/render/synthetic_stacks.py)
opens with a stack selector; reformats show the chosen stack at its own extent (6 axial slices, not
the file's 12 frames), and switching the stack changes the reformatted image. A classic series of
two image sizes and pixel spacings (tests/render/synthetic.py `stack`) is two stacks: switching
shows each one's frames, measured in millimetres with that stack's own spacing.
"""

from __future__ import annotations

import math

import pytest
from pydicom.uid import generate_uid

from tests.render import synthetic_stacks as synth
from tests.render.synthetic import stack as classic_stack
from tests.webviewer.browser import DESKTOP
from tests.webviewer.helpers import new_patient, phone_context, phone_tools, shot, uploaded_record
from tests.webviewer.test_browser_geometry import measure, open_loaded
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser

POSITIONS = 6


@pytest.fixture(scope="module")
def field_map_record(deployment, tmp_path_factory):
    path = tmp_path_factory.mktemp("stacks") / "fieldmap.dcm"
    path.write_bytes(synth.field_map(POSITIONS))
    patient = new_patient(deployment)
    return {"patient": patient, **uploaded_record(deployment, patient, [path], "MR field map (stacks)")}


def test_the_stack_selector_switches_the_reformatted_stack(page, deployment, field_map_record, shots):
    page.set_default_timeout(30000)
    open_loaded(page, deployment, field_map_record)
    selector = page.locator("#stack-select")
    assert selector.is_visible()
    assert [o.inner_text() for o in selector.locator("option").all()] == ["MAGNITUDE", "PHASE"]
    page.locator("#plane").select_option("axial")
    first = wait_shown(page, "d.shownPlane === 'axial' && d.shownKey.includes('stack=1') "
                             "&& d.shownKey.includes('format=webp')")
    assert page.locator("#slice").get_attribute("max") == str(POSITIONS - 1), "one stack's extent, not the file's"
    magnitude = page.locator("#viewport .view-image").screenshot()
    selector.select_option("2")
    wait_shown(page, "d.shownPlane === 'axial' && d.shownKey.includes('stack=2') && d.shownKey.includes('format=webp')")
    assert page.locator("#slice").get_attribute("max") == str(POSITIONS - 1)
    phase = page.locator("#viewport .view-image").screenshot()
    assert phase != magnitude, "the phase stack's reformat is another image"
    assert first["query"]["stack"] == "1"
    shot(page, shots, "stacks-field-map-phase")


def test_the_time_control_moves_to_the_same_position_at_another_time_point(page, deployment, tmp_path_factory, shots):
    path = tmp_path_factory.mktemp("dynamic") / "dynamic.dcm"
    path.write_bytes(synth.dynamic(times=2, positions=POSITIONS))
    patient = new_patient(deployment)
    record = {"patient": patient, **uploaded_record(deployment, patient, [path], "MR dynamic (time points)")}
    page.set_default_timeout(30000)
    open_loaded(page, deployment, record)
    assert not page.locator("#stack-select").is_visible(), "one stack: no selector"
    page.locator("#slice").fill("2")
    wait_shown(page, "d.shownPlane === 'native' && d.shownIndex === '2'")
    assert page.locator("#time").is_visible() and page.locator("#time-out").inner_text() == "1 / 2"
    page.locator("#time").fill("1")
    wait_shown(page, "d.shownPlane === 'native' && d.shownIndex === arg", str(2 + POSITIONS))
    assert page.locator("#time-out").inner_text() == "2 / 2"
    shot(page, shots, "stacks-dynamic-time-2")


def test_a_series_of_two_sizes_measures_each_stack_with_its_own_spacing(page, deployment, tmp_path_factory, shots):
    folder = tmp_path_factory.mktemp("sizes")
    series, paths = generate_uid(), []
    parts = {"1": (3, 128, 0.5), "2": (4, 64, 0.75)}  # stack id: (slices, size, pixel spacing mm)
    for stack_id, (count, size, spacing) in parts.items():
        for name, data in classic_stack((1, 0, 0, 0, 1, 0), count=count, rows=size, cols=size,
                                        pixel_spacing=(spacing, spacing), series=series):
            paths.append(folder / f"{stack_id}-{name}")
            paths[-1].write_bytes(data)
    patient = new_patient(deployment)
    record = {"patient": patient, **uploaded_record(deployment, patient, paths, "CT of two sizes (stacks)")}
    page.set_default_timeout(30000)
    open_loaded(page, deployment, record)
    selector = page.locator("#stack-select")
    assert [o.inner_text() for o in selector.locator("option").all()] == ["128×128 0.5 mm", "64×64 0.75 mm"]
    page.get_by_role("button", name="Measure", exact=True).click()
    for stack_id, middle in (("2", "5"), ("1", "1")):  # each stack's middle frame (stacks.js middleFrame)
        selector.select_option(stack_id)
        wait_shown(page, "d.shownPlane === 'native' && d.shownIndex === arg && d.shownKey.includes('format=webp')",
                   middle)
        _, size, spacing = parts[stack_id]
        measured = measure(page)
        assert math.isclose(measured, 0.6 * size * spacing, rel_tol=0.02), (stack_id, measured)
        shot(page, shots, f"stacks-sizes-stack-{stack_id}", full_page=False)


def screen_context(browser, deployment, screen: str):
    """A desktop context, or the phone profile's."""
    if screen == "phone":
        return phone_context(browser, deployment)
    context = browser.new_context(viewport=DESKTOP, base_url=deployment.url("web"))
    context.set_default_timeout(30000)
    return context


@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_a_key_image_on_a_reformat_keeps_its_stack_and_leads_back_to_it(browser, deployment, field_map_record,
                                                                        shots, screen):
    """Marked on the PHASE stack's axial 4, listed as such; from the MAGNITUDE stack (or a reload) a
    click (a tap on a phone, the stack chosen from the folded toolbar) on it shows the PHASE
    stack's axial 4 again, not the magnitude's."""
    phone = screen == "phone"
    context = screen_context(browser, deployment, screen)
    page = context.new_page()
    press = (lambda locator: locator.tap()) if phone else (lambda locator: locator.click())

    def tools() -> None:
        if phone:
            phone_tools(page, True)

    try:
        open_loaded(page, deployment, field_map_record)
        tools()
        page.locator("#stack-select").select_option("2")
        page.locator("#plane").select_option("axial")
        page.locator("#slice").fill("3")
        wait_shown(page, "d.shownPlane === 'axial' && d.shownIndex === '3' && d.shownKey.includes('stack=2')")
        press(page.locator("#key-image"))
        item = page.locator("#key-image-list .key-image-item")
        item.first.wait_for()
        page.wait_for_function("() => [...document.querySelectorAll('#key-image-list .key-image-item')]"
                               ".map((e) => e.textContent).join('|').endsWith('PHASE · Axial 4 / 6')")
        assert item.count() == 1
        assert item.first.get_attribute("data-stack") == "2"
        page.locator("#stack-select").select_option("1")
        wait_shown(page, "d.shownPlane === 'axial' && d.shownKey.includes('stack=1')")
        assert page.locator("#key-image").get_attribute("aria-pressed") == "false", "the magnitude axial 4: unmarked"

        page.reload()
        page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)
        item.first.wait_for()
        press(item.first)
        shown = wait_shown(page, "d.shownPlane === 'axial' && d.shownIndex === '3' && d.shownKey.includes('stack=2')")
        assert shown["query"]["stack"] == "2" and page.locator("#stack-select").input_value() == "2"
        assert page.locator("#key-image").get_attribute("aria-pressed") == "true"
        shot(page, shots, f"stacks-key-image-on-phase-stack-{screen}", full_page=phone)
        tools()
        press(page.locator("#key-image"))   # unmark: the list is empty again for the next run
        page.wait_for_function("() => !document.querySelector('#key-image-list .key-image-item')")
    finally:
        context.close()


@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_a_key_image_keeps_its_time_point(browser, deployment, tmp_path_factory, shots, screen):
    """Marked at the second time point, listed with it, and a click (a tap on a phone) from the first
    time point leads back to it."""
    path = tmp_path_factory.mktemp("dynamic-key") / "dynamic.dcm"
    path.write_bytes(synth.dynamic(times=2, positions=POSITIONS))
    patient = new_patient(deployment)
    record = {"patient": patient, **uploaded_record(deployment, patient, [path], "MR dynamic (key image)")}
    phone = screen == "phone"
    context = screen_context(browser, deployment, screen)
    page = context.new_page()
    press = (lambda locator: locator.tap()) if phone else (lambda locator: locator.click())
    try:
        open_loaded(page, deployment, record)
        page.locator("#slice").fill("2")
        if phone:
            phone_tools(page, True)
        page.locator("#time").fill("1")
        wait_shown(page, "d.shownPlane === 'native' && d.shownIndex === arg", str(2 + POSITIONS))
        press(page.locator("#key-image"))
        item = page.locator("#key-image-list .key-image-item")
        item.first.wait_for()
        assert item.first.text_content().endswith("Time 2 / 2") and item.first.get_attribute("data-phase") == "1"
        page.locator("#time").fill("0")
        wait_shown(page, "d.shownPlane === 'native' && d.shownIndex === '2'")
        assert page.locator("#key-image").get_attribute("aria-pressed") == "false"
        press(item.first)
        wait_shown(page, "d.shownPlane === 'native' && d.shownIndex === arg", str(2 + POSITIONS))
        assert page.locator("#time-out").inner_text() == "2 / 2"

        # a reformat at the second time point: marked with it, and reopened at it
        page.locator("#plane").select_option("axial")
        page.locator("#slice").fill("4")
        wait_shown(page, "d.shownPlane === 'axial' && d.shownIndex === '4' && d.shownKey.includes('phase=1')")
        press(page.locator("#key-image"))
        page.wait_for_function("() => document.querySelectorAll('#key-image-list .key-image-item').length === 2")
        assert item.nth(1).text_content().endswith(f"Axial 5 / {POSITIONS} · Time 2 / 2")
        page.locator("#time").fill("0")
        wait_shown(page, "d.shownPlane === 'axial' && d.shownIndex === '4' && d.shownKey.includes('phase=0')")
        assert page.locator("#key-image").get_attribute("aria-pressed") == "false", "time point 1 is not marked"
        page.locator("#plane").select_option("native")
        press(item.nth(1))
        wait_shown(page, "d.shownPlane === 'axial' && d.shownIndex === '4' && d.shownKey.includes('phase=1')")
        assert page.locator("#key-image").get_attribute("aria-pressed") == "true"
        listed = deployment.client("physician").call(
            "GET", f"{record['node']['url'].rstrip('/')}/api/v1/records/{record['meta']['id']}/key-images").json()
        assert [(i["plane"], i["index"], i["stack"], i["phase"]) for i in listed["items"]] == [
            ("native", 2 + POSITIONS, None, 1), ("axial", 4, "1", 1)]
        shot(page, shots, f"stacks-key-image-time-point-{screen}", full_page=phone)
    finally:
        context.close()
