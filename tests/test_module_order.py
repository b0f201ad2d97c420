"""The suite's module order (tests/module_order.py): longest measured modules first, tests kept in order."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tests.module_order import UNKNOWN_SECONDS, ModuleSeconds, load_seconds, longest_modules_first


def _items(*nodeids: str) -> list:
    return [SimpleNamespace(nodeid=nodeid) for nodeid in nodeids]


def test_modules_run_longest_first_and_keep_their_tests_in_order():
    items = _items("tests/a.py::one", "tests/b.py::one", "tests/a.py::two", "tests/c.py::one",
                   "tests/b.py::two", "tests/d.py::one")
    seconds = {"tests/a.py": 5.0, "tests/b.py": 90.0, "tests/c.py": UNKNOWN_SECONDS + 1}
    ordered = [item.nodeid for item in longest_modules_first(items, seconds)]
    assert ordered == ["tests/b.py::one", "tests/b.py::two", "tests/c.py::one", "tests/d.py::one",
                       "tests/a.py::one", "tests/a.py::two"]


def _report(nodeid: str, duration: float, *markers: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, duration=duration, keywords=dict.fromkeys([nodeid, *markers], 1))


def test_measured_seconds_update_the_file_and_a_missing_file_orders_nothing(tmp_path):
    out = tmp_path / "seconds.json"
    out.write_text(json.dumps({"tests/a.py": 99.0, "tests/c.py": 7.0}))
    recorder = ModuleSeconds(out)
    for report in [_report("tests/a.py::one", 1.25), _report("tests/a.py::one", 0.5), _report("tests/b.py::x", 2.0),
                   _report("tests/b.py::alone", 30.0, "exclusive")]:  # runs alone later: not parallel time
        recorder.pytest_runtest_logreport(report)
    recorder.pytest_sessionfinish()
    assert load_seconds(out) == {"tests/a.py": 1.8, "tests/b.py": 2.0, "tests/c.py": 7.0}

    ModuleSeconds(out).pytest_sessionfinish()  # the exclusive run alone records nothing and changes nothing
    assert load_seconds(out) == {"tests/a.py": 1.8, "tests/b.py": 2.0, "tests/c.py": 7.0}
    assert load_seconds(tmp_path / "absent.json") == {}
