"""Physicians' workflows in Debian's Chromium against the real toplevel and institution daemons.

Each screen is saved to test-artifacts/webviewer/ so a person can judge how it looks.
"""

from __future__ import annotations

import re
import uuid

import pytest
import requests

from tests.webviewer.browser import DESKTOP, PHONE, launch_chromium, server_cert_of
from tests.webviewer.helpers import (
    institution,
    login,
    new_patient,
    register_placeholder_records,
    shot,
)

pytestmark = pytest.mark.browser


def test_wrong_password_is_refused_in_words_then_login_and_logout(page, deployment, shots):
    page.goto("/")
    shot(page, shots, "01-login")
    page.get_by_label("Username").fill(deployment.users["physician"]["username"])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    error = page.locator("#login-error")
    error.wait_for()
    assert error.inner_text() == "The username or password is not correct."
    assert page.get_by_label("Password").input_value() == ""
    shot(page, shots, "02-login-wrong-password")

    login(page, deployment)
    assert "Gregory House" in page.locator("#account-name").inner_text()
    token = page.evaluate("JSON.parse(sessionStorage.getItem('sivr.session')).token")
    assert token.count(".") == 2
    assert token not in page.url
    shot(page, shots, "03-patient-search-empty")

    page.get_by_role("button", name="Log out").click()
    page.get_by_role("heading", name="Sign in to SIVR").wait_for()
    assert page.evaluate("sessionStorage.getItem('sivr.session')") is None
    renew = requests.post(f"{deployment.url('toplevel')}/api/v1/auth/renew",
                          headers={"Authorization": f"Bearer {token}"}, verify=deployment.ca_cert, timeout=10)
    assert renew.status_code == 401, "logging out in the page must end the session on the server"


def test_token_is_renewed_in_the_background_and_expiry_is_explained(page, deployment, shots):
    page.clock.install()
    login(page, deployment)
    renewals = []
    page.on("request", lambda r: renewals.append(r) if r.url.endswith("/api/v1/auth/renew") else None)
    first_expiry = page.evaluate("JSON.parse(sessionStorage.getItem('sivr.session')).expiresAt")
    page.clock.run_for("04:00")   # past 70 % of the 5-minute token life: the renewal timer fires
    page.wait_for_function("e => JSON.parse(sessionStorage.getItem('sivr.session')).expiresAt > e + 200000",
                           arg=first_expiry, polling=100)
    assert len(renewals) == 1
    assert renewals[0].headers["authorization"].startswith("Bearer ")
    second = page.evaluate("JSON.parse(sessionStorage.getItem('sivr.session')).token")
    assert page.locator("#account").is_visible()

    # The session ends on the server (as after the absolute limit); the next renewal is refused.
    requests.post(f"{deployment.url('toplevel')}/api/v1/auth/logout",
                  headers={"Authorization": f"Bearer {second}"}, verify=deployment.ca_cert, timeout=10)
    page.clock.run_for("04:00")
    notice = page.locator("#login-notice")
    notice.wait_for()
    assert "log in again" in notice.inner_text()
    assert page.locator("#account").is_hidden()
    shot(page, shots, "04-session-expired")


