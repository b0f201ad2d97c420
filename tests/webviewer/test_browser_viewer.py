"""The image viewer in Chromium against a real render node: every control, and the newest view wins.

The record is a derived copy of 24 slices of the real CT (fresh UIDs), uploaded and registered
through the API but not loaded, so the viewer itself starts loading and shows the progress.
"""

from __future__ import annotations

import math
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.webviewer.browser import PHONE
from tests.webviewer.helpers import Fingers, derived_series, login, new_patient, phone_context, shot, uploaded_record

pytestmark = pytest.mark.browser

SLICES = 24


@pytest.fixture(scope="module")
def record(deployment, ct_series, tmp_path_factory):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("viewer-series"), first=20, count=SLICES)
    return {"patient": patient, **uploaded_record(deployment, patient, files, "CT chest (viewer test)")}


def shown(page) -> dict:
    """What the viewer says is on screen: plane, index and the request that produced it."""
    data = page.locator("#viewport").evaluate("v => ({...v.dataset})")
    split = urlsplit(data.get("shownKey", ""))
    return {"plane": data.get("shownPlane"), "index": int(data.get("shownIndex", -1)),
            "path": split.path, "query": {k: v[0] for k, v in parse_qs(split.query).items()},
            "count": int(data.get("shownCount", 0))}


def wait_shown(page, predicate_js: str, arg=None) -> dict:
    page.wait_for_function(f"(arg) => {{ const v = document.querySelector('#viewport'); if (!v) return false; "
                           f"const d = v.dataset; return {predicate_js}; }}",
                           arg=arg, polling=50)
    return shown(page)


def open_viewer(page, deployment, record):
    login(page, deployment)
    page.goto(f"/#/patients/{record['patient']['id']}")
    page.get_by_role("link", name=re.compile("Open CT")).click()
    page.locator("#viewport").wait_for()


def recorded_statuses(page, deployment) -> list[dict]:
    """The node's load statuses as the viewer receives them, in order. Read here from the node on the
    viewer's behalf (its request, its token) and handed on: the viewer reads answers as streams, and
    the browser keeps no copy of such a body for Playwright to read afterwards."""
    seen: list[dict] = []

    def relay(route):
        request = route.request
        reply = requests.get(request.url, headers={"Authorization": request.headers.get("authorization", "")},
                             verify=deployment.ca_cert, timeout=30)
        if reply.ok:
            seen.append(reply.json())
        route.fulfill(status=reply.status_code, body=reply.content, content_type=reply.headers.get("Content-Type"),
                      headers={"Access-Control-Allow-Origin": deployment.url("web")})

    page.route(lambda url: url.endswith("/status"), relay)
    return seen


def test_first_slice_then_load_progress_per_slice(page, deployment, record, shots):
    frames = []
    statuses = recorded_statuses(page, deployment)
    page.on("request", lambda r: frames.append(r.url) if "/frames/" in r.url else None)
    open_viewer(page, deployment, record)
    first = wait_shown(page, "d.shownIndex === '0'")
    assert first["path"].endswith("/frames/0")
    assert frames and all("overlays=true" in url for url in frames)  # overlay planes on by default
    page.locator("#load-text").filter(has_text=f"All {SLICES} slices loaded.").wait_for(timeout=60000)
    assert page.locator("#load-progress").evaluate("p => [p.value, p.max]") == [SLICES, SLICES]
    ready = [status["frames_ready"] for status in statuses]
    assert ready == sorted(ready)
    shot(page, shots, "16-viewer-slice", full_page=False)


