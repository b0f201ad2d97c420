"""The installer scripts pass shellcheck: quoting and `set -e` pitfalls are caught before an install."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.installers.systemd_check import REPO

SCRIPTS = ["installers/install.sh", "installers/uninstall.sh", "installers/folders.sh", "installers/locked-pip.sh",
           "installers/dev-common.sh", "installers/quickstart.sh", "installers/run-tests.sh",
           "installers/update-lock.sh", "installers/lint.sh", ".ci/run", "bench/gpu_machine.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (Debian package `shellcheck`)")
    done = subprocess.run(["shellcheck", "--severity=style", "--external-sources", str(REPO / script)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
