"""The work list in the browser (issue 11): series a modality sent by C-STORE wait for a patient;
the matching rule proposes the patient whose insurance number is the PatientID, one click attaches
it and the series is then on that patient's page; a series whose DICOM name disagrees must be chosen."""

from __future__ import annotations

import uuid

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from daemons.deployment import DEMO_DICOM_CALLERS, dicom_endpoint
from daemons.render.ingest.service import series_record_id
from tests.render.synthetic import dataset
from tests.webviewer.helpers import institution, login, new_patient, registered_node, shot

pytestmark = pytest.mark.browser


def c_store_series(deployment, patient_id: str, name: str, birth: str, description: str) -> str:
    """Send a small synthetic CT series to render node 1-1 as a modality would; its record id."""
    series = generate_uid()
    datasets = []
    for number in range(3):
        ds = dataset(series=series, position=float(number))
        ds.StudyInstanceUID = generate_uid() if not datasets else datasets[0].StudyInstanceUID
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, name, birth, "F"
        ds.StudyDate, ds.StudyDescription, ds.SeriesDescription = "20260110", "CT chest", description
        ds.InstanceNumber = number + 1
        datasets.append(ds)
    endpoint = dicom_endpoint(next(i for i in deployment.layout.instances if i.name == "render-1-1"))
    ae = AE(ae_title=DEMO_DICOM_CALLERS[0])
    ae.add_requested_context(CTImageStorage, str(ExplicitVRLittleEndian))
    assoc = ae.associate(endpoint["host"], endpoint["port"], ae_title=endpoint["ae_title"])
    assert assoc.is_established
    try:
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [0, 0, 0]
    finally:
        assoc.release()
    return series_record_id(institution(deployment)["id"], series)


def test_worklist_attaches_by_rule_and_by_choice(page, deployment, shots):
    registered_node(deployment)
    patient = new_patient(deployment)
    birth = patient["birth_date"].replace("-", "")
    dicom_name = f"{patient['last_name']}^{patient['first_name']}".upper()
    matched = c_store_series(deployment, patient["insurance_number"], dicom_name, birth, "Worklist rule series")
    disagreeing = c_store_series(deployment, patient["insurance_number"], "SOMEONE^ELSE", birth,
                                 "Worklist chosen series")

    login(page, deployment)
    page.get_by_role("link", name="Work list").click()
    page.get_by_role("heading", name="Work list").wait_for()
    first = page.locator(f'.worklist-item[data-record="{matched}"]')
    second = page.locator(f'.worklist-item[data-record="{disagreeing}"]')
    first.locator(".worklist-proposal").wait_for()
    assert patient["insurance_number"] in first.inner_text()
    second.locator(".worklist-reason").wait_for()
    assert "name differs" in second.locator(".worklist-reason").inner_text()
    assert second.locator(".worklist-attach").count() == 0  # nothing to confirm before a choice
    shot(page, shots, "40-worklist-proposals")

    first.get_by_role("button", name=f"Attach to {patient['last_name']}, {patient['first_name']}").click()
    first.locator(".worklist-done").wait_for()

    second.get_by_role("button", name=f"Choose {patient['last_name']}, {patient['first_name']}").click()
    second.get_by_role("button", name=f"Attach to {patient['last_name']}, {patient['first_name']}").click()
    second.locator(".worklist-done").wait_for()
    shot(page, shots, "41-worklist-attached")

    # both are on the patient's page now, and off the work list
    first.get_by_role("link", name="Open the patient's page").click()
    page.locator(".record-description", has_text="Worklist rule series").wait_for()  # its card on the page
    page.locator(".record-description", has_text="Worklist chosen series").wait_for()
    shot(page, shots, "42-worklist-patient-page")
    page.get_by_role("link", name="Work list").click()
    page.get_by_role("heading", name="Work list").wait_for()
    page.wait_for_load_state("networkidle")
    assert page.locator(f'.worklist-item[data-record="{matched}"]').count() == 0
    assert page.locator(f'.worklist-item[data-record="{disagreeing}"]').count() == 0

    audit = deployment.client("admin").call(
        "GET", f"{institution(deployment)['server_url']}/api/v1/audit",
        params={"patient_id": patient["id"], "action": "record.create"}).json()["items"]
    details = " ".join(entry["detail"] for entry in audit)
    assert "identity=rule" in details and "identity=chosen" in details and "SOMEONE^ELSE" in details


def test_a_series_of_an_unknown_patient_is_attached_after_creating_the_patient(page, deployment, shots):
    registered_node(deployment)
    number = f"INS{uuid.uuid4().int % 10**10:010d}"
    last = f"Horvat-{uuid.uuid4().hex[:6]}"
    record = c_store_series(deployment, number, f"{last.upper()}^MAJA", "19820214", "Worklist new patient series")

    login(page, deployment)
    page.goto("/#/worklist")
    item = page.locator(f'.worklist-item[data-record="{record}"]')
    item.locator(".worklist-reason").wait_for()
    assert "No SIVR patient has this PatientID" in item.locator(".worklist-reason").inner_text()
    item.get_by_role("link", name="Create the patient").click()
    page.get_by_role("heading", name="New patient").wait_for()
    page.get_by_label("First name").fill("Maja")
    page.get_by_label("Last name").fill(last)
    page.get_by_label("Date of birth").fill("1982-02-14")
    page.get_by_label("Insurance number").fill(number)
    page.get_by_role("button", name="Create patient").click()

    page.get_by_role("heading", name="Work list").wait_for()  # back, and now the rule finds the patient
    item = page.locator(f'.worklist-item[data-record="{record}"]')
    item.locator(".worklist-proposal").wait_for()
    item.get_by_role("button", name=f"Attach to {last}, Maja").click()
    item.locator(".worklist-done").wait_for()
    shot(page, shots, "43-worklist-new-patient")
    item.get_by_role("link", name="Open the patient's page").click()
    page.locator(".record-description", has_text="Worklist new patient series").wait_for()


