"""A series per viewport and comparison with priors, in Chromium against the real daemons
(issue 15: "drag a series into a viewport", "comparison with priors", "synchronised scrolling ...
by manual offset across studies"; docs/viewer.md, "The series panel" and "Comparing with a prior").

One patient, three studies of slices of the bundled real CT (new UIDs, tests.webviewer.helpers.
derived_series): the current one (2026), a prior (2024) in another frame of reference with every
slice moved 100 mm towards the head (as another scanner's table would put it), holding the
matching series and a lung series, and an older one (2019) with a matching series too. Checked:
the panel lists the three studies (current and priors marked) with painted thumbnails; a series
dragged onto the second viewport of a 1×2 layout is shown there (its overlay names it); "Compare
with prior" opens the 2024 study's matching series beside the current one; the two frames are not
linked until aligned; after "align" scrolling moves the prior by the same millimetres, with the
offset in its overlay; Shift+A clears it; on a phone the panel is a drawer and a tap switches the
one viewport.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.webviewer.browser import PHONE
from tests.webviewer.helpers import derived_series, login, new_patient, shot, uploaded_record
from tests.webviewer.test_browser_studies import PAINTED, THUMBNAIL_WAIT_MS

pytestmark = pytest.mark.browser

SHIFT_MM = 100.0
LOC = re.compile(r"Loc (-?\d+\.\d) mm")
OFFSET = re.compile(r"offset ([+−])(\d+\.\d) mm")


def as_study(files: list[Path], study: dict, number: int, description: str, frame: str,
             shift: float = 0.0) -> list[Path]:
    """Put the files in `study` as series `number`, in frame of reference `frame`, moved `shift` mm along z."""
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyDescription = study["uid"], study["date"], study["description"]
        ds.SeriesNumber, ds.SeriesDescription, ds.FrameOfReferenceUID = number, description, frame
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + shift]
        ds.save_as(path, enforce_file_format=True)
    return files


#: the two studies a reload test reads: (first slice of the real CT, the study), the prior 50 mm off
CURRENT_AND_PRIOR = {
    "current": (30, {"uid": "", "date": "20260610", "description": "CT ABDOMEN follow-up"}),
    "prior": (34, {"uid": "", "date": "20240115", "description": "CT ABDOMEN"}),
}


def current_and_prior(deployment, ct_series: Path, folder: Path, slices: int,
                      keys: tuple[str, ...] = ("current", "prior")) -> dict:
    """A new patient with `slices` slices of the real CT as a current study and, with "prior" in
    `keys`, a prior study in another frame of reference 50 mm along z, each uploaded and registered
    (their studies kept): what the reload tests open."""
    patient = new_patient(deployment)
    records = {}
    for key in keys:
        first, study = CURRENT_AND_PRIOR[key]
        files = as_study(derived_series(ct_series, folder / key, first=first, count=slices),
                         {**study, "uid": generate_uid()}, 2, "Abdomen 3.0 soft tissue", generate_uid(),
                         50.0 if key == "prior" else 0.0)
        records[key] = uploaded_record(deployment, patient, files, f"{key} series", keep_study=True)
    return {"patient": patient, "records": records}


@pytest.fixture(scope="module")
def studies(deployment, ct_series, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("priors")
    patient = new_patient(deployment)
    current = {"uid": generate_uid(), "date": "20260610", "description": "CT ABDOMEN follow-up"}
    prior = {"uid": generate_uid(), "date": "20240115", "description": "CT ABDOMEN"}
    oldest = {"uid": generate_uid(), "date": "20190301", "description": "CT ABDOMEN baseline"}
    prior_frame = generate_uid()
    plan = {  # key: (first slice, count, study, series number, description, frame, shift)
        "current": (20, 30, current, 2, "Abdomen 3.0 soft tissue", generate_uid(), 0.0),
        "prior": (25, 30, prior, 2, "Abdomen 3.0 soft tissue", prior_frame, SHIFT_MM),
        "prior-lung": (40, 4, prior, 3, "Lung window 1.0", prior_frame, SHIFT_MM),
        "oldest": (30, 4, oldest, 2, "Abdomen 3.0 soft tissue", generate_uid(), 0.0),
    }
    records = {}
    for key, (first, count, study, number, description, frame, shift) in plan.items():
        files = as_study(derived_series(ct_series, tmp / key, first=first, count=count), study, number, description,
                         frame, shift)
        records[key] = uploaded_record(deployment, patient, files, f"{key} series", keep_study=True)
    return {"patient": patient, "records": records, "studies": {"current": current, "prior": prior, "oldest": oldest}}


def viewport(page, slot: int):
    return page.locator(f"#viewports .viewport[data-slot='{slot}']")


def read(page, slot: int) -> None:
    """Make viewport `slot` the one read, its image focused for the keys."""
    viewport(page, slot).click()
    page.wait_for_function("slot => document.querySelector('#viewport')?.dataset.slot === String(slot)", arg=slot)
    page.locator("#viewport").focus()


def wait_record(page, slot: int, record_id: str, index: int | None = None) -> None:
    """Until viewport `slot` shows a slice of `record_id` (slice `index` if given)."""
    page.wait_for_function(
        "([slot, id, index]) => { const v = document.querySelector(`#viewports .viewport[data-slot='${slot}']`);"
        " return v && v.dataset.record === id && v.dataset.shownPlane === 'native'"
        " && (index === null || v.dataset.shownIndex === String(index)); }",
        arg=[slot, record_id, index], polling=100, timeout=60000)


def location(page, slot: int) -> float:
    text = viewport(page, slot).locator(".corner.bl").inner_text()
    match = LOC.search(text)
    assert match, text
    return float(match.group(1))


def open_current(page, deployment, studies) -> None:
    page.set_default_timeout(30000)
    login(page, deployment)
    page.goto(f"/#/patients/{studies['patient']['id']}")
    page.get_by_role("link", name=re.compile("^Open CT · current series")).click()
    page.locator("#series-panel .panel-studies[data-complete='true']").wait_for(state="attached", timeout=60000)
    wait_record(page, 0, studies["records"]["current"]["meta"]["id"])


def test_panel_drag_compare_align(page, deployment, studies, shots):
    records = {key: r["meta"]["id"] for key, r in studies["records"].items()}
    open_current(page, deployment, studies)

    # the panel: three studies, newest first, the current one and the priors marked, thumbnails painted
    panel = page.locator("#series-panel")
    sections = panel.locator("section.panel-study")
    assert sections.evaluate_all("els => els.map(e => e.dataset.study)") == [
        studies["studies"][key]["uid"] for key in ("current", "prior", "oldest")]
    assert "current" in sections.nth(0).locator("h3").inner_text()
    for n in (1, 2):
        assert "prior" in sections.nth(n).locator("h3").inner_text()
    assert "Jan 15, 2024" in sections.nth(1).inner_text() and "Lung window 1.0" in sections.nth(1).inner_text()
    for key in records:
        thumb = panel.locator(f".panel-series[data-record='{records[key]}'] img")
        thumb.scroll_into_view_if_needed()
        page.wait_for_function(PAINTED, arg=thumb.element_handle(), timeout=THUMBNAIL_WAIT_MS)

    # 1×2, then the prior's lung series dragged onto the second viewport
    viewport(page, 0).focus()
    page.keyboard.press("2")
    assert page.locator("#viewports").get_attribute("data-layout") == "1x2"
    panel.locator(f".panel-series[data-record='{records['prior-lung']}']").drag_to(viewport(page, 1))
    wait_record(page, 1, records["prior-lung"])
    assert "Lung window 1.0" in viewport(page, 1).locator(".overlay-series").inner_text()
    assert "Abdomen 3.0 soft tissue" in viewport(page, 0).locator(".overlay-series").inner_text()
    assert "Jan 15, 2024" in viewport(page, 1).locator(".corner.tl").inner_text()
    assert viewport(page, 1).get_attribute("class").count("active") == 1   # the drop target is active

    # Compare with prior (C): the 2024 study's matching series beside the current one, linked
    viewport(page, 0).click()
    page.keyboard.press("c")
    wait_record(page, 1, records["prior"])
    wait_record(page, 0, records["current"])
    assert page.locator("#sync-scroll").get_attribute("aria-pressed") == "true"
    # another frame of reference: not linked until aligned
    assert "not linked" in viewport(page, 1).locator(".overlay-link").inner_text()
    page.locator("#slice").fill("10")
    wait_record(page, 0, records["current"], 10)
    prior_index = viewport(page, 1).get_attribute("data-shown-index")
    assert prior_index == "15"   # its middle slice, left alone

    # align (A): the slices on screen are the same place; the offset is in the prior's overlay
    viewport(page, 1).click()
    page.locator("#slice").fill("5")
    wait_record(page, 1, records["prior"], 5)
    viewport(page, 0).click()
    page.keyboard.press("a")
    offset = location(page, 1) - location(page, 0)
    note = viewport(page, 1).locator(".overlay-link").inner_text()
    match = OFFSET.search(note)
    assert match, note
    assert (1 if match.group(1) == "+" else -1) * float(match.group(2)) == pytest.approx(offset, abs=0.06)

    # scrolling the current study moves the prior by the same millimetres
    before = {slot: location(page, slot) for slot in (0, 1)}
    viewport(page, 0).focus()
    for _ in range(4):
        page.keyboard.press("ArrowDown")
    wait_record(page, 0, records["current"], 14)
    wait_record(page, 1, records["prior"], 9)
    assert location(page, 0) - before[0] == pytest.approx(location(page, 1) - before[1], abs=0.06)
    assert location(page, 0) != before[0]
    page.locator("#status").evaluate("el => el.textContent = ''")
    shot(page, shots, "65-viewer-prior-comparison", full_page=False)

    # Shift+A clears the offset: the prior no longer follows
    page.keyboard.press("Shift+A")
    assert "not linked" in viewport(page, 1).locator(".overlay-link").inner_text()
    page.keyboard.press("ArrowDown")
    wait_record(page, 0, records["current"], 15)
    assert viewport(page, 1).get_attribute("data-shown-index") == "9"
    assert not page.js_errors


def test_a_series_clicked_goes_to_the_active_viewport(page, deployment, studies):
    """Touch and keyboard: select a viewport, then click a series."""
    records = {key: r["meta"]["id"] for key, r in studies["records"].items()}
    open_current(page, deployment, studies)
    viewport(page, 0).focus()
    page.keyboard.press("2")
    viewport(page, 1).click()
    page.locator(f"#series-panel .panel-series[data-record='{records['oldest']}']").click()
    wait_record(page, 1, records["oldest"])
    wait_record(page, 0, records["current"])
    assert "Mar 1, 2019" in viewport(page, 1).locator(".corner.tl").inner_text()


def test_phone_panel_is_a_drawer_and_a_tap_switches_the_viewport(browser, deployment, studies, shots):
    records = {key: r["meta"]["id"] for key, r in studies["records"].items()}
    phone = browser.new_context(viewport=PHONE, base_url=deployment.url("web"), is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        open_current(page, deployment, studies)
        assert page.locator("#viewports .viewport").count() == 1
        panel = page.locator("#series-panel")
        assert panel.is_hidden()
        page.locator("#series-toggle").tap()
        assert panel.is_visible()
        box = panel.bounding_box()
        assert box["x"] == 0 and box["width"] <= PHONE["width"]
        shot(page, shots, "66-phone-series-drawer", full_page=False)
        panel.locator(f".panel-series[data-record='{records['prior']}']").tap()
        panel.wait_for(state="hidden")
        wait_record(page, 0, records["prior"])
        assert "Jan 15, 2024" in viewport(page, 0).locator(".corner.tl").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        shot(page, shots, "67-phone-prior-shown", full_page=False)
        assert not errors
    finally:
        phone.close()


# The choice of the prior (priors.priorFor), as the browser runs it: the same modality is required;
# of the dated studies before the current one the most recent; in it the same stack axis first,
# then the description, then the lowest series number.
PRIOR_FOR = """async (cases) => {
  const { priorFor } = await import('/static/js/priors.js');
  const meta = (uid, date, modality, description, number, direction) => ({
    study_uid: uid, study_date: date, study_time: '', modality, series_description: description,
    series_number: number, stack_direction: direction });
  const current = meta('now', '20260610', 'CT', 'Abdomen 3.0 soft tissue', 2, 'S');
  const entries = cases.map(([key, ...m]) => ({ key, meta: meta(...m) }));
  const found = priorFor(current, entries);
  return found ? found.key : null;
}"""


def test_prior_choice_rule(page, deployment):
    login(page, deployment)
    same = ("now", "20260610", "CT", "Abdomen 3.0 soft tissue", 3, "S")
    cases = {
        # most recent earlier study wins over an older better match
        "recent": [["old", "old", "20190101", "CT", "Abdomen 3.0 soft tissue", 2, "S"],
                   ["recent", "p", "20240115", "CT", "Chest 1.0", 4, "S"]],
        # the same modality is required; a later or undated study is not a prior
        None: [["mr", "p", "20240115", "MR", "Abdomen 3.0 soft tissue", 2, "S"],
               ["later", "l", "20270101", "CT", "Abdomen 3.0 soft tissue", 2, "S"],
               ["undated", "u", "", "CT", "Abdomen 3.0 soft tissue", 2, "S"], ["same-study", *same]],
        # in the prior study: the same stack axis before a better description, then the description
        "axial": [["coronal", "p", "20240115", "CT", "Abdomen 3.0 soft tissue", 1, "P"],
                  ["axial", "p", "20240115", "CT", "Lung", 5, "I"]],
        "described": [["lung", "p", "20240115", "CT", "Lung 1.0", 1, "S"],
                      ["described", "p", "20240115", "CT", "Abdomen soft tissue 5.0", 6, "S"]],
        "first": [["second", "p", "20240115", "CT", "Abdomen", 7, "S"],
                  ["first", "p", "20240115", "CT", "Abdomen", 3, "S"]],
    }
    for expected, entries in cases.items():
        assert page.evaluate(PRIOR_FOR, entries) == expected, (expected, entries)
