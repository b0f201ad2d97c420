"""Record labels and patient identity in Chromium against the real daemons (issue 15, items 1-2).

- The upload form binds its description and type at submission: a second upload started while
  the first is still on its way keeps its own labels, and the first keeps the ones it was sent with.
- The uploader corrects a record's type and description, or deletes it, from the patient page
  (audited; the render node deletes the stored series too); another physician is offered neither.
- The viewer shows the SIVR patient of the page it was opened from beside the patient the DICOM
  files name, and a warning banner when their names or birth dates differ, or when the record is
  registered for another patient than the page's (whatever the files name).
- A finding's link to a record that is not among the patient's records (another institution's
  record of another patient, which the finding's server cannot check) is flagged on the patient
  page and not offered to open.

Records: slices of the bundled real CT with fresh UIDs (derived), relabelled where a test needs
another DICOM patient.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.uid import generate_uid

from daemons.demo import ApiClient, new_user, register_record, write_finding
from shared.receipts import issue_receipt, public_key_text
from tests.webviewer.browser import PHONE
from tests.webviewer.helpers import (
    as_patient,
    derived_series,
    institution,
    login,
    new_patient,
    phone_context,
    registered_node,
    shot,
    uploaded_record,
    users_of_second_institution,
)
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser


def relabel_patient(files: list[Path], name: str, patient_id: str, birth_date: str) -> list[Path]:
    """Name another DICOM patient in the files (in place), in a study of that patient's (a study
    belongs to one patient: the node refuses a series of another patient in a stored study)."""
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth_date
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["study of", patient_id, name])
        ds.save_as(path, enforce_file_format=True)
    return files


def records_of(deployment, patient: dict) -> list[dict]:
    return deployment.client("physician").call(
        "GET", f"{institution(deployment)['server_url']}/api/v1/records",
        params={"patient_id": patient["id"]}).json()["items"]


def institution_audit(deployment, **params) -> list[dict]:
    return deployment.client("admin").call(
        "GET", f"{institution(deployment)['server_url']}/api/v1/audit", params=params).json()["items"]


def test_each_upload_keeps_the_labels_it_was_submitted_with(page, deployment, ct_series, tmp_path, shots):
    """The node holds both uploads until the second is submitted; the first one's description was
    typed before, the second's while the first was on its way (the defect: it took the second's)."""
    patient = new_patient(deployment)
    node = registered_node(deployment)
    # the patient's own images: no identity question comes between the two uploads
    first = as_patient(derived_series(ct_series, tmp_path / "a", first=10, count=3), patient, tmp_path / "a1")
    second = as_patient(derived_series(ct_series, tmp_path / "b", first=30, count=4), patient, tmp_path / "b1")
    held = []

    def hold(route):
        if route.request.method == "POST":
            held.append(route)
        else:
            route.continue_()

    login(page, deployment)
    page.route(lambda url: url.startswith(node["url"]) and url.endswith("/api/v1/records"), hold)
    page.goto(f"/#/patients/{patient['id']}/upload")
    page.get_by_role("heading", name="Upload DICOM").wait_for()
    page.get_by_label("Render node").select_option(node["id"])

    page.get_by_label("DICOM files").set_input_files(first)
    page.locator("#file-list").get_by_text("3 DICOM files chosen").wait_for()
    page.get_by_label("Record type").select_option("CT")
    page.get_by_label("Description").fill("Series A: CT thorax arterial")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_function("() => document.querySelectorAll('.upload-job').length === 1")
    while len(held) < 1:
        page.wait_for_timeout(50)
    # the form is free for the next series at once, and empty: nothing of upload 1 sticks to it
    assert page.get_by_label("Description").input_value() == ""
    assert page.get_by_label("Record type").input_value() == ""
    assert page.locator("#file-list").inner_text() == ""

    page.get_by_label("DICOM files").set_input_files(second)
    page.locator("#file-list").get_by_text("4 DICOM files chosen").wait_for()
    page.get_by_label("Record type").select_option("MR")
    page.get_by_label("Description").fill("Series B: portal venous")
    page.get_by_role("button", name="Upload").click()
    while len(held) < 2:
        page.wait_for_timeout(50)
    jobs = page.locator(".upload-job")
    assert "CT · “Series A: CT thorax arterial”" in jobs.nth(0).locator(".upload-label").inner_text()
    assert "MR · “Series B: portal venous”" in jobs.nth(1).locator(".upload-label").inner_text()
    shot(page, shots, "40-upload-two-at-once")

    for route in held:
        route.continue_()
    for number in (0, 1):  # an outcome, success or failure (whose text the assertion shows)
        jobs.nth(number).locator(".upload-outcome > *").first.wait_for(timeout=60000)
        assert jobs.nth(number).locator(".success").is_visible(), jobs.nth(number).inner_text()
    page.unroute_all()
    assert "Registered as: CT · Series A: CT thorax arterial" in jobs.nth(0).inner_text()
    assert "Registered as: MR · Series B: portal venous" in jobs.nth(1).inner_text()
    shot(page, shots, "41-upload-two-done")

    by_frames = {r["frames"]: (r["record_type"], r["description"]) for r in records_of(deployment, patient)}
    assert by_frames == {3: ("CT", "Series A: CT thorax arterial"), 4: ("MR", "Series B: portal venous")}


def test_the_uploader_relabels_and_deletes_a_record_from_the_patient_page(page, deployment, ct_series, tmp_path, shots):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path / "s", first=50, count=3)
    record = uploaded_record(deployment, patient, files, "Knee MR, wrongly labelled")
    record_id, node = record["meta"]["id"], record["node"]
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    row = page.locator(f"article[data-record='{record_id}']")
    row.wait_for()

    row.get_by_role("button", name=re.compile("^Edit")).click()
    row.get_by_label("Record type").select_option("CT")
    row.get_by_label("Description").fill("CT chest, low dose")
    shot(page, shots, "42-record-edit")
    row.get_by_role("button", name="Save").click()
    row.get_by_text("Saved; the change is recorded in the audit log.").wait_for()
    assert "CT chest, low dose" in row.inner_text()
    [stored] = records_of(deployment, patient)
    assert (stored["record_type"], stored["description"]) == ("CT", "CT chest, low dose")
    [entry] = institution_audit(deployment, action="record.update", object_id=record_id)
    assert 'description: "Knee MR, wrongly labelled" -> "CT chest, low dose"' in entry["detail"]
    shot(page, shots, "43-record-edited")

    row.get_by_role("button", name=re.compile("^Delete")).click()
    row.get_by_role("group", name="Confirm deletion").wait_for()
    shot(page, shots, "44-record-delete-confirm")
    row.get_by_role("button", name="Delete record").click()
    row.wait_for(state="detached")
    page.locator("#alert").get_by_text("The stored images were deleted from the render node too.").wait_for()
    assert records_of(deployment, patient) == []
    [entry] = institution_audit(deployment, action="record.delete", object_id=record_id)
    assert 'description: "CT chest, low dose"' in entry["detail"]
    gone = deployment.client("physician").call("GET", f"{node['url']}/api/v1/records/{record_id}", ok=(404,))
    assert gone.json()["error"]["code"] == "not_found"
    shot(page, shots, "45-record-deleted")


def test_the_uploader_relabels_and_deletes_a_record_on_a_phone(browser, deployment, ct_series, tmp_path, shots):
    """The same correction with taps on a phone: the edit form and the confirmation fit the screen."""
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path / "s", first=70, count=2)
    record = uploaded_record(deployment, patient, files, "Series under the wrong label")
    record_id = record["meta"]["id"]
    context = phone_context(browser, deployment)
    page = context.new_page()
    try:
        login(page, deployment)
        page.goto(f"/#/patients/{patient['id']}")
        row = page.locator(f"article[data-record='{record_id}']")
        row.wait_for()
        row.get_by_role("button", name=re.compile("^Edit")).tap()
        row.get_by_label("Record type").select_option("CT")
        row.get_by_label("Description").fill("CT abdomen, portal venous")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shot(page, shots, "46-phone-record-edit")
        row.get_by_role("button", name="Save").tap()
        row.get_by_text("Saved; the change is recorded in the audit log.").wait_for()
        [stored] = records_of(deployment, patient)
        assert (stored["record_type"], stored["description"]) == ("CT", "CT abdomen, portal venous")
        row.get_by_role("button", name=re.compile("^Delete")).tap()
        row.get_by_role("group", name="Confirm deletion").wait_for()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shot(page, shots, "47-phone-record-delete-confirm")
        row.get_by_role("button", name="Delete record").tap()
        row.wait_for(state="detached")
        assert records_of(deployment, patient) == []
        [entry] = institution_audit(deployment, action="record.delete", object_id=record_id)
        assert 'description: "CT abdomen, portal venous"' in entry["detail"]
    finally:
        context.close()


def test_another_physician_may_open_but_not_change_a_colleagues_record(page, deployment, ct_series, tmp_path):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path / "s", first=60, count=2)
    record = uploaded_record(deployment, patient, files, "Colleague's series")
    credentials = new_user(deployment.client("admin"), deployment.url("toplevel"), institution(deployment)["id"],
                           f"colleague-{uuid.uuid4().hex[:6]}", "physician")
    colleague = ApiClient(deployment, **credentials)
    path = f"{institution(deployment)['server_url']}/api/v1/records/{record['meta']['id']}"
    refused = colleague.call("PATCH", path, ok=(403,), json={"description": "mine now"}).json()
    assert refused["error"]["code"] == "forbidden"

    page.goto("/")
    page.get_by_label("Username").fill(credentials["username"])
    page.get_by_label("Password").fill(credentials["password"])
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Patients").wait_for()
    page.goto(f"/#/patients/{patient['id']}")
    row = page.locator(f"article[data-record='{record['meta']['id']}']")
    row.get_by_role("link", name=re.compile("^Open")).wait_for()
    assert row.get_by_role("button").count() == 0


def open_from_patient_page(page, deployment, patient: dict) -> None:
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    page.get_by_role("link", name=re.compile("Open CT")).click()
    page.locator("#viewport").wait_for()
    wait_shown(page, "d.shownPlane === 'native'")


def test_viewer_warns_when_the_images_name_another_patient(page, browser, deployment, ct_series, tmp_path, shots):
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = relabel_patient(derived_series(ct_series, tmp_path / "s", first=20, count=4),
                            "DOE^JOHN", "PAT-DOE-1", "19500101")
    uploaded_record(deployment, patient, files, "CT of someone else", keep_dicom_patient=True)
    open_from_patient_page(page, deployment, patient)
    assert f"?patient={patient['id']}" in page.url

    banner = page.locator("#patient-identity")
    assert banner.get_attribute("role") == "alert"
    assert "Patient mismatch" in banner.inner_text() and "name and birth date differ" in banner.inner_text()
    assert f"{patient['last_name']}, Ana" in page.locator("#identity-sivr").inner_text()
    dicom = page.locator("#identity-dicom").inner_text()
    assert "DOE, JOHN" in dicom and "ID PAT-DOE-1" in dicom and "1950" in dicom
    assert page.locator("#overlay-mismatch").inner_text() == "⚠ PATIENT MISMATCH"
    assert page.locator("#overlay-sivr").inner_text() == f"SIVR: {patient['last_name']}, Ana · 1970-03-05"
    assert page.locator("#overlay-dicom").inner_text() == "DICOM: DOE, JOHN · PAT-DOE-1 · 1950-01-01"
    shot(page, shots, "46-viewer-patient-mismatch", full_page=False)

    phone = browser.new_context(viewport=PHONE, base_url=deployment.url("web"), is_mobile=True, has_touch=True)
    try:
        small = phone.new_page()
        login(small, deployment)
        small.goto("/#" + page.url.split("#", 1)[1])  # the same link, patient page included
        small.locator("#identity-warning").wait_for()
        wait_shown(small, "d.shownPlane === 'native'")
        box = small.locator("#patient-identity").bounding_box()
        assert box["y"] < small.locator("#viewport").bounding_box()["y"]  # above the image, on screen
        assert small.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shot(small, shots, "48-phone-viewer-patient-mismatch", full_page=False)
    finally:
        phone.close()


def test_a_bidirectional_override_in_the_images_cannot_reorder_the_identity_lines(page, deployment, ct_series,
                                                                                   tmp_path, shots):
    """A DICOM PatientName ending in U+202E (RIGHT-TO-LEFT OVERRIDE) showed everything after it right
    to left: "PAT-DOE-1" read "1-EOD-TAP" and the birth date reversed, in the lines a physician
    checks whose images these are. The viewer shows the control as U+FFFD and the lines in order."""
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = relabel_patient(derived_series(ct_series, tmp_path / "s", first=30, count=4),
                            "DOE^JOHN\u202e", "PAT-DOE-1", "19500101")
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "DOE^JOHN\u202e"
        ds.save_as(path, enforce_file_format=True)
    uploaded_record(deployment, patient, files, "CT with an override", keep_dicom_patient=True)
    open_from_patient_page(page, deployment, patient)
    page.locator("#overlay-dicom").wait_for()
    assert page.locator("#overlay-dicom").inner_text() == "DICOM: DOE, JOHN\ufffd · PAT-DOE-1 · 1950-01-01"
    assert "\u202e" not in page.locator("#identity-dicom").inner_text()
    assert "ID PAT-DOE-1" in page.locator("#identity-dicom").inner_text()
    shot(page, shots, "46b-viewer-bidi-override", full_page=False)


def test_viewer_names_both_patients_without_alarm_when_they_agree(page, deployment, ct_series, tmp_path, shots):
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = relabel_patient(derived_series(ct_series, tmp_path / "s", first=24, count=4),
                            f"{patient['last_name'].upper()}^ANA^MARIA", "PAT-ANA-1", "19700305")
    uploaded_record(deployment, patient, files, "CT of the right patient", keep_dicom_patient=True)
    open_from_patient_page(page, deployment, patient)
    panel = page.locator("#patient-identity")
    assert panel.get_attribute("role") is None and "mismatch" not in panel.inner_text().lower()
    assert page.locator("#overlay-mismatch").count() == 0
    assert "ID PAT-ANA-1" in page.locator("#identity-dicom").inner_text()
    assert page.locator("#overlay-sivr").inner_text() == f"SIVR: {patient['last_name']}, Ana · 1970-03-05"
    shot(page, shots, "47-viewer-patient-match", full_page=False)


def test_a_birth_date_alone_that_differs_is_a_mismatch_and_a_link_without_page_uses_the_registry(
        page, deployment, ct_series, tmp_path):
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = relabel_patient(derived_series(ct_series, tmp_path / "s", first=28, count=3),
                            f"{patient['last_name']}^Ana", "PAT-ANA-2", "19700306")
    record = uploaded_record(deployment, patient, files, "CT, other birth date", keep_dicom_patient=True)
    login(page, deployment)
    # a shared link names no patient page: the record's patient at its institution is shown
    page.goto(f"/#/view/{record['institution']['id']}/{record['node']['id']}/{record['meta']['id']}")
    page.locator("#viewport").wait_for()
    banner = page.locator("#patient-identity")
    assert "birth date differs" in banner.inner_text()
    assert "SIVR patient" in banner.inner_text()
    assert f"{patient['last_name']}, Ana" in page.locator("#identity-sivr").inner_text()


def test_another_patients_record_cited_by_a_finding_is_flagged_and_the_viewer_warns(
        page, deployment, ct_series, tmp_path, shots):
    """Two patients with the same name and birth date (namesakes: the DICOM comparison cannot tell
    them apart). A finding written at institution 2 for one cites the other's record at institution
    1, which institution 2's server cannot check."""
    last = f"Namesake-{uuid.uuid4().hex[:6]}"
    ana, namesake = new_patient(deployment, last_name=last), new_patient(deployment, last_name=last)
    record = uploaded_record(deployment, namesake, derived_series(ct_series, tmp_path / "s", first=32, count=3),
                             "CT of the namesake")
    key = f"{record['institution']['id']}/{record['meta']['id']}"
    doctor2 = ApiClient(deployment, **users_of_second_institution(deployment)["physician"])
    write_finding(doctor2, institution(deployment, 2)["server_url"], ana["id"],
                  [{"record_id": record["meta"]["id"], "institution_id": record["institution"]["id"],
                    "node_id": record["node"]["id"]}],
                  description="Chest CT", findings="A 4 mm nodule.", conclusion="Follow up in a year.")

    login(page, deployment)
    page.goto(f"/#/patients/{ana['id']}")
    flagged = page.locator(f"[data-unresolved][data-link='{key}']")
    flagged.wait_for()
    assert "not among this patient's records" in flagged.inner_text()
    assert page.locator(f"a[data-link='{key}']").count() == 0
    shot(page, shots, "49-finding-cites-another-patients-record")

    # the same pairing by a link made by hand (or kept from before a correction)
    page.goto(f"/#/view/{record['institution']['id']}/{record['node']['id']}/{record['meta']['id']}?patient={ana['id']}")
    page.locator("#identity-warning").wait_for()
    assert "registered for another patient" in page.locator("#identity-warning").inner_text()
    assert page.locator("#patient-identity").get_attribute("role") == "alert"
    assert page.locator("#overlay-mismatch").inner_text() == "⚠ PATIENT MISMATCH"
    # opened from the namesake's own page, nothing is amiss
    page.goto(f"/#/patients/{namesake['id']}")
    page.get_by_role("link", name=re.compile("Open CT")).click()
    page.locator("#viewport").wait_for()
    wait_shown(page, "d.shownPlane === 'native'")
    assert page.locator("#patient-identity").get_attribute("role") is None
    assert page.locator("#overlay-mismatch").count() == 0

    # the institution does not answer: the viewer says whose record it is was not checked
    page.route(re.compile(rf"/api/v1/records/{record['meta']['id']}\?node_id="), lambda route: route.abort())
    page.goto(f"/#/patients/{ana['id']}")
    page.locator(f"[data-unresolved][data-link='{key}']").wait_for()
    page.goto(f"/#/view/{record['institution']['id']}/{record['node']['id']}/{record['meta']['id']}?patient={ana['id']}")
    page.locator("#identity-unchecked").wait_for()
    assert "could not be checked" in page.locator("#identity-unchecked").inner_text()
    assert page.locator("#identity-warning").count() == 0  # the names agree: nothing else to warn of


