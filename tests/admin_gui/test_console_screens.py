"""Every management screen driven against the real toplevel and institution daemons:
create, edit, delete through the forms, bad input refused in the dialog, server refusals shown
in words, tables sorted and filtered. Screenshots of each screen go to test-artifacts/admin_gui/."""

from __future__ import annotations

import time

import pytest
from conftest import screenshot
from driving import WAIT_MS, answer, fill, log_in_admin, open_screen, save, table_values, wait_idle
from PySide6.QtCore import QDateTime, Qt

from admin_gui.api_client import ApiClient, ApiError
from daemons.demo import DEMO_CT
from daemons.deployment import free_port

pytestmark = pytest.mark.gui


@pytest.fixture(scope="session")
def admin_api(gui_deployment) -> ApiClient:
    """The same HTTP API the console uses, to check what the console did on the server."""
    client = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    client.login(**gui_deployment.users["admin"])
    return client


@pytest.fixture(scope="session")
def render_node_url(gui_deployment) -> str:
    """Demo Hospital's render node, started by the deployment."""
    return gui_deployment.layout.institutions[0]["nodes"][0]["url"]


@pytest.fixture
def console(qtbot, window, gui_deployment):
    log_in_admin(qtbot, window, gui_deployment)
    return window


def institution_id(gui_deployment, number: int) -> str:
    return gui_deployment.layout.institutions[number]["id"]


def test_institutions_crud(qtbot, console, admin_api):
    screen = open_screen(qtbot, console, "Institutions")
    assert table_values(screen, "Name") == ["Demo Hospital", "Second Clinic"]

    screen.create()
    dialog = screen.dialog
    fill(dialog, name="", server_url="http://clinic.example.org")
    save(qtbot, console, dialog)
    assert dialog.isVisible()
    assert dialog.error.text() == ("Name is required.\nServer URL must start with https:// "
                                   "(every SIVR server uses TLS).")
    screenshot(dialog, "institution-form-error")

    fill(dialog, name="Test Clinic", address="Zaloška 7, Ljubljana",
         server_url="https://clinic.example.org:5002")
    save(qtbot, console, dialog)
    assert not dialog.isVisible()
    assert screen.banner.text() == "Institution Test Clinic saved."
    assert "Test Clinic" in table_values(screen, "Name")
    on_server = {i["name"]: i for i in admin_api.list_all("/api/v1/institutions")}
    assert on_server["Test Clinic"]["server_url"] == "https://clinic.example.org:5002"

    screen.table.filter.setText("zaloška")
    assert table_values(screen, "Name") == ["Test Clinic"]
    screen.table.filter.setText("no such place")
    assert table_values(screen, "Name") == []
    assert screen.table.empty.isVisible() and screen.table.empty.text() == "No row matches the filter."
    assert screen.table.count.text() == "0 of 3 shown"
    screen.table.filter.setText("")
    screen.table.view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    assert table_values(screen, "Name") == ["Test Clinic", "Second Clinic", "Demo Hospital"]

    assert screen.table.select_where(lambda r: r["name"] == "Test Clinic")
    screen.edit(screen.table.selected())
    fill(screen.dialog, name="Test Clinic East")
    save(qtbot, console, screen.dialog)
    assert "Test Clinic East" in table_values(screen, "Name")
    screenshot(console, "institutions")

    assert screen.table.select_where(lambda r: r["name"] == "Demo Hospital")
    screen.remove(screen.table.selected())
    answer(qtbot, console, screen.confirm_box, yes=True)
    assert screen.banner.property("kind") == "error"
    assert screen.banner.text()  # the server's words: users still belong to it
    assert "Demo Hospital" in table_values(screen, "Name")

    screen.table.select_where(lambda r: r["name"] == "Test Clinic East")
    screen.remove(screen.table.selected())
    answer(qtbot, console, screen.confirm_box, yes=True)
    assert "Test Clinic East" not in table_values(screen, "Name")
    assert "Test Clinic East" not in {i["name"] for i in admin_api.list_all("/api/v1/institutions")}
    screen.table.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)


