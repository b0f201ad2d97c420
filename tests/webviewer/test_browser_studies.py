"""The patient page's study list in Chromium against the real daemons (issue 15 study browser, issue 11).

A patient with three studies: two synthetic CT studies on different dates (one of two series),
made of slices of the bundled real CT with new UIDs (derived), and the demo CT itself (a new
series UID, its own 1960 study date); plus a record registered at the institution that no node
holds, which must still show, under "Study unknown". Checked: grouping by study, newest study
first (priors marked), series ordered by number, thumbnails painted from the node, a click that
opens the viewer, and one column of cards on a phone.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.webviewer.browser import PHONE
from tests.webviewer.helpers import (
    derived_series,
    login,
    new_patient,
    register_placeholder_records,
    shot,
    uploaded_record,
)
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser


def in_study(files: list[Path], study: dict, number: int, description: str) -> list[Path]:
    """Put the files in `study` (uid, date, description) as series `number` (in place)."""
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyDescription = study["uid"], study["date"], study["description"]
        ds.SeriesNumber, ds.SeriesDescription = number, description
        ds.save_as(path, enforce_file_format=True)
    return files


# Whether an <img> shows an image: drawn on a canvas, its pixels are not one flat colour.
PAINTED = """img => {
  if (!img.complete || !img.naturalWidth) return false;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let lo = 255, hi = 0;
  for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
  return hi - lo > 40;
}"""
# The page asks a node still loading a series for its thumbnail again for up to 60 s (studies.js
# THUMBNAIL_PATIENCE_MS): a loaded CI machine can take that long, so the test waits a little more.
THUMBNAIL_WAIT_MS = 65000


@pytest.fixture(scope="module")
def three_studies(deployment, ct_series, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("studies")
    patient = new_patient(deployment)
    recent = {"uid": generate_uid(), "date": "20260610", "description": "CT THORAX follow-up"}
    older = {"uid": generate_uid(), "date": "20230115", "description": "CT THORAX baseline"}
    plan = {  # key: (first slice, study, series number, series description, registered description)
        "recent-lung": (40, recent, 3, "Lung 1.0", "Recent lung"),
        "recent-soft": (45, recent, 2, "Soft tissue 3.0", "Recent soft tissue"),
        "older": (50, older, 2, "Soft tissue 3.0", "Baseline"),
    }
    records = {key: uploaded_record(deployment, patient, in_study(
        derived_series(ct_series, tmp / key, first=first, count=3), study, number, series), label, keep_study=True)
        for key, (first, study, number, series, label) in plan.items()}
    records["demo"] = uploaded_record(deployment, patient, derived_series(ct_series, tmp / "demo", first=0, count=4),
                                      "Demo CT")
    [unknown] = register_placeholder_records(deployment, patient, ["Registered, not on any node"])
    return {"patient": patient, "records": records, "recent": recent, "older": older, "unknown": unknown}


def open_patient_page(page, deployment, patient: dict):
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    studies = page.locator(".studies[data-complete='true']")
    studies.wait_for()
    return studies


def test_series_are_grouped_by_study_newest_first_with_painted_thumbnails(page, deployment, three_studies, shots):
    studies = open_patient_page(page, deployment, three_studies["patient"])
    records = three_studies["records"]
    order = studies.locator("section.study").evaluate_all("els => els.map(e => e.dataset.study)")
    assert order[:2] == [three_studies["recent"]["uid"], three_studies["older"]["uid"]]
    assert order[3] == "unknown" and len(order) == 4
    demo = studies.locator("section.study").nth(2).locator(".study-head").inner_text()
    assert "Mar 29, 1960 · CT CAP" in demo  # the demo CT's own study

    recent = studies.locator(f"section[data-study='{three_studies['recent']['uid']}']")
    head = recent.locator(".study-head").inner_text()
    assert "Jun 10, 2026" in head and "CT THORAX follow-up" in head and "CT · 2 series" in head
    cards = recent.locator("article[data-record]")
    # by series number: 2 (soft tissue) before 3 (lung)
    assert cards.evaluate_all("els => els.map(e => e.dataset.record)") == [
        records["recent-soft"]["meta"]["id"], records["recent-lung"]["meta"]["id"]]
    facts = cards.first.locator(".series-facts").inner_text()
    assert "Series 2" in facts and "Soft tissue 3.0" in facts and "3 instances" in facts
    assert f"on {records['recent-soft']['node']['name']}" in facts
    assert "study-prior" not in (recent.get_attribute("class") or "")
    older = studies.locator(f"section[data-study='{three_studies['older']['uid']}']")
    assert "study-prior" in (older.get_attribute("class") or "")

    unknown = studies.locator("section[data-study='unknown']")
    assert "Study unknown" in unknown.inner_text() and "Registered, not on any node" in unknown.inner_text()
    assert "details unavailable" in unknown.inner_text()

    for key in records:
        thumb = studies.locator(f"article[data-record='{records[key]['meta']['id']}'] img.series-thumb")
        thumb.scroll_into_view_if_needed()
        page.wait_for_function(PAINTED, arg=thumb.element_handle(), timeout=THUMBNAIL_WAIT_MS)
    shot(page, shots, "60-patient-studies")


def test_thumbnails_come_from_the_browser_cache_on_the_second_visit(page, deployment, three_studies):
    """The node's ETag and Cache-Control are honoured: a second visit asks the node at most to revalidate."""
    open_patient_page(page, deployment, three_studies["patient"])
    first = three_studies["records"]["recent-soft"]["meta"]["id"]
    page.wait_for_function(PAINTED, arg=page.locator(f"article[data-record='{first}'] img").element_handle(),
                           timeout=THUMBNAIL_WAIT_MS)
    answers = []
    page.on("response", lambda r: answers.append(r) if "/thumbnail" in r.url else None)
    page.goto("/#/patients")
    page.goto(f"/#/patients/{three_studies['patient']['id']}")
    page.wait_for_function(PAINTED, arg=page.locator(f"article[data-record='{first}'] img").element_handle(),
                           timeout=THUMBNAIL_WAIT_MS)
    assert answers and all(a.from_service_worker or a.status in (200, 304) for a in answers)
    headers = answers[0].all_headers()
    assert "max-age" in headers.get("cache-control", "") and headers.get("etag")


