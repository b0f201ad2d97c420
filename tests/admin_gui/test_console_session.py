"""The session over time, against private deployments: background token renewal, the absolute
session limit and deactivation sending the console back to login with a message, and servers
that go away mid-session (and come back) without freezing or crashing the window."""

from __future__ import annotations

import pytest
from conftest import screenshot
from driving import WAIT_MS, log_in, log_in_admin, open_screen, table_values, wait_idle
from PySide6.QtCore import Qt

from admin_gui.api_client import ApiClient

pytestmark = pytest.mark.gui


def test_token_is_renewed_in_the_background_until_the_session_limit(qtbot, window, private_deployment):
    deployment = private_deployment(toplevel_tokens={"access_ttl_s": 2, "session_max_s": 4}, nodes=False)
    log_in_admin(qtbot, window, deployment)
    first = window.client.credentials.access_token
    assert window.renew_timer.isActive()
    qtbot.waitUntil(lambda: window.client is not None and window.client.credentials.access_token != first,
                    timeout=WAIT_MS)
    assert window.pages.currentWidget() is window.console  # renewed, still signed in

    qtbot.waitUntil(lambda: window.console is None, timeout=WAIT_MS)
    assert window.pages.currentWidget() is window.login
    message = window.login.banner.text()
    assert message.startswith("Your session has ended — sessions last at most")
    assert message.endswith("log in again.")
    assert window.login.username.text() == "admin" and window.login.password.text() == ""
    screenshot(window, "login-session-ended")


def test_deactivation_ends_the_session_at_the_next_call(qtbot, window, gui_deployment):
    deployment = gui_deployment
    boss = ApiClient(deployment.url("toplevel"), deployment.ca_cert)
    boss.login(**deployment.users["admin"])
    second = boss.post("/api/v1/users", {
        "username": "second.admin", "password": "second-admin-pw", "full_name": "Second Admin",
        "role": "sysadmin", "institution_id": deployment.layout.institutions[0]["id"]})
    log_in(qtbot, window, deployment, "second.admin", "second-admin-pw")
    screen = open_screen(qtbot, window, "Institutions")

    boss.put(f"/api/v1/users/{second['id']}", {"active": False})
    qtbot.mouseClick(screen.refresh_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert window.console is None
    assert window.login.banner.text().startswith("Your session has ended — ")

    log_in(qtbot, window, deployment, "second.admin", "second-admin-pw")
    assert window.login.banner.text() == "Wrong username or password"  # as for a wrong password: nothing confirmed


def test_servers_going_away_mid_session(qtbot, window, private_deployment):
    deployment = private_deployment()
    log_in_admin(qtbot, window, deployment)
    institutions = open_screen(qtbot, window, "Institutions")
    assert table_values(institutions, "Name") == ["Demo Hospital", "Second Clinic"]

    deployment.stop_instance("institution-1")
    nodes = open_screen(qtbot, window, "Render nodes")
    server = deployment.layout.institutions[0]["server_url"].removeprefix("https://")
    assert nodes.banner.text() == f"Cannot reach {server}: check the address and that the server is running."
    health = open_screen(qtbot, window, "Node health")
    qtbot.waitUntil(lambda: not health.busy, timeout=WAIT_MS)
    rows = {r["institution_name"]: r for r in health.model.rows()}
    assert rows["Demo Hospital"]["status"] == "down"
    assert "Cannot reach" in rows["Demo Hospital"]["problem"]
    screenshot(window, "node-health-server-down")

    deployment.stop_instance("toplevel")
    institutions = open_screen(qtbot, window, "Institutions")
    qtbot.mouseClick(institutions.refresh_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    top = deployment.url("toplevel").removeprefix("https://")
    assert institutions.banner.text() == f"Cannot reach {top}: check the address and that the server is running."
    assert window.console is not None  # an unreachable server is not a logout
    assert table_values(institutions, "Name") == ["Demo Hospital", "Second Clinic"]  # last good data kept
    screenshot(window, "institutions-server-down")

    window.renew()
    wait_idle(qtbot, window)
    assert "Could not renew the session" in window.statusBar().currentMessage()
    assert window.renew_timer.isActive()  # retried later

    for name in ("toplevel", "institution-1"):
        instance = next(i for i in deployment.instances if i.name == name)
        deployment.start_instance(instance)
        deployment.wait_healthy(instance)
    qtbot.mouseClick(institutions.refresh_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert institutions.banner.text() == ""
    assert table_values(institutions, "Name") == ["Demo Hospital", "Second Clinic"]
