"""Fixtures for the operations proof: a multi-institution topology on PostgreSQL, and records in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemons.demo import DEMO_CT, ApiClient, upload_record
from daemons.layers import LAYERS

SLICES = 12


def require_layers(*names: str) -> None:
    missing = [n for n in names if not LAYERS[n].available]
    if missing:
        pytest.skip(f"layers not available in this build: {', '.join(missing)}")


def demo_slices(count: int = SLICES) -> list[Path]:
    """Consecutive real CT slices from the repository's demo series (present in every clone)."""
    files = sorted(DEMO_CT.glob("*.dcm"))
    assert len(files) >= count, f"demo CT series missing from {DEMO_CT}"
    return files[40:40 + count]


def new_physician(admin: ApiClient, toplevel: str, institution_id: str, username: str) -> dict:
    password = "physician-password-1"
    admin.call("POST", f"{toplevel}/api/v1/users", json={
        "username": username, "password": password, "full_name": username.title(),
        "role": "physician", "institution_id": institution_id}, ok=(201, 409))
    return {"username": username, "password": password}


def new_admin(admin: ApiClient, toplevel: str, institution_id: str, username: str) -> dict:
    password = "admin-password-12"
    admin.call("POST", f"{toplevel}/api/v1/users", json={
        "username": username, "password": password, "full_name": username.title(),
        "role": "admin", "institution_id": institution_id}, ok=(201, 409))
    return {"username": username, "password": password}


@pytest.fixture(scope="module")
def topology(tmp_path_factory, pg_database_factory):
    """One toplevel, two institutions (2 + 1 render nodes), toplevel and institutions on PostgreSQL."""
    require_layers("toplevel", "institution", "render")
    from tests.conftest import start_deployment

    urls = {name: pg_database_factory() for name in ("toplevel", "institution-1", "institution-2")}
    running = start_deployment(tmp_path_factory.mktemp("topology"),
                               institution_names=["North Hospital", "South Clinic"],
                               nodes_per_institution=[2, 1], database_urls=urls)
    yield running
    running.stop()


def upload_and_load(client: ApiClient, node_url: str, files: list[Path]) -> dict:
    meta = upload_record(client, node_url, files)
    client.call("POST", f"{node_url}/api/v1/records/{meta['id']}/load", ok=(200, 202))
    return meta
