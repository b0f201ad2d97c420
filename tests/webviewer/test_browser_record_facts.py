"""The browser's upload flow registers a record with the facts its render node signed.

The viewer sends the series' rows, columns, frames, modality and study date with the registration,
as it always has; the institution keeps the node's, from its receipt (`shared.receipts`). A page
whose registration request is rewritten to lie about them (what a tampered viewer or a proxy could
send: MR, 1900-01-01, a million frames) still registers the stored series as it is.
"""

from __future__ import annotations

import json

import pytest

from tests.webviewer.helpers import (
    as_patient,
    derived_series,
    institution,
    login,
    new_patient,
    registered_node,
)

pytestmark = pytest.mark.browser

LIES = {"rows": 65535, "columns": 65535, "frames": 1_000_000, "modality": "MR", "study_date": "1900-01-01"}


def test_a_registration_rewritten_to_other_facts_keeps_the_nodes(page, deployment, ct_series, tmp_path):
    patient = new_patient(deployment)
    node = registered_node(deployment)
    inst = institution(deployment)
    sent: list[dict] = []

    def lie(route, request):
        if request.method != "POST":
            return route.continue_()
        body = {**json.loads(request.post_data or "{}"), **LIES}
        sent.append(body)
        return route.continue_(post_data=json.dumps(body))

    page.route(f"{inst['server_url']}/api/v1/records", lie)
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    page.get_by_role("link", name="Upload DICOM").click()
    page.get_by_role("heading", name="Upload DICOM").wait_for()
    page.get_by_label("Render node").select_option(node["id"])
    folder = tmp_path / "series"
    as_patient(derived_series(ct_series, tmp_path / "derived", first=20, count=3), patient, folder)
    page.get_by_label("…or a whole folder").set_input_files(folder)
    page.locator("#file-list").get_by_text("3 DICOM files chosen").wait_for()
    page.get_by_role("button", name="Upload").click()
    job = page.locator(".upload-job").first
    job.locator(".upload-outcome > *").first.wait_for(timeout=60000)
    assert job.locator(".success").is_visible(), job.inner_text()
    assert sent and sent[0]["frames"] == 1_000_000  # the request did lie

    doctor = deployment.client("physician")
    records = doctor.call("GET", f"{inst['server_url']}/api/v1/records",
                          params={"patient_id": patient["id"]}).json()["items"]
    assert len(records) == 1
    stored = doctor.call("GET", f"{node['url']}/api/v1/records/{records[0]['id']}").json()
    assert {k: records[0][k] for k in ("rows", "columns", "frames", "modality")} == {
        "rows": stored["rows"], "columns": stored["columns"], "frames": 3, "modality": "CT"}
    assert records[0]["study_date"] is not None and records[0]["study_date"] != "1900-01-01"
    assert page.js_errors == []
