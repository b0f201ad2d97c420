"""Node health against many render nodes (fake_servers.FakeSivr): a bad day's dozens of
unreachable nodes, and registries far longer than a real one."""

from __future__ import annotations

import threading

import pytest
from driving import WAIT_MS
from fake_servers import SYSTEM_ADMIN_USER
from PySide6.QtWidgets import QApplication

from admin_gui.screens.node_health import PROBLEMS_LISTED, NodeHealthScreen
from admin_gui.screens.users import UsersScreen
from admin_gui.workers import POLLING_THREADS

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


def _figures(number: int) -> dict:
    return {"records_stored": number, "records_loaded": 1, "memory_used_bytes": 1, "memory_budget_bytes": 4,
            "storage_used_bytes": 2048, "render_latency_ms": {"p50": 3, "p95": 9}, "backend_3d": "cpu"}


def _hung(release: threading.Event, number: int):
    """The answer of a node that has accepted the call: its figures once `release` is set."""
    return lambda _handler: (200, _figures(number)) if release.wait(WAIT_MS / 1000) else None


def test_an_answer_draws_nothing_that_sums_up_every_row_until_the_round_is_over(qtbot, screen, fake_sivr,
                                                                                  monkeypatch):
    """Each node's answer copied and searched every row, summed them up four times, rebuilt the
    problems and sized every column through the model, on the GUI thread: a round was quadratic in
    the number of nodes (400 nodes froze the window for a minute, every 15 s). An answer now
    fills its own row; what sums up every row is drawn by the round's last answer (columns sized
    once a round), or by a timer while answers keep arriving."""
    nodes = [fake_sivr.node(i) for i in range(200)]
    _registry(fake_sivr, nodes)
    for i in range(len(nodes)):
        fake_sivr.answers[f"/node-{i}/api/v1/node"] = (200, _figures(i))
    in_answer: list[int] = []
    drawn_in_answers: list[tuple[str, bool]] = []  # (what, whether a node was still to answer)
    resized: list[bool] = []

    node_answered = screen._node_answered

    def answered(*args):
        in_answer.append(1)
        try:
            node_answered(*args)
        finally:
            in_answer.pop()

    def spying(owner, method: str):
        call = getattr(owner, method)

        def spy(*args):
            if in_answer:
                drawn_in_answers.append((method, screen.busy))
            if method == "resizeColumnsToContents":
                resized.append(screen.busy)
            return call(*args)
        monkeypatch.setattr(owner, method, spy)

    monkeypatch.setattr(screen, "_node_answered", answered)
    for owner, method in ((screen.model, "rows"), (screen.summary, "setText"), (screen.problems, "setText"),
                          (screen.table.view, "resizeColumnsToContents")):
        spying(owner, method)

    _round(qtbot, screen)
    assert screen.summary.text() == "200 nodes · 200 reachable"
    assert [row["records_stored"] for row in screen.model.rows()] == list(range(200))
    assert sorted(drawn_in_answers) == [("resizeColumnsToContents", False), ("rows", False), ("setText", False),
                                        ("setText", False)]  # by the last answer alone
    assert resized == [True, False]  # the registry's rows shown, then the round's figures


def test_the_summary_follows_the_answers_while_slow_nodes_keep_the_round_open(qtbot, screen, fake_sivr):
    nodes = [fake_sivr.node(i) for i in range(30)]
    _registry(fake_sivr, nodes)
    release = threading.Event()
    for i in range(len(nodes)):
        fake_sivr.answers[f"/node-{i}/api/v1/node"] = _hung(release, i) if i >= 27 else (200, _figures(i))
    try:
        screen.refresh()
        qtbot.waitUntil(lambda: screen.summary.text() == "30 nodes · 27 reachable · 3 checking", timeout=WAIT_MS)
        assert screen.busy
    finally:
        release.set()
    qtbot.waitUntil(lambda: screen.summary.text() == "30 nodes · 30 reachable", timeout=WAIT_MS)


def test_hung_nodes_hold_up_neither_other_screens_nor_threads_once_the_screen_is_left(qtbot, screen, fake_sivr):
    """Node checks shared the console's one pool with every other call and stayed queued after the
    administrator left the screen: with 40 nodes that accept a call and never answer, the Users
    list waited 15 s behind them. Checks have a pool of their own, and those still queued when
    the screen is left never call their node."""
    nodes = [fake_sivr.node(i) for i in range(40)]
    _registry(fake_sivr, nodes)
    fake_sivr.answers["/api/v1/users"] = [SYSTEM_ADMIN_USER]
    release = threading.Event()
    for i in range(len(nodes)):
        fake_sivr.answers[f"/node-{i}/api/v1/node"] = _hung(release, i)
    users = UsersScreen(screen.ctx)
    qtbot.addWidget(users)

    def checks_called() -> int:
        return sum(1 for path in fake_sivr.paths() if path.endswith("/api/v1/node"))

    try:
        screen.refresh()
        qtbot.waitUntil(lambda: checks_called() == POLLING_THREADS, timeout=WAIT_MS)
        screen.hide()  # the administrator moves on...
        users.refresh()  # ...to the Users screen
        qtbot.waitUntil(lambda: users.model.rowCount() == 1, timeout=WAIT_MS // 4)
        assert checks_called() == POLLING_THREADS  # every thread still held by a hung node
    finally:
        release.set()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    assert checks_called() == POLLING_THREADS  # the queued checks were skipped
    assert not screen.busy
