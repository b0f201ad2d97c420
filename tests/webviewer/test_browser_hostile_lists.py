"""The viewer against servers that answer lists whose items are of another shape (docs/operations.md,
attacks 92-98): a patient's findings and records at an institution, an institution's render nodes,
the toplevel's institutions and record types, an institution's entry of the record the viewer
checks the patient of, a node's key images.

As in test_browser_hostile_objects.py, each test serves a hostile variant of the server's real
answer through Playwright's request interception (`page.route`) and checks what a person sees: a
message naming the server, the endpoint and the item's field that is wrong, nothing drawn or done
from the answer, a page that still answers clicks, and no uncaught error in the page (the `page`
fixture fails a test on any).
"""

from __future__ import annotations

import copy
import json
from urllib.parse import urlsplit

import pytest

from tests.webviewer.helpers import derived_series, login, new_patient, uploaded_record
from tests.webviewer.hostile_answers import serve, set_in, still_usable

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def listed(deployment, ct_series, tmp_path_factory):
    """A real record of 4 slices registered at institution 1, its patient, a finding citing it, and
    the real answers the tests change: the patient's findings and records at institution 1, its
    render nodes (the record's first), the toplevel's institutions and record types, the
    institution's entry of the record."""
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("hostile-lists"), first=44, count=4)
    record = uploaded_record(deployment, patient, files, "CT for the hostile-list tests")
    inst, node, meta = record["institution"], record["node"], record["meta"]
    doctor = deployment.client("physician")
    server = inst["server_url"].rstrip("/")
    toplevel = deployment.url("toplevel").rstrip("/")
    reference = doctor.call("POST", f"{toplevel}/api/v1/patients/{patient['id']}/reference").json()
    doctor.call("POST", f"{server}/api/v1/findings", json={
        "patient_id": patient["id"], "patient_reference": reference["patient_reference"],
        "description": "Nodule", "findings": "A 4 mm nodule.", "conclusion": "Follow up.", "date": "2026-01-02",
        "records": [{"record_id": meta["id"], "institution_id": inst["id"], "node_id": node["id"]}]})

    def answer(url: str) -> dict:
        return doctor.call("GET", url).json()

    nodes = answer(f"{server}/api/v1/nodes")
    nodes["items"].sort(key=lambda n: n["id"] != node["id"])
    return {
        "patient": patient, "other_patient": new_patient(deployment), "inst": inst, "server": server,
        "toplevel": toplevel, "node": node, "meta": answer(f"{node['url']}/api/v1/records/{meta['id']}"),
        "findings": answer(f"{server}/api/v1/findings?patient_id={patient['id']}"),
        "records": answer(f"{server}/api/v1/records?patient_id={patient['id']}"),
        "nodes": nodes, "institutions": answer(f"{toplevel}/api/v1/institutions"),
        "record_types": answer(f"{toplevel}/api/v1/record-types"),
        "entry": answer(f"{server}/api/v1/records/{meta['id']}"),
        "href": f"/#/view/{inst['id']}/{node['id']}/{meta['id']}",
    }


OTHER_PATIENT = "__other_patient__"   # stands for the id of another patient (the fixture's) in a changed answer


def changed(change, answer: dict, listed) -> object:
    """`answer` changed by `change`, OTHER_PATIENT standing for the fixture's other patient's id."""
    text = json.dumps(change(copy.deepcopy(answer)))
    return json.loads(text.replace(json.dumps(OTHER_PATIENT), json.dumps(listed["other_patient"]["id"])))


def host(url: str) -> str:
    return urlsplit(url).netloc


def institution_message(page, listed) -> str:
    """What the patient page says in institution 1's block once its answer was refused."""
    block = page.locator(f"article[data-institution='{listed['inst']['id']}']")
    warning = block.locator(".warn")
    warning.get_by_text("tell IT").wait_for(timeout=20_000)
    return warning.inner_text()


def alert_message(page) -> str:
    alert = page.locator("#alert")
    alert.get_by_text("tell IT").wait_for(timeout=20_000)
    return alert.inner_text()


# each: how institution 1's page of the patient's findings is changed, and the field the message must name
FINDINGS_ATTACKS = {
    "link-record-id-number": (set_in("items.0.records.0.record_id", 5),
                              "items[0].records[0].record_id is no record id"),
    "link-institution-path": (set_in("items.0.records.0.institution_id", "../../admin"),
                              "items[0].records[0].institution_id is no id"),
    "another-patient": (set_in("items.0.patient_id", OTHER_PATIENT),
                        "items[0].patient_id names another patient than the one asked for"),
}


