"""The picture tools in Chromium against the real daemons: invert (rendered by the node), rotate
and flip (the browser turns the picture; markers, probe and measurements follow), reset, and the
angle tool measured in millimetres on non-square pixels. The synthetic CT's Hounsfield values
name their pixel (HU = 100 * row + column), so a probe reading proves where a screen point lands."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from tests.render.synthetic import dataset, to_bytes
from tests.webviewer.helpers import Fingers, new_patient, phone_context, phone_tool, phone_tools, shot, uploaded_record
from tests.webviewer.test_browser_geometry import open_loaded
from tests.webviewer.test_browser_readings import SIZE, hounsfield
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser

SLICES = 3
ROW_MM, COLUMN_MM = 1.0, 0.5   # non-square pixels: the picture is 32 mm wide and 64 mm tall


@pytest.fixture(scope="module")
def ct(deployment, tmp_path_factory):
    folder = tmp_path_factory.mktemp("image-tools-ct")
    paths = []
    for k in range(SLICES):
        ds = dataset(SIZE, SIZE, series="1.2.826.0.1.3680043.8.498.15.7", position=k * 2.0)
        ds.PixelSpacing = [ROW_MM, COLUMN_MM]
        ds.SliceThickness = 2.0
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hounsfield() + 1024).astype(np.int16).tobytes()
        ds.PatientID = "TOOLS-7"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.15.6"  # a study of its own: a study has one patient
        reference = Dataset()
        reference.ReferencedSOPClassUID = CTImageStorage
        reference.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.15.8.{k}"
        ds.ReferencedImageSequence = [reference]
        paths.append(folder / f"slice{k}.dcm")
        paths[-1].write_bytes(to_bytes(ds))
    patient = new_patient(deployment)
    return {"patient": patient, **uploaded_record(deployment, patient, paths, "CT for the picture tools")}


def markers(page) -> dict[str, str]:
    return {edge: page.locator(f"#orient-{edge}").text_content() for edge in ("top", "right", "bottom", "left")}


def image_box(page) -> dict:
    return page.locator("#viewport .view-image").bounding_box()


def grey(page) -> np.ndarray:
    """The middle of the picture as shown (a screenshot of the image element, overlay text aside)."""
    png = page.locator("#viewport .view-image").screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(float)
    h, w = pixels.shape
    return pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4]


def probe_at(page, box: dict, fx: float, fy: float) -> str:
    """The probe's reading at fractions (fx, fy) of the box on screen."""
    probe = page.locator("#viewport .probe-value")
    page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    page.wait_for_function("(el) => !el.hidden && /^\\(\\d+, \\d+\\)/.test(el.textContent)", arg=probe.element_handle())
    return probe.text_content()


