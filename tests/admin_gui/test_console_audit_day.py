"""The audit log screen through an administrator's working day: the servers it offers are the
ones the administrator may read, and the results shown are those of the last search asked."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from driving import WAIT_MS, table_values
from fake_servers import INSTITUTION_ID, SYSTEM_ADMIN_USER

from admin_gui.screens.audit import AuditScreen
from shared.roles import INSTITUTION_ADMIN

pytestmark = pytest.mark.gui

INSTITUTION_ADMIN_USER = {**SYSTEM_ADMIN_USER, "username": "ines", "role": INSTITUTION_ADMIN}


def _shown(qtbot, screen: AuditScreen) -> AuditScreen:
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    return screen


def test_an_institution_admin_is_offered_only_the_render_nodes_of_their_institution(qtbot, fake_sivr):
    """A render node's audit log is for its own institution's administrators (`shared.audit`): the
    Server list offered an institution admin every institution's render nodes, and choosing another
    institution's node got a 403 in the banner and an access.denied entry in that node's log."""
    other = {**fake_sivr.institution("Other Clinic"), "id": "44444444-4444-4444-8444-444444444444"}
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution("Demo Hospital"), other]
    fake_sivr.answers["/api/v1/nodes"] = [fake_sivr.node(1)]
    fake_sivr.answers["/api/v1/audit"] = []
    ctx = fake_sivr.context({**INSTITUTION_ADMIN_USER, "institution_id": INSTITUTION_ID})
    screen = _shown(qtbot, AuditScreen(ctx))
    offered = [screen.source.itemText(i) for i in range(screen.source.count())]
    assert offered == ["Toplevel server", "Demo Hospital (institution server)",
                       "Demo Hospital › render-1 (render node)"], offered


def test_an_earlier_search_answering_last_does_not_replace_the_later_one(qtbot, fake_sivr, fake_context):
    """Search for one user (Enter in the User box), then, while the server is still slow to answer,
    for another: the first search's answer came last and the table showed its entries under the
    second search's filters."""
    release = threading.Event()

    def audit(handler):
        user = parse_qs(urlsplit(handler.path).query).get("username", [""])[0]
        if user == "alice":
            release.wait(WAIT_MS / 1000)
        return 200, {"items": [{"id": user or "all", "username": user, "action": "auth.login"}], "total": 1}

    fake_sivr.answers["/api/v1/institutions"] = []
    fake_sivr.answers["/api/v1/audit"] = audit
    screen = _shown(qtbot, AuditScreen(fake_context))
    screen.username.setText("alice")
    screen.username.returnPressed.emit()
    qtbot.waitUntil(lambda: any(c["query"].get("username") == ["alice"] for c in fake_sivr.seen), timeout=WAIT_MS)
    screen.username.setText("bob")
    screen.username.returnPressed.emit()
    qtbot.waitUntil(lambda: table_values(screen, "User") == ["bob"], timeout=WAIT_MS)
    release.set()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    assert table_values(screen, "User") == ["bob"]
    assert screen.search_button.isEnabled()


def test_an_earlier_patient_search_answering_last_does_not_replace_the_later_one(qtbot, fake_sivr, fake_context):
    """In "Find…", search for one patient, then, while the server is still slow to answer, for
    another: the first search's patients came last and replaced the second's in the picker, and
    OK then put the wrong patient's id in the audit filter."""
    release = threading.Event()

    def patients(handler):
        query = parse_qs(urlsplit(handler.path).query)
        name = query.get("q", query.get("insurance_number", [""]))[0]
        if name == "novak":
            release.wait(WAIT_MS / 1000)
        return 200, {"items": [{"id": f"id-{name}", "last_name": name, "first_name": "Jana"}], "total": 1}

    fake_sivr.answers["/api/v1/institutions"] = []
    fake_sivr.answers["/api/v1/audit"] = []
    fake_sivr.answers["/api/v1/patients"] = patients
    screen = _shown(qtbot, AuditScreen(fake_context))
    screen.find_patient()
    picker = screen.picker
    picker.query.setText("novak")
    picker.query.returnPressed.emit()
    qtbot.waitUntil(lambda: any(c["query"].get("q") == ["novak"] for c in fake_sivr.seen), timeout=WAIT_MS)
    picker.query.setText("kovac")
    picker.query.returnPressed.emit()
    qtbot.waitUntil(lambda: table_values(picker, "Last name") == ["kovac"], timeout=WAIT_MS)
    release.set()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    assert table_values(picker, "Last name") == ["kovac"]
    picker.buttons.accepted.emit()
    assert screen.patient.text() == "id-kovac"