def test_users_create_edit_deactivate_reset_delete(qtbot, console, admin_api, gui_deployment):
    screen = open_screen(qtbot, console, "Users")
    assert set(table_values(screen, "Username")) >= {"admin", "dr.house"}

    screen.create()
    dialog = screen.dialog
    fill(dialog, username="jnovak", full_name="Dr. Jana Novak", email="jana@", role="physician",
         institution_id=institution_id(gui_deployment, 0), password="short", password2="short")
    save(qtbot, console, dialog)
    assert dialog.error.text() == ("Email 'jana@' is not an email address.\n"
                                   "Password must be at least 10 characters.")

    fill(dialog, username="dr.house", email="jana@example.org",
         password="correct-horse-1", password2="correct-horse-1")
    save(qtbot, console, dialog)
    assert dialog.isVisible()
    assert "dr.house" in dialog.error.text()  # the server's conflict message, in the dialog
    screenshot(dialog, "user-form-server-error")

    fill(dialog, username="jnovak")
    save(qtbot, console, dialog)
    assert not dialog.isVisible()
    assert screen.banner.text() == "User jnovak created."
    created = next(u for u in admin_api.list_all("/api/v1/users") if u["username"] == "jnovak")
    assert created["full_name"] == "Dr. Jana Novak" and created["role"] == "physician"

    screen.table.filter.setText("novak")
    assert table_values(screen, "Username") == ["jnovak"]
    assert table_values(screen, "Institution") == ["Demo Hospital"]
    screen.table.view.selectRow(0)

    screen.edit(screen.table.selected())
    fill(screen.dialog, role="sysadmin", institution_id=institution_id(gui_deployment, 1))
    save(qtbot, console, screen.dialog)
    assert table_values(screen, "Role") == ["System administrator"]
    assert table_values(screen, "Institution") == ["Second Clinic"]

    screen.table.view.selectRow(0)
    assert screen.toggle_button.text() == "Deactivate"
    qtbot.mouseClick(screen.toggle_button, Qt.MouseButton.LeftButton)
    answer(qtbot, console, screen.confirm_box, yes=True)
    assert table_values(screen, "Active") == ["no"]
    assert admin_api.get(f"/api/v1/users/{created['id']}")["active"] is False
    screen.table.view.selectRow(0)
    assert screen.toggle_button.text() == "Reactivate"
    screenshot(console, "users")
    qtbot.mouseClick(screen.toggle_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, console)
    assert table_values(screen, "Active") == ["yes"]

    screen.table.view.selectRow(0)
    screen.reset_password(screen.table.selected())
    fill(screen.dialog, password="brand-new-password", password2="brand-new-passw0rd")
    save(qtbot, console, screen.dialog)
    assert screen.dialog.error.text() == "The two passwords differ."
    fill(screen.dialog, password2="brand-new-password")
    save(qtbot, console, screen.dialog)
    assert screen.banner.text() == "Password of jnovak reset."
    assert ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert).login(
        "jnovak", "brand-new-password")["username"] == "jnovak"

    screen.table.view.selectRow(0)
    screen.remove(screen.table.selected())
    answer(qtbot, console, screen.confirm_box, yes=True)
    assert table_values(screen, "Username") == []
    assert "jnovak" not in {u["username"] for u in admin_api.list_all("/api/v1/users")}


def test_an_admin_cannot_deactivate_themself(qtbot, console, admin_api):
    """On their own row the console offers no Deactivate, Reset password or Delete (each disabled,
    its tooltip saying why), and the server still refuses each when asked directly."""
    screen = open_screen(qtbot, console, "Users")
    assert screen.table.select_where(lambda r: r["username"] == "admin")
    for button, why in ((screen.toggle_button, "deactivate your own account"),
                        (screen.reset_button, "Change my password…"),
                        (screen.delete_button, "delete your own account")):
        assert not button.isEnabled()
        assert why in button.toolTip()
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, console)
    assert not hasattr(screen, "confirm_box") and screen.dialog is None  # a disabled button does nothing
    me = admin_api.get("/api/v1/me")
    with pytest.raises(ApiError) as deactivated:
        admin_api.put(f"/api/v1/users/{me['id']}", {"active": False})
    assert deactivated.value.status == 409 and "deactivate your own account" in deactivated.value.message
    with pytest.raises(ApiError) as deleted:
        admin_api.delete(f"/api/v1/users/{me['id']}")
    assert deleted.value.status == 409
    with pytest.raises(ApiError) as reset:
        admin_api.post(f"/api/v1/users/{me['id']}/password", {"new_password": "another-password-1"})
    assert reset.value.status == 403
    assert admin_api.get("/api/v1/me")["active"] is True
    screen.table.select_where(lambda r: r["username"] == "dr.house")
    assert screen.toggle_button.isEnabled() and screen.reset_button.isEnabled() and screen.delete_button.isEnabled()
    assert not screen.toggle_button.toolTip()


