"""Longest test modules first, so the parallel run does not end with one worker alone on a long one.

installers/run-tests.sh runs the suite with pytest-xdist's `--dist loadfile`: each module goes whole
to one worker (its module fixtures start daemons once), in collection order. Alphabetical order
left long modules (the shared S3 store, the faults, the browser files) near the end, and one
worker finished them alone for minutes while the other core idled. Sorting modules by their
measured time, longest first (the classic longest-processing-time rule), leaves the short ones to
fill the end. Tests keep their order inside a module.

The times live in `module_seconds.json` beside this file, measured by
`installers/run-tests.sh --module-seconds-out tests/module_seconds.json` (wall seconds per module in
the parallel run, setup and teardown included; xdist's own reordering by test count is turned off
with `--no-loadscope-reorder`; tests marked `exclusive` run alone later and are not
counted; modules not run keep their old figure). A module missing from the file counts as
`UNKNOWN_SECONDS`: a stale file only makes the end of a run less tidy, never changes what runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

SECONDS_FILE = Path(__file__).with_name("module_seconds.json")
UNKNOWN_SECONDS = 10.0


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def load_seconds(path: Path = SECONDS_FILE) -> dict[str, float]:
    try:
        return {str(name): float(seconds) for name, seconds in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError):  # absent or damaged: no order, never no run
        return {}


def longest_modules_first(items: list[pytest.Item], seconds: dict[str, float]) -> list[pytest.Item]:
    """`items` grouped by module, modules by decreasing time (ties keep collection order)."""
    groups: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        groups[module_of(item.nodeid)].append(item)
    order = sorted(groups, key=lambda module: -seconds.get(module, UNKNOWN_SECONDS))
    return [item for module in order for item in groups[module]]


class ModuleSeconds:
    """Adds up each module's phase durations as reports arrive, and writes them at the end."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "exclusive" not in report.keywords:
            self.seconds[module_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self) -> None:
        merged = load_seconds(self.out) | {module: round(total, 1) for module, total in self.seconds.items()}
        self.out.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