def test_invert_rotate_flip_and_reset(page, deployment, ct, shots):
    page.set_default_timeout(30000)
    open_loaded(page, deployment, ct)
    wait_shown(page, "d.shownPlane === 'native'")
    assert markers(page) == {"top": "A", "right": "L", "bottom": "P", "left": "R"}
    before = grey(page)

    # invert: the node renders it (invert=true); the picture shown is the negative
    page.get_by_role("button", name="Show the image inverted, black as white (N)").click()
    wait_shown(page, "d.shownKey.includes('invert=true')")
    page.wait_for_timeout(200)
    after = grey(page)
    assert abs(after.mean() - (255 - before.mean())) < 3, (before.mean(), after.mean())
    assert page.locator("#image-invert").get_attribute("aria-pressed") == "true"

    # a quarter turn clockwise: the patient's right is now at the top, the left edge is posterior
    page.locator("#viewport").focus()   # keys act where focus is not on a toolbar button
    page.keyboard.press("]")
    page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'P'")
    assert markers(page) == {"top": "R", "right": "A", "bottom": "L", "left": "P"}
    box = image_box(page)
    assert box["width"] == pytest.approx(2 * box["height"], rel=0.02)   # 64 mm now run across
    # the probe follows the turn: the point shown at the box's upper left is the image's lower left
    page.keyboard.press("i")
    assert probe_at(page, box, 0.5 / SIZE, 0.5 / SIZE).startswith(f"(0, 63) {63 * 100} HU")
    # kept while scrolling
    page.keyboard.press("ArrowDown")
    wait_shown(page, "d.shownIndex === '1'")
    assert markers(page)["top"] == "R"
    shot(page, shots, "image-tools-rotated-inverted", full_page=False)
    # a flip after the turn mirrors what the screen shows: left and right swap, top stays
    page.keyboard.press("h")
    page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'A'")
    assert markers(page) == {"top": "R", "right": "P", "bottom": "L", "left": "A"}
    page.keyboard.press("h")
    page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'P'")

    # back to upright, then a left-right flip swaps L and R
    page.keyboard.press("[")
    page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'R'")
    page.get_by_role("button", name="Mirror left-right (H)").click()
    page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'L'")
    assert markers(page) == {"top": "A", "right": "R", "bottom": "P", "left": "L"}
    box = image_box(page)
    assert probe_at(page, box, 0.5 / SIZE, 0.5 / SIZE).startswith(f"(63, 0) {63} HU")
    # a measurement across the flipped picture still reads in mm of the image
    page.locator("#viewport").focus()
    page.keyboard.press("m")
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=5)
    page.mouse.up()
    assert page.locator("#viewport .measure-label").last.text_content() == f"{SIZE * COLUMN_MM / 2:.1f} mm"

    # reset (key 0): upright, not mirrored, not inverted
    page.keyboard.press("0")
    page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'R'")
    wait_shown(page, "!d.shownKey.includes('invert')")
    assert markers(page) == {"top": "A", "right": "L", "bottom": "P", "left": "R"}
    assert page.locator("#image-invert").get_attribute("aria-pressed") == "false"


def test_angle_of_a_known_triangle_in_millimetres(page, deployment, ct, shots):
    """Vertex at pixel (20, 30), arms to (40, 30) and (40, 20): 45° on the patient (0.5 mm columns,
    1 mm rows), where the pixels alone would say 26.6°."""
    page.set_default_timeout(30000)
    open_loaded(page, deployment, ct)
    wait_shown(page, "d.shownPlane === 'native'")
    page.keyboard.press("g")
    assert page.get_by_role("button", name="Angle", exact=True).get_attribute("aria-pressed") == "true"
    box = image_box(page)

    def at(column: float, row: float) -> tuple[float, float]:
        return box["x"] + box["width"] * column / SIZE, box["y"] + box["height"] * row / SIZE

    for point in ((40, 30), (20, 30), (40, 20)):   # three clicks
        page.mouse.click(*at(*point))
    label = page.locator("#viewport .angle-label")
    assert label.text_content() == "45.0°"
    # click-drag-click: the first arm dragged, the third point clicked
    page.mouse.move(*at(50, 50))
    page.mouse.down()
    page.mouse.move(*at(30, 50), steps=5)
    page.mouse.up()
    page.mouse.click(*at(30, 40))
    page.wait_for_function("() => document.querySelectorAll('#viewport .angle-label').length === 2")
    assert label.nth(1).text_content() == "90.0°"
    shot(page, shots, "image-tools-angle", full_page=False)
    # cleared like the measurements on slice change: another slice shows none
    page.keyboard.press("ArrowDown")
    wait_shown(page, "d.shownIndex === '1'")
    assert label.count() == 0


