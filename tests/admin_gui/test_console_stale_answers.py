"""A slow server's late answer to an earlier load never replaces what a later load showed.

A screen reloads when it is shown, on Refresh and after every change: with a server slow to list
(a busy database, 10,000 users over 20 pages), the load started first could answer last.
"""

from __future__ import annotations

import threading

import pytest
from driving import WAIT_MS
from fake_servers import SYSTEM_ADMIN_USER

from admin_gui.screens.institutions import InstitutionsScreen
from admin_gui.screens.nodes import NodesScreen
from admin_gui.screens.users import UsersScreen

pytestmark = pytest.mark.gui


def _first_call_late(before: list, after: list, release: threading.Event):
    """An answer that is `before`, held until `release`, for the first call; `after` at once later."""
    calls = []

    def answer(_handler):
        calls.append(1)
        if len(calls) == 1:
            release.wait(WAIT_MS / 1000)
            return 200, {"items": before, "total": len(before)}
        return 200, {"items": after, "total": len(after)}

    return answer, calls


def _shown(screen, key: str) -> list[str]:
    return sorted(screen.table.model.row_at(row)[key] for row in range(screen.table.model.rowCount()))


@pytest.mark.parametrize("screen_kind", ["institutions", "users", "nodes"])
def test_an_earlier_load_answering_last_does_not_bring_back_what_the_later_one_showed(qtbot, fake_sivr,
                                                                                     fake_context, screen_kind):
    """An institution created (or a user deleted, a node removed) while the screen's first load was
    still coming: the banner said "saved", the later load showed it, then the first load's answer
    arrived and the table showed the server's state before the change, as if it had not happened
    (a second "+ New institution" then got a 409 for a name the table did not show)."""
    release = threading.Event()
    old, new = [fake_sivr.institution("Old Hospital")], [fake_sivr.institution("Old Hospital"),
                                                         {**fake_sivr.institution("New Clinic"), "id": "i2"}]
    if screen_kind == "institutions":
        path, key, screen = "/api/v1/institutions", "name", InstitutionsScreen(fake_context)
        before, after = old, new
    elif screen_kind == "users":
        fake_sivr.answers["/api/v1/institutions"] = old
        path, key, screen = "/api/v1/users", "username", UsersScreen(fake_context)
        gone = {**SYSTEM_ADMIN_USER, "id": "u2", "username": "deleted.user"}
        before, after = [SYSTEM_ADMIN_USER, gone], [SYSTEM_ADMIN_USER]
    else:
        fake_sivr.answers["/api/v1/institutions"] = old
        path, key, screen = "/api/v1/nodes", "name", NodesScreen(fake_context)
        before, after = [fake_sivr.node(1), fake_sivr.node(2)], [fake_sivr.node(1)]
    fake_sivr.answers[path], calls = _first_call_late(before, after, release)
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=WAIT_MS)
    screen.refresh()  # the reload after the change
    qtbot.waitUntil(lambda: len(calls) == 2 and _shown(screen, key) == sorted(r[key] for r in after),
                    timeout=WAIT_MS)
    release.set()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    assert _shown(screen, key) == sorted(r[key] for r in after)
