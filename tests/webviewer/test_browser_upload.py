"""Uploading DICOM from the browser: a folder with a stray file, a broken file, nothing usable.

The files name the patient they are uploaded for (`as_patient`); images of another patient are
test_browser_upload_identity.py's."""

from __future__ import annotations

import pytest

from tests.webviewer.helpers import (
    as_patient,
    derived_series,
    institution,
    login,
    new_patient,
    registered_node,
    shot,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def patient_upload_page(page, deployment):
    patient = new_patient(deployment)
    node = registered_node(deployment)
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    page.get_by_role("link", name="Upload DICOM").click()
    page.get_by_role("heading", name="Upload DICOM").wait_for()
    # other tests on the shared deployment may register further (unreachable) nodes
    page.get_by_label("Render node").select_option(node["id"])
    return patient


def test_upload_a_folder_skips_the_non_dicom_file_and_registers_the_record(
        page, deployment, ct_series, tmp_path, shots, patient_upload_page):
    patient = patient_upload_page
    folder = tmp_path / "series"
    as_patient(derived_series(ct_series, tmp_path / "derived", first=40, count=8), patient, folder)
    (folder / "README.txt").write_text("exported by the scanner console\n")
    page.get_by_label("…or a whole folder").set_input_files(folder)
    listing = page.locator("#file-list")
    listing.get_by_text("8 DICOM files chosen").wait_for()
    assert "README.txt: not a DICOM file" in listing.inner_text()
    page.get_by_label("Record type").select_option("CT")
    page.get_by_label("Description").fill("CT chest, derived test series")
    shot(page, shots, "13-upload-chosen")
    page.get_by_role("button", name="Upload").click()
    job = page.locator(".upload-job").first
    job.locator(".upload-outcome > *").first.wait_for(timeout=60000)
    assert job.locator(".success").is_visible(), job.inner_text()
    assert job.locator(".upload-progress").evaluate("p => p.value") == 100
    assert "Uploaded 8 slices (512×512, CT)" in job.locator(".success").inner_text()
    assert "Registered as: CT · CT chest, derived test series" in job.locator(".success").inner_text()
    shot(page, shots, "14-upload-done")

    records = deployment.client("physician").call(
        "GET", f"{institution(deployment)['server_url']}/api/v1/records",
        params={"patient_id": patient["id"]}).json()["items"]
    assert len(records) == 1
    assert records[0]["frames"] == 8
    assert records[0]["record_type"] == "CT"
    assert records[0]["description"] == "CT chest, derived test series"


def test_a_broken_dicom_file_is_refused_with_its_name_and_reason(
        page, deployment, ct_series, tmp_path, shots, patient_upload_page):
    files = as_patient(derived_series(ct_series, tmp_path / "derived", first=60, count=2), patient_upload_page,
                       tmp_path / "ok")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 20)
    page.get_by_label("DICOM files").set_input_files([*files, broken])
    page.locator("#file-list").get_by_text("3 DICOM files chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    error = page.locator(".upload-job .form-error")
    error.wait_for(timeout=60000)
    text = error.inner_text()
    assert text.startswith("Upload failed:")
    assert "broken.dcm" in text
    shot(page, shots, "15-upload-broken-file")


def test_only_non_dicom_files_are_not_sent(page, tmp_path, patient_upload_page):
    note = tmp_path / "report.pdf"
    note.write_bytes(b"%PDF-1.4 not an image")
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.get_by_label("DICOM files").set_input_files(note)
    page.locator("#file-list").get_by_text("No DICOM file chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    assert "None of the chosen files is a DICOM file" in page.locator("#upload-result").inner_text()
    assert sent == []
