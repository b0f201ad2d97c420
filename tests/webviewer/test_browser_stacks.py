"""A file of several stacks in the viewer, in Chromium against the real daemons (issue 14 item 4).

A synthetic field map (magnitude and phase frames at the same 6 positions, tests/render/synthetic_stacks.py)
opens with a stack selector; reformats show the chosen stack at its own extent (6 axial slices, not
the file's 12 frames), and switching the stack changes the reformatted image.
"""

from __future__ import annotations

import pytest

from tests.render import synthetic_stacks as synth
from tests.webviewer.helpers import new_patient, shot, uploaded_record
from tests.webviewer.test_browser_geometry import open_loaded
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
