"""Steps the operations tests share: real demo slices, users, uploads, waiting for loads."""

from __future__ import annotations

import time
from pathlib import Path

from daemons.demo import DEMO_CT, ApiClient, upload_record

SLICES = 12


def demo_slices(count: int = SLICES) -> list[Path]:
    """Consecutive real CT slices from the repository's demo series (present in every clone)."""
    files = sorted(DEMO_CT.glob("*.dcm"))
    assert len(files) >= count, f"demo CT series missing from {DEMO_CT}"
    return files[40:40 + count]


def upload_and_load(client: ApiClient, node_url: str, files: list[Path]) -> dict:
    meta = upload_record(client, node_url, files)
    client.call("POST", f"{node_url}/api/v1/records/{meta['id']}/load", ok=(200, 202))
    return meta


def wait_ready(client: ApiClient, node_url: str, record_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.call("GET", f"{node_url}/api/v1/records/{record_id}/status").json()
        if status["state"] in ("ready", "error"):
            return status
        time.sleep(0.2)
    raise TimeoutError(f"record {record_id} not loaded within {timeout_s} s")
