"""A reload keeps each viewport's zoom and pan, and the image format and quality chosen in the
toolbar, in Chromium against the real daemons (docs/viewer.md, "A reload keeps the reading").
Before: every viewport came back showing its whole image (the region zoomed into and the pan were
lost, in the active viewport and in the others), and the images came back as WebP at quality 85
whatever the toolbar had chosen (`format=` was read when the page opened, never written back).
One patient, one study of slices of the bundled real CT (tests.webviewer.test_browser_priors as_study).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from tests.webviewer.test_browser_priors import current_and_prior, open_current, read, viewport

pytestmark = pytest.mark.browser

SLICES = 8


@pytest.fixture(scope="module")
def studies(deployment, ct_series, tmp_path_factory) -> dict:
    return current_and_prior(deployment, ct_series, tmp_path_factory.mktemp("reload-zoom"), SLICES, keys=("current",))


def shown(page, slot: int, encoding: list[str]) -> dict:
    """The request of the full-quality image viewport `slot` shows, once it has every parameter of
    `encoding` (`format=jpeg`, `quality=70`), as {parameter: value}."""
    page.wait_for_function(
        "([slot, encoding]) => { const d = document.querySelector(`.viewport[data-slot='${slot}']`)?.dataset;"
        " const query = d && d.loadState === 'ready' && d.shownKey ? d.shownKey.split('?').pop().split('&') : [];"
        " return encoding.every(p => query.includes(p)) && !query.includes('render=interactive'); }",
        arg=[slot, encoding], polling=100, timeout=60000)
    key = viewport(page, slot).get_attribute("data-shown-key")
    return dict(parse_qsl(key.split("?")[-1]))


def test_a_reload_keeps_zoom_pan_and_the_format(page, deployment, studies):
    open_current(page, deployment, studies)         # 2×2: slices, coronal, sagittal, 3D
    page.locator("#format").select_option("jpeg")   # the toolbar's format and quality
    page.locator("#quality").fill("70")
    encoding = ["format=jpeg", "quality=70"]
    read(page, 1)                                   # the coronal zoomed in once
    page.keyboard.press("=")
    read(page, 3)                                   # the 3D camera zoomed in once
    page.keyboard.press("=")
    read(page, 0)                                   # the slices zoomed in twice, then panned
    page.keyboard.press("=")
    page.keyboard.press("=")
    page.wait_for_function("() => document.querySelector('#viewport')?.dataset.shownKey?.includes('region=')")
    page.locator("button[data-tool='pan']").click()
    box = viewport(page, 0).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y + 30, steps=5)
    page.mouse.up()
    page.wait_for_function("() => ['format=jpeg', 'quality=70', 'center=', 'v2=coronal', '_z1.25', 'v4=3d']"
                           ".every(p => location.hash.includes(p))", polling=100)
    page.wait_for_timeout(400)                      # the last change written (READING_WRITE_MS)
    before = {slot: shown(page, slot, encoding) for slot in range(4)}
    assert before[0]["region"] != "0.1800,0.1800,0.8200,0.8200", "the pan moved the region zoomed into"
    assert "region" in before[1] and "region" not in before[2] and before[3]["zoom"] == "1.25"

    page.reload()
    page.locator("#viewports .viewport[data-slot='3']").wait_for()
    after = {}
    for _ in range(100):                            # until every viewport shows its kept view
        after = {slot: shown(page, slot, encoding) for slot in range(4)}
        if after == before:
            break
        page.wait_for_timeout(200)
    assert after == before
    assert (page.locator("#format").input_value(), page.locator("#quality").input_value()) == ("jpeg", "70")

    # edited values are ignored (format, quality, a centre that is no point) or bounded as a zoom
    # by the keys is (1..16 in 2D, 0.25..8 in 3D): never an exception
    inst, node, meta = (studies["records"]["current"][k] for k in ("institution", "node", "meta"))
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={studies['patient']['id']}"
              "&format=gif&quality=87&zoom=abc&center=0.1,0.1&v2=coronal_z1e99_cx,y&v3=sagittal_z2_c-5,9&v4=3d_z0.01")
    page.wait_for_function("() => document.querySelector(\"#viewports .viewport[data-slot='1']\")"
                           "?.dataset.plane === 'coronal'")
    edited = {slot: shown(page, slot, ["format=webp", "quality=85"]) for slot in range(4)}
    assert "region" not in edited[0], "no zoom: the whole image (a centre means nothing unzoomed)"
    assert edited[1]["region"] == "0.4688,0.4688,0.5313,0.5313", "zoom 16 at most, about the middle"
    assert edited[2]["region"] == "0.0000,0.5000,0.5000,1.0000", "a centre within the image"
    assert edited[3]["zoom"] == "0.25"
    assert (page.locator("#format").input_value(), page.locator("#quality").input_value()) == ("webp", "85")
    assert page.locator("#viewports .viewport").count() == 4 and not page.js_errors
