"""Fixtures of the installer tests: skip cleanly where systemd's tools are absent."""

from __future__ import annotations

import shutil

import pytest

from tests.installers.systemd_check import HOST_UNIT_LIBRARY


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The `systemd-analyze` binary; verification needs no running systemd, only this tool."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (Debian package `systemd`)")
    if not HOST_UNIT_LIBRARY.is_dir():
        pytest.skip(f"{HOST_UNIT_LIBRARY} missing: no unit library to verify the units against")
    return path