def test_deleting_one_of_two_registrations_on_a_shared_store_keeps_the_images(page, deployment, ct_series, tmp_path):
    """The same series registered on two nodes that declare one shared store: deleting one
    registration must not delete the images the other still serves."""
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path / "s", first=70, count=2)
    record = uploaded_record(deployment, patient, files, "Shared-store series")
    record_id, node, inst = record["meta"]["id"], record["node"], record["institution"]
    admin, doctor = deployment.client("admin"), deployment.client("physician")
    nodes_url = f"{inst['server_url']}/api/v1/nodes"
    store = f"s3:https://s3.test.invalid/shared-{uuid.uuid4().hex[:6]}"
    shadow_key = Ed25519PrivateKey.generate()
    shadow = admin.call("POST", nodes_url, json={
        "name": f"zz-shadow-{uuid.uuid4().hex[:6]}", "url": f"https://shadow-{uuid.uuid4().hex[:6]}.invalid:5003",
        "store": store, "receipt_key": public_key_text(shadow_key.public_key())}).json()
    admin.call("PUT", f"{nodes_url}/{node['id']}", json={"store": store})
    try:
        doctor_id = doctor.call("GET", f"{deployment.url('toplevel')}/api/v1/me").json()["id"]
        receipt = issue_receipt(shadow_key, shadow["url"], record_id, inst["id"], doctor_id)
        register_record(doctor, inst["server_url"], {**record["meta"], "receipt": receipt}, shadow["id"],
                        patient["id"], "CT", "Shared-store series")
        login(page, deployment)
        page.goto(f"/#/patients/{patient['id']}")
        row = page.locator(f"article[data-record='{record_id}'][data-node='{node['id']}']")
        row.get_by_role("button", name=re.compile("^Delete")).click()
        row.get_by_role("button", name="Delete record").click()
        page.locator("#alert").get_by_text("The stored images were kept").wait_for()
        assert "still registered on a render node sharing this node's store" in page.locator("#alert").inner_text()
        assert [r["node_id"] for r in records_of(deployment, patient)] == [shadow["id"]]
        doctor.call("GET", f"{node['url']}/api/v1/records/{record_id}")  # still stored: 200
    finally:
        admin.call("DELETE", f"{inst['server_url']}/api/v1/records/{record_id}", ok=(204, 404),
                   params={"node_id": shadow["id"]})
        admin.call("DELETE", f"{nodes_url}/{shadow['id']}")
        admin.call("PUT", f"{nodes_url}/{node['id']}", json={"store": ""})


