"""The viewer against institution servers and render nodes that answer single objects of another
shape (docs/operations.md, attacks 86-91): a finding, an institution's entry of a record, an
instance's DICOM attributes, an institution's `api/v1/info`, a node's upload receipt.

As in test_browser_hostile_objects.py, each test serves a hostile variant of the server's real
answer through Playwright's request interception (`page.route`) and checks what a person sees: a
message naming the server, the endpoint and what is wrong, nothing drawn or done from the answer,
a page that still answers clicks, and no uncaught error in the page (the `page` fixture fails a
test on any).
"""

from __future__ import annotations

import copy
import re
import uuid
from urllib.parse import urlsplit

import pytest

from tests.webviewer.helpers import derived_series, institution, login, new_patient, registered_node, uploaded_record
from tests.webviewer.hostile_answers import attach_refused, serve, set_in, still_usable

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def filed(deployment, ct_series, tmp_path_factory):
    """A real record of 4 slices registered at institution 1, its patient, and a finding citing it."""
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("hostile-more"), first=68, count=4)
    record = uploaded_record(deployment, patient, files, "CT for the hostile-entry tests")
    inst, node, meta = record["institution"], record["node"], record["meta"]
    doctor = deployment.client("physician")
    server = inst["server_url"].rstrip("/")
    reference = doctor.call("POST", f"{deployment.url('toplevel')}/api/v1/patients/{patient['id']}/reference").json()
    finding = doctor.call("POST", f"{server}/api/v1/findings", json={
        "patient_id": patient["id"], "patient_reference": reference["patient_reference"],
        "description": "Nodule", "findings": "A 4 mm nodule.", "conclusion": "Follow up.", "date": "2026-01-02",
        "records": [{"record_id": meta["id"], "institution_id": inst["id"], "node_id": node["id"]}]}).json()
    entry = doctor.call("GET", f"{server}/api/v1/records/{meta['id']}").json()
    full = doctor.call("GET", f"{node['url']}/api/v1/records/{meta['id']}").json()
    return {"patient": patient, "inst": inst, "server": server, "node": node, "meta": full, "finding": finding,
            "entry": entry, "href": f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={patient['id']}"}


def host(url: str) -> str:
    return urlsplit(url).netloc


OTHER_ID = str(uuid.UUID(int=1))

# each: how the finding is changed, and the field the message must name
FINDING_ATTACKS = {
    "null": (lambda finding: None, "the finding is no object"),
    "records-text": (set_in("records", "all of them"), "records is no list"),
    "link-null": (set_in("records.0", None), "records[0] is no object"),
    "link-record-id-number": (set_in("records.0.record_id", 5), "records[0].record_id is no record id"),
    "link-institution-path": (set_in("records.0.institution_id", "../../admin"), "records[0].institution_id is no id"),
    "another-finding": (set_in("id", OTHER_ID), "id names another finding than the one asked for"),
}


@pytest.mark.parametrize("attack", list(FINDING_ATTACKS), ids=list(FINDING_ATTACKS))
def test_a_finding_of_another_shape_is_refused_naming_the_institution(page, deployment, filed, attack):
    """Attack 86: a finding answered as `null` opened the edit form as a new finding (saving wrote
    another one); one naming another finding's id had that one changed or deleted; a link that was
    `null`, or whose record id was a number, threw while the form was drawn or its records listed.
    Now the form is not drawn, and the viewer says which institution sent what."""
    change, problem = FINDING_ATTACKS[attack]
    finding = filed["finding"]
    path = f"api/v1/findings/{finding['id']}"
    body = change(copy.deepcopy(finding))
    page.route(f"{filed['server']}/{path}", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(f"/#/patients/{filed['patient']['id']}/findings/{finding['id']}")
    alert = page.locator("#alert")
    alert.get_by_text("tell IT").wait_for(timeout=20_000)
    text = alert.inner_text()
    assert host(filed["server"]) in text and path in text, text
    assert problem in text, text
    assert page.get_by_role("heading", name=re.compile("finding")).count() == 0, "no form is drawn"
    page.wait_for_timeout(500)   # the patient's records arrive: nothing throws listing them
    still_usable(page)


# each: how the institution's entry of the record is changed, and the field the message must name
ENTRY_ATTACKS = {
    "null": (lambda entry: None, "the record is no object"),
    "frames-text": (set_in("frames", "4"), "frames is no count"),
    "rows-a-million": (set_in("rows", 10**6), "rows is more than 65535"),
    "node-ids-text": (set_in("node_ids", "all"), "node_ids is no list"),
    "another-record": (lambda entry: {**entry, "id": "0" * 64, "node_id": OTHER_ID, "node_ids": [OTHER_ID]},
                       "id names another record than the one asked for"),
}


def record_row(page, deployment, filed):
    login(page, deployment)
    page.goto(f"/#/patients/{filed['patient']['id']}")
    row = page.locator(f"article[data-record='{filed['meta']['id']}']")
    row.wait_for()
    return row


@pytest.mark.parametrize("attack", list(ENTRY_ATTACKS), ids=list(ENTRY_ATTACKS))
def test_a_relabelled_entry_of_another_shape_is_not_shown_as_saved(page, deployment, filed, attack):
    """Attack 87: the institution's answer to a relabelling (PATCH) was shown as the record's card:
    `null` threw (and left the card's Cancel throwing at every click), a text frame count or
    another record's entry were shown as "Saved". Now the card keeps the record, and the form says
    which institution sent what."""
    change, problem = ENTRY_ATTACKS[attack]
    path = f"api/v1/records/{filed['meta']['id']}"
    body = change(copy.deepcopy(filed["entry"]))

    def answer(route):
        if route.request.method == "PATCH":
            serve(route, deployment, body)
        else:
            route.continue_()

    page.route(lambda url: url.startswith(f"{filed['server']}/{path}?"), answer)
    row = record_row(page, deployment, filed)
    row.get_by_role("button", name=re.compile("^Edit")).click()
    row.get_by_label("Description").fill("CT chest, low dose")
    row.get_by_role("button", name="Save").click()
    error = row.locator(".record-edit .form-error")
    error.get_by_text("tell IT").wait_for(timeout=20_000)
    text = error.inner_text()
    assert text.startswith("Whether it was saved is not known"), text
    assert host(filed["server"]) in text and path in text and problem in text, text
    row.get_by_role("button", name="Cancel").click()
    assert "CT for the hostile-entry tests" in row.inner_text()
    still_usable(page)


@pytest.mark.parametrize("attack", list(ENTRY_ATTACKS), ids=list(ENTRY_ATTACKS))
def test_an_entry_of_another_shape_after_a_deletion_keeps_the_stored_images(page, deployment, filed, attack):
    """Attack 88: after a record's deletion the viewer asks its institution whether the series is
    still registered on a node sharing the store, and asks the node to delete the images only if
    not. Another record's entry there had the node asked to delete them; `null` ended as "Something
    went wrong in the viewer". Now the images are kept, and the viewer says which institution sent
    what. (The deletion itself is answered here, not done: the record stays registered.)"""
    change, problem = ENTRY_ATTACKS[attack]
    path = f"api/v1/records/{filed['meta']['id']}"
    body = change(copy.deepcopy(filed["entry"]))
    cors = {"Access-Control-Allow-Origin": deployment.url("web")}
    node_deletes: list[str] = []

    def at_institution(route):
        if route.request.method == "DELETE":
            route.fulfill(status=204, headers=cors)
        elif route.request.method == "GET" and route.request.url == f"{filed['server']}/{path}":
            serve(route, deployment, body)
        else:
            route.continue_()

    def at_node(route):
        if route.request.method == "DELETE":
            node_deletes.append(route.request.url)
            route.fulfill(status=204, headers=cors)
        else:
            route.continue_()

    page.route(lambda url: url.startswith(f"{filed['server']}/{path}"), at_institution)
    page.route(lambda url: url.startswith(f"{filed['node']['url']}/{path}"), at_node)
    row = record_row(page, deployment, filed)
    row.get_by_role("button", name=re.compile("^Delete")).click()
    row.get_by_role("button", name="Delete record").click()
    alert = page.locator("#alert")
    alert.get_by_text("The stored images were kept").wait_for(timeout=20_000)
    text = alert.inner_text()
    assert host(filed["server"]) in text and path in text and problem in text and "tell IT" in text, text
    assert node_deletes == [], "the node was not asked to delete the images"
    still_usable(page)


def open_tags(page, deployment, filed):
    login(page, deployment)
    page.goto(filed["href"])
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60_000)
    page.get_by_role("button", name="Tags").click()


@pytest.fixture(scope="module")
def attributes(deployment, filed):
    """The real DICOM JSON of the record's first instance."""
    meta = filed["meta"]
    url = (f"{filed['node']['url']}/dicomweb/studies/{meta['study_uid']}/series/{meta['series_uid']}"
           f"/instances/{meta['slices'][0]['sop_instance_uid']}/metadata")
    return deployment.client("physician").call("GET", url).json()


# each: how the instance's DICOM JSON is changed, and the field the message must name
TAG_ATTACKS = {
    "null": (lambda metadata: None, "the answer is no list"),
    "empty": (lambda metadata: [], "the answer names no instance"),
    "element-null": (set_in("0.00100010", None), "the answer[0].00100010 is no object"),
    "value-text": (set_in("0.00080060.Value", "CT"), "the answer[0].00080060.Value is no list"),
    "sequence-item-text": (set_in("0.00081140.Value", ["item"]), "the answer[0].00081140.Value[0] is no object"),
    "keyword-for-tag": (set_in("0.PatientName", {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}),
                        'names "PatientName", no tag'),
    "name-group-number": (set_in("0.00100010.Value", [{"Alphabetic": 7}]),
                          "the answer[0].00100010.Value[0].Alphabetic is no text"),
}


@pytest.mark.parametrize("attack", list(TAG_ATTACKS), ids=list(TAG_ATTACKS))
def test_dicom_attributes_of_another_shape_are_refused_naming_the_node(page, deployment, filed, attributes, attack):
    """Attack 89: the tag browser made a row of every element of the node's DICOM JSON: `null`, an
    element `null` or a Value that was text ended as "Something went wrong in the viewer"; a
    sequence item that was text, or a keyword where a tag belongs, were shown as attributes the
    image does not have. Now the table stays empty and its caption says which node sent what."""
    change, problem = TAG_ATTACKS[attack]
    body = change(copy.deepcopy(attributes))
    page.route(lambda url: url.startswith(f"{filed['node']['url']}/dicomweb/") and url.endswith("/metadata"),
               lambda route: serve(route, deployment, body))
    open_tags(page, deployment, filed)
    caption = page.locator("#tag-browser-caption")
    caption.get_by_text("tell IT").wait_for(timeout=20_000)
    text = caption.inner_text()
    assert text.startswith("The attributes could not be read"), text
    assert host(filed["node"]["url"]) in text and "/metadata" in text and problem in text, text
    assert page.locator("#tag-table tr").count() == 0, "no attribute is shown"
    still_usable(page)


def nested_sequences(depth: int) -> str:
    """DICOM JSON of one instance whose Referenced Image Sequence holds itself `depth` times over,
    written as text (Python's json module stops at about 1,000 levels)."""
    return "[" + '{"00081140":{"vr":"SQ","Value":[' * depth + "{}" + "]}}" * depth + "]"


@pytest.mark.parametrize("depth", [1_001, 1_200, 40_000])
def test_dicom_attributes_nested_too_deeply_are_refused_naming_the_node(page, deployment, filed, depth):
    """Attack 112: DICOM JSON whose sequences nest deeper than any a node can hold (it reads them by
    recursion, at most 1,000 calls deep) was read by JSON.parse up to about 1,400 levels, and then
    drawn as a table a thousand tables deep, or its check recursed past the page's stack
    ("Something went wrong in the viewer"). Now anything deeper than 1,000 levels, or too deep for
    the page to read or check, is named as what the node sent."""
    body = nested_sequences(depth)
    page.route(lambda url: url.startswith(f"{filed['node']['url']}/dicomweb/") and url.endswith("/metadata"),
               lambda route: route.fulfill(status=200, content_type="application/json", body=body,
                                           headers={"Access-Control-Allow-Origin": deployment.url("web")}))
    open_tags(page, deployment, filed)
    caption = page.locator("#tag-browser-caption")
    caption.get_by_text("tell IT").wait_for(timeout=20_000)
    text = caption.inner_text()
    assert text.startswith("The attributes could not be read"), text
    assert host(filed["node"]["url"]) in text and "/metadata" in text and "nested too deeply" in text, text
    assert page.locator("#tag-table tr").count() == 0, "no attribute is shown"
    still_usable(page)


def test_the_dicom_attributes_check_holds_a_node_to_the_depth_it_can_nest(page):
    """Attack 112, without JSON.parse (whose own stack may end first): DICOM JSON nested 1,000
    sequences deep is a node's answer, 1,001 is refused naming the depth, and a check that runs out
    of stack is an answer of another shape, not an error of the viewer."""
    page.goto("/")
    outcome = page.evaluate("""async () => {
      const { DICOM_METADATA } = await import("/static/js/answers.js");
      const { shaped, ApiError } = await import("/static/js/api.js");
      const nested = (depth) => {
        let dataset = {};
        for (let i = 0; i < depth; i += 1) dataset = { "00081140": { vr: "SQ", Value: [dataset] } };
        return [dataset];
      };
      const check = (body, shape) => {
        try { shaped(body, "https://node.example", "…/metadata", shape); return "kept"; }
        catch (err) { return err instanceof ApiError ? err.message : `${err.name}: ${err.message}`; }
      };
      const overflowing = { asked: "the answer", check: () => { throw new RangeError("stack exceeded"); } };
      return [check(nested(1000), DICOM_METADATA), check(nested(1001), DICOM_METADATA), check({}, overflowing)];
    }""")
    at_bound, beyond, overflow = outcome
    assert at_bound == "kept", at_bound
    assert "nested too deeply (more than 1000)" in beyond and "node.example" in beyond, beyond
    assert "nested too deeply to check" in overflow and "node.example" in overflow, overflow


# each: the institution's `api/v1/info` as changed, and the field the message must name
INFO_ATTACKS = {
    "null": (lambda info: None, "the information is no object"),
    "issuer-number": (set_in("issuer_of_patient_id", 5), "issuer_of_patient_id is no text"),
    "institution-missing": (lambda info: {k: v for k, v in info.items() if k != "institution_id"},
                            "institution_id is no id"),
}


@pytest.mark.parametrize("attack", list(INFO_ATTACKS), ids=list(INFO_ATTACKS))
def test_institution_info_of_another_shape_is_refused_naming_the_institution(page, deployment, filed, attack):
    """Attack 90: the work list reads the institution's `api/v1/info` for the matching rule's
    IssuerOfPatientID: `null` threw before the work list was drawn ("Something went wrong in the
    viewer"), an issuer that was a number went into the rule. Now the viewer says which institution
    sent what."""
    change, problem = INFO_ATTACKS[attack]
    info = deployment.client("physician").call("GET", f"{filed['server']}/api/v1/info").json()
    body = change(copy.deepcopy(info))
    page.route(f"{filed['server']}/api/v1/info", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto("/#/worklist")
    alert = page.locator("#alert")
    alert.get_by_text("tell IT").wait_for(timeout=20_000)
    text = alert.inner_text()
    assert host(filed["server"]) in text and "api/v1/info" in text and problem in text, text
    assert page.locator("#worklist").count() == 0, "no work list is drawn"
    still_usable(page)


@pytest.fixture(scope="module")
def waiting(deployment):
    """A series on render node 1-1 waiting on the work list, and the patient its rule proposes."""
    from tests.webviewer.test_browser_worklist import c_store_series

    patient = new_patient(deployment)
    name = f"{patient['last_name']}^{patient['first_name']}".upper()
    record_id = c_store_series(deployment, patient["insurance_number"], name, patient["birth_date"].replace("-", ""),
                               "Worklist series for the hostile-receipt tests")
    return {"patient": patient, "record_id": record_id, "node": registered_node(deployment),
            "server": institution(deployment)["server_url"].rstrip("/")}


# each: the node's answer to `POST …/receipt`, and the field the message must name
RECEIPT_ATTACKS = {
    "null": (None, "the answer is no object"),
    "receipt-number": ({"receipt": 5}, "receipt is no text"),
    "receipt-empty": ({"receipt": ""}, "receipt is empty"),
}


@pytest.mark.parametrize("attack", list(RECEIPT_ATTACKS), ids=list(RECEIPT_ATTACKS))
def test_a_receipt_of_another_shape_is_refused_naming_the_node(page, deployment, waiting, attack):
    """Attack 91: the node's upload receipt answered as `null` ended as "Not attached: Something
    went wrong in the viewer"; a receipt that was a number or empty was sent on to the institution,
    whose refusal ("send the upload receipt…") blamed the registration, not the node. Now nothing
    is sent to the institution, and the work list says which node sent what."""
    body, problem = RECEIPT_ATTACKS[attack]
    path = f"api/v1/records/{waiting['record_id']}/receipt"
    text, registrations = attach_refused(page, deployment, waiting, f"{waiting['node']['url']}/{path}", body)
    assert text.startswith("Not attached"), text
    assert host(waiting["node"]["url"]) in text and path in text and problem in text, text
    assert registrations == [], "nothing was sent to the institution"
    still_usable(page)
