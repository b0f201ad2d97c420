"""The viewer's patient-safety labels in Chromium against the real daemons (issue 15, items 3-6).

- Orientation markers at the middle of every edge of slices, reformats and 3D views, following
  3D rotation, hidden when the record has no orientation.
- A window drag on an MR without a window in its files starts from the window on screen; window
  presets are offered per modality.
- The overlay names the scanner's instance number, the slice position and thickness and the
  order in which the slices run, so image numbers in a report match the PACS.
- Changing the view never leaves the old image or its measurements under the new view's label.

Records: 24 slices of the bundled real CT, and an "MR" made from copies of them (modality MR,
no window, new UIDs) labelled as a sagittal acquisition.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import MRImageStorage, generate_uid

from daemons.demo import register_record, upload_record, write_finding
from daemons.render.volume.geometry import view_labels
from tests.webviewer.helpers import (
    Fingers,
    as_patient,
    derived_series,
    institution,
    login,
    new_patient,
    phone_context,
    phone_tool,
    phone_tools,
    register_placeholder_records,
    registered_node,
    shot,
)
from tests.webviewer.test_browser_viewer import shown, wait_shown

pytestmark = pytest.mark.browser

SLICES = 24
EDGES = ("top", "right", "bottom", "left")


def upload_and_register(deployment, files: list[Path], record_type: str, description: str) -> dict:
    patient = new_patient(deployment)
    inst, node = institution(deployment), registered_node(deployment)
    doctor = deployment.client("physician")
    with tempfile.TemporaryDirectory() as tmp:  # the images name the page's patient, as a real study would
        meta = upload_record(doctor, node["url"], as_patient(files, patient, Path(tmp)))
    register_record(doctor, inst["server_url"], meta, node["id"], patient["id"], record_type, description)
    return {"patient": patient, "meta": meta, "href": f"/#/view/{inst['id']}/{node['id']}/{meta['id']}"}


def sagittal_mr_without_window(sources: list[Path], dest: Path) -> list[Path]:
    """Copies of real slices relabelled as a sagittal MR series whose files carry no window."""
    dest.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    written = []
    for number, source in enumerate(sources):
        ds = pydicom.dcmread(source)
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.Modality = "MR"
        for keyword in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-40.0 + 3.0 * number, -200.0, 120.0]
        ds.InstanceNumber = number + 1
        ds.SliceThickness = 3.0
        target = dest / f"mr-{number:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    return written


@pytest.fixture(scope="module")
def ct(deployment, ct_series, tmp_path_factory):
    files = derived_series(ct_series, tmp_path_factory.mktemp("safety-ct"), first=20, count=SLICES)
    return upload_and_register(deployment, files, "CT", "CT chest (safety test)")


@pytest.fixture(scope="module")
def mr(deployment, ct_series, tmp_path_factory):
    sources = sorted(ct_series.glob("*.dcm"))[40:52]
    files = sagittal_mr_without_window(sources, tmp_path_factory.mktemp("safety-mr"))
    return upload_and_register(deployment, files, "MR", "MR sagittal without a window")


def open_record(page, deployment, record, ready: bool = True) -> None:
    login(page, deployment)
    page.goto(record["href"])
    page.locator("#viewport").wait_for()
    if ready:
        page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)


def markers(page) -> dict[str, str] | None:
    """The edge labels on screen, None when they are hidden."""
    values = {edge: page.locator(f"#orient-{edge}") for edge in EDGES}
    if any(marker.is_hidden() for marker in values.values()):
        assert all(marker.is_hidden() for marker in values.values()), "all four edges or none"
        return None
    return {edge: marker.inner_text() for edge, marker in values.items()}


def marker_boxes_are_edge_middles(page) -> None:
    view = page.locator("#viewport").bounding_box()
    cx, cy = view["x"] + view["width"] / 2, view["y"] + view["height"] / 2
    for edge in EDGES:
        box = page.locator(f"#orient-{edge}").bounding_box()
        mx, my = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        if edge in ("top", "bottom"):
            assert abs(mx - cx) < 2, edge
            assert (my < view["y"] + 40) if edge == "top" else (my > view["y"] + view["height"] - 40), edge
        else:
            assert abs(my - cy) < 2, edge
            assert (mx < view["x"] + 40) if edge == "left" else (mx > view["x"] + view["width"] - 40), edge


def test_orientation_markers_on_slices_reformats_and_3d(page, deployment, ct, shots):
    open_record(page, deployment, ct)
    wait_shown(page, "d.shownPlane === 'native'")
    assert markers(page) == {"top": "A", "right": "L", "bottom": "P", "left": "R"}
    marker_boxes_are_edge_middles(page)
    shot(page, shots, "30-orientation-axial-slice", full_page=False)
    expected = {"axial": {"top": "A", "right": "L", "bottom": "P", "left": "R"},
                "coronal": {"top": "S", "right": "L", "bottom": "I", "left": "R"},
                "sagittal": {"top": "S", "right": "P", "bottom": "I", "left": "A"}}
    for plane, labels in expected.items():
        page.locator("#plane").select_option(plane)
        wait_shown(page, "d.shownPlane === arg", plane)
        assert markers(page) == labels, plane
        if plane == "coronal":
            shot(page, shots, "31-orientation-coronal", full_page=False)

    page.locator("#plane").select_option("3d")
    wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('azimuth=30.0')")
    assert markers(page) == view_labels(30, 20, 0)
    page.locator("#viewport").focus()
    for _ in range(6):   # six steps of 10 degrees: the anterior-left view becomes a left-posterior one
        page.keyboard.press("ArrowRight")
    wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('azimuth=90.0')")
    assert markers(page) == view_labels(90, 20, 0)
    assert markers(page)["right"] == "P" and markers(page)["left"] == "A"
    shot(page, shots, "32-orientation-3d-left-view", full_page=False)


def test_a_sagittal_acquisition_is_labelled_as_one(page, deployment, mr, shots):
    open_record(page, deployment, mr, ready=False)
    wait_shown(page, "d.shownPlane === 'native'")
    assert markers(page) == {"top": "S", "right": "P", "bottom": "I", "left": "A"}
    shot(page, shots, "33-orientation-sagittal-mr", full_page=False)


def test_a_record_without_orientation_shows_no_markers(page, deployment, ct_series, tmp_path):
    files = derived_series(ct_series, tmp_path / "no-iop", first=60, count=3)
    for path in files:
        ds = pydicom.dcmread(path)
        del ds.ImageOrientationPatient
        del ds.ImagePositionPatient
        ds.save_as(path, enforce_file_format=True)
    record = upload_and_register(deployment, files, "CT", "CT without orientation")
    open_record(page, deployment, record, ready=False)
    wait_shown(page, "d.shownPlane === 'native'")
    assert markers(page) is None


def drag(page, dx: float, dy: float) -> None:
    box = page.locator("#viewport").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=6)
    page.mouse.up()


def test_window_drag_on_an_mr_without_a_window_starts_from_the_one_on_screen(page, deployment, mr, shots):
    windows = {}
    page.on("response", lambda r: windows.__setitem__(r.url, r.headers.get("x-window"))
            if "/frames/" in r.url else None)
    open_record(page, deployment, mr, ready=False)
    first = wait_shown(page, "d.shownPlane === 'native'")
    assert "window" not in first["query"]
    applied = next(v for u, v in windows.items() if "/frames/" in u and v)
    center, width = (float(v) for v in applied.split(","))
    overlay = " ".join(page.locator("#view-info").inner_text().split())
    assert f"W {round(width)} L {round(center)} (default)" in overlay

    # no CT window presets on an MR; the CT offers its own
    options = page.locator("#window-preset option").evaluate_all("os => os.map(o => o.value)")
    assert not [o for o in options if o.startswith("preset:")], options

    page.get_by_role("button", name="Window", exact=True).click()
    drag(page, 64, -32)   # a quarter of the width wider, an eighth of it lower
    after = wait_shown(page, "d.shownKey.includes('window=') && !d.shownKey.includes('format=jpeg')")
    new_center, new_width = (float(v) for v in after["query"]["window"].split(","))
    step = width / 256
    assert new_width == pytest.approx(width + 64 * step, abs=2 * step + 1)
    assert new_center == pytest.approx(center - 32 * step, abs=2 * step + 1)
    assert new_width < 2 * width, "the drag started from the window on screen, not from the 16-bit range"
    shot(page, shots, "34-mr-window-drag", full_page=False)


def test_ct_offers_ct_presets(page, deployment, ct):
    open_record(page, deployment, ct, ready=False)
    wait_shown(page, "d.shownPlane === 'native'")
    options = page.locator("#window-preset option").evaluate_all("os => os.map(o => o.value)")
    assert "preset:ct_lung" in options


def test_overlay_names_instance_position_thickness_and_order(page, deployment, ct, ct_series, shots):
    open_record(page, deployment, ct, ready=False)
    wait_shown(page, "d.shownIndex === '0'")
    # The first slice in position order (the lowest) is the scanner's last instance of the 24.
    sources = sorted(ct_series.glob("*.dcm"))[20:20 + SLICES]
    lowest = min((pydicom.dcmread(f, stop_before_pixels=True) for f in sources),
                 key=lambda ds: float(ds.ImagePositionPatient[2]))
    info = page.locator("#slice-info").inner_text()
    assert info == (f"Im {lowest.InstanceNumber} · Loc {float(lowest.ImagePositionPatient[2]):.1f} mm · "
                    f"Th {float(lowest.SliceThickness):.1f} mm")
    assert "feet first (I → S)" in page.locator("#view-info").inner_text()
    assert page.locator("#slice-out").inner_text() == f"1 / {SLICES} · Im {lowest.InstanceNumber}"
    page.locator("#viewport").focus()
    page.keyboard.press("End")
    wait_shown(page, f"d.shownIndex === '{SLICES - 1}'")
    highest = max((pydicom.dcmread(f, stop_before_pixels=True) for f in sources),
                  key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert page.locator("#slice-info").inner_text().startswith(f"Im {highest.InstanceNumber} · ")
    shot(page, shots, "35-overlay-instance-position", full_page=False)


def test_changing_the_view_never_shows_the_old_image_under_the_new_label(page, deployment, ct, shots):
    open_record(page, deployment, ct)
    # one viewport: in the CT's 2x2 hanging protocol the other viewports' images are already
    # cached (test_browser_layouts.py), and this is about a viewport changing its own view
    page.locator("#layout").select_option("1x1")
    page.wait_for_function("""() => {
        const v = document.querySelector('#viewport'); const c = v.querySelector('canvas');
        return v.dataset.shownPlane === 'native' && v.dataset.shownIndex === '0'
            && (parseFloat(c.style.width) > v.clientWidth * 0.9
                || parseFloat(c.style.height) > v.clientHeight * 0.9); }""", polling=50)
    page.get_by_role("button", name="Measure", exact=True).click()
    image = page.locator("#viewport .view-image").bounding_box()
    x, y = image["x"] + image["width"] * 0.3, image["y"] + image["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y, steps=4)
    page.mouse.up()
    assert page.locator("#viewport .measure-label").count() == 1

    held = []
    page.route(re.compile(r".*/mpr/coronal/.*"), lambda route: held.append(route))
    page.locator("#plane").select_option("coronal")
    page.wait_for_timeout(50)
    while not held:
        page.wait_for_timeout(50)
    # while the coronal image is on its way: no image, no measurement, no stale labels
    assert page.locator("#viewport .view-image").is_hidden()
    assert page.locator("#viewport .measure-label").count() == 0
    assert markers(page) is None
    assert page.locator("#view-message").inner_text() == "Loading the coronal view…"
    assert page.locator("#view-info").inner_text() == "Coronal: loading…"
    assert shown(page)["plane"] == ""
    shot(page, shots, "36-view-change-loading", full_page=False)

    # leave for the sagittal view before the coronal answer arrives: the late answer is dropped
    page.locator("#plane").select_option("sagittal")
    wait_shown(page, "d.shownPlane === 'sagittal'")
    for route in held:
        route.continue_()
    page.wait_for_timeout(500)
    assert shown(page)["plane"] == "sagittal"
    assert markers(page) == {"top": "S", "right": "P", "bottom": "I", "left": "A"}
    page.unroute(re.compile(r".*/mpr/coronal/.*"))

    # back to the slices: the measurement made there is shown with its slice again
    page.locator("#plane").select_option("native")
    wait_shown(page, "d.shownPlane === 'native'")
    assert page.locator("#viewport .measure-label").count() == 1

    # in 3D, another rendering mode is another view: no MIP under the DVR label
    page.locator("#plane").select_option("3d")
    wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('mode=mip')")
    held.clear()
    dvr = re.compile(r".*/volume\?.*mode=dvr.*")
    page.route(dvr, lambda route: held.append(route))
    page.locator("#volume-mode").select_option("dvr")
    while not held:
        page.wait_for_timeout(50)
    assert page.locator("#viewport .view-image").is_hidden() and markers(page) is None
    assert page.locator("#view-message").inner_text() == "Loading the 3D view…"
    for route in held:
        route.continue_()
    page.unroute(dvr)
    wait_shown(page, "d.shownPlane === '3d' && d.shownKey.includes('mode=dvr')")
    assert page.locator("#viewport .view-image").is_visible() and markers(page) is not None


PHONE_844 = {"width": 390, "height": 844}


def overflowing(page, width: int) -> list[str]:
    return page.evaluate("""w => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > w + 0.5)
        .map(e => e.tagName + '#' + e.id + '.' + e.className)""", width)


def test_phone_layout_image_and_slider_first_tools_collapsible(browser, deployment, ct, shots):
    context = browser.new_context(viewport=PHONE_844, base_url=deployment.url("web"), is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        # long unbroken words (a scanner's series name, a URL in a finding) must wrap, not widen the page
        inst = institution(deployment)
        long_name = "CT_THORAX_HIGH_RESOLUTION_1.0_B70F_LUNG_KERNEL_WITH_CONTRAST_PHASE_ARTERIAL"
        meta = ct["meta"]
        write_finding(deployment.client("physician"), inst["server_url"], ct["patient"]["id"],
                      [{"record_id": meta["id"], "institution_id": inst["id"],
                        "node_id": registered_node(deployment)["id"]}],
                      description=long_name, findings="See https://pacs.example.org/studies/" + "x" * 80,
                      conclusion="No acute finding.")
        register_placeholder_records(deployment, ct["patient"], [long_name])
        login(page, deployment)
        page.goto(f"/#/patients/{ct['patient']['id']}")
        page.locator("article.finding").wait_for()
        page.get_by_role("link", name=re.compile("Open CT")).first.wait_for()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE_844["width"], \
            overflowing(page, PHONE_844["width"])
        shot(page, shots, "37-phone-patient-page", full_page=True)

        page.goto(ct["href"])
        wait_shown(page, "d.shownPlane === 'native'")
        viewport = page.locator("#viewport").bounding_box()
        slider = page.locator("#slice").bounding_box()
        toggle = page.locator("#tools-toggle")
        assert viewport["y"] < 140, "the image comes first, right under the title"
        assert viewport["height"] >= 0.5 * PHONE_844["height"]
        assert viewport["y"] + viewport["height"] <= slider["y"] < PHONE_844["height"], "then the slider, on screen"
        assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
        assert page.get_by_role("button", name="Measure", exact=True).is_hidden()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE_844["width"], \
            overflowing(page, PHONE_844["width"])
        shot(page, shots, "38-phone-viewer", full_page=False)

        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        page.get_by_role("button", name="Measure", exact=True).wait_for()
        assert page.locator("#plane").is_visible()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE_844["width"], \
            overflowing(page, PHONE_844["width"])
        shot(page, shots, "39-phone-viewer-tools-open", full_page=True)
        toggle.click()
        assert page.get_by_role("button", name="Measure", exact=True).is_hidden()
    finally:
        context.close()


def test_phone_presets_window_drag_cine_overlay_and_no_stale_image_by_touch(browser, deployment, ct, shots):
    """The CT on a phone, with a finger: the overlay names instance, position and thickness; a CT
    window preset, then a drag by a finger from it; cine from the folded toolbar; and a change of
    view clears the old image and its measurement at once, as on a desktop."""
    context = phone_context(browser, deployment)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    errors: list[str] = []
    try:
        open_record(page, deployment, ct)
        wait_shown(page, "d.shownPlane === 'native'")
        assert re.fullmatch(r"Im \d+ · Loc -?\d+\.\d mm · Th \d+\.\d mm", page.locator("#slice-info").inner_text())
        assert "feet first (I → S)" in page.locator("#view-info").inner_text()
        fingers = Fingers(page)

        phone_tools(page, True)
        page.locator("#window-preset").select_option("preset:ct_lung")
        lung = wait_shown(page, "d.shownKey.includes('window=')")["query"]["window"]
        phone_tools(page, False)
        phone_tool(page, "Window")
        box = page.locator("#viewport").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        fingers.drag((x, y), (x + 20, y))
        lung_center, lung_width = (int(v) for v in lung.split(","))
        dragged = wait_shown(page, "d.shownKey.includes('window=') && !d.shownKey.includes(arg)",
                             f"window={lung_center}%2C{lung_width}")
        center, width = (int(v) for v in dragged["query"]["window"].split(","))
        assert center == lung_center and width > lung_width, (lung, dragged["query"])   # from the preset on screen
        shot(page, shots, "phone-ct-lung-window-dragged", full_page=False)

        phone_tool(page, "Measure")
        fingers.drag((x - 60, y), (x + 60, y))
        page.wait_for_function("() => document.querySelectorAll('#viewport .measure-label').length === 1")
        held = []
        page.route(re.compile(r".*/mpr/coronal/.*"), lambda route: held.append(route))
        phone_tools(page, True)
        page.locator("#plane").select_option("coronal")
        while not held:
            page.wait_for_timeout(50)
        assert page.locator("#viewport .view-image").is_hidden() and markers(page) is None
        assert page.locator("#viewport .measure-label").count() == 0
        for route in held:
            route.continue_()
        page.unroute(re.compile(r".*/mpr/coronal/.*"))
        wait_shown(page, "d.shownPlane === 'coronal'")
        assert markers(page) is not None

        page.locator("#plane").select_option("native")
        start = int(wait_shown(page, "d.shownPlane === 'native'")["index"])
        page.locator("#play").tap()
        page.wait_for_function("(start) => ![String(start), String(start + 1)].includes("
                               "document.querySelector('#viewport').dataset.shownIndex)", arg=start)
        page.locator("#play").tap()
        assert page.locator("#play").get_attribute("aria-pressed") == "false"
        phone_tools(page, False)
        shot(page, shots, "phone-ct-after-cine", full_page=False)
    finally:
        context.close()
    assert not errors, errors