def test_a_card_opens_its_series_in_the_viewer(page, deployment, three_studies):
    studies = open_patient_page(page, deployment, three_studies["patient"])
    record = three_studies["records"]["older"]
    card = studies.locator(f"article[data-record='{record['meta']['id']}']")
    card.get_by_role("link", name=re.compile("^Open CT · Baseline")).click()
    page.locator("#viewport").wait_for()
    wait_shown(page, "d.shownPlane === 'native'")
    assert f"/{record['meta']['id']}?patient={three_studies['patient']['id']}" in page.url


def test_phone_shows_the_cards_in_one_column(browser, deployment, three_studies, shots):
    phone = browser.new_context(viewport=PHONE, base_url=deployment.url("web"), is_mobile=True, has_touch=True)
    try:
        small = phone.new_page()
        studies = open_patient_page(small, deployment, three_studies["patient"])
        recent = studies.locator(f"section[data-study='{three_studies['recent']['uid']}'] article[data-record]")
        boxes = [recent.nth(i).bounding_box() for i in range(2)]
        assert boxes[0]["x"] == boxes[1]["x"] and boxes[1]["y"] > boxes[0]["y"] + boxes[0]["height"] - 1
        assert small.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        for key in three_studies["records"]:  # every thumbnail seen once, for the screenshot
            thumb = studies.locator(f"article[data-record='{three_studies['records'][key]['meta']['id']}'] img")
            thumb.scroll_into_view_if_needed()
            small.wait_for_function(PAINTED, arg=thumb.element_handle(), timeout=THUMBNAIL_WAIT_MS)
        shot(small, shots, "61-phone-patient-studies")
    finally:
        phone.close()


def test_nodes_are_asked_a_few_at_a_time_and_thumbnails_only_when_seen(browser, deployment, three_studies):
    """Fast with many series: at most NODE_REQUESTS (6) node requests at once, whatever the count
    of series, and no thumbnail fetched for a card nobody has scrolled to."""
    patient = new_patient(deployment)
    many = register_placeholder_records(deployment, patient, [f"Series {n}" for n in range(20)])
    context = browser.new_context(viewport={"width": 1366, "height": 700}, base_url=deployment.url("web"))
    try:
        page = context.new_page()
        held, holding = [], [True]

        def hold(route):
            if holding[0]:
                held.append(route)
            else:
                route.continue_()

        node_url = three_studies["records"]["demo"]["node"]["url"]
        page.route(lambda url: url.startswith(f"{node_url}/api/v1/records/"), hold)
        login(page, deployment)
        page.goto(f"/#/patients/{patient['id']}")
        while len(held) < 6:
            page.wait_for_timeout(50)
        page.wait_for_timeout(700)
        assert len(held) == 6  # the other 14 wait for these
        holding[0] = False
        for route in held:
            route.continue_()
        page.locator(".studies[data-complete='true']").wait_for()
        page.unroute_all()
        assert page.locator("article[data-record]").count() == len(many)

        # the patient of the four studies in a low window: the demo CT's card, fourth, is below it
        page.set_viewport_size({"width": 1366, "height": 450})
        asked = []
        page.on("request", lambda r: asked.append(r.url) if urlsplit(r.url).path.endswith("/thumbnail") else None)
        page.goto(f"/#/patients/{three_studies['patient']['id']}")
        demo = three_studies["records"]["demo"]["meta"]
        # this patient's list, not the previous page's one still in the document for a moment
        studies = page.locator(".studies[data-complete='true']").filter(
            has=page.locator(f"article[data-record='{demo['id']}']"))
        studies.wait_for()
        first = studies.locator("article[data-record] img").first
        page.wait_for_function(PAINTED, arg=first.element_handle(), timeout=THUMBNAIL_WAIT_MS)
        assert not any(f"/series/{demo['series_uid']}/" in url for url in asked)
        demo_thumb = studies.locator(f"article[data-record='{demo['id']}'] img")
        demo_thumb.scroll_into_view_if_needed()
        page.wait_for_function(PAINTED, arg=demo_thumb.element_handle(), timeout=THUMBNAIL_WAIT_MS)
        assert any(f"/series/{demo['series_uid']}/" in url for url in asked)
    finally:
        context.close()