def test_phone_rotates_from_the_folded_toolbar(browser, deployment, ct, shots):
    context = phone_context(browser, deployment)
    page = context.new_page()
    try:
        open_loaded(page, deployment, ct)
        wait_shown(page, "d.shownPlane === 'native'")
        phone_tool(page, "Rotate a quarter turn clockwise (])")
        page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'P'")
        assert markers(page)["top"] == "R"
        shot(page, shots, "image-tools-phone-rotated", full_page=False)
        phone_tools(page, True)
        page.locator("#key-image").tap()   # key images from the folded toolbar too
        page.locator("#key-image-list .key-image-item").wait_for()
        assert page.locator("#key-image-list .key-image-item").first.is_visible()
        page.locator("#key-image").tap()
        page.wait_for_function("() => !document.querySelector('#key-image-list .key-image-item')")
        page.locator("#tag-browser-toggle").tap()
        page.locator("#tag-table tr[data-keyword=PatientID]").wait_for()
        assert page.locator("#tag-table tr[data-keyword=PatientID] .tag-value").text_content() == "TOOLS-7"
        shot(page, shots, "image-tools-phone-tags", full_page=False)
    finally:
        context.close()


def test_phone_angle_distance_invert_flip_reset_and_export_by_touch(browser, deployment, ct, shots, tmp_path):
    """On a phone, with a finger: the angle by three taps (45° on the patient, as on a desktop), a
    distance by a drag, invert, flip and reset from the folded toolbar, and the PNG export."""
    context = phone_context(browser, deployment)
    page = context.new_page()
    try:
        open_loaded(page, deployment, ct)
        wait_shown(page, "d.shownPlane === 'native'")
        fingers = Fingers(page)
        box = image_box(page)

        def at(column: float, row: float) -> tuple[float, float]:
            return box["x"] + box["width"] * column / SIZE, box["y"] + box["height"] * row / SIZE

        phone_tool(page, "Angle")
        for point in ((40, 30), (20, 30), (40, 20)):
            fingers.tap(*at(*point))
        page.wait_for_function("() => (document.querySelector('#viewport .angle-label') || {}).textContent === '45.0°'")
        phone_tool(page, "Measure")
        fingers.drag(at(SIZE * 0.25, SIZE * 0.75), at(SIZE * 0.75, SIZE * 0.75))
        distance = "#viewport .measure-label:not(.angle-label)"
        page.wait_for_function("(css) => document.querySelectorAll(css).length === 1", arg=distance)
        assert page.locator(distance).text_content() == f"{SIZE * COLUMN_MM / 2:.1f} mm"
        shot(page, shots, "image-tools-phone-angle-and-distance", full_page=False)

        phone_tool(page, "Show the image inverted, black as white (N)")
        wait_shown(page, "d.shownKey.includes('invert=true')")
        phone_tool(page, "Mirror left-right (H)")
        page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'L'")
        assert markers(page) == {"top": "A", "right": "R", "bottom": "P", "left": "L"}
        shot(page, shots, "image-tools-phone-inverted-flipped", full_page=False)

        phone_tools(page, True)
        with page.expect_download() as download:
            page.get_by_role("button", name="⤓ PNG").tap()
        target = tmp_path / download.value.suggested_filename
        download.value.save_as(target)
        picture = Image.open(target)
        assert picture.format == "PNG" and target.name.endswith("_Slices_1.png")
        flipped = image_box(page)
        assert abs(picture.width / picture.height - flipped["width"] / flipped["height"]) < 0.05

        page.get_by_role("button", name="Reset view").tap()
        page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'R'")
        wait_shown(page, "!d.shownKey.includes('invert')")
        assert page.locator("#image-invert").get_attribute("aria-pressed") == "false"
    finally:
        context.close()


