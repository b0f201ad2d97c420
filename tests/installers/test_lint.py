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
