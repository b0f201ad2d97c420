"""The lint step of the test command: configured in pyproject.toml, run before pytest, clean."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.installers.systemd_check import REPO


def test_run_tests_lints_before_pytest():
    script = (REPO / "installers" / "run-tests.sh").read_text()
    assert "installers/lint.sh" in script
    assert script.index("installers/lint.sh") < script.index("-m pytest")
    lint = (REPO / "installers" / "lint.sh").read_text()
    assert "ruff check" in lint and "-m mypy" in lint and "node --input-type=module --check" in lint


def test_the_tree_is_ruff_clean():
    """`ruff check .` with the project's rules: a finding here fails CI before any test runs."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff not installed (it is in the test extra and requirements/test.txt)")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


TSC = REPO / "installers" / "js" / "node_modules" / ".bin" / "tsc"


def test_the_viewer_type_checks_and_the_checker_catches_a_wrong_property(tmp_path):
    """The viewer's JavaScript passes `tsc --checkJs` (webviewer/tsconfig.json), and the check is
    real: a module using a property its object does not have fails it."""
    if not TSC.exists():
        pytest.skip("installers/js is not installed (run-tests.sh runs `npm ci --prefix installers/js`)")
    done = subprocess.run([str(TSC), "-p", "webviewer/tsconfig.json"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    bad = tmp_path / "bad.js"
    bad.write_text("const controller = new AbortController();\ncontroller.signature = 'x';\n")
    done = subprocess.run([str(TSC), "--allowJs", "--checkJs", "--noEmit", "--lib", "es2022,dom", str(bad)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "signature" in done.stdout
    assert "tsc -p webviewer/tsconfig.json" in (REPO / "installers" / "lint.sh").read_text()
