"""Reformats and 3D views of any time point in the viewer, in Chromium against the real daemons
(issue 14 item 4): on a synthetic dynamic (3 time points at 6 positions,
tests/render/synthetic_stacks.py)
the Time slider of an MPR view asks the node for that time point (`phase`), the picture changes and
the overlay says which time point it is; the time point goes with the view to 3D and back to the
stored slices.
"""

from __future__ import annotations

import pytest

from tests.render import synthetic_stacks as synth
from tests.webviewer.helpers import new_patient, shot, uploaded_record
from tests.webviewer.test_browser_geometry import open_loaded
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser

POSITIONS, TIMES = 6, 3


def test_the_time_slider_moves_an_mpr_view_through_time(page, deployment, tmp_path_factory, shots):
    path = tmp_path_factory.mktemp("phases") / "dynamic.dcm"
    # each frame's own window fits the few grey levels that tell the time points apart (value(): + time)
    frames = [{"stack": 0, "position": p, "time": t, "window": (30, 60)}
              for t in range(TIMES) for p in range(POSITIONS)]
    path.write_bytes(synth.enhanced(frames, ["TemporalPositionIndex", "InStackPositionNumber"]))
    patient = new_patient(deployment)
    record = {"patient": patient, **uploaded_record(deployment, patient, [path], "MR dynamic (MPR in time)")}
    page.set_default_timeout(30000)
    open_loaded(page, deployment, record)
    page.locator("#plane").select_option("coronal")
    first = wait_shown(page, "d.shownPlane === 'coronal' && d.shownKey.includes('format=webp')")
    assert first["query"]["phase"] == "0"
    assert page.locator("#time").is_visible() and page.locator("#time-out").inner_text() == f"1 / {TIMES}"
    assert page.locator("#time-info").inner_text() == f"Time 1/{TIMES}"
    before = page.locator("#viewport .view-image").screenshot()
    page.locator("#time").fill("2")
    later = wait_shown(page, "d.shownPlane === 'coronal' && d.shownKey.includes('phase=2') "
                             "&& d.shownKey.includes('format=webp')")
    assert later["index"] == first["index"], "the same plane, another time point"
    assert page.locator("#time-out").inner_text() == f"3 / {TIMES}"
    assert page.locator("#time-info").inner_text() == f"Time 3/{TIMES}"
    assert page.locator("#viewport .view-image").screenshot() != before, "time point 3 is another picture"
    shot(page, shots, "phases-coronal-time-3")
    page.locator("#plane").select_option("3d")
    wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('phase=2') && d.shownKey.includes('render=still')")
    assert page.locator("#time-info").inner_text() == f"Time 3/{TIMES}", "3D shows the same time point"
    page.locator("#plane").select_option("native")
    stored = wait_shown(page, "d.shownPlane === 'native'")
    assert stored["index"] >= 2 * POSITIONS, "the stored slice of the same time point"
    assert page.locator("#time-info").inner_text() == f"Time 3/{TIMES}"