def test_the_matching_rule_in_the_viewers_own_module(page, deployment):
    """patient_match.js as the page loads it: the issuer, several candidates, missing details."""
    page.goto("/")
    outcomes = page.evaluate("""async () => {
      const { ruleKey, judge } = await import("/static/js/patient_match.js");
      const ana = { id: "a", first_name: "Ana", last_name: "Novak", birth_date: "1970-03-05", insurance_number: "123" };
      const dicom = { name: "NOVAK^ANA", patient_id: "123", issuer: "ZZZS", birth_date: "19700305", sex: "F" };
      return {
        noIssuerConfigured: ruleKey(dicom, ""),
        sameIssuer: ruleKey(dicom, "ZZZS"),
        otherIssuer: "reason" in ruleKey({ ...dicom, issuer: "OTHER" }, "ZZZS"),
        noId: "reason" in ruleKey({ ...dicom, patient_id: " " }, ""),
        one: judge(dicom, [ana]).kind,
        accentsAndCase: judge({ ...dicom, name: "Novák^Ana Marija" }, [ana]).kind,
        several: judge(dicom, [ana, { ...ana, id: "b" }]).kind,
        none: judge(dicom, []).kind,
        otherBirth: judge({ ...dicom, birth_date: "19700306" }, [ana]).reason,
        noBirth: judge({ ...dicom, birth_date: "" }, [ana]).reason,
      };
    }""")
    assert outcomes["noIssuerConfigured"] == {"number": "123"} and outcomes["sameIssuer"] == {"number": "123"}
    assert outcomes["otherIssuer"] and outcomes["noId"]
    assert outcomes["one"] == "match" and outcomes["accentsAndCase"] == "match"
    assert outcomes["several"] == "choose" and outcomes["none"] == "choose"
    assert "birth date differs" in outcomes["otherBirth"] and "no birth date" in outcomes["noBirth"]


def test_the_study_rule_names_a_patientid_that_is_another_insurance_number(page, deployment):
    """Session 62: a series of a study filed to Ana, whose PatientID (of the institution's issuer,
    so an insurance number) is not Ana's, name and birth date alike (a twin, a namesake), was proposed
    for Ana as agreeing: one click filed it as the rule's. Now the PatientID is named as differing,
    so the click is the physician's choice; without an issuer configured PatientIDs are compared by
    no one (hospital numbers are no insurance numbers)."""
    page.goto("/")
    outcomes = page.evaluate("""async () => {
      const { judgeStudy } = await import("/static/js/patient_match.js");
      const ana = { id: "a", first_name: "Ana", last_name: "Novak", birth_date: "1970-03-05", insurance_number: "123" };
      const filed = [{ id: "a", patient: ana, error: "" }];
      const dicom = { name: "NOVAK^ANA", patient_id: "124", issuer: "ZZZS", birth_date: "19700305", sex: "F" };
      return {
        otherNumber: judgeStudy(dicom, filed, "ZZZS").differs,
        sameNumber: judgeStudy({ ...dicom, patient_id: " 123 " }, filed, "ZZZS").differs,
        noIssuerConfigured: judgeStudy(dicom, filed, "").differs,
        anotherIssuer: judgeStudy({ ...dicom, issuer: "HOSPITAL" }, filed, "ZZZS").differs,
        andTheName: judgeStudy({ ...dicom, name: "NOVAK^MARIJA" }, filed, "ZZZS").differs,
      };
    }""")
    assert outcomes["otherNumber"] == ["PatientID"]
    assert outcomes["sameNumber"] == [] and outcomes["noIssuerConfigured"] == [] and outcomes["anotherIssuer"] == []
    assert outcomes["andTheName"] == ["PatientID", "name"]


def test_the_demo_seed_files_its_series(deployment, tmp_path):
    """`sivr demo` registers its CT for the demo patient: it must not also wait on the work list."""
    from daemons.demo import seed_demo_data

    series = generate_uid()
    for number in range(2):
        ds = dataset(series=series, position=float(number))
        ds.PatientID, ds.PatientName = "DEMO-SEED", "DEMO^SEED"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.15.5"  # a study of its own: a study has one patient
        ds.save_as(tmp_path / f"{number}.dcm", enforce_file_format=True)
    seed_demo_data(deployment, deployment.users, tmp_path)
    record = series_record_id(institution(deployment)["id"], series)
    node = registered_node(deployment)
    waiting = deployment.client("physician").call("GET", f"{node['url']}/api/v1/worklist",
                                                  params={"limit": 500}).json()["items"]
    assert record not in {item["id"] for item in waiting}
