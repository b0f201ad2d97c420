"""The viewer against servers that answer hostile or broken things (docs/operations.md, attacks 47-51).

The viewer talks straight to every institution server and render node of the federation; one that
is compromised, buggy or slow must not freeze, break or spoof the page. Each test serves one such
answer through Playwright's request interception (`page.route`) in place of the real server's and
checks what a person sees: a clear message naming the server, a page that still answers clicks,
no late drawing over another page, names clipped to a label's size (webviewer/static/js/limits.js).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.webviewer.helpers import (
    institution,
    login,
    new_patient,
    opened_record,
    registered_node,
    shot,
)

pytestmark = pytest.mark.browser

LABEL_CHARS = 160   # limits.js MAX_LABEL_CHARS
ERROR_CHARS = 500   # limits.js MAX_ERROR_CHARS
LIMITS_JS = Path(__file__).resolve().parents[2] / "webviewer" / "static" / "js" / "limits.js"


def request_timeout_ms() -> int:
    """The viewer's own request timeout, read from limits.js (its one definition)."""
    found = re.search(r"REQUEST_TIMEOUT_MS = ([\d_]+);", LIMITS_JS.read_text())
    assert found, f"no REQUEST_TIMEOUT_MS in {LIMITS_JS}"
    return int(found.group(1).replace("_", ""))


def hurry_request_timeouts(page, to_ms: int) -> None:
    """Let the viewer's request timeout fire after `to_ms` instead of its real 45 s, in the document
    on screen (the viewer's views are reached by hash, in the same document), from now on.

    Time is what changes, not the viewer: its requests still end through `AbortSignal.timeout`,
    asked for with REQUEST_TIMEOUT_MS, and everything after that runs as it would. Called after the
    login, so the login and its token exchanges keep their real time on a loaded machine."""
    page.evaluate(
        "(() => { const timeout = AbortSignal.timeout.bind(AbortSignal);"
        f" AbortSignal.timeout = (ms) => timeout(ms === {request_timeout_ms()} ? {to_ms} : ms); }})()")


def serve(route, deployment, body: str, status: int = 200, content_type: str = "application/json") -> None:
    """Answer `route` as its server would, cross-origin (the web viewer's origin may read it)."""
    route.fulfill(status=status, content_type=content_type, body=body,
                  headers={"Access-Control-Allow-Origin": deployment.url("web")})


def records_list_answers(page, deployment, handler) -> None:
    """Institution 1's list of a patient's records is answered by `handler(route)`."""
    page.route(f"{institution(deployment)['server_url']}/api/v1/records?*", handler)


def open_patient_page(page, deployment, patient: dict) -> None:
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    page.locator("#patient-name").wait_for()


def institution_message(page, deployment) -> str:
    """What the patient page says of institution 1 once its records did not come (its `.warn`)."""
    down = page.locator(f"article[data-institution='{institution(deployment)['id']}'] .warn")
    down.wait_for(timeout=30_000)
    return down.inner_text()


def still_responsive(page, patient: dict) -> None:
    """The page takes a click at once: "Edit patient" opens the patient's form."""
    page.get_by_role("link", name="Edit patient").click(timeout=10_000)
    page.get_by_role("heading", name="Edit").wait_for(timeout=10_000)
    assert page.url.endswith(f"#/patients/{patient['id']}/edit")


@pytest.fixture(scope="module")
def ct(deployment, ct_series, tmp_path_factory):
    return opened_record(deployment, ct_series, tmp_path_factory.mktemp("untrusted-ct"), 60,
                         "CT for the untrusted-answers tests")