def test_key_images_persist_across_a_reload_and_lead_back(page, deployment, ct, shots):
    page.set_default_timeout(30000)
    open_loaded(page, deployment, ct)
    wait_shown(page, "d.shownPlane === 'native'")
    page.locator("#key-image-status").wait_for()
    page.keyboard.press("ArrowDown")
    wait_shown(page, "d.shownIndex === '1'")
    page.keyboard.press("k")
    item = page.locator("#key-image-list .key-image-item")
    item.first.wait_for()
    assert item.count() == 1 and item.first.text_content().endswith("Slices 2 / 3 · Im 2")
    assert page.locator("#key-image").get_attribute("aria-pressed") == "true"
    page.keyboard.press("ArrowDown")   # another slice is not a key image
    wait_shown(page, "d.shownIndex === '2'")
    assert page.locator("#key-image").get_attribute("aria-pressed") == "false"

    page.reload()   # kept by the node: listed again, and a click goes back to the slice
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)
    item.first.wait_for()
    assert item.count() == 1
    page.keyboard.press("End")
    wait_shown(page, "d.shownIndex === '2'")
    item.first.click()
    wait_shown(page, "d.shownIndex === '1'")
    assert page.locator("#key-image").get_attribute("aria-pressed") == "true"
    shot(page, shots, "image-tools-key-images")
    page.locator("#key-image").click()   # unmark
    page.wait_for_function("() => !document.querySelector('#key-image-list .key-image-item')")


KEY_IMAGE_ITEM = {"plane": "native", "index": 1, "stack": None, "phase": None, "marked_by": "dr.house"}


@pytest.mark.parametrize("listing", [
    {"items": None},
    {"items": [{**KEY_IMAGE_ITEM, "index": "1"}]},   # listed as "Slices 11 / 3", a click went to no slice
    {"items": [{**KEY_IMAGE_ITEM, "index": -2}]},
    {"items": [{**KEY_IMAGE_ITEM, "plane": "oblique"}]},
    {"items": [{**KEY_IMAGE_ITEM, "phase": 0.5}]},
    {"items": [KEY_IMAGE_ITEM, "not an object"]},
], ids=["items-null", "index-text", "index-negative", "plane-unknown", "phase-fraction", "item-text"])
def test_a_key_image_listing_of_another_shape_is_reported_not_listed(page, deployment, ct, listing):
    """A node's key-image listing the viewer did not ask for is said to be one, and nothing of it is
    listed or offered to click; the images still scroll."""
    page.set_default_timeout(30000)
    page.route(re.compile(r".*/api/v1/records/[^/]+/key-images$"),
               lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(listing)))
    open_loaded(page, deployment, ct)
    status = page.locator("#key-image-status")
    page.wait_for_function("() => document.querySelector('#key-image-status').textContent"
                           ".includes('could not be read')")
    assert "something else than the key images asked for" in status.text_content()
    assert page.locator("#key-image-list .key-image-item").count() == 0
    wait_shown(page, "d.shownPlane === 'native'")
    page.keyboard.press("ArrowDown")
    wait_shown(page, "d.shownIndex === '1'")


