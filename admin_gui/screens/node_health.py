"""Node health: every render node of every institution, polled on a timer.

For each institution the registry comes from its server (`GET /api/v1/nodes`), then each node is
asked for its own figures (`GET /api/v1/node`) in its own background task, so one slow or dead
node neither delays the others nor freezes the window. Rows fill in as answers arrive; a node
that does not answer is shown as unreachable with the reason.
"""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QModelIndex, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
)

from admin_gui.api_client import INSTITUTION_KEYS, ApiError
from admin_gui.context import ConsoleContext
from admin_gui.screens.base import TableScreen
from admin_gui.server_text import one_line
from admin_gui.table_models import BAR_ROLE, STATUS_TEXT, NodeHealthModel, human_bytes, memory_fraction
from admin_gui.widgets import BoundedText, plain_label
from shared.roles import may_administer_institution

INTERVALS_S = [5, 10, 15, 30, 60, 300]
REGISTRY_THREADS = 8
DEFAULT_INTERVAL_S = 15
#: Lines of the problems box shown before it scrolls, and problems listed in it at most (every
#: node's problem is in the table's last column too): a bad day's dozens of unreachable nodes
#: left the table no room, and a registry of thousands would be laid out as one label.
PROBLEM_LINES = 5
PROBLEMS_LISTED = 100
#: How long node answers are gathered before the summary and problems are drawn again: drawing
#: them and sizing every column for each answer, on the GUI thread, made a round quadratic in the
#: number of nodes (400 nodes froze the window for a minute, every round).
REDRAW_MS = 150
#: The most render nodes of one institution's registry the screen asks, every round. Each node
#: asked costs a token exchange at the toplevel (audited once per session and node) and a call to
#: wherever its URL points: a taken-over institution server listing 3,000 nodes made the console
#: send 3,001 exchanges in 46 s, and `list_all` takes 100,000.
MAX_CHECKED_NODES = 1000
_NODE_FIELDS = ("records_stored", "records_loaded", "memory_used_bytes", "memory_budget_bytes",
                "storage_used_bytes", "render_latency_ms", "backend_3d")


def bar_colour(fraction: float) -> QColor:
    """Green while there is room, amber when getting full, red near the budget."""
    if fraction < 0.7:
        return QColor("#2e9d5b")
    if fraction < 0.9:
        return QColor("#e0a028")
    return QColor("#d04437")


def _listed(node: dict[str, Any]) -> bool:
    """A registry entry the screen can ask (its id and URL are text): another one is shown as a
    problem of its registry, not read where a missing key would stop every later node's check."""
    return isinstance(node.get("id"), str) and isinstance(node.get("url"), str)


