"""A server failure reaches the console's error message with the request id that finds the log line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from admin_gui.api_client import ApiClient, ApiError


def test_a_server_failure_names_the_request_id(gui_deployment):
    root = Path(gui_deployment.layout.root)
    files = [p for p in (root / "data").glob("toplevel.db*") if re.search(r"\.db(-wal|-shm)?$", p.name)]
    client = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    admin = gui_deployment.users["admin"]
    for path in files:
        path.rename(path.with_name(path.name + ".hidden"))
    try:
        with pytest.raises(ApiError) as failure:
            client.login(admin["username"], admin["password"])
    finally:
        for fresh in (root / "data").glob("toplevel.db*"):
            if not fresh.name.endswith(".hidden"):
                fresh.unlink()
        for path in files:
            path.with_name(path.name + ".hidden").rename(path)
    error = failure.value
    assert error.status == 500 and re.fullmatch(r"[0-9a-f]{32}", error.request_id)
    assert error.message.endswith(f"(request id {error.request_id})")
    logged = [json.loads(line) for line in (root / "logs" / "toplevel.log").read_text().splitlines()
              if error.request_id in line]
    assert any(entry["level"] == "error" for entry in logged)
    assert client.login(admin["username"], admin["password"])["username"] == admin["username"]
