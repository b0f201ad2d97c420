"""Uploading images that name another patient (issue 11): the upload page reads the files' DICOM
patient, shows it beside the SIVR patient and sends nothing before the physician confirms; Cancel
stores nothing, Confirm stores and registers the series with the audited decision, and the viewer
then shows both patients side by side. Desktop and phone."""

from __future__ import annotations

import pytest

from tests.webviewer.browser import PHONE
from tests.webviewer.helpers import (
    as_patient,
    derived_series,
    institution,
    login,
    new_patient,
    registered_node,
    shot,
)
from tests.webviewer.test_browser_viewer import wait_shown

pytestmark = pytest.mark.browser


def open_upload_page(page, deployment, patient: dict) -> None:
    node = registered_node(deployment)
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    page.get_by_role("link", name="Upload DICOM").click()
    page.get_by_role("heading", name="Upload DICOM").wait_for()
    page.get_by_label("Render node").select_option(node["id"])


def records_of(deployment, patient: dict) -> list[dict]:
    return deployment.client("physician").call(
        "GET", f"{institution(deployment)['server_url']}/api/v1/records",
        params={"patient_id": patient["id"]}).json()["items"]


def test_another_patients_images_are_sent_only_after_confirmation(page, deployment, ct_series, tmp_path, shots):
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = derived_series(ct_series, tmp_path / "s", first=10, count=4)  # the demo CT: CMB-CRC-MSB-01068
    open_upload_page(page, deployment, patient)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.get_by_label("DICOM files").set_input_files(files)
    page.locator("#file-list").get_by_text("4 DICOM files chosen").wait_for()
    page.get_by_label("Description").fill("CT of someone else")
    page.get_by_role("button", name="Upload").click()

    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    assert "The images name another patient" in dialog.inner_text()
    assert page.locator(".identity-compare-sivr").first.inner_text() == f"{patient['last_name']}, Ana"
    assert page.locator(".identity-compare-dicom").first.inner_text() == "CMB-CRC-MSB-01068"
    assert page.locator(".identity-differs").count() == 1  # the name; the images carry no birth date
    assert "ID" in dialog.inner_text() and "ins. no." in dialog.inner_text()
    shot(page, shots, "90-upload-identity-dialog")

    dialog.get_by_role("button", name="Cancel").click()
    assert "Not uploaded" in page.locator("#upload-result").inner_text()
    assert page.get_by_role("dialog").count() == 0
    assert posts == [] and records_of(deployment, patient) == []

    page.get_by_role("button", name="Upload").click()  # the form kept the files
    page.get_by_role("dialog").get_by_role("button", name=f"Upload anyway for {patient['last_name']}, Ana").click()
    job = page.locator(".upload-job").first
    job.locator(".upload-outcome > *").first.wait_for(timeout=60000)
    assert job.locator(".success").is_visible(), job.inner_text()
    [record] = records_of(deployment, patient)
    assert record["description"] == "CT of someone else"
    audit = deployment.client("admin").call(
        "GET", f"{institution(deployment)['server_url']}/api/v1/audit",
        params={"patient_id": patient["id"], "action": "record.create"}).json()["items"]
    assert any("identity=confirmed_mismatch differs=name" in e["detail"] and "CMB-CRC-MSB-01068" in e["detail"]
               for e in audit), audit

    job.get_by_role("link", name="Open in viewer").click()
    page.locator("#identity-warning").wait_for(timeout=60000)
    assert f"{patient['last_name']}, Ana" in page.locator("#identity-sivr").inner_text()
    assert "CMB-CRC-MSB-01068" in page.locator("#identity-dicom").inner_text()
    assert page.locator("#overlay-mismatch").inner_text() == "⚠ PATIENT MISMATCH"
    wait_shown(page, "d.shownPlane === 'native'")
    shot(page, shots, "91-upload-confirmed-viewer-both-patients", full_page=False)