def test_create_search_and_edit_a_patient(page, deployment, shots):
    login(page, deployment)
    insurance = f"{uuid.uuid4().int % 10**10:010d}"
    page.get_by_role("link", name="New patient").click()
    page.get_by_role("button", name="Create patient").click()
    missing = "Please fill in: first name, last name, date of birth, insurance number"
    assert missing in page.locator(".form-error").inner_text()
    page.get_by_label("First name").fill("Mira")
    page.get_by_label("Last name").fill("Zupančič")
    page.get_by_label("Sex").select_option("F")
    page.get_by_label("Date of birth").fill("1984-07-21")
    page.get_by_label("Insurance number").fill(insurance)
    shot(page, shots, "05-patient-new")
    page.get_by_role("button", name="Create patient").click()
    page.locator("#patient-name").wait_for()
    assert page.locator("#patient-name").inner_text() == "Zupančič, Mira"

    page.goto("/#/patients")
    page.get_by_label("Patient name or insurance number").fill("upanč")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#patient-results tbody tr")
    rows.first.wait_for()
    assert any("Zupančič, Mira" in t for t in rows.all_inner_texts())
    shot(page, shots, "06-patient-search-results")

    page.get_by_label("Patient name or insurance number").fill(insurance)
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("n => document.querySelector('#patient-results') && "
                           "document.querySelector('#patient-results').innerText.includes(n)", arg=insurance)
    assert rows.count() == 1
    rows.first.get_by_role("link").click()
    page.get_by_role("link", name="Edit patient").click()
    page.get_by_label("First name").fill("Mirjam")
    page.get_by_role("button", name="Save changes").click()
    page.locator("#patient-name").filter(has_text="Zupančič, Mirjam").wait_for()
    patient_id = page.url.rsplit("/", 1)[1]
    physician = deployment.client("physician")
    stored = physician.call("GET", f"{deployment.url('toplevel')}/api/v1/patients/{patient_id}").json()
    assert stored["first_name"] == "Mirjam" and stored["insurance_number"] == insurance

    # Bad input: another patient with the same insurance number.
    page.goto("/#/patients/new")
    page.get_by_label("First name").fill("Dup")
    page.get_by_label("Last name").fill("Licate")
    page.get_by_label("Date of birth").fill("1990-01-01")
    page.get_by_label("Insurance number").fill(insurance)
    page.get_by_role("button", name="Create patient").click()
    page.locator(".form-error", has_text="already has this insurance number").wait_for()
    shot(page, shots, "07-patient-duplicate-insurance")


def test_write_edit_attach_and_detach_a_finding(page, deployment, shots):
    patient = new_patient(deployment)
    first, second = register_placeholder_records(deployment, patient, ["CT thorax", "CT abdomen"])
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    own = institution(deployment)
    block = page.locator(f"article[data-institution='{own['id']}']")
    block.locator("article[data-record]").nth(1).wait_for()
    assert block.locator("article[data-record]").count() == 2
    assert block.locator(".badge-ok").is_visible()

    page.get_by_role("link", name="Write finding").click()
    page.locator(".record-picker input[type=checkbox]").first.wait_for()
    page.get_by_label("Short description").fill("CT thorax")
    page.get_by_label("Findings", exact=True).fill("Solitary 6 mm nodule in the right upper lobe.")
    page.get_by_label("Conclusion").fill("Probably benign.")
    page.get_by_role("button", name="Save new finding").click()
    assert "at least one attached record" in page.locator(".form-error").inner_text()
    page.get_by_label(re.compile(r"CT thorax")).check()
    page.get_by_label("Recommendation").fill("Follow-up CT in 12 months.")
    shot(page, shots, "08-finding-new")
    page.get_by_role("button", name="Save new finding").click()

    card = page.locator(".finding")
    card.wait_for()
    assert "Solitary 6 mm nodule" in card.inner_text()
    card.locator("[data-link]").filter(has_text="CT thorax").wait_for()
    shot(page, shots, "09-patient-with-finding")

    card.get_by_role("link", name="Edit").click()
    page.get_by_role("heading", name="Edit finding").wait_for()
    page.locator(".record-picker input[type=checkbox]").first.wait_for()
    page.get_by_label(re.compile(r"CT abdomen")).check()
    page.get_by_label(re.compile(r"CT thorax")).uncheck()
    page.get_by_label("Conclusion").fill("Probably benign granuloma.")
    shot(page, shots, "10-finding-edit")
    page.get_by_role("button", name="Save finding").click()
    page.locator(".finding", has_text="granuloma").wait_for()

    findings = deployment.client("physician").call(
        "GET", f"{own['server_url']}/api/v1/findings", params={"patient_id": patient["id"]}).json()["items"]
    assert len(findings) == 1
    assert findings[0]["conclusion"] == "Probably benign granuloma."
    assert [link["record_id"] for link in findings[0]["records"]] == [second["id"]]
    assert first["id"] != second["id"]

    # what the finding said before the edit stays readable (institution schema 5)
    page.locator(".finding", has_text="granuloma").get_by_role("link", name="History").click()
    page.get_by_role("heading", name="Finding history").wait_for()
    versions = page.locator(".finding-version")
    versions.first.wait_for()
    # the form saved the edit, attached CT abdomen and detached CT thorax: three changes, newest first
    assert [versions.nth(i).get_attribute("data-version") for i in range(versions.count())] == ["3", "2", "1"]
    assert "Probably benign." in versions.last.inner_text() and "granuloma" not in versions.last.inner_text()
    assert "edited" in versions.last.inner_text()
    assert deployment.users["physician"]["username"] in versions.last.inner_text()
    shot(page, shots, "11-finding-history")


