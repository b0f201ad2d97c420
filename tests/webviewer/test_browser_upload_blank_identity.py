"""Uploading images that name no patient (a modality's series with an empty PatientName,
PatientBirthDate and PatientID): the browser finds nothing that differs, but the institution registers
them only with the physician's explicit decision (409 `identity_unconfirmed`), so the page asks before
registering, in words that say the images name no patient; Cancel leaves them unregistered."""

from __future__ import annotations

import pytest

from tests.webviewer.helpers import derived_series, new_patient
from tests.webviewer.test_browser_upload_identity import open_upload_page, records_of

pytestmark = pytest.mark.browser


def test_images_naming_no_patient_are_registered_only_after_the_question(page, deployment, ct_series, tmp_path):
    import pydicom

    patient = new_patient(deployment, first_name="Ana", birth_date="1970-03-05")
    files = []
    for number, source in enumerate(derived_series(ct_series, tmp_path / "s", first=40, count=2)):
        ds = pydicom.dcmread(source)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "", "", ""
        files.append(tmp_path / f"blank-{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    open_upload_page(page, deployment, patient)
    page.get_by_label("DICOM files").set_input_files(files)
    page.locator("#file-list").get_by_text("2 DICOM files chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=60000)
    assert dialog.get_by_role("heading").inner_text() == "⚠ The images name no patient"
    assert "no patient name or birth date" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    error = page.locator(".upload-job .form-error")
    error.wait_for()
    assert "the images name no patient" in error.inner_text()
    assert records_of(deployment, patient) == []

    error.locator("xpath=..").get_by_role("button", name="Retry with the same files and labels").click()
    page.get_by_role("dialog").get_by_role("button", name=f"Register anyway for {patient['last_name']}, Ana").click()
    page.locator(".upload-job").first.locator(".success").wait_for(timeout=60000)
    assert len(records_of(deployment, patient)) == 1
