"""The work list files a study's next series to the patient the study is filed to, as a PACS does.

The work list proposed a patient by the DICOM patient rule only: series 2 of a study whose series 1
was filed to patient A was proposed for nobody (the PatientID an MRN, not an insurance number), the
physician could choose patient B, and learned that a study is one patient's only from the
institution's 409 `study_of_another_patient`. Now the work list asks the institution which patient
the study is filed to (`GET /api/v1/records?study_uid=`, once per study on the page) and proposes
that patient only, saying why.
"""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from daemons.deployment import DEMO_DICOM_CALLERS, dicom_endpoint
from daemons.render.ingest.service import series_record_id
from tests.render.synthetic import dataset
from tests.webviewer.helpers import institution, login, new_patient, registered_node

pytestmark = pytest.mark.browser

DICOM_CALLER = DEMO_DICOM_CALLERS[0]


def c_store_study(deployment, study: str, patient: dict, descriptions: list[str]) -> list[str]:
    """Send one 2-slice CT series per description, all of study `study`, naming `patient` (its
    PatientID a hospital MRN, which is no SIVR insurance number), to render node 1-1; their record ids."""
    endpoint = dicom_endpoint(next(i for i in deployment.layout.instances if i.name == "render-1-1"))
    ae = AE(ae_title=DICOM_CALLER)
    ae.add_requested_context(CTImageStorage, str(ExplicitVRLittleEndian))
    assoc = ae.associate(endpoint["host"], endpoint["port"], ae_title=endpoint["ae_title"])
    assert assoc.is_established
    records = []
    try:
        for description in descriptions:
            series = generate_uid()
            for number in range(2):
                ds = dataset(series=series, position=float(number))
                ds.StudyInstanceUID, ds.PatientID = study, f"MRN-{patient['insurance_number']}"
                ds.PatientName = f"{patient['last_name']}^{patient['first_name']}".upper()
                ds.PatientBirthDate, ds.PatientSex = patient["birth_date"].replace("-", ""), "F"
                ds.StudyDate, ds.StudyDescription, ds.SeriesDescription = "20260110", "CT chest", description
                ds.InstanceNumber = number + 1
                assert assoc.send_c_store(ds).Status == 0
            records.append(series_record_id(institution(deployment)["id"], series))
    finally:
        assoc.release()
    return records


def test_the_next_series_of_a_study_is_proposed_for_the_patient_it_is_filed_to(page, deployment):
    registered_node(deployment)
    patient = new_patient(deployment)
    study = generate_uid()
    first, second = c_store_study(deployment, study, patient, ["Study series 1", "Study series 2"])
    asked = []
    page.on("request", lambda request: asked.append(request.url) if f"study_uid={study}" in request.url else None)

    login(page, deployment)
    page.goto("/#/worklist")
    one = page.locator(f'.worklist-item[data-record="{first}"]')
    two = page.locator(f'.worklist-item[data-record="{second}"]')
    one.locator(".worklist-reason").wait_for()  # nothing filed yet: the rule, which finds no patient
    two.locator(".worklist-reason").wait_for()
    assert "No SIVR patient has this PatientID" in two.inner_text()
    assert len(asked) == 1  # one request for the study, not one per series

    name = f"{patient['last_name']}, {patient['first_name']}"
    one.locator(".worklist-search").fill(patient["last_name"])
    one.get_by_role("button", name="Search").click()
    one.get_by_role("button", name=f"Choose {name}").click()
    one.get_by_role("button", name=f"Attach to {name}").click()
    one.locator(".worklist-done").wait_for()
    # its sibling on the page: now proposed for that patient, saying why, and for no one else
    two.locator(".worklist-study-reason").wait_for()
    assert f"Other series of this study are filed to {name}" in two.inner_text()

    page.reload()
    two = page.locator(f'.worklist-item[data-record="{second}"]')
    two.locator(".worklist-study-reason").wait_for()  # the institution's answer, after a reload
    reason = two.locator(".worklist-study-reason").inner_text()
    assert f"Other series of this study are filed to {name}" in reason and patient["insurance_number"] in reason
    assert two.locator(".worklist-search").count() == 0 and two.locator(".worklist-choose").count() == 0
    two.get_by_role("button", name=f"Attach to {name}").click()
    two.locator(".worklist-done").wait_for()

    records = deployment.client("physician").call(
        "GET", f"{institution(deployment)['server_url']}/api/v1/records", params={"study_uid": study}).json()
    assert {item["id"] for item in records["items"]} == {first, second}
    assert {item["patient_id"] for item in records["items"]} == {patient["id"]}