def test_slider_wheel_keyboard_and_newest_view_wins(page, deployment, record):
    open_viewer(page, deployment, record)
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)
    page.locator("#slice").fill("10")
    assert wait_shown(page, "d.shownIndex === '10'")["path"].endswith("/frames/10")
    assert page.locator("#slice-out").inner_text().startswith(f"11 / {SLICES} · Im ")

    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 300)
    wait_shown(page, "d.shownIndex === '13'")

    page.locator("#viewport").focus()
    page.keyboard.press("ArrowDown")
    wait_shown(page, "d.shownIndex === '14'")
    page.keyboard.press("End")
    wait_shown(page, f"d.shownIndex === '{SLICES - 1}'")
    page.keyboard.press("Home")
    wait_shown(page, "d.shownIndex === '0'")

    # Twelve quick steps: requests overtaken by newer ones are aborted and the last one is shown.
    for _ in range(12):
        page.keyboard.press("ArrowDown")
    final = wait_shown(page, "d.shownIndex === '12'")
    page.wait_for_timeout(300)
    assert shown(page)["index"] == 12 == final["index"]

    # Neighbours are fetched ahead: once 12 is shown, 13 and 11 are already in the browser.
    page.wait_for_function("() => performance.getEntriesByType('resource')"
                           ".some(e => e.name.includes('/frames/13?'))", polling=50)
    page.wait_for_timeout(300)
    requested = []
    page.on("request", lambda r: requested.append(r.url) if "/frames/" in r.url else None)
    page.keyboard.press("ArrowDown")
    wait_shown(page, "d.shownIndex === '13'")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    wait_shown(page, "d.shownIndex === '11'")
    assert not [u for u in requested if re.search(r"/frames/(11|12|13)\?", u)], requested


def test_cine_window_level_presets_zoom_pan_and_format(page, deployment, record, shots):
    open_viewer(page, deployment, record)
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)
    viewport = page.locator("#viewport")

    page.locator("#fps").select_option("20")
    before = shown(page)["count"]
    page.get_by_role("button", name="▶ Play").click()
    page.wait_for_function("n => Number(document.querySelector('#viewport').dataset.shownCount) >= n + 8",
                           arg=before, polling=50)
    page.get_by_role("button", name="❚❚ Pause").click()
    assert page.locator("#play").get_attribute("aria-pressed") == "false"

    page.get_by_role("button", name="Window", exact=True).click()
    box = viewport.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y - 40, steps=6)
    page.mouse.up()
    after = wait_shown(page, "d.shownKey.includes('window=') && d.shownKey.includes('format=webp')")
    assert page.locator("#window-preset").input_value() == "custom"
    center, width = (float(v) for v in after["query"]["window"].split(","))
    assert width > 0

    page.locator("#window-preset").select_option("preset:ct_lung")
    assert wait_shown(page, "d.shownKey.includes('window=-600%2C1500')")["query"]["window"] == "-600,1500"
    page.locator("#window-preset").select_option("file")
    meta_window = record["meta"]["default_window"]
    expected = f"{round(meta_window['center'])},{round(meta_window['width'])}"
    auto = wait_shown(page, "d.shownKey.includes('window=' + arg)", expected.replace(",", "%2C"))
    assert auto["query"]["window"] == expected
    page.locator("#window-preset").select_option("auto")
    wait_shown(page, "!d.shownKey.includes('window=')")

    viewport.focus()
    page.keyboard.press("+")
    page.keyboard.press("+")
    # the image of the second zoom step (the first one's may be on screen a moment before it)
    zoomed = wait_shown(page, "(() => { const m = /region=([^&]*)/.exec(d.shownKey); if (!m) return false;"
                              " const r = decodeURIComponent(m[1]).split(',').map(Number);"
                              " return Math.abs((r[2] - r[0]) - arg) < 1e-3; })()", 1 / 1.5625)
    x0, y0, x1, y1 = (float(v) for v in zoomed["query"]["region"].split(","))
    assert math.isclose(x1 - x0, 1 / 1.5625, rel_tol=1e-3) and math.isclose((x0 + x1) / 2, 0.5, abs_tol=1e-3)
    page.get_by_role("button", name="Pan", exact=True).click()
    zoomed_key = page.locator("#viewport").get_attribute("data-shown-key")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 100, y + 50, steps=4)
    page.mouse.up()
    panned = wait_shown(page, "d.shownKey.includes('region=') && d.shownKey !== arg", zoomed_key)
    px0 = float(panned["query"]["region"].split(",")[0])
    assert px0 < x0, "dragging right shows what lies to the left"
    shot(page, shots, "17-viewer-zoom-pan", full_page=False)

    page.locator("#format").select_option("png")
    png = wait_shown(page, "d.shownKey.includes('format=png')")
    assert "quality" not in png["query"]
    page.locator("#format").select_option("jpeg")
    page.locator("#quality").fill("50")
    page.locator("#quality").dispatch_event("change")
    jpeg = wait_shown(page, "d.shownKey.includes('format=jpeg') && d.shownKey.includes('quality=50')")
    assert jpeg["query"]["format"] == "jpeg"
    viewport.focus()
    page.keyboard.press("0")
    wait_shown(page, "!d.shownKey.includes('region=')")