def test_a_long_finding_history_is_read_a_page_at_a_time(page, deployment, shots):
    """The institution answers a finding's history a page at a time (at most 50 versions); the page
    showed only the first answer, so every change before the newest page could not be read."""
    patient = new_patient(deployment)
    (record,) = register_placeholder_records(deployment, patient, ["CT chest for the history"])
    own = institution(deployment)
    doctor = deployment.client("physician")
    server = own["server_url"].rstrip("/")
    reference = doctor.call("POST", f"{deployment.url('toplevel')}/api/v1/patients/{patient['id']}/reference").json()
    body = {"patient_id": patient["id"], "patient_reference": reference["patient_reference"],
            "description": "Nodule", "findings": "wording 0", "conclusion": "Follow up.", "date": "2026-01-02",
            "records": [{"record_id": record["id"], "institution_id": own["id"], "node_id": record["node_id"]}]}
    finding = doctor.call("POST", f"{server}/api/v1/findings", json=body).json()
    for wording in range(1, 53):  # 52 edits: 52 earlier versions, three pages
        doctor.call("PUT", f"{server}/api/v1/findings/{finding['id']}", json={**body, "findings": f"wording {wording}"})

    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}/institutions/{own['id']}/findings/{finding['id']}/history")
    page.get_by_role("heading", name="Finding history").wait_for()
    versions = page.locator(".finding-version")
    versions.first.wait_for()
    assert versions.count() == 20 and versions.first.get_attribute("data-version") == "52"  # the institution's page
    page.get_by_role("button", name=re.compile(r"Show older changes \(32 more\)")).click()
    older = page.get_by_role("button", name=re.compile(r"Show older changes \(12 more\)"))
    older.click()
    page.locator(".finding-version[data-version='1']").wait_for()
    assert [versions.nth(i).get_attribute("data-version") for i in range(versions.count())] == [
        str(n) for n in range(52, 0, -1)]
    assert "wording 0" in versions.last.inner_text()
    assert older.is_hidden()
    shot(page, shots, "11-finding-history-paged")


def test_patient_page_fits_a_phone(browser, deployment, shots):
    context = browser.new_context(viewport=PHONE, base_url=deployment.url("web"), is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        patient = new_patient(deployment)
        register_placeholder_records(deployment, patient, ["CT head"])
        login(page, deployment)
        page.goto(f"/#/patients/{patient['id']}")
        page.locator("article[data-record]").first.wait_for()
        page.locator(".badge-ok").nth(1).wait_for()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shot(page, shots, "11-phone-patient-page")
    finally:
        context.close()


def test_an_institution_that_does_not_answer_is_marked_and_the_rest_shown(playwright_instance, make_deployment, shots):
    deployment = make_deployment(institution_names=["Demo Hospital", "Second Clinic"])
    patient = new_patient(deployment)
    register_placeholder_records(deployment, patient, ["CT thorax"])
    deployment.stop_instance("institution-2")
    browser = launch_chromium(playwright_instance, server_cert_of(deployment))
    try:
        page = browser.new_page(viewport=DESKTOP, base_url=deployment.url("web"))
        login(page, deployment)
        page.goto(f"/#/patients/{patient['id']}")
        down = page.locator(f"article[data-institution='{institution(deployment, 2)['id']}']")
        up = page.locator(f"article[data-institution='{institution(deployment, 1)['id']}']")
        down.locator(".badge-down").wait_for()
        assert "Second Clinic did not answer" in down.inner_text()
        up.locator("article[data-record]", has_text="CT thorax").wait_for()
        up.locator(".badge-ok").wait_for()  # findings may answer after the records
        shot(page, shots, "12-institution-down")
    finally:
        browser.close()