def test_images_of_the_patient_are_uploaded_without_a_question(page, deployment, ct_series, tmp_path):
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = as_patient(derived_series(ct_series, tmp_path / "s", first=14, count=3), patient, tmp_path / "own")
    open_upload_page(page, deployment, patient)
    page.get_by_label("DICOM files").set_input_files(files)
    page.locator("#file-list").get_by_text("3 DICOM files chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    job = page.locator(".upload-job").first
    job.locator(".upload-outcome > *").first.wait_for(timeout=60000)
    assert job.locator(".success").is_visible(), job.inner_text()
    assert page.get_by_role("dialog").count() == 0
    assert len(records_of(deployment, patient)) == 1


def test_the_question_fits_a_phone(browser, deployment, ct_series, tmp_path, shots):
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = derived_series(ct_series, tmp_path / "s", first=18, count=2)
    phone = browser.new_context(viewport=PHONE, base_url=deployment.url("web"), is_mobile=True, has_touch=True)
    try:
        small = phone.new_page()
        open_upload_page(small, deployment, patient)
        small.get_by_label("DICOM files").set_input_files(files)
        small.locator("#file-list").get_by_text("2 DICOM files chosen").wait_for()
        small.get_by_role("button", name="Upload").click()
        dialog = small.get_by_role("dialog")
        dialog.wait_for()
        box = dialog.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        confirm = dialog.get_by_role("button", name=f"Upload anyway for {patient['last_name']}, Ana")
        confirm.scroll_into_view_if_needed()
        button = confirm.bounding_box()
        assert button["x"] >= box["x"] and button["x"] + button["width"] <= box["x"] + box["width"]
        shot(small, shots, "92-phone-upload-identity-dialog", full_page=False)
        confirm.click()
        job = small.locator(".upload-job").first
        job.locator(".upload-outcome > *").first.wait_for(timeout=60000)
        assert job.locator(".success").is_visible(), job.inner_text()
        assert len(records_of(deployment, patient)) == 1
    finally:
        phone.close()


def test_a_mismatch_found_only_by_the_institution_asks_before_registering(page, deployment, ct_series, tmp_path):
    """Deflated files are not read in the browser: the institution finds the mismatch from the node's
    receipt, and the page asks the same question before registering; Cancel leaves it unregistered."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = []
    for number, source in enumerate(derived_series(ct_series, tmp_path / "s", first=22, count=2)):
        ds = pydicom.dcmread(source)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        files.append(tmp_path / f"deflated-{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    open_upload_page(page, deployment, patient)
    page.get_by_label("DICOM files").set_input_files(files)
    page.locator("#file-list").get_by_text("2 DICOM files chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=60000)
    assert page.locator(".identity-compare-dicom").first.inner_text() == "CMB-CRC-MSB-01068"
    dialog.get_by_role("button", name="Cancel").click()
    error = page.locator(".upload-job .form-error")
    error.wait_for()
    assert "not registered" in error.inner_text() and "work list" in error.inner_text()
    assert records_of(deployment, patient) == []

    error.locator("xpath=..").get_by_role("button", name="Retry with the same files and labels").click()
    page.get_by_role("dialog").get_by_role("button", name=f"Register anyway for {patient['last_name']}, Ana").click()
    job = page.locator(".upload-job").first
    job.locator(".success").wait_for(timeout=60000)
    assert len(records_of(deployment, patient)) == 1


def test_leaving_the_page_while_asked_sends_nothing(page, deployment, ct_series, tmp_path):
    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    open_upload_page(page, deployment, patient)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.get_by_label("DICOM files").set_input_files(derived_series(ct_series, tmp_path / "s", first=26, count=2))
    page.locator("#file-list").get_by_text("2 DICOM files chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("dialog").wait_for()
    page.go_back()  # to the patient's page
    page.get_by_role("link", name="Upload DICOM").wait_for()
    assert page.get_by_role("dialog").count() == 0
    assert posts == [] and records_of(deployment, patient) == []
