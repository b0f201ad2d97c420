"""The viewer against institution servers and render nodes that answer single objects of another
shape (docs/operations.md, attack 86): a finding.

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

from tests.webviewer.helpers import derived_series, login, new_patient, uploaded_record
from tests.webviewer.test_browser_hostile_objects import serve, set_in, still_usable

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
