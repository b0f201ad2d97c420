"""Node health against many render nodes (fake_servers.FakeSivr): a bad day's dozens of
unreachable nodes, and registries far longer than a real one."""

from __future__ import annotations

import pytest
from driving import WAIT_MS
from PySide6.QtWidgets import QApplication

from admin_gui.screens.node_health import PROBLEMS_LISTED, NodeHealthScreen

pytestmark = pytest.mark.gui


@pytest.fixture
def screen(qtbot, fake_context):
    screen = NodeHealthScreen(fake_context)
    qtbot.addWidget(screen)
    screen.auto.setChecked(False)  # rounds when the test says
    screen.resize(1280, 800)
    screen.show()
    qtbot.waitExposed(screen)
    return screen


def _registry(fake_sivr, nodes: list[dict]) -> None:
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution()]
    fake_sivr.answers["/api/v1/nodes"] = nodes


def _round(qtbot, screen: NodeHealthScreen) -> None:
    screen.refresh()
    qtbot.waitUntil(lambda: not screen.busy and screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    for _ in range(3):  # the layout requests the last answers posted
        QApplication.processEvents()


def test_many_unreachable_nodes_leave_the_table_its_room(qtbot, screen, fake_sivr):
    """Each unreachable node added a line to the problems label, which grew without limit: 40 of
    them (on a bad day, when the screen is needed) left the table one row. The box stops at a few
    lines and scrolls, and lists the first PROBLEMS_LISTED; the table has every node's problem."""
    nodes = [fake_sivr.node(i) for i in range(PROBLEMS_LISTED + 20)]
    _registry(fake_sivr, nodes)
    for i in range(len(nodes)):
        fake_sivr.answers[f"/node-{i}/api/v1/node"] = (503, {"error": {"code": "unavailable",
                                                                       "message": f"node {i} is starting"}})
    _round(qtbot, screen)
    assert screen.summary.text() == f"{len(nodes)} nodes · 0 reachable · {len(nodes)} unreachable"
    listed = screen.problems.text().split("\n")
    assert len(listed) == PROBLEMS_LISTED + 1
    assert listed[-1] == "… and 20 more: the table's last column gives every node's problem."
    assert all(row["problem"] == f"node {i} is starting" for i, row in enumerate(screen.model.rows()))
    assert screen.problems.height() < 10 * screen.problems.fontMetrics().lineSpacing()
    assert screen.minimumSizeHint().height() < 800
    assert screen.table.view.viewport().height() > 400
