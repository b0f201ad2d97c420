"""A reload keeps the reading, in Chromium against the real daemons (docs/viewer.md, "Layouts and
the active viewport"). Before, the viewer read `?slice=` when it opened and never wrote the reading
back: a reload mid-reading (a network hiccup, a phone tab the OS discarded) opened the hanging
protocol at slice 1 again, window and layout gone. An edited link's values open the protocol.
The record: 12 slices of the bundled real CT with fresh UIDs (the CT hanging protocol, 2×2).
"""

from __future__ import annotations

import pytest

from tests.webviewer.helpers import derived_series, login, new_patient, uploaded_record
from tests.webviewer.test_browser_layouts import open_viewer, viewport, wait_painted
from tests.webviewer.test_browser_viewer import shown, wait_shown

pytestmark = pytest.mark.browser

SLICES = 12
FULL_QUALITY = "d.shownKey && d.loadState === 'ready' && !d.shownKey.includes('quality=60')"


@pytest.fixture(scope="module")
def record(deployment, ct_series, tmp_path_factory):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("reload-reading"), first=40, count=SLICES)
    return {"patient": patient, **uploaded_record(deployment, patient, files, "CT chest (reload)")}


def test_a_reload_keeps_the_slice_window_layout_and_active_viewport(page, deployment, record):
    open_viewer(page, deployment, record)
    wait_painted(page, 0, "native")
    entries = page.evaluate("history.length")
    page.locator("#layout").select_option("1x2")
    viewport(page, 1).click()                      # the second viewport (the coronal) is read ...
    page.locator("#plane").select_option("native")  # ... on the stored slices
    page.locator("#viewport").focus()
    for _ in range(7):
        page.keyboard.press("ArrowDown")
    wait_shown(page, f"d.shownIndex === '7' && {FULL_QUALITY}")
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + 60, steps=3)
    page.mouse.up()
    windowed = wait_shown(page, f"d.shownKey.includes('window=') && {FULL_QUALITY}")
    window = windowed["query"]["window"]
    page.wait_for_function("w => location.hash.includes(`window=${encodeURIComponent(w)}`)", arg=window, polling=100)
    assert page.evaluate("history.length") == entries, "the reading replaces the entry: scrolling fills no history"

    page.reload()
    after = wait_shown(page, f"d.shownIndex === '7' && {FULL_QUALITY}")
    assert page.locator("#viewports").get_attribute("data-layout") == "1x2"
    assert page.locator("#layout").input_value() == "1x2"
    assert page.locator("#viewport").get_attribute("data-slot") == "1", "the viewport being read is the active one"
    assert after["plane"] == "native" and after["path"].endswith("/frames/7")
    assert after["query"]["window"] == window
    assert page.locator("#window-preset").input_value() == "custom"
    assert page.locator("#slice-out").inner_text().startswith(f"8 / {SLICES}")


def test_a_reload_keeps_a_reformat_and_its_slice(page, deployment, record):
    """The view was not kept: a reload on a coronal reformat reopened the protocol's plane at its middle."""
    open_viewer(page, deployment, record)
    wait_painted(page, 1, "coronal")
    viewport(page, 1).click()
    page.locator("#viewport").focus()
    middle = shown(page)["index"]
    for _ in range(5):
        page.keyboard.press("ArrowDown")
    wait_shown(page, f"d.shownPlane === 'coronal' && d.shownIndex === '{middle + 5}' && {FULL_QUALITY}")
    page.wait_for_function("i => location.hash.includes('plane=coronal') && location.hash.includes(`slice=${i}`)",
                           arg=middle + 5, polling=100)
    page.reload()
    after = wait_shown(page, f"d.shownIndex === '{middle + 5}' && {FULL_QUALITY}")
    assert after["plane"] == "coronal" and "/mpr/coronal/" in after["path"]
    assert page.locator("#viewport").get_attribute("data-slot") == "1"


@pytest.mark.parametrize(("query", "index"), [
    ("slice=-5&window=abc&layout=9x9&viewport=0", 0),
    ("slice=1e99&window=1e12,400&layout=constructor&viewport=9", SLICES - 1),
    ("plane=constructor&slice=2", 2),
])
def test_an_edited_address_opens_the_hanging_protocol(page, deployment, record, query, index):
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    refused = []
    page.on("response", lambda r: refused.append(r.status) if "/frames/" in r.url and r.status >= 400 else None)
    login(page, deployment)
    inst, node, meta = record["institution"], record["node"], record["meta"]
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={record['patient']['id']}&{query}")
    now = wait_shown(page, f"d.shownIndex === '{index}' && {FULL_QUALITY}")
    assert page.locator("#viewports").get_attribute("data-layout") == "2x2"
    assert page.locator("#viewports .viewport").count() == 4
    assert page.locator("#viewport").get_attribute("data-slot") == "0"
    assert "window" not in now["query"] and page.locator("#window-preset").input_value() == "auto"
    assert page.locator("#view-message").is_hidden() and page.locator("#alert").is_hidden()
    assert errors == [] and refused == []
    # the address now holds the reading on screen, not the edited values
    page.wait_for_function(f"() => location.hash.includes('slice={index}') && location.hash.includes('layout=2x2')",
                           polling=100)
    assert "window=" not in page.evaluate("location.hash") and shown(page)["index"] == index