class MemoryBarDelegate(QStyledItemDelegate):
    """Draws memory used against the budget as a bar with `used / budget` written on it."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        used, budget = index.data(BAR_ROLE) or (None, None)
        fraction = memory_fraction(used, budget)  # None for what no bar can show (and would crash if raised)
        if fraction is None:
            super().paint(painter, option, index)
            return
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        fraction = max(0.0, min(1.0, fraction))
        rect = QRectF(option.rect).adjusted(6, 6, -6, -6)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("#e6e9ef"))
        painter.drawRoundedRect(rect, 4, 4)
        painter.setBrush(bar_colour(fraction))
        painter.drawRoundedRect(QRectF(rect.x(), rect.y(), rect.width() * fraction, rect.height()), 4, 4)
        painter.setPen(QColor("#1d2433"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter,
                         f"{human_bytes(used)} / {human_bytes(budget)}")
        painter.restore()


class NodeHealthScreen(TableScreen):
    title = "Node health"
    subtitle = ("Every render node of the institutions you administer: reachability, records, memory, storage and "
                "render latency. Other institutions' nodes are listed; their figures are for their administrators.")

    def __init__(self, ctx: ConsoleContext, parent=None):
        self.model = NodeHealthModel()
        super().__init__(ctx, self.model, "Filter nodes by institution, name or status…", parent,
                         "No render nodes registered yet — register them under Render nodes.")
        self.finish_toolbar()
        self.auto = QCheckBox("Refresh every")
        self.auto.setChecked(True)
        self.interval = QComboBox()
        for seconds in INTERVALS_S:
            self.interval.addItem(f"{seconds} s" if seconds < 60 else f"{seconds // 60} min", seconds)
        self.interval.setCurrentIndex(INTERVALS_S.index(DEFAULT_INTERVAL_S))
        self.summary = plain_label(object_name="summary")
        self.updated = plain_label(object_name="muted")
        self.toolbar.insertWidget(0, self.summary)
        self.toolbar.insertStretch(1, 1)
        self.toolbar.insertWidget(2, self.updated)
        self.toolbar.insertWidget(3, self.auto)
        self.toolbar.insertWidget(4, self.interval)
        self.problems = BoundedText(PROBLEM_LINES, "problems")
        self.problems.hide()
        self.body.addWidget(self.problems)
        self.table.view.setItemDelegateForColumn(NodeHealthModel.MEMORY_COLUMN, MemoryBarDelegate(self))
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.poll)
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._update_summary)
        self.auto.toggled.connect(self._schedule)
        self.interval.currentIndexChanged.connect(self._schedule)
        #: The round under way, set once it is over (replaced, or the screen hidden): its checks
        #: still queued then skip their call, and its answers still to come are dropped.
        self._round = threading.Event()
        self._outstanding = 0

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._schedule()

    def hideEvent(self, event) -> None:
        """No polling while nobody looks. Left for another screen (not a minimised window, whose
        round goes on), the round's checks still queued are skipped: they held threads, and a
        screen reloads when it is shown again."""
        super().hideEvent(event)
        self.timer.stop()
        if not event.spontaneous():
            self._end_round()

    def _end_round(self) -> None:
        self._round.set()
        self._round = threading.Event()
        self._outstanding = 0

    def _schedule(self, *_: Any) -> None:
        if self.auto.isChecked() and self.isVisible():
            self.timer.start(self.interval.currentData() * 1000)
        else:
            self.timer.stop()

    @property
    def busy(self) -> bool:
        return self._outstanding > 0

    def poll(self) -> None:
        """Timer tick: skip if the previous round is still waiting on slow nodes."""
        if not self.busy:
            self.refresh()

    def refresh(self) -> None:
        self._end_round()
        current = self._round
        self._outstanding = 1
        client, polling_client, caller = self.ctx.client, self.ctx.polling_client, self.ctx.caller

        def registry_of(inst: dict[str, Any]) -> list[dict[str, Any]]:
            base = {"institution_name": inst["name"], "institution_id": inst["id"]}
            # a node shows its figures to its institution's administrators only (GET /api/v1/node):
            # asking anyway would fail and write an access.denied entry on that node every round
            ask = "checking" if may_administer_institution(caller, inst["id"]) else "no_access"
            try:
                nodes = polling_client(inst["server_url"]).list_all("/api/v1/nodes")
            except ApiError as exc:
                status = "no_access" if exc.status == 403 else "down"
                return [{**base, "name": "(node registry)", "url": inst["server_url"],
                         "status": status, "problem": exc.message}]
            if ask == "checking" and len(nodes) > MAX_CHECKED_NODES:
                return [{**base, "name": "(node registry)", "url": inst["server_url"], "status": "down",
                         "problem": f"the registry lists {len(nodes):,} nodes, more than the {MAX_CHECKED_NODES:,} "
                                    "this screen checks; none was asked: is this a SIVR server?"}]
            return [{**node, **base, "status": ask} if _listed(node) else
                    {**base, "name": "(node registry)", "url": inst["server_url"], "status": "down",
                     "problem": "the registry lists a node without an id or URL"} for node in nodes]

        def registry() -> list[dict[str, Any]]:
            """Every institution's registry, asked in parallel so one dead server costs one timeout."""
            institutions = client.list_all("/api/v1/institutions", text_keys=INSTITUTION_KEYS)
            with ThreadPoolExecutor(max_workers=REGISTRY_THREADS) as pool:
                return [row for rows in pool.map(registry_of, institutions) for row in rows]

        self.run(registry, lambda rows: self._registry_loaded(current, rows), self._registry_failed, polling=True)

    def _registry_failed(self, error: ApiError) -> None:
        self._outstanding = 0
        self.show_error(error)

    def _registry_loaded(self, current: threading.Event, rows: list[dict[str, Any]]) -> None:
        if current is not self._round:
            return
        self.table.set_rows(rows)
        self._outstanding = 0
        for index, row in enumerate(rows):
            if row.get("status") == "checking":
                self._outstanding += 1
                node = self.ctx.polling_client(row["url"])
                self.ctx.runner.submit(
                    lambda node=node: None if current.is_set() else node.get("/api/v1/node"),
                    lambda info, index=index: self._node_answered(current, index, info, None),
                    lambda error, index=index: self._node_answered(current, index, None, error),
                    owner=self, polling=True)
        self._update_summary()

    def _node_answered(self, current: threading.Event, index: int, info: dict[str, Any] | None,
                       error: ApiError | None) -> None:
        """One node's answer into its row, found by its index in the round's rows (the model is
        set once a round), not by a search of them all. What sums up every row waits: for the
        round's last answer, or REDRAW_MS of answers arriving together."""
        if current is not self._round:
            return
        self._outstanding -= 1
        if error is None and isinstance(info, dict):
            values = {k: info.get(k) for k in _NODE_FIELDS}
            self.model.update_row(index, {**values, "status": "up", "problem": None})
        else:
            message = error.message if error else "the node answered without figures"
            self.model.update_row(index, {"status": "down", "problem": message})
        if not self._outstanding:
            self._update_summary()
        elif not self._redraw.isActive():
            self._redraw.start()

    def _update_summary(self) -> None:
        """Summary, problems and, once no node is left to answer, the columns' widths (sized to
        up to a thousand rows through the model, which is too slow to do while answers arrive)."""
        self._redraw.stop()
        rows = self.model.rows()
        nodes = [r for r in rows if r.get("id")]
        count = {status: sum(1 for r in nodes if r.get("status") == status) for status in STATUS_TEXT}
        registries_down = sum(1 for r in rows if not r.get("id") and r.get("status") == "down")
        hidden = sum(1 for r in rows if not r.get("id") and r.get("status") == "no_access")
        waiting = count["checking"]
        parts = [f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}", f"{count['up']} reachable"]
        if count["down"]:
            parts.append(f"{count['down']} unreachable")
        if waiting:
            parts.append(f"{waiting} checking")
        if count["no_access"]:
            parts.append(f"{count['no_access']} of other institutions")
        if registries_down:
            parts.append(f"{registries_down} institution server{'s' if registries_down != 1 else ''} down")
        if hidden:
            parts.append(f"{hidden} institution{'s' if hidden != 1 else ''} not visible to you")
        self.summary.setText(" · ".join(parts))
        problems = [f"{one_line(r.get('institution_name'))} · {one_line(r.get('name'))}: {one_line(r['problem'])}"
                    for r in rows if r.get("problem")]
        if len(problems) > PROBLEMS_LISTED:
            more = len(problems) - PROBLEMS_LISTED
            problems[PROBLEMS_LISTED:] = [f"… and {more} more: the table's last column gives every node's problem."]
        self.problems.setText("\n".join(problems))
        self.problems.setVisible(bool(problems))
        if not waiting:
            self.updated.setText(f"Updated {dt.datetime.now():%H:%M:%S}")
            self.table.view.resizeColumnsToContents()
        self.table.view.setColumnWidth(NodeHealthModel.MEMORY_COLUMN, 190)