def test_record_types_crud(qtbot, console, admin_api):
    screen = open_screen(qtbot, console, "Record types")
    assert "CT" in table_values(screen, "Code")
    screen.create()
    fill(screen.dialog, code="c t", name="")
    save(qtbot, console, screen.dialog)
    assert screen.dialog.error.text() == ("Code must be 1-16 letters, digits, _ or - (e.g. CT, MR, US).\n"
                                          "Name is required.")
    fill(screen.dialog, code="nm", name="Nuclear medicine")
    save(qtbot, console, screen.dialog)
    assert screen.banner.text() == "Record type NM saved."
    assert {"code": "NM", "name": "Nuclear medicine"}.items() <= next(
        t for t in admin_api.list_all("/api/v1/record-types") if t["code"] == "NM").items()

    screen.create()
    fill(screen.dialog, code="CT", name="Duplicate")
    save(qtbot, console, screen.dialog)
    assert screen.dialog.isVisible() and screen.dialog.error.text()
    screen.dialog.reject()

    screen.table.select_where(lambda r: r["code"] == "NM")
    screen.edit(screen.table.selected())
    fill(screen.dialog, name="Nuclear medicine (PET/SPECT)")
    save(qtbot, console, screen.dialog)
    assert "Nuclear medicine (PET/SPECT)" in table_values(screen, "Name")
    screenshot(console, "record-types")

    screen.table.select_where(lambda r: r["code"] == "NM")
    screen.remove(screen.table.selected())
    answer(qtbot, console, screen.confirm_box, yes=True)
    assert "NM" not in table_values(screen, "Code")


def test_render_nodes_on_the_institution_server(qtbot, console, gui_deployment, render_node_url, admin_api):
    screen = open_screen(qtbot, console, "Render nodes")
    assert screen.institution.currentText() == "Demo Hospital"
    demo_server = gui_deployment.layout.institutions[0]["server_url"]
    assert screen.server_label.text() == demo_server

    screen.create()
    fill(screen.dialog, name="render-a", url="render1.example.org")
    save(qtbot, console, screen.dialog)
    assert screen.dialog.error.text() == "Node URL must start with https:// (every SIVR server uses TLS)."
    fill(screen.dialog, url=render_node_url, receipt_key="not-a-key")
    save(qtbot, console, screen.dialog)
    assert "raw Ed25519 public key in base64" in screen.dialog.error.text()
    receipt_key = gui_deployment.layout.institutions[0]["nodes"][0]["receipt_key"]
    fill(screen.dialog, receipt_key=receipt_key)
    save(qtbot, console, screen.dialog)
    assert screen.banner.text() == "Node render-a saved."
    assert table_values(screen, "Name") == ["render-a"]
    assert table_values(screen, "URL") == [render_node_url]

    screen.table.view.selectRow(0)
    screen.edit(screen.table.selected())
    fill(screen.dialog, name="render-main", store="s3:https://s3.example.org:8333/sivr/north")
    save(qtbot, console, screen.dialog)
    assert table_values(screen, "Name") == ["render-main"]
    assert table_values(screen, "Shared store") == ["s3:https://s3.example.org:8333/sivr/north"]
    registry = admin_api.for_server(demo_server).list_all("/api/v1/nodes")
    assert [n["receipt_key"] for n in registry] == [receipt_key]  # kept by the edit
    screenshot(console, "render-nodes")

    screen.table.view.selectRow(0)  # the key suspected stolen: cleared, it is removed, and the banner says so
    screen.edit(screen.table.selected())
    fill(screen.dialog, receipt_key="")
    save(qtbot, console, screen.dialog)
    assert screen.banner.text().startswith("Node render-main saved without a receipt key: no upload on it")
    assert [n["receipt_key"] for n in admin_api.for_server(demo_server).list_all("/api/v1/nodes")] == [None]

    screen.institution.setCurrentIndex(screen.institution.findText("Second Clinic"))
    wait_idle(qtbot, console)
    assert table_values(screen, "Name") == []  # its registry is readable, and empty
    assert screen.table.empty.isVisible()
    assert screen.table.empty.text() == "No render nodes registered on this institution's server yet."
    assert screen.new_button.isEnabled()  # a system admin administers every institution's nodes

    screen.institution.setCurrentIndex(screen.institution.findText("Demo Hospital"))
    wait_idle(qtbot, console)
    screen.table.view.selectRow(0)
    screen.remove(screen.table.selected())
    answer(qtbot, console, screen.confirm_box, yes=True)
    assert table_values(screen, "Name") == []