def test_distance_measurement_in_millimetres(page, deployment, record, shots):
    open_viewer(page, deployment, record)
    wait_shown(page, "d.shownIndex === '0'")
    page.get_by_role("button", name="Measure", exact=True).click()
    image = page.locator("#viewport .view-image").bounding_box()
    meta = record["meta"]
    mm_per_px = meta["columns"] * meta["pixel_spacing"][1] / image["width"]
    x, y = image["x"] + image["width"] * 0.25, image["y"] + image["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 200, y, steps=5)
    page.mouse.up()
    label = page.locator("#viewport .measure-label").text_content()
    measured = float(label.removesuffix(" mm"))
    assert math.isclose(measured, 200 * mm_per_px, rel_tol=0.01), (label, 200 * mm_per_px)
    shot(page, shots, "18-viewer-measure", full_page=False)
    page.get_by_role("button", name="Clear measurements").click()
    assert page.locator("#viewport .measure-label").count() == 0


def test_reformats_and_3d_rotation(page, deployment, record, shots):
    open_viewer(page, deployment, record)
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)
    for plane in ("coronal", "sagittal", "axial"):
        page.locator("#plane").select_option(plane)
        view = wait_shown(page, "d.shownPlane === arg", plane)
        assert f"/mpr/{plane}/" in view["path"]
        if plane == "coronal":
            shot(page, shots, "19-viewer-coronal", full_page=False)

    # a thick slab on the sagittal reformat: the node is asked for it, and the image changes
    page.locator("#plane").select_option("sagittal")
    thin = wait_shown(page, "d.shownPlane === 'sagittal'")
    assert "slab" not in thin["query"] and page.locator("#slab-mode").is_hidden()
    thin_pixels = page.locator("#viewport canvas").screenshot()
    page.locator("#slab").fill("20")
    page.locator("#slab").dispatch_event("change")
    page.locator("#slab-mode").select_option("mip")
    thick = wait_shown(page, "d.shownKey.includes('slab=20') && d.shownKey.includes('slab_mode=mip')")
    assert thick["path"] == thin["path"]
    assert page.locator("#viewport canvas").screenshot() != thin_pixels, "a 20 mm MIP slab looks different"
    assert "slab 20 mm MIP" in page.locator("#view-info").inner_text()
    shot(page, shots, "19b-viewer-sagittal-slab", full_page=False)
    page.locator("#slab").fill("0")
    page.locator("#slab").dispatch_event("change")
    wait_shown(page, "d.shownPlane === 'sagittal' && !d.shownKey.includes('slab=')")
    page.locator("#plane").select_option("native")
    assert page.locator("#slab").is_hidden(), "slabs are for reformats only"

    volume_requests = []
    page.on("request", lambda r: volume_requests.append(r.url) if "/volume?" in r.url else None)
    page.locator("#plane").select_option("3d")
    page.locator("#volume-mode").select_option("dvr")
    presets = page.locator("#volume-preset option").all_text_contents()
    assert presets, "the node's volume presets are offered"
    first = wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('mode=dvr')")
    assert first["query"]["render"] == "still"
    box = page.locator("#viewport").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 40, steps=10)
    page.mouse.up()
    still = wait_shown(page, "d.shownKey.includes('render=still') && !d.shownKey.includes('azimuth=30.0')")
    assert float(still["query"]["azimuth"]) == pytest.approx(90.0, abs=1)
    assert float(still["query"]["elevation"]) == pytest.approx(0.0, abs=1)
    qualities = [parse_qs(urlsplit(u).query)["render"][0] for u in volume_requests]
    assert "interactive" in qualities, "previews while dragging"
    assert qualities[-1] == "still", "a full-quality still once released"
    assert all("view_id" in parse_qs(urlsplit(u).query) for u in volume_requests)
    shot(page, shots, "20-viewer-3d", full_page=False)