@pytest.mark.parametrize("dicom_name, birth, differs, unknown", [
    ("NOVAK^ANA", "19700305", [], []),
    ("Nóvák^Ana^Maria", "19700305", [], []),          # accents, case and a middle name do not matter
    ("NOVAK^ANNA", "19700305", ["name"], []),          # another given name does
    ("NOVAK^ANA", "19700306", ["birth date"], []),
    ("Ana Novak", "", [], ["birth date"]),             # no "^": compared whole, either order
    ("DOE^JOHN", "19500101", ["name", "birth date"], []),
    ("", "", [], ["name", "birth date"]),              # anonymised: said, not called a mismatch
    ("NOVAK^ANA=ノヴァク^アナ", "19700305", [], []),  # only the alphabetic group is compared
])
def test_the_patient_comparison_rule(page, deployment, dicom_name, birth, differs, unknown):
    """identity.js's rule, run in the browser on the page's own module."""
    page.goto("/")
    answer = page.evaluate("""async ([name, birth]) => {
        const { comparePatients } = await import('/static/js/identity.js');
        return comparePatients({ first_name: 'Ana', last_name: 'Novak', birth_date: '1970-03-05' },
                               { patient_name: name, patient_birth_date: birth });
    }""", [dicom_name, birth])
    assert answer == {"differs": differs, "unknown": unknown}
