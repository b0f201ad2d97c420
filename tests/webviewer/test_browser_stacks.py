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
from tests.webviewer.helpers import new_patient, shot, uploaded_record
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