def test_touch_browsing_on_a_phone(browser, deployment, record, shots):
    context = phone_context(browser, deployment)
    page = context.new_page()
    try:
        open_viewer(page, deployment, record)
        wait_shown(page, "d.shownIndex === '0'")
        assert page.locator("#viewport").get_attribute("data-tool") == "browse"
        box = page.locator("#viewport").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.3
        fingers = Fingers(page)
        fingers.drag((x, y), (x, y + 80))
        view = wait_shown(page, "d.shownIndex === '10'")
        assert view["path"].endswith("/frames/10")
        shot(page, shots, "21-phone-viewer", full_page=False)

        # two fingers moving apart zoom in (80 px apart, then 200: 2.5x), on the same slice
        fingers.pinch((x, y), list(range(80, 201, 10)))
        zoomed = wait_shown(page, "d.shownKey.includes('region=')")
        assert zoomed["index"] == 10
        assert "Zoom 2.5×" in page.locator("#view-info").inner_text()
        shot(page, shots, "21b-phone-pinch-zoom", full_page=False)
        wide = page.evaluate("""w => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > w)
            .map(e => e.tagName + '#' + e.id + '.' + e.className)""", PHONE["width"])
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"], wide
    finally:
        context.close()


def test_a_record_of_another_institution_opens_from_its_own_node(page, deployment, ct_series, tmp_path, shots):
    """Findings and images live where they were made; the browser goes to that node directly."""
    from daemons.demo import ApiClient, register_nodes, register_record, upload_record
    from tests.webviewer.helpers import institution, users_of_second_institution

    second = users_of_second_institution(deployment)
    inst2 = institution(deployment, 2)
    node2 = register_nodes(ApiClient(deployment, **second["admin"]), inst2)[inst2["nodes"][0]["url"]]
    doctor2 = ApiClient(deployment, **second["physician"])
    patient = new_patient(deployment)
    meta = upload_record(doctor2, node2["url"], derived_series(ct_series, tmp_path / "s", first=70, count=6))
    register_record(doctor2, inst2["server_url"], meta, node2["id"], patient["id"], "CT", "CT from the second clinic",
                    confirm_mismatch=True)

    login(page, deployment)   # a physician of institution 1
    page.goto(f"/#/patients/{patient['id']}")
    block = page.locator(f"article[data-institution='{inst2['id']}']")
    block.get_by_role("link", name=re.compile("Open CT")).click()
    page.locator("#viewport, #alert:not([hidden])").first.wait_for()
    assert page.locator("#alert").is_hidden(), page.locator("#alert").inner_text()
    view = wait_shown(page, "d.shownIndex === '0'")
    assert view["path"] == f"api/v1/records/{meta['id']}/frames/0"
    assert node2["name"] in page.locator(".viewer-head").inner_text()
    shot(page, shots, "22-viewer-other-institution", full_page=False)


def test_a_view_asked_again_while_its_image_is_on_its_way_is_shown(page, deployment, record):
    """The mode chosen again (the same MIP) while the first MIP is on its way clears the view and
    asks for the same image: the answer already under way must be shown for the new request. It was
    dropped as the answer of a view left behind, and the viewport said "Loading the 3D view…" for
    good (found by bench/bench_viewer.py's 3D section). A slow link keeps the first answer on its way."""
    open_viewer(page, deployment, record)
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=90000)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 800,
                                                    "downloadThroughput": -1, "uploadThroughput": -1})
    try:
        page.locator("#plane").select_option("3d")
        page.locator("#volume-mode").select_option("mip")
        page.locator("#volume-mode").select_option("mip")
        view = wait_shown(page, "d.shownPlane === '3d'")
    finally:
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                        "downloadThroughput": -1, "uploadThroughput": -1})
    assert view["query"]["mode"] == "mip"
