"""A server failure shows the physician the request id, and IT finds the logged error with it.

The failure is real: the toplevel's database file is taken away, so the login fails with a 500
(the issue's own finding), then put back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.webviewer.helpers import shot

pytestmark = pytest.mark.browser


def test_a_server_failure_names_the_request_id_that_finds_the_log_line(page, deployment, shots):
    root = Path(deployment.layout.root)
    files = [p for p in (root / "data").glob("toplevel.db*") if re.search(r"\.db(-wal|-shm)?$", p.name)]
    page.goto("/")
    page.get_by_label("Username").fill(deployment.users["physician"]["username"])
    page.get_by_label("Password").fill(deployment.users["physician"]["password"])
    for path in files:
        path.rename(path.with_name(path.name + ".hidden"))
    try:
        page.get_by_role("button", name="Log in").click()
        error = page.locator("#login-error")
        error.wait_for()
        text = error.inner_text()
        shot(page, shots, "login-server-failure-request-id")
    finally:
        for fresh in (root / "data").glob("toplevel.db*"):
            if not fresh.name.endswith(".hidden"):
                fresh.unlink()
        for path in files:
            path.with_name(path.name + ".hidden").rename(path)
    found = re.search(r"\(request id ([0-9a-f]{32})\)$", text)
    assert found, text
    logged = [json.loads(line) for line in (root / "logs" / "toplevel.log").read_text().splitlines()
              if found[1] in line]
    assert any(entry["level"] == "error" and "exception" in entry for entry in logged)
    assert any(entry.get("route") == "/api/v1/auth/login" and entry.get("status") == 500 for entry in logged)