def put_a_record_to_work(deployment, node_url: str) -> None:
    """As a physician: upload a few real CT slices to the node, load them and render one frame,
    so the node's figures (records, memory, latency) are not all zero."""
    session = deployment.client("physician").session  # a token exchanged for the node, as the viewer does
    files = sorted(DEMO_CT.glob("*.dcm"))[:4]
    upload = session.post(f"{node_url}/api/v1/records", timeout=120,
                          files=[("files", (f.name, f.read_bytes(), "application/dicom")) for f in files])
    assert upload.status_code in (200, 201), upload.text
    record = upload.json()["id"]
    session.post(f"{node_url}/api/v1/records/{record}/load", timeout=30).raise_for_status()
    deadline = time.monotonic() + 60
    while session.get(f"{node_url}/api/v1/records/{record}/status", timeout=30).json()["state"] != "ready":
        assert time.monotonic() < deadline, "the record did not load"
        time.sleep(0.2)
    session.get(f"{node_url}/api/v1/records/{record}/frames/0", timeout=60).raise_for_status()


def test_node_health_shows_each_node_and_notices_one_going_down(qtbot, console, gui_deployment, admin_api):
    demo = gui_deployment.layout.institutions[0]
    node_url = demo["nodes"][0]["url"]
    put_a_record_to_work(gui_deployment, node_url)
    server = admin_api.for_server(demo["server_url"])
    dead_url = f"https://127.0.0.1:{free_port()}"
    nodes = [server.post("/api/v1/nodes", {"name": "render-up", "url": node_url}),
             server.post("/api/v1/nodes", {"name": "render-dead", "url": dead_url})]
    instance = next(i for i in gui_deployment.instances if i.url == node_url)
    try:
        screen = open_screen(qtbot, console, "Node health")
        assert screen.timer.isActive()
        qtbot.waitUntil(lambda: not screen.busy, timeout=WAIT_MS)
        rows = {r["name"]: r for r in screen.model.rows()}
        up = rows["render-up"]
        assert up["status"] == "up"
        assert up["records_stored"] >= 1 and up["records_loaded"] >= 1
        assert 0 < up["memory_used_bytes"] <= up["memory_budget_bytes"]
        assert up["render_latency_ms"]["p95"] > 0
        assert rows["render-dead"]["status"] == "down"
        assert "Cannot reach" in rows["render-dead"]["problem"]
        assert screen.summary.text() == "2 nodes · 1 reachable · 1 unreachable"
        shown = dict(zip(table_values(screen, "Node"), table_values(screen, "p95"), strict=True))
        assert shown["render-up"].endswith(" ms")
        assert "render-dead" in screen.problems.text()
        screenshot(console, "node-health")

        gui_deployment.stop_instance(instance.name)
        screen.poll()  # what the timer does
        qtbot.waitUntil(lambda: not screen.busy, timeout=WAIT_MS)
        rows = {r["name"]: r for r in screen.model.rows()}
        assert rows["render-up"]["status"] == "down"
        assert screen.summary.text().startswith("2 nodes · 0 reachable · 2 unreachable")

        console.console.open_screen("Users")
        assert not screen.timer.isActive()  # no polling while nobody looks
    finally:
        if instance.name not in gui_deployment.processes:
            gui_deployment.start_instance(instance)
            gui_deployment.wait_healthy(instance)
        for node in nodes:
            server.delete(f"/api/v1/nodes/{node['id']}")


