"""The viewer at the edges of daily use, in Chromium against the real daemons: what a radiologist's
hand, a link a colleague edits, or a second tab does to it.

- A window dragged wider drag after drag (each drag widens by a share of the width it starts from)
  stays one the node renders: it once passed the node's bound in eight drags, and from then on
  every image of the viewport was refused with the node's 400.
- A link's `?slice=` that is no whole index opens on the nearest slice, not on `frames/1.5` (a 404
  in place of the image).
- A key held down acts once, except the keys whose repeat is meant (slices, zoom): the keyboard's
  repeat of a held S exported a PNG file 15 times in half a second.
- Logging out in one tab ends the session of the user's other tabs of the browser (each tab keeps
  its own session): they stayed logged in, patients on screen, renewed in the background.
- A series deleted while the viewer loads it says so and is no longer asked for: the bar said
  "Loading slices: 52 of 100" for good, and the node was asked for its status every second.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from daemons.render.api.query import MAX_VALUE
from tests.webviewer.helpers import (
    derived_series,
    login,
    new_patient,
    opened_record,
    uploaded_record,
    users_of_second_institution,
)
from tests.webviewer.test_browser_viewer import shown, wait_shown

pytestmark = pytest.mark.browser

LIMITS_JS = Path(__file__).resolve().parents[2] / "webviewer" / "static" / "js" / "limits.js"


def open_record(page, deployment, record: dict, suffix: str = "") -> dict:
    login(page, deployment)
    page.goto(record["href"] + suffix)
    return wait_shown(page, "d.shownKey && d.loadState === 'ready'")


def test_the_viewer_bounds_a_window_as_the_node_does():
    found = re.search(r"^export const MAX_WINDOW_VALUE = ([0-9e.]+);$", LIMITS_JS.read_text(encoding="utf-8"),
                      re.MULTILINE)
    assert found, "webviewer/static/js/limits.js no longer defines MAX_WINDOW_VALUE as one number"
    assert float(found.group(1)) == MAX_VALUE


def test_a_window_dragged_wider_and_wider_stays_one_the_node_renders(page, deployment, ct_series, tmp_path):
    record = opened_record(deployment, ct_series, tmp_path, first=64, description="CT window drags")
    open_record(page, deployment, record)
    box = page.locator("#viewport").bounding_box()
    refused = []
    page.on("response", lambda r: refused.append(r.status) if "/frames/" in r.url and r.status >= 400 else None)
    for _ in range(12):
        before = shown(page)["count"]
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + 1305, box["y"] + 705, steps=3)
        page.mouse.up()
        after = wait_shown(page, "Number(d.shownCount) > arg && !d.shownKey.includes('quality=60')", before)
    center, width = (float(v) for v in after["query"]["window"].split(","))
    assert abs(center) < MAX_VALUE and 1 <= width < MAX_VALUE
    assert width == MAX_VALUE - 1, "twelve drags of 1,300 pixels reach the widest window the node renders"
    assert refused == [], f"the node refused images of the dragged window: {refused}"
    assert page.locator("#view-message").is_hidden()
    # a drag back from there narrows it at once, and the next slice is shown with it
    page.mouse.move(box["x"] + box["width"] - 5, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + 5, box["y"] + 5, steps=3)
    page.mouse.up()
    # the key is a URL (its comma written %2C): decoded, or a busy machine's wide image passed for narrowed
    narrowed = wait_shown(page, "!d.shownKey.includes('quality=60') "
                                "&& !decodeURIComponent(d.shownKey).includes(',999999999')")
    page.locator("#viewport").press("ArrowDown")
    moved = wait_shown(page, "Number(d.shownIndex) === arg + 1 && !d.shownKey.includes('quality=60')",
                       narrowed["index"])
    assert moved["query"]["window"] == narrowed["query"]["window"]
    assert refused == []


def test_a_link_to_a_slice_that_is_no_whole_index_opens_on_the_nearest_slice(page, deployment, ct_series, tmp_path):
    record = opened_record(deployment, ct_series, tmp_path, first=68, description="CT fractional slice")
    now = open_record(page, deployment, record, "&slice=1.6")
    assert now["index"] == 2 and now["path"].endswith("/frames/2")
    assert page.locator("#slice-out").inner_text().startswith("3 / 4")
    assert page.locator("#view-message").is_hidden()


def held(page, key: str, code: str, key_code: int, repeats: int) -> None:
    """`key` pressed and held: one keydown, then `repeats` keydowns the keyboard repeats, then keyup
    (CDP Input.dispatchKeyEvent: Playwright's own keyboard never repeats)."""
    cdp = page.context.new_cdp_session(page)
    event = {"key": key, "code": code, "windowsVirtualKeyCode": key_code}
    typed = {"text": key} if len(key) == 1 else {}
    for n in range(repeats + 1):
        cdp.send("Input.dispatchKeyEvent", {**event, **typed, "type": "keyDown", "autoRepeat": n > 0})
        page.wait_for_timeout(30)
    cdp.send("Input.dispatchKeyEvent", {**event, "type": "keyUp"})


def test_a_held_key_acts_once_unless_repeating_it_is_meant(page, deployment, ct_series, tmp_path):
    record = opened_record(deployment, ct_series, tmp_path, first=72, description="CT held keys")
    first = open_record(page, deployment, record)
    exports = []
    page.on("request", lambda r: exports.append(r.url) if "format=png" in r.url and "/frames/" in r.url else None)
    downloads = []
    page.on("download", lambda d: downloads.append(d.suggested_filename))
    page.locator("#viewport").focus()
    held(page, "s", "KeyS", 83, repeats=14)
    page.wait_for_timeout(2500)
    assert len(exports) == 1 and len(downloads) == 1, f"a held S exported {len(exports)} times"
    held(page, "t", "KeyT", 84, repeats=9)   # ten keydowns: toggled ten times it would end closed
    page.locator("#tag-browser").wait_for(state="visible")
    page.locator("#viewport").focus()
    # the slices are stepped through as the key repeats
    assert first["index"] == 0
    held(page, "ArrowDown", "ArrowDown", 40, repeats=2)
    wait_shown(page, "Number(d.shownIndex) === 3")


def test_logging_out_ends_the_users_other_tabs_and_only_theirs(page, deployment, ct_series, tmp_path):
    record = opened_record(deployment, ct_series, tmp_path, first=76, description="CT two tabs")
    login(page, deployment)
    other_tab = page.context.new_page()
    login(other_tab, deployment)
    other_tab.goto(f"/#/patients/{record['patient']['id']}")
    other_tab.get_by_role("link", name="Write finding").wait_for()
    token = other_tab.evaluate("JSON.parse(sessionStorage.getItem('sivr.session')).token")
    colleague = page.context.new_page()   # another user in the same browser keeps their session
    second = users_of_second_institution(deployment)["physician"]
    colleague.goto("/")
    colleague.get_by_label("Username").fill(second["username"])
    colleague.get_by_label("Password").fill(second["password"])
    colleague.get_by_role("button", name="Log in").click()
    colleague.get_by_role("heading", name="Patients").wait_for()

    page.bring_to_front()
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for()

    other_tab.locator("#login-notice").wait_for()
    assert "logged out in another tab" in other_tab.locator("#login-notice").inner_text()
    assert other_tab.get_by_role("link", name="Write finding").count() == 0
    assert other_tab.evaluate("sessionStorage.getItem('sivr.session')") is None
    with requests.Session() as http:
        http.trust_env = False
        answer = http.get(f"{deployment.url('toplevel')}/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                          verify=deployment.ca_cert, timeout=30)
    assert answer.status_code == 401, "the other tab's session ended at the toplevel too"
    colleague.reload()
    colleague.get_by_role("heading", name="Patients").wait_for()
    assert colleague.evaluate("sessionStorage.getItem('sivr.session')") is not None


def test_a_series_deleted_while_it_loads_says_so_and_is_not_asked_for_again(page, deployment, ct_series, tmp_path):
    patient = new_patient(deployment)
    record = uploaded_record(deployment, patient, derived_series(ct_series, tmp_path, first=20, count=24), "CT deleted")
    inst, node, meta = record["institution"], record["node"], record["meta"]
    doctor = deployment.client("physician")
    polls = []

    def delete_then_answer(route):
        """The colleague's DELETE lands while the viewer loads the series: before its first status
        question reaches the node, which then answers it as it answers for a deleted series."""
        if not polls:
            doctor.call("DELETE", f"{node['url']}/api/v1/records/{meta['id']}")
        polls.append(route.request.url)
        route.continue_()

    page.route(re.compile(r".*/api/v1/records/[0-9a-f]{64}/status$"), delete_then_answer)
    login(page, deployment)
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={patient['id']}")
    text = page.locator("#load-text")
    page.wait_for_function("el => el.textContent.startsWith('Loading failed')", arg=text.element_handle(), polling=50)
    assert "no longer stored on" in text.inner_text() and "deleted while it was open" in text.inner_text()
    asked = len(polls)
    page.wait_for_timeout(3000)
    assert len(polls) == asked == 1, f"the node was asked {len(polls)} times for a deleted series' status"