@pytest.mark.parametrize("attack", list(FINDINGS_ATTACKS), ids=list(FINDINGS_ATTACKS))
def test_findings_of_another_shape_are_refused_naming_the_institution(page, deployment, listed, attack):
    """Attack 92: the patient page drew each of an institution's findings as it came: a link's record
    id 5 threw while the cards were drawn ("did not answer (Something went wrong in the viewer…)"),
    a link's institution `../../admin` became a link into the viewer, a finding of another patient
    was shown on this one's page. Now the institution's block says which
    server sent what, and shows none of its findings."""
    change, problem = FINDINGS_ATTACKS[attack]
    body = changed(change, listed["findings"], listed)
    page.route(f"{listed['server']}/api/v1/findings?*", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(f"/#/patients/{listed['patient']['id']}")
    text = institution_message(page, listed)
    assert host(listed["server"]) in text and "api/v1/findings" in text and problem in text, text
    assert page.locator("article.finding").count() == 0, "no finding is shown"
    still_usable(page)


# each: how institution 1's page of the patient's records is changed, and the field the message must name
RECORDS_ATTACKS = {
    "node-id-path": (set_in("items.0.node_id", "../../admin"), "items[0].node_id is no id"),
    "id-path": (set_in("items.0.id", "../../admin"), "items[0].id is no record id"),
    "another-patient": (set_in("items.0.patient_id", OTHER_PATIENT),
                        "items[0].patient_id names another patient than the one asked for"),
}


@pytest.mark.parametrize("attack", list(RECORDS_ATTACKS), ids=list(RECORDS_ATTACKS))
def test_records_of_another_shape_are_refused_naming_the_institution(page, deployment, listed, attack):
    """Attack 93: the patient page listed each of an institution's records as it came: an id or a
    node id `../../admin` became the viewer's route from the record's card, a record of another
    patient was listed on this one's page. Now the institution's block says which server sent what, and lists none."""
    change, problem = RECORDS_ATTACKS[attack]
    body = changed(change, listed["records"], listed)
    page.route(f"{listed['server']}/api/v1/records?*", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(f"/#/patients/{listed['patient']['id']}")
    text = institution_message(page, listed)
    assert host(listed["server"]) in text and "api/v1/records" in text and problem in text, text
    assert page.locator("[data-record]").count() == 0, "no record is listed"
    still_usable(page)


# each: how institution 1's render nodes (the record's first) are changed, and the field the message must name
NODES_ATTACKS = {
    "url-plain-http": (set_in("items.0.url", "http://render.example.org"), "items[0].url is no https URL"),
    "serving-ids-text": (set_in("items.0.serving_node_ids", "all"), "items[0].serving_node_ids is no list"),
}


@pytest.mark.parametrize("attack", list(NODES_ATTACKS), ids=list(NODES_ATTACKS))
def test_render_nodes_of_another_shape_are_refused_naming_the_institution(page, deployment, listed, attack):
    """Attack 94: the viewer looks up the record's node, and those sharing its store, in the
    institution's list of render nodes: `serving_node_ids` a text ended as "Something went wrong in
    the viewer"; a node's URL of plain http on another host was asked for the record, in the clear.
    Now the viewer says which institution sent what, and opens nothing."""
    change, problem = NODES_ATTACKS[attack]
    body = changed(change, listed["nodes"], listed)
    page.route(f"{listed['server']}/api/v1/nodes?*", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(listed["href"])
    text = alert_message(page)
    assert host(listed["server"]) in text and "api/v1/nodes" in text and problem in text, text
    assert page.locator("#viewport").count() == 0, "nothing of the record is drawn"
    still_usable(page)


# each: how the toplevel's institutions are changed, and the field the message must name
INSTITUTIONS_ATTACKS = {
    "name-number": (set_in("items.0.name", 5), "items[0].name is no text"),
    "server-url-number": (set_in("items.0.server_url", 5), "items[0].server_url is no text"),
}


@pytest.mark.parametrize("attack", list(INSTITUTIONS_ATTACKS), ids=list(INSTITUTIONS_ATTACKS))
def test_institutions_of_another_shape_are_refused_naming_the_toplevel(page, deployment, listed, attack):
    """Attack 95: the patient page sorts the institutions by name and asks each at its server URL:
    a name 5 was shown as the institution's, a server URL 5 ended as an institution that "did not
    answer (Something went wrong in the viewer…)". Now the page says which server
    sent what, and asks no institution."""
    change, problem = INSTITUTIONS_ATTACKS[attack]
    body = changed(change, listed["institutions"], listed)
    page.route(f"{listed['toplevel']}/api/v1/institutions?*", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(f"/#/patients/{listed['patient']['id']}")
    text = alert_message(page)
    assert host(listed["toplevel"]) in text and "api/v1/institutions" in text and problem in text, text
    assert page.locator("article.institution").count() == 0, "no institution is shown"
    still_usable(page)


# each: how the toplevel's record types are changed, and the field the message must name
RECORD_TYPES_ATTACKS = {
    "code-number": (set_in("items.0.code", 5), "items[0].code is no record type code"),
}


@pytest.mark.parametrize("attack", list(RECORD_TYPES_ATTACKS), ids=list(RECORD_TYPES_ATTACKS))
def test_record_types_of_another_shape_are_refused_naming_the_toplevel(page, deployment, listed, attack):
    """Attack 96: a record's relabelling offers the toplevel's record types: a code 5 was offered as
    a type. Now the viewer says which server sent what, and offers no form."""
    change, problem = RECORD_TYPES_ATTACKS[attack]
    body = changed(change, listed["record_types"], listed)
    page.route(f"{listed['toplevel']}/api/v1/record-types?*", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(f"/#/patients/{listed['patient']['id']}")
    row = page.locator(f"article[data-record='{listed['meta']['id']}']")
    row.get_by_role("button", name="Edit").click()
    text = alert_message(page)
    assert text.startswith("The record cannot be edited now"), text
    assert host(listed["toplevel"]) in text and "api/v1/record-types" in text and problem in text, text
    assert row.locator("form.record-edit").count() == 0, "no form is offered"
    still_usable(page)


OTHER_RECORD = "0" * 64

# each: whether the viewer is opened from the patient's page, how the institution's entry of the
# record is changed, and the field the message must name
IDENTITY_ATTACKS = {
    "null-shared-link": (False, lambda entry: None, "the record is no object"),
    "another-record-from-page": (True, set_in("id", OTHER_RECORD), "id names another record than the one asked for"),
    "another-patients-record-shared-link": (
        False, lambda entry: {**entry, "id": OTHER_RECORD, "patient_id": OTHER_PATIENT},
        "id names another record than the one asked for"),
}


@pytest.mark.parametrize("attack", list(IDENTITY_ATTACKS), ids=list(IDENTITY_ATTACKS))
def test_a_registration_of_another_shape_is_not_taken_for_the_records(page, deployment, listed, attack):
    """Attack 97: the viewer asks the record's institution whose record it is, to show that patient
    (a shared link) or to warn when it is not the page's: `null` showed "could not be loaded:
    Something went wrong in the viewer"; another record's entry vouched for this one, silently (from
    the page), or had its patient shown as this record's (a shared link). Now the viewer says which
    institution sent what, where the patient is shown."""
    from_page, change, problem = IDENTITY_ATTACKS[attack]
    body = changed(change, listed["entry"], listed)
    path = f"api/v1/records/{listed['meta']['id']}"
    page.route(f"{listed['server']}/{path}?*", lambda route: serve(route, deployment, body))
    login(page, deployment)
    page.goto(listed["href"] + (f"?patient={listed['patient']['id']}" if from_page else ""))
    shown = page.locator("#identity-unchecked" if from_page else "#identity-sivr")
    shown.get_by_text("tell IT").wait_for(timeout=30_000)
    text = shown.inner_text()
    assert host(listed["server"]) in text and path in text and problem in text, text
    assert page.locator("#identity-warning").count() == 0, "no other patient is named"
    still_usable(page)


KEY_IMAGE = {"plane": "native", "index": 1, "stack": None, "phase": None, "marked_by": "dr.house",
             "marked_at": "2026-01-02T10:00:00Z"}

# each: the key image the node lists for the record of 4 slices (one stack, one time point), and
# the field the message must name
KEY_IMAGE_ATTACKS = {
    "index-beyond": ({**KEY_IMAGE, "index": 4}, "items[0].index is none of the 4 images of its view"),
    "stack-unknown": ({**KEY_IMAGE, "plane": "axial", "stack": "no-such-stack"},
                      "items[0].stack is none of the record's stacks"),
    "stack-on-stored-slice": ({**KEY_IMAGE, "stack": "s0"}, "items[0].stack is set on a stored slice"),
    "phase-beyond": ({**KEY_IMAGE, "plane": "axial", "phase": 3},
                     "items[0].phase is none of the 1 time points of its image"),
}


@pytest.mark.parametrize("attack", list(KEY_IMAGE_ATTACKS), ids=list(KEY_IMAGE_ATTACKS))
def test_key_images_the_node_would_not_mark_are_refused_naming_the_node(page, deployment, listed, attack):
    """Attack 98: a key image beyond its view's images, of a stack the record lacks, naming a stack on
    a stored slice or a time point beyond its image's was listed ("Slices 5 / 4", "Time 4 / 1"), and
    a click moved the viewport to another image than the one marked. Now the panel says which node
    sent what, and lists none."""
    item, problem = KEY_IMAGE_ATTACKS[attack]
    listing = {"items": [item]}
    path = f"api/v1/records/{listed['meta']['id']}/key-images"
    page.route(f"{listed['node']['url']}/{path}", lambda route: serve(route, deployment, listing))
    login(page, deployment)
    page.goto(listed["href"])
    status = page.locator("#key-image-status")
    status.get_by_text("tell IT").wait_for(timeout=60_000)
    text = status.inner_text()
    assert text.startswith("The key images could not be read"), text
    assert host(listed["node"]["url"]) in text and path in text and problem in text, text
    assert page.locator("#key-image-list .key-image-item").count() == 0, "no key image is listed"
    still_usable(page)
