"""The console agrees with the API on who may do what (issue 13, item 1): an institution admin
sees institutions and record types read-only, creates users only in their own institution and
cannot give the system administrator role; the buttons on rows they may not touch stay off."""

from __future__ import annotations

import uuid

import pytest
from driving import WAIT_MS, fill, log_in, open_screen, save, table_values
from PySide6.QtWidgets import QPushButton

from admin_gui.api_client import ApiClient

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def institution_admin(gui_deployment) -> dict[str, str]:
    """An institution admin of the second institution, created by the demo's system admin (no "admin" in the
    name: other tests filter the audit log by that word)."""
    admin = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    admin.login(**gui_deployment.users["admin"])
    credentials = {"username": f"ines.{uuid.uuid4().hex[:6]}", "password": "inst-admin-pass-1"}
    admin.post("/api/v1/users", {**credentials, "full_name": "Ines Admin", "role": "instadmin",
                                 "institution_id": gui_deployment.layout.institutions[1]["id"]})
    return credentials


def _buttons(screen) -> set[str]:
    return {b.text() for b in screen.findChildren(QPushButton) if b.isVisibleTo(screen)}


def test_institution_admin_console(qtbot, window, gui_deployment, institution_admin):
    log_in(qtbot, window, gui_deployment, **institution_admin)
    assert window.console is not None, window.login.banner.text()
    second = gui_deployment.layout.institutions[1]

    for label, noun in (("Institutions", "institution"), ("Record types", "record type")):
        screen = open_screen(qtbot, window, label)
        assert table_values(screen, "Name")  # still readable
        assert not {f"+ New {noun}", "Edit…", "Delete…"} & _buttons(screen), label

    screen = open_screen(qtbot, window, "Users")
    screen.create()
    offered = {name: [screen.dialog.fields[name].itemData(i) for i in range(screen.dialog.fields[name].count())]
               for name in ("role", "institution_id")}
    assert offered == {"role": ["instadmin", "physician"], "institution_id": [second["id"]]}
    fill(screen.dialog, username="dr.second", full_name="Dr. Second", role="physician",
         password="second-pass-1", password2="second-pass-1")
    save(qtbot, window, screen.dialog)
    assert screen.banner.text() == "User dr.second created.", screen.banner.text()

    reset = next(b for b in screen.findChildren(QPushButton) if b.text() == "Reset password…")
    screen.table.select_where(lambda r: r["username"] == "admin")  # the demo's system admin
    assert not reset.isEnabled()
    screen.table.select_where(lambda r: r["username"] == "dr.second")
    assert reset.isEnabled()

    nodes = open_screen(qtbot, window, "Render nodes")
    for index in range(nodes.institution.count()):
        nodes.institution.setCurrentIndex(index)
        mine = nodes.institution.itemData(index)["id"] == second["id"]
        assert nodes.new_button.isEnabled() == mine

    # a node's figures are for its own institution's administrators: the other institution's node is
    # listed as not visible, never asked (which would fail and be audited there as access.denied)
    admin = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    admin.login(**gui_deployment.users["admin"])
    registered = [(admin.for_server(inst["server_url"]),
                   admin.for_server(inst["server_url"]).post("/api/v1/nodes", {
                       "name": f"health-{index}", "url": inst["nodes"][0]["url"]}))
                  for index, inst in enumerate(gui_deployment.layout.institutions)]
    try:
        health = open_screen(qtbot, window, "Node health")
        qtbot.waitUntil(lambda: not health.busy, timeout=WAIT_MS)
        status = {r["name"]: r["status"] for r in health.model.rows() if r.get("id")}
        assert status == {"health-0": "no_access", "health-1": "up"}, status
        assert health.summary.text() == "2 nodes · 1 reachable · 1 of other institutions", health.summary.text()
    finally:
        for server, node in registered:
            server.delete(f"/api/v1/nodes/{node['id']}")
