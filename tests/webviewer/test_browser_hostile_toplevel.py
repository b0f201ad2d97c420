"""The viewer against a toplevel, and institution servers and render nodes, that answer the
session, the patients, the work list, the value probe and the upload's registration with another
shape (docs/operations.md, the attacks after 91): a login or a renewal whose token is no text or
whose lifetime is text, a token exchanged for a server that lives an hour, a patient `null` or
another patient, a list of patients whose ids are paths, a patient reference that is a number, a
work list item whose study is `null`, a value of another pixel, another record's registration.

As in test_browser_hostile_objects.py, each test serves a hostile variant of the server's real
answer through Playwright's request interception (`page.route`) and checks what a person sees: a
message naming the server, the endpoint and what is wrong, nothing done from the answer (no
session kept, no renewal loop, nothing registered), a page that still answers clicks, and no
uncaught error in the page (the `page` fixture fails a test on any).
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from daemons.demo import mark_filed
from tests.webviewer.helpers import (
    as_patient,
    derived_series,
    institution,
    login,
    new_patient,
    opened_record,
    registered_node,
)
from tests.webviewer.hostile_answers import INFINITE, attach_refused, serve, set_in, still_usable

pytestmark = pytest.mark.browser

OTHER_ID = str(uuid.UUID(int=1))


def host(url: str) -> str:
    return urlsplit(url).netloc


def real_answer(deployment, route):
    """The server's own answer to the browser's request, asked again from here (Playwright's own
    requests, `route.fetch`, do not trust the deployment's CA)."""
    request = route.request
    headers = {key: value for key, value in request.headers.items() if key in ("authorization", "content-type")}
    reply = requests.request(request.method, request.url, data=request.post_data_buffer, headers=headers,
                             verify=deployment.ca_cert, timeout=30)
    reply.raise_for_status()
    return reply.json()


def changed_answer(deployment, change):
    """A route handler answering the server's real answer as `change` makes it."""
    return lambda route: serve(route, deployment, change(real_answer(deployment, route)))


def without(key: str):
    return lambda body: {k: v for k, v in body.items() if k != key}


def log_in_by_hand(page, deployment) -> None:
    user = deployment.users["physician"]
    page.goto("/")
    page.get_by_label("Username").fill(user["username"])
    page.get_by_label("Password").fill(user["password"])
    page.get_by_role("button", name="Log in").click()


def requests_to(page, ending: str) -> list[str]:
    """The URLs the page asks for that end with `ending`, as it asks for them."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if request.url.endswith(ending) else None)
    return asked


def stored_session(page):
    return page.evaluate("() => sessionStorage.getItem('sivr.session')")


# each: how the toplevel's answer to a login is changed, and the field the message must name
LOGIN_ATTACKS = {
    "token-number": (set_in("access_token", 5), "access_token is no text"),
    "token-empty": (set_in("access_token", ""), "access_token is empty"),
    "user-null": (set_in("user", None), "user is no object"),
    "expires-text": (set_in("expires_in", "soon"), "expires_in is no count"),
    "expires-missing": (without("expires_in"), "expires_in is no count"),
}


@pytest.mark.parametrize("attack", list(LOGIN_ATTACKS), ids=list(LOGIN_ATTACKS))
def test_a_login_answer_of_another_shape_leaves_the_viewer_logged_out(page, deployment, attack):
    """Attack 100: a login answered with a token that was a number was kept and sent as
    `Bearer 5`, which no server accepts; one whose user was `null` left the viewer half logged in
    ("Something went wrong in the viewer" over a kept session), a lifetime that was text or missing
    renewed the session at once (a timer of NaN ms). Now nobody is logged in, nothing is kept or
    renewed, and the login form says what the toplevel sent."""
    change, problem = LOGIN_ATTACKS[attack]
    top = deployment.url("toplevel")
    renewals = requests_to(page, "/api/v1/auth/renew")
    page.route(f"{top}/api/v1/auth/login", changed_answer(deployment, change))
    log_in_by_hand(page, deployment)
    error = page.locator("#login-error")
    error.get_by_text("tell IT").wait_for(timeout=20_000)
    text = error.inner_text()
    assert host(top) in text and "api/v1/auth/login" in text and problem in text, text
    page.wait_for_timeout(1500)
    assert renewals == [], "nothing is renewed"
    assert stored_session(page) is None and page.locator("#nav").is_hidden()
    page.unroute_all()
    login(page, deployment)   # the real answer logs in
    still_usable(page)


# each: how the toplevel's answer to a renewal is changed, and the field the message must name
RENEW_ATTACKS = {
    "expires-text": (set_in("expires_in", "soon"), "expires_in is no count"),
    "expires-zero": (set_in("expires_in", 0), "expires_in is 0"),
    "token-missing": (without("access_token"), "access_token is no text"),
    "another-user": (lambda body: {**body, "user": {**body["user"], "id": OTHER_ID, "username": "intruder"}},
                     "user names another user than the one logged in"),
}


@pytest.mark.parametrize("attack", list(RENEW_ATTACKS), ids=list(RENEW_ATTACKS))
def test_a_renewal_of_another_shape_ends_the_session_saying_why(page, deployment, attack):
    """Attack 101: a renewal answered with a lifetime that was text renewed again as soon as it
    was answered, for ever; a lifetime of 0, every second; one without a token left the viewer on
    screen with no session behind it; one naming another user went on with that user's id. Now
    the renewal is refused: retried while the token lives (here it lives 2 s, so not at all), then
    the session ends and the login screen says what the toplevel sent."""
    change, problem = RENEW_ATTACKS[attack]
    top = deployment.url("toplevel")
    renewals = requests_to(page, "/api/v1/auth/renew")
    page.route(f"{top}/api/v1/auth/login", changed_answer(deployment, set_in("expires_in", 2)))
    page.route(f"{top}/api/v1/auth/renew", changed_answer(deployment, change))
    login(page, deployment)
    notice = page.locator("#login-notice")
    notice.get_by_text("tell IT").wait_for(timeout=20_000)
    text = notice.inner_text()
    assert text.startswith("Your login could not be renewed"), text
    assert host(top) in text and "api/v1/auth/renew" in text and problem in text, text
    page.wait_for_timeout(2000)
    assert len(renewals) == 1, f"renewed {len(renewals)} times"
    assert stored_session(page) is None and page.locator("#nav").is_hidden()


def test_a_lifetime_beyond_the_browsers_timer_renews_no_sooner(page, deployment):
    """Attack 102: a session token said to live 10^10 s (the toplevel bounds it below only) was
    renewed at once: a browser's timer fires at once for a delay beyond 2^31 - 1 ms, and a renewal
    answering the same looped. Now the renewal waits for the longest timer (24.8 days)."""
    top = deployment.url("toplevel")
    renewals = requests_to(page, "/api/v1/auth/renew")
    long_lived = set_in("expires_in", 10**10)
    page.route(f"{top}/api/v1/auth/login", changed_answer(deployment, long_lived))
    page.route(f"{top}/api/v1/auth/renew", changed_answer(deployment, long_lived))
    login(page, deployment)
    page.wait_for_timeout(2000)
    assert renewals == [], f"renewed {len(renewals)} times"
    assert page.locator("#nav").is_visible()
    still_usable(page)


# each: how the toplevel's answer to a token exchange is changed, and the field the message must name
EXCHANGE_ATTACKS = {
    "token-null": (set_in("access_token", None), "access_token is no text"),
    "expires-text": (set_in("expires_in", "soon"), "expires_in is no count"),
    "expires-an-hour": (set_in("expires_in", 3600), "expires_in is more than 60"),
    # a token minted for another server: the institution would be sent a token it can replay there
    "audience-of-another-server": (set_in("audience", "https://trap.example:8443"), "audience names another server"),
    "audience-missing": (set_in("audience", None), "audience is no text"),
}


@pytest.mark.parametrize("attack", list(EXCHANGE_ATTACKS), ids=list(EXCHANGE_ATTACKS))
def test_a_server_token_of_another_shape_is_refused_naming_the_toplevel(page, deployment, attack):
    """Attack 103: a token exchanged for the institution that was `null` was sent as none, and the
    institution's 401 was reported as the institution refusing its token ("ask an administrator to
    check its token settings"); a lifetime that was text had a token exchanged again for every
    request; one of an hour was used as long, beyond the toplevel's own bound of 60 s. Now the
    exchange fails saying what the toplevel sent, and nothing is asked of the institution."""
    change, problem = EXCHANGE_ATTACKS[attack]
    top = deployment.url("toplevel")
    page.route(f"{top}/api/v1/auth/token", changed_answer(deployment, change))
    login(page, deployment)
    page.goto("/#/worklist")
    alert = page.locator("#alert")
    alert.get_by_text("tell IT").wait_for(timeout=20_000)
    text = alert.inner_text()
    assert host(top) in text and "api/v1/auth/token" in text and problem in text, text
    assert page.locator("#worklist").count() == 0, "no work list is drawn"
    still_usable(page)


@pytest.fixture(scope="module")
def patient(deployment):
    """A patient whose name has no digit: the search asks for it by name alone (one request)."""
    letters = "".join(chr(ord("a") + int(digit, 16)) for digit in uuid.uuid4().hex[:8])
    return new_patient(deployment, last_name=f"Hostile{letters}")


# each: how a page of the patients found is changed, and the field the message must name
PATIENT_LIST_ATTACKS = {
    "id-path": (set_in("items.0.id", "../../admin"), "items[0].id is no id"),
    "birth-date-number": (set_in("items.0.birth_date", 19700305), "items[0].birth_date is no date"),
    "last-name-null": (set_in("items.0.last_name", None), "items[0].last_name is no text"),
}


@pytest.mark.parametrize("attack", list(PATIENT_LIST_ATTACKS), ids=list(PATIENT_LIST_ATTACKS))
def test_a_list_of_patients_of_another_shape_is_refused_naming_the_toplevel(page, deployment, patient, attack):
    """Attack 104: the patients found were shown as the toplevel listed them: an id `../../admin`
    as a link to `#/patients/../../admin`, a birth date that was the number 19700305 as 1 Jan 1970,
    a last name `null` as "null, Ana". Now no patient is shown, and the search says what the
    toplevel sent."""
    change, problem = PATIENT_LIST_ATTACKS[attack]
    top = deployment.url("toplevel")
    page.route(lambda url: url.startswith(f"{top}/api/v1/patients?"), changed_answer(deployment, change))
    login(page, deployment)
    page.goto(f"/#/patients?q={patient['last_name']}")
    error = page.locator(".results .form-error")
    error.get_by_text("tell IT").wait_for(timeout=20_000)
    text = error.inner_text()
    assert host(top) in text and "api/v1/patients" in text and problem in text, text
    assert page.locator("#patient-results").count() == 0, "no patient is shown"
    still_usable(page)


# each: the toplevel's answer about the patient, and the field the message must name
PATIENT_ATTACKS = {
    "null": (lambda found: None, "the patient is no object"),
    "another-patient": (set_in("id", OTHER_ID), "id names another patient than the one asked for"),
    "insurance-number-number": (set_in("insurance_number", 1234567890), "the patient.insurance_number is no text"),
}
PATIENT_VIEWS = {"edit": "edit", "upload": "upload"}


@pytest.mark.parametrize("view", list(PATIENT_VIEWS))
@pytest.mark.parametrize("attack", list(PATIENT_ATTACKS), ids=list(PATIENT_ATTACKS))
def test_a_patient_of_another_shape_is_refused_naming_the_toplevel(page, deployment, patient, attack, view):
    """Attack 105: a patient answered as `null` opened the edit form as "New patient" (saving it
    created another patient) and threw on the upload page; another patient's answer was edited, or
    uploaded for, in this one's place. Now neither form is drawn, and the viewer says what the
    toplevel sent."""
    change, problem = PATIENT_ATTACKS[attack]
    top = deployment.url("toplevel")
    path = f"api/v1/patients/{patient['id']}"
    page.route(f"{top}/{path}", changed_answer(deployment, change))
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}/{PATIENT_VIEWS[view]}")
    alert = page.locator("#alert")
    alert.get_by_text("tell IT").wait_for(timeout=20_000)
    text = alert.inner_text()
    assert host(top) in text and path in text and problem in text, text
    form_heading = page.get_by_role("heading", name=re.compile("^(New patient|Edit|Upload DICOM)"))
    assert form_heading.count() == 0, "no form is drawn"
    still_usable(page)


# each: whether the form edits a patient or creates one, how the toplevel's answer to saving it is
# changed, and the field the message must name
SAVED_ATTACKS = {
    "edit-null": ("edit", lambda saved: None, "the patient is no object"),
    "edit-another-patient": ("edit", set_in("id", OTHER_ID), "id names another patient than the one asked for"),
    "new-null": ("new", lambda saved: None, "the patient is no object"),
    "new-id-path": ("new", set_in("id", "../admin"), "the patient.id is no id"),
}


@pytest.mark.parametrize("attack", list(SAVED_ATTACKS), ids=list(SAVED_ATTACKS))
def test_a_saved_patient_of_another_shape_is_not_followed(page, deployment, patient, attack):
    """Attack 111: the toplevel's answer to saving a patient (`PUT api/v1/patients/<id>`, `POST
    api/v1/patients`) was used unchecked to go to the patient's page: `null` ended as "Something
    went wrong in the viewer", another patient's answer led to that patient, an id that was a path
    to another page. Now the form stays and says what the toplevel sent."""
    form, change, problem = SAVED_ATTACKS[attack]
    top = deployment.url("toplevel")
    if form == "edit":
        path, method = f"api/v1/patients/{patient['id']}", "PUT"
        start, button = f"/#/patients/{patient['id']}/edit", "Save changes"
    else:
        path, method, start, button = "api/v1/patients", "POST", "/#/patients/new", "Create patient"
    answer = changed_answer(deployment, change)
    page.route(f"{top}/{path}", lambda route: answer(route) if route.request.method == method else route.continue_())
    login(page, deployment)
    page.goto(start)
    if form == "new":
        page.get_by_label("First name").fill("Mira")
        page.get_by_label("Last name").fill(f"Saved-{uuid.uuid4().hex[:6]}")
        page.get_by_label("Date of birth").fill("1981-02-03")
        page.get_by_label("Insurance number").fill(f"{uuid.uuid4().int % 10**10:010d}")
    page.get_by_role("button", name=button).click()
    error = page.locator("form .form-error")
    error.get_by_text("tell IT").wait_for(timeout=20_000)
    text = error.inner_text()
    assert host(top) in text and path in text and problem in text, text
    assert page.evaluate("location.hash") == start.removeprefix("/"), "the viewer stayed on the form"
    still_usable(page)


@pytest.fixture(scope="module")
def waiting(deployment):
    """A series on render node 1-1 waiting on the work list, and the patient its rule proposes."""
    from tests.webviewer.test_browser_worklist import c_store_series

    patient = new_patient(deployment)
    name = f"{patient['last_name']}^{patient['first_name']}".upper()
    record_id = c_store_series(deployment, patient["insurance_number"], name, patient["birth_date"].replace("-", ""),
                               "Worklist series for the hostile-toplevel tests")
    node = registered_node(deployment)
    doctor = deployment.client("physician")
    items = doctor.call("GET", f"{node['url']}/api/v1/worklist", params={"limit": 500}).json()["items"]
    return {"patient": patient, "record_id": record_id, "node": node,
            "item": next(item for item in items if item["id"] == record_id),
            "server": institution(deployment)["server_url"].rstrip("/")}


# each: the toplevel's answer to `POST …/reference`, and the field the message must name
REFERENCE_ATTACKS = {
    "null": (None, "the answer is no object"),
    "reference-number": ({"patient_reference": 5, "expires_in": 600}, "patient_reference is no text"),
    "reference-empty": ({"patient_reference": "", "expires_in": 600}, "patient_reference is empty"),
}


@pytest.mark.parametrize("attack", list(REFERENCE_ATTACKS), ids=list(REFERENCE_ATTACKS))
def test_a_patient_reference_of_another_shape_is_refused_naming_the_toplevel(page, deployment, waiting, attack):
    """Attack 106: a patient reference answered as `null` ended as "Not attached: Something went
    wrong in the viewer"; one that was a number or empty was sent on to the institution, whose
    refusal blamed the registration, not the toplevel. Now nothing is sent to the institution, and
    the work list says what the toplevel sent."""
    body, problem = REFERENCE_ATTACKS[attack]
    top = deployment.url("toplevel")
    path = f"api/v1/patients/{waiting['patient']['id']}/reference"
    text, registrations = attach_refused(page, deployment, waiting, f"{top}/{path}", body)
    assert text.startswith("Not attached"), text
    assert host(top) in text and path in text and problem in text, text
    assert registrations == [], "nothing was sent to the institution"
    still_usable(page)


# each: how the waiting series' work list item is changed, and the field the message must name
WORKLIST_ATTACKS = {
    "study-null": (set_in("study", None), "items[0].study is no object"),
    "patient-name-number": (set_in("patient.name", 7), "items[0].patient.name is no text"),
    "id-path": (set_in("id", "../../records"), "items[0].id is no record id"),
    "frames-text": (set_in("frames", "3"), "items[0].frames is no count"),
}


@pytest.mark.parametrize("attack", list(WORKLIST_ATTACKS), ids=list(WORKLIST_ATTACKS))
def test_a_work_list_item_of_another_shape_is_refused_naming_the_node(page, deployment, waiting, attack):
    """Attack 107: a work list item whose study or DICOM patient was `null` threw while the list
    was drawn (an uncaught TypeError, the item half drawn); a patient name that was a number, an
    id `../../records` or a frame count that was text were shown, and sent on to the institution
    when attached. Now the node's list is not shown, and the work list says what the node sent."""
    change, problem = WORKLIST_ATTACKS[attack]
    body = {"items": [change(copy.deepcopy(waiting["item"]))], "total": 1}
    page.route(lambda url: url.startswith(f"{waiting['node']['url']}/api/v1/worklist?"),
               lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto("/#/worklist")
    problems = page.locator("#worklist-problems")
    problems.get_by_text("tell IT").wait_for(timeout=20_000)
    text = problems.inner_text()
    assert host(waiting["node"]["url"]) in text and "api/v1/worklist" in text and problem in text, text
    assert page.locator(".worklist-item").count() == 0, "no series is shown"
    still_usable(page)


@pytest.fixture(scope="module")
def ct(deployment, ct_series, tmp_path_factory):
    return opened_record(deployment, ct_series, tmp_path_factory.mktemp("hostile-toplevel-ct"), 72,
                         "CT for the hostile-value tests")


# each: the node's reading at the pixel (x, y) asked for, and the field the message must name
VALUE_ATTACKS = {
    "null": (lambda x, y: None, "the value is no object"),
    "value-text": (lambda x, y: {"frame": 0, "x": x, "y": y, "stored": 1064, "value": "40", "unit": "HU"},
                   "value is no finite number"),
    "value-infinite": (lambda x, y: {"frame": 0, "x": x, "y": y, "stored": 1064, "value": INFINITE, "unit": "HU"},
                       "value is no finite number"),
    "another-pixel": (lambda x, y: {"frame": 0, "x": x + 7, "y": y, "stored": 1064, "value": 40, "unit": "HU"},
                      "x, y name another pixel than the one asked for"),
}


@pytest.mark.parametrize("attack", list(VALUE_ATTACKS), ids=list(VALUE_ATTACKS))
def test_a_value_of_another_shape_is_refused_naming_the_node(page, deployment, ct, attack):
    """Attack 108: the value probe showed the node's reading as it came: `null` or a value that was
    text as "no value", nothing said; a value of 1e400 as "Infinity HU"; another pixel's reading as
    this one's. Now the probe shows no value, and the status line says what the node sent."""
    reading, problem = VALUE_ATTACKS[attack]

    def answer(route):
        query = parse_qs(urlsplit(route.request.url).query)
        serve(route, deployment, reading(math.floor(float(query["x"][0])), math.floor(float(query["y"][0]))))

    page.route(lambda url: url.startswith(f"{ct['node']['url']}/{ct['path']}/frames/") and "/value?" in url, answer)
    login(page, deployment)
    page.goto(ct["href"])
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60_000)
    image = page.locator("#viewport .view-image")
    image.wait_for()
    box = image.bounding_box()
    page.keyboard.press("i")   # the probe's key
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.6)
    status = page.locator("#status")
    status.get_by_text("The value could not be read").wait_for(timeout=20_000)
    text = status.inner_text()
    assert host(ct["node"]["url"]) in text and "/value" in text and problem in text, text
    assert page.locator("#viewport .probe-value").inner_text() == "no value"
    still_usable(page)


@pytest.fixture(scope="module")
def upload(deployment, ct_series, tmp_path_factory):
    """A patient and 3 files naming it, uploaded from the patient's upload page."""
    owner = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("hostile-upload"), first=80, count=3)
    return {"patient": owner, "files": as_patient(files, owner, tmp_path_factory.mktemp("hostile-upload-named")),
            "node": registered_node(deployment), "server": institution(deployment)["server_url"].rstrip("/")}


# each: how the institution's answer to the registration is changed, and the field the message must name
REGISTRATION_ATTACKS = {
    "null": (lambda entry: None, "the record is no object"),
    "another-record": (set_in("id", "0" * 64), "id names another record than the one asked for"),
    "frames-text": (set_in("frames", "3"), "frames is no count"),
}


@pytest.mark.parametrize("attack", list(REGISTRATION_ATTACKS), ids=list(REGISTRATION_ATTACKS))
def test_a_registration_of_another_shape_is_not_shown_as_registered(page, deployment, upload, attack):
    """Attack 109: the institution's answer to an upload's registration (`POST api/v1/records`)
    was shown as the upload's outcome: `null` as "Upload failed: Something went wrong in the
    viewer", another record's entry or a frame count that was text as "Registered as: …". Now the
    upload says which institution sent what, and the node is not told the series is filed."""
    change, problem = REGISTRATION_ATTACKS[attack]
    node = upload["node"]
    filed = requests_to(page, "/filed")
    registered: list[str] = []

    def registration(route):
        registered.append(route.request.post_data_json["id"])
        serve(route, deployment, change(real_answer(deployment, route)))

    page.route(f"{upload['server']}/api/v1/records", registration)
    login(page, deployment)
    page.goto(f"/#/patients/{upload['patient']['id']}/upload")
    page.get_by_role("heading", name="Upload DICOM").wait_for()
    page.get_by_label("Render node").select_option(node["id"])
    page.get_by_label("DICOM files").set_input_files(upload["files"])
    page.locator("#file-list").get_by_text("3 DICOM files chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    job = page.locator(".upload-job").first
    job.locator(".upload-outcome > *").first.wait_for(timeout=60_000)
    # the registration did happen (the hostile answer replaced the institution's own): filed as the viewer would have
    mark_filed(deployment.client("physician"), node["url"], registered[0])
    text = job.locator(".upload-outcome").inner_text()
    assert text.startswith("Upload failed"), text
    assert host(upload["server"]) in text and "api/v1/records" in text and problem in text and "tell IT" in text, text
    assert filed == [], "the node was not told the series is filed"
    still_usable(page)