def test_audit_search_by_user_patient_and_time(qtbot, console, admin_api, gui_deployment):
    patient = admin_api.post("/api/v1/patients", {
        "first_name": "Ana", "last_name": "Kovač", "sex": "F", "birth_date": "1970-03-02",
        "insurance_number": "GUI-AUDIT-0001"})
    admin_api.get(f"/api/v1/patients/{patient['id']}")

    screen = open_screen(qtbot, console, "Audit log")
    assert "auth.login" in table_values(screen, "Action")

    screen.username.setText("admin")
    screen.action.setCurrentText("auth.login")
    qtbot.mouseClick(screen.search_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, console)
    assert set(table_values(screen, "Action")) == {"auth.login"}
    users = set(table_values(screen, "User"))  # a part of the name: other tests' "second.admin" matches too
    assert "admin" in users and all("admin" in user for user in users), users

    screen.action.setCurrentText("")
    screen.username.setText("")
    screen.patient.setText("not-an-id")
    qtbot.mouseClick(screen.search_button, Qt.MouseButton.LeftButton)
    assert screen.banner.text().startswith("Patient must be an id like")

    screen.patient.setText("")
    screen.find_patient()
    picker = screen.picker
    picker.query.setText("kova")
    picker.search()
    wait_idle(qtbot, console)
    assert table_values(picker, "Last name") == ["Kovač"]
    screenshot(picker, "audit-patient-picker")
    qtbot.mouseClick(picker.buttons.button(picker.buttons.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert screen.patient.text() == patient["id"]
    assert "Kovač, Ana" in screen.patient_name.text()
    qtbot.mouseClick(screen.search_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, console)
    assert set(table_values(screen, "Patient")) == {patient["id"][:8] + "…"}
    screen.table.filter.setText(patient["id"])  # a whole pasted id matches the shortened cells
    assert screen.table.proxy.rowCount() == screen.table.model.rowCount() > 0
    screen.table.filter.setText("")
    assert "patient.read" in table_values(screen, "Action")
    screenshot(console, "audit-log")

    tomorrow = QDateTime.currentDateTime().addDays(1)
    screen.use_since.setChecked(True)
    screen.since.setDateTime(tomorrow)
    qtbot.mouseClick(screen.search_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, console)
    assert table_values(screen, "Action") == []
    assert screen.result_label.text() == "0 matching entries"

    screen.use_until.setChecked(True)
    screen.until.setDateTime(tomorrow.addDays(-2))
    qtbot.mouseClick(screen.search_button, Qt.MouseButton.LeftButton)
    assert screen.banner.text() == "The 'From' time is after the 'To' time."

    screen.use_since.setChecked(False)
    screen.use_until.setChecked(False)
    screen.patient.setText("")
    screen.source.setCurrentIndex(screen.source.findText("Demo Hospital (institution server)"))
    qtbot.mouseClick(screen.search_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, console)
    assert not screen.banner.text()
    assert set(table_values(screen, "Server")) <= {"Demo Hospital"}


def test_audit_of_a_render_node_shows_its_image_views(qtbot, console, gui_deployment, admin_api):
    demo = gui_deployment.layout.institutions[0]
    node_url = demo["nodes"][0]["url"]
    put_a_record_to_work(gui_deployment, node_url)  # views frame 0: a record.view entry within audit.flush_s
    server = admin_api.for_server(demo["server_url"])
    node = server.post("/api/v1/nodes", {"name": "render-audited", "url": node_url})
    try:
        deadline = time.monotonic() + 30
        while not admin_api.for_server(node_url).get("/api/v1/audit", action="record.view")["items"]:
            assert time.monotonic() < deadline, "the node wrote no record.view entry"
            time.sleep(0.5)
        screen = open_screen(qtbot, console, "Audit log")
        label = "Demo Hospital › render-audited (render node)"
        qtbot.waitUntil(lambda: screen.source.findText(label) >= 0, timeout=WAIT_MS)
        screen.source.setCurrentIndex(screen.source.findText(label))
        screen.action.setCurrentText("record.view")
        qtbot.mouseClick(screen.search_button, Qt.MouseButton.LeftButton)
        wait_idle(qtbot, console)
        assert not screen.banner.text()
        assert set(table_values(screen, "Action")) == {"record.view"}
        assert set(table_values(screen, "Server")) == {"Demo Hospital › render-audited"}
    finally:
        server.delete(f"/api/v1/nodes/{node['id']}")


def test_audit_results_come_page_by_page(qtbot, console, monkeypatch):
    monkeypatch.setattr("admin_gui.screens.audit.AUDIT_PAGE", 2)
    screen = open_screen(qtbot, console, "Audit log")
    total = int(screen.result_label.text().split(" of ")[1].split()[0])
    assert total > 4
    assert screen.result_label.text() == f"newest 2 of {total} matching entries"
    assert screen.more_button.isVisible()
    first_page = [row["id"] for row in screen.table.model.rows()]
    qtbot.mouseClick(screen.more_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, console)
    assert screen.result_label.text() == f"newest 4 of {total} matching entries"
    assert screen.table.model.rowCount() == 4
    ids = [row["id"] for row in screen.table.model.rows()]
    assert ids[:2] == first_page and len(set(ids)) == 4  # the next page, appended
