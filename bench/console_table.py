"""What a large table costs the administrators' console: fill, sort, filter, an in-place update.

The console's own table (`admin_gui.widgets.TablePanel`: the audit log's, the users', node
health's) is shown (offscreen unless a display is set) and given N realistic rows; each step is
timed with the events it queues processed, so a view's repaint counts. The GUI is frozen for the
whole of each step, so these are the pauses an administrator sees:
- fill: `set_rows` of the audit log (sorted by its first column, as the screen opens), which
  also sizes the columns to their contents (Qt reads 1,000 rows for that, whatever the count);
  then the model alone filled again (reset, sort, repaint) to show what grows with the rows;
- type a filter one key at a time (each keystroke filters every row), then clear it;
- sort by a text column (User, with blanks), then descending;
- node health with N rows: sort by a numeric column (Stored, a third of it blank), then one row
  updated in place by its index (as a node's answer arrives), which moves it.

    QT_QPA_PLATFORM=offscreen python -m bench.console_table [--rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from admin_gui.table_models import AuditModel, NodeHealthModel
from admin_gui.widgets import TablePanel

ACTIONS = ["auth.login", "auth.logout", "patient.read", "patient.search", "record.view", "record.read",
           "finding.create", "user.update", "access.denied"]
NAMES = ["admin", "dr.house", "Dr.Novak", "jana.kovac", "ŽIGA", "marta", "Ørjan", "peter.zupan", "ana"]


def audit_rows(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Audit entries as `GET /api/v1/audit` lists them: times, users, ids, addresses, details."""
    return [{
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "at": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
              f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
        "username": rng.choice(NAMES) if rng.random() > 0.02 else None,
        "action": rng.choice(ACTIONS),
        "object_type": rng.choice(["patient", "record", "user", "finding", ""]),
        "object_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "patient_id": str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() > 0.3 else None,
        "client_ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "detail": rng.choice([None, "", "images=12", {"reason": "not in institution"}, "query=novak*"]),
        "source": "toplevel",
    } for _ in range(count)]


def node_rows(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Node health rows: numbers, blanks (nodes not answered yet) and the odd string."""
    return [{
        "id": str(uuid.UUID(int=rng.getrandbits(128))), "name": f"node-{i}", "institution_name": f"Clinic {i % 40}",
        "status": rng.choice(["up", "down", "checking"]), "url": f"https://n{i}.example.org:5003",
        "records_stored": rng.choice([None, rng.randint(0, 10**6), rng.random() * 1000]),
        "records_loaded": rng.randint(0, 500), "storage_used_bytes": rng.randint(0, 10**12),
        "render_latency_ms": {"p50": rng.random() * 50, "p95": rng.random() * 200},
    } for i in range(count)]


class Steps:
    """Times each step with the events it queued (the repaint), printed as it ends: the GUI is
    frozen for all of it, and a run that dies (PySide aborts the whole process) still shows how far
    it got."""

    def __init__(self, app: QApplication):
        self.app = app
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, step: Callable[[], None]) -> None:
        start = time.perf_counter()
        step()
        self.app.processEvents()
        self.seconds[name] = time.perf_counter() - start
        print(f"    {name:42s} {self.seconds[name] * 1000:8.0f} ms", flush=True)


def measure(app: QApplication, count: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    step = Steps(app)
    audit = TablePanel(AuditModel())
    audit.resize(1400, 800)
    audit.show()
    app.processEvents()
    rows = audit_rows(count, rng)
    step("fill (set_rows, sorted by Time)", lambda: audit.set_rows(rows))
    step("fill again, columns not resized", lambda: audit.model.set_rows(rows))
    audit.view.selectRow(10)
    for typed in ("n", "no", "nov", "nova", "novak"):
        step(f"filter keystroke {typed!r}", lambda typed=typed: audit.filter.setText(typed))
    step("clear the filter", lambda: audit.filter.setText(""))
    step("sort by User (text)", lambda: audit.view.sortByColumn(1, Qt.SortOrder.AscendingOrder))
    step("sort by User, descending", lambda: audit.view.sortByColumn(1, Qt.SortOrder.DescendingOrder))
    audit.close()

    health = TablePanel(NodeHealthModel())
    health.resize(1400, 800)
    health.show()
    nodes = node_rows(count, rng)
    step("node health: fill", lambda: health.set_rows(nodes))
    stored = [c.header for c in health.model.columns].index("Stored")
    step("node health: sort by Stored (numeric)", lambda: health.view.sortByColumn(stored, Qt.SortOrder.AscendingOrder))
    step("node health: update_row (moves the row)",
         lambda: health.model.update_row(count // 2, {"records_stored": -1, "status": "up"}))
    health.close()
    return step.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median of each step is shown")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    runs = []
    for seed in range(args.repeat):
        print(f"run {seed + 1} of {args.repeat}, {args.rows} rows", flush=True)
        runs.append(measure(app, args.rows, seed))
    print(f"{args.rows} rows, median of {args.repeat} runs")
    for step in runs[0]:
        values = [run[step] for run in runs]
        print(f"  {step:42s} {statistics.median(values) * 1000:8.0f} ms   (max {max(values) * 1000:.0f})")


if __name__ == "__main__":
    main()
