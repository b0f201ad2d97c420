"""A filing undone in the browser (review of session 60): a CT a modality sent, attached from the work
list, then deleted from its patient's page, was kept by the node (the modality's images are not the
physician's to delete) and stayed marked filed: on no patient's page and not on the work list. The
viewer now takes the mark off and says the series is back on the node's work list, and it is."""

from __future__ import annotations

import pytest

from tests.webviewer.helpers import login, new_patient, registered_node
from tests.webviewer.test_browser_worklist import c_store_series

pytestmark = pytest.mark.browser


def test_a_deleted_registration_puts_the_kept_series_back_on_the_work_list(page, deployment):
    node = registered_node(deployment)
    patient = new_patient(deployment)
    dicom_name = f"{patient['last_name']}^{patient['first_name']}".upper()
    record = c_store_series(deployment, patient["insurance_number"], dicom_name,
                            patient["birth_date"].replace("-", ""), "Unfiled again series")
    name = f"{patient['last_name']}, {patient['first_name']}"

    login(page, deployment)
    page.goto("/#/worklist")
    item = page.locator(f'.worklist-item[data-record="{record}"]')
    item.get_by_role("button", name=f"Attach to {name}").click()
    item.get_by_role("link", name="Open the patient's page").click()

    card = page.locator(f'.series-card[data-record="{record}"]')
    card.get_by_role("button", name="Delete", exact=False).first.click()
    card.get_by_role("button", name="Delete record").click()
    alert = page.locator(".alert-info")
    alert.wait_for()
    text = alert.inner_text()
    assert "The render node kept the stored images" in text
    assert f"back on the work list of {node['name']}" in text

    page.goto("/#/worklist")
    page.locator(f'.worklist-item[data-record="{record}"] .worklist-proposal').wait_for()
    receipt = deployment.client("physician").call("POST", f"{node['url']}/api/v1/records/{record}/receipt")
    assert receipt.status_code == 200