def test_a_huge_error_message_is_shown_as_one_clipped_line(page, deployment, shots):
    """Attack 47: a 4 MiB message in an error body, line breaks in it, was shown whole (an earlier
    run saw the patient page freeze for more than 120 s); now it is one clipped line."""
    patient = new_patient(deployment)
    story = "The server says:\nline two\r\n" + "x" * (4 * 2**20)
    body = json.dumps({"error": {"code": "internal_error", "message": story}})
    records_list_answers(page, deployment, lambda route: serve(route, deployment, body, status=500))
    open_patient_page(page, deployment, patient)
    text = institution_message(page, deployment)
    assert "The server says: line two xxx" in text, text[:300]
    assert "\n" not in text and "…" in text
    assert len(text) < ERROR_CHARS + 200, len(text)
    badge = page.locator(f"article[data-institution='{institution(deployment)['id']}'] .badge-down")
    assert len(badge.get_attribute("title")) <= ERROR_CHARS + 100
    shot(page, shots, "95-huge-error-message")
    still_responsive(page, patient)


@pytest.mark.parametrize(("body", "content_type"), [
    ("<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
    ('{"items": ' + "[" * 100_000 + "]" * 100_000 + ', "total": 1}', "application/json"),
    ("null", "application/json"),
], ids=["html-page", "nested-deep", "null"])
def test_an_answer_that_is_no_list_is_named_as_such(page, deployment, body, content_type):
    """Attack 48: an HTML page, JSON nested 100,000 deep or `null` for a list was "Something went
    wrong in the viewer"; now the institution's block names the server and the endpoint."""
    patient = new_patient(deployment)
    records_list_answers(page, deployment, lambda route: serve(route, deployment, body, content_type=content_type))
    open_patient_page(page, deployment, patient)
    text = institution_message(page, deployment)
    host = urlsplit(institution(deployment)["server_url"]).netloc
    assert "Something went wrong" not in text, text
    assert host in text and "api/v1/records" in text and "tell IT" in text, text
    still_responsive(page, patient)


def test_an_answer_larger_than_the_limit_is_refused(page, deployment):
    """Attack 48 (size): a node's answer of 33 MiB for a record was read and parsed whole; now an
    answer beyond 32 MiB is refused with a message naming the node and the endpoint."""
    inst, node = institution(deployment), registered_node(deployment)
    record_id = "cd" * 32
    body = json.dumps({"id": record_id, "padding": "x" * (33 * 2**20)})
    page.route(f"{node['url']}/api/v1/records/{record_id}", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{record_id}")
    alert = page.locator("#alert")
    alert.get_by_text("larger than 32 MiB").wait_for(timeout=40_000)
    text = alert.inner_text()
    assert urlsplit(node["url"]).netloc in text and f"api/v1/records/{record_id}" in text, text
    page.get_by_role("link", name="Patients").first.click()
    page.get_by_role("heading", name="Patients").wait_for(timeout=10_000)


def test_a_list_claiming_a_billion_items_is_cut(page, deployment):
    """Attack 49: a list claiming `total` 10^9 was read page after page until the institution's
    timeout (624,500 items in 8 s); now at most 100 pages are read and the list is said to be cut."""
    patient = new_patient(deployment)
    served: list[str] = []
    # entries of the patient's records as the viewer checks each item (answers.js): only the count is hostile
    entry = {"patient_id": patient["id"], "node_id": str(uuid.UUID(int=1)), "rows": 512, "columns": 512, "frames": 1}
    page_body = json.dumps({"items": [{**entry, "id": f"{n:064x}"} for n in range(500)], "total": 10**9})

    def endless(route):
        served.append(route.request.url)
        serve(route, deployment, page_body)

    records_list_answers(page, deployment, endless)
    open_patient_page(page, deployment, patient)
    text = institution_message(page, deployment)
    assert "the list was cut after 50000 items" in text, text
    assert len(served) == 100, len(served)
    still_responsive(page, patient)


def test_a_node_that_never_answers_is_given_up_on(page, deployment):
    """Attack 50 (silence): a node holding the record's request for ever left the viewer loading
    for ever; now the request ends after 45 s with a message naming the node. The page's clock for
    that timeout runs fast (4 s), so the test does not wait the 45 s."""
    inst, node = institution(deployment), registered_node(deployment)
    record_id = "ab" * 32
    held = []
    record_url = f"{node['url']}/api/v1/records/{record_id}"
    page.route(lambda url: url.startswith(record_url), lambda route: held.append(route))
    login(page, deployment)
    hurry_request_timeouts(page, 4000)
    page.goto(f"/#/view/{inst['id']}/{node['id']}/{record_id}")
    alert = page.locator("#alert")
    alert.get_by_text("did not answer in time").wait_for(timeout=30_000)
    assert urlsplit(node["url"]).netloc in alert.inner_text()
    assert held, "the node's answer was held"
    page.get_by_role("link", name="Patients").first.click()
    page.get_by_role("heading", name="Patients").wait_for(timeout=10_000)


def test_a_late_answer_does_not_draw_over_the_page_the_user_moved_to(page, deployment, ct):
    """Attack 50 (late): a node answering after the user had moved on drew the viewer over the
    patient search; now a view draws only while its route is on screen, and loads nothing after."""
    node_url = ct["node"]["url"]
    record_url = f"{node_url}/api/v1/records/{ct['meta']['id']}"
    held = []
    page.route(lambda url: url == record_url, lambda route: held.append(route))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    login(page, deployment)
    page.goto(ct["href"])
    for _ in range(200):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the viewer asked the node for the record"
    page.goto("/#/patients")
    page.get_by_role("heading", name="Patients").wait_for()
    with page.expect_request(lambda request: request.url.startswith(f"{node_url}/api/v1/presets")):
        held[0].continue_()
    page.wait_for_timeout(3000)   # time enough for the old viewer to draw
    assert page.locator("#viewport").count() == 0
    assert page.get_by_role("heading", name="Patients").is_visible()
    assert page.locator("#alert").is_hidden()
    assert not [r for r in requests if r.startswith("POST") and r.endswith("/load")], "the left view loads nothing"


def test_names_and_descriptions_of_ten_thousand_letters_are_clipped(page, deployment, ct, shots):
    """Attack 51: a patient name and a series description of 10,000 letters pushed the identity
    lines and the image off screen and filled the delete confirmation; now labels are clipped."""
    patient = ct["patient"]
    doctor = deployment.client("physician")
    long_name = {**patient, "last_name": "L" * 10_000}
    page.route(f"{deployment.url('toplevel')}/api/v1/patients/{patient['id']}",
               lambda route: serve(route, deployment, json.dumps(long_name)))

    def long_description(route):
        body = doctor.call("GET", route.request.url).json()
        if isinstance(body.get("items"), list):
            body["items"] = [{**item, "description": "D" * 10_000} for item in body["items"]]
        else:
            body["series_description"] = "S" * 10_000
        serve(route, deployment, json.dumps(body))

    records_list_answers(page, deployment, long_description)
    page.route(f"{ct['node']['url']}/api/v1/records/{ct['meta']['id']}", long_description)

    open_patient_page(page, deployment, patient)
    assert len(page.locator("#patient-name").inner_text()) <= LABEL_CHARS
    assert page.locator("#patient-name").bounding_box()["height"] < 200
    card = page.locator(f"article[data-record='{ct['meta']['id']}']")
    assert len(card.locator(".record-description").inner_text()) <= LABEL_CHARS + 20
    card.get_by_role("button", name="Delete").click()
    confirmation = card.locator(".record-confirm p").first
    assert len(confirmation.inner_text()) < LABEL_CHARS + 300, len(confirmation.inner_text())
    assert confirmation.bounding_box()["height"] < 300
    shot(page, shots, "96-long-labels-patient-page")
    card.get_by_role("button", name="Cancel").click()

    page.goto(ct["href"])
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60_000)
    for line in ("#identity-sivr", "#identity-dicom", "#overlay-sivr"):   # (each viewport has its overlay)
        assert len(page.locator(line).first.inner_text()) <= LABEL_CHARS + 80, line
    assert page.locator("#overlay-sivr").first.bounding_box()["height"] < 3 * 16, "two lines at most over the image"
    view = page.locator("#viewport").bounding_box()
    assert view["y"] < 500 and view["height"] > 200, view
    shot(page, shots, "97-long-labels-viewer", full_page=False)