def test_export_downloads_the_view_as_a_png_of_its_size(page, deployment, ct, shots, tmp_path):
    """The node's PNG of the image shown, turned as on screen (a quarter turn: 64 mm across, 32 mm
    down), with the measurement (yellow) and the markers drawn over it, named after series and slice."""
    page.set_default_timeout(30000)
    open_loaded(page, deployment, ct)
    wait_shown(page, "d.shownPlane === 'native'")
    page.keyboard.press("]")
    page.wait_for_function("() => document.querySelector('#orient-left').textContent === 'P'")
    box = image_box(page)
    page.keyboard.press("m")
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=5)
    page.mouse.up()
    with page.expect_download() as download:
        page.get_by_role("button", name="⤓ PNG").click()
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    assert download.value.suggested_filename.endswith("_Slices_1.png")
    picture = Image.open(target)
    assert picture.format == "PNG"
    assert abs(picture.width - box["width"]) <= 2 and abs(picture.height - box["height"]) <= 2, (picture.size, box)
    rgb = np.asarray(picture.convert("RGB")).astype(int)
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 170) & (rgb[..., 2] < 120)
    assert yellow[picture.height // 2 - 3: picture.height // 2 + 4].sum() > picture.width / 3   # the measurement
    picture.save(shots / "image-tools-export.png")


def test_tag_browser_shows_the_attributes_of_the_instance_shown(page, deployment, ct, shots):
    page.set_default_timeout(30000)
    open_loaded(page, deployment, ct)
    wait_shown(page, "d.shownPlane === 'native'")
    page.get_by_role("button", name="Tags").click()
    row = page.locator("#tag-table > tbody > tr")
    page.locator("#tag-table tr[data-keyword=PatientID]").wait_for()

    def value(keyword: str) -> str:
        return page.locator(f"#tag-table > tbody > tr[data-keyword={keyword}] > .tag-value").text_content()

    assert value("PatientID") == "TOOLS-7"
    assert value("Modality") == "CT"
    assert value("InstanceNumber") == "1"
    modality = page.locator("#tag-table > tbody > tr[data-keyword=Modality]")
    assert modality.locator(".tag-tag").text_content() == "(0008,0060)"
    assert modality.locator(".tag-vr").text_content() == "CS"
    # a sequence opens item by item
    sequence = page.locator("#tag-table > tbody > tr[data-keyword=ReferencedImageSequence]")
    sequence.locator("summary").click()
    assert "1.2.826.0.1.3680043.8.498.15.8.0" in sequence.locator("details").text_content()
    # the filter keeps the rows whose keyword, tag or value match (a sequence by its items too)
    page.locator("#tag-filter").fill("0020,0013")
    page.wait_for_function("() => [...document.querySelectorAll('#tag-table > tbody > tr')].filter((r) => !r.hidden)"
                           ".map((r) => r.dataset.keyword).join() === 'InstanceNumber'")
    page.locator("#tag-filter").fill("15.8.0")
    page.wait_for_function("() => [...document.querySelectorAll('#tag-table > tbody > tr')].filter((r) => !r.hidden)"
                           ".map((r) => r.dataset.keyword).join() === 'ReferencedImageSequence'")
    page.locator("#tag-filter").fill("")
    # it follows the slice shown: the next slice is the next instance
    page.locator("#viewport").focus()
    page.keyboard.press("ArrowDown")
    number = "#tag-table > tbody > tr[data-keyword=InstanceNumber] > .tag-value"
    page.wait_for_function("(css) => (document.querySelector(css) || {}).textContent === '2'", arg=number)
    assert row.count() > 20
    shot(page, shots, "image-tools-tag-browser")


def test_every_turn_maps_screen_and_image_consistently(page, deployment):
    """geometry.js, in the browser: for each of the 8 turns (4 rotations, mirrored or not) the screen
    mapping inverts, and each edge's marker goes where that edge's points go, so measurements,
    reference lines (drawn with imageToScreen) and markers agree at every rotation and flip."""
    page.goto("/")
    problems = page.evaluate("""async () => {
      const g = await import('/static/js/geometry.js');
      const problems = [];
      const edges = { top: 'A', right: 'L', bottom: 'P', left: 'R' };
      const mids = { top: [0.5, 0], right: [1, 0.5], bottom: [0.5, 1], left: [0, 0.5] };
      const near = (a, b) => Math.abs(a[0] - b[0]) < 1e-9 && Math.abs(a[1] - b[1]) < 1e-9;
      for (const rotate of [0, 1, 2, 3]) for (const flipH of [false, true]) for (const flipV of [false, true]) {
        const turn = { rotate, flipH, flipV };
        const rect = { left: 10, top: 20, width: 300, height: 150, turn };
        const region = [0.25, 0.1, 0.75, 0.6];
        for (const p of [[0.3, 0.2], [0.7, 0.55], [0.5, 0.35]]) {
          const s = g.imageToScreen(p[0], p[1], rect, region);
          if (!near(g.screenToImage(s[0], s[1], rect, region), p)) problems.push(['roundtrip', turn, p]);
        }
        const turned = g.turnedEdges(edges, turn);
        for (const [edge, label] of Object.entries(edges)) {
          const lands = g.turnPoint(mids[edge][0], mids[edge][1], turn);
          const where = Object.entries(mids).find(([, m]) => near(m, lands))[0];
          if (turned[where] !== label) problems.push(['marker', turn, edge, where]);
        }
      }
      return problems;
    }""")
    assert problems == []
