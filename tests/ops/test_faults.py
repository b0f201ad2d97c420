"""Faults: a render node killed mid-upload and mid-load, an institution down, the database
restarted, a full disk. Nothing half-stored, clear errors, and recovery after a restart."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from daemons.demo import ApiClient, find_or_create_patient, upload_record
from tests.ops.helpers import demo_slices, wait_ready

pytestmark = pytest.mark.slow


def store_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def node_store(deployment, node: str = "render-1-1") -> Path:
    return Path(deployment.layout.root) / "data" / node / "store"


def restart_node(deployment, name: str = "render-1-1") -> None:
    instance = next(i for i in deployment.instances if i.name == name)
    deployment.start_instance(instance)
    deployment.wait_healthy(instance)


def records_on(client: ApiClient, url: str) -> list[dict]:
    """Every record of the node, as its institution's admin lists them (physicians must name a patient)."""
    return client.call("GET", f"{url}/api/v1/records").json()["items"]


def test_node_killed_while_storing_an_upload_leaves_no_half_record(make_deployment):
    deployment = make_deployment()
    client, url, store = deployment.client("physician"), deployment.url("render-1-1"), node_store(deployment)
    before = set(store_files(store))
    files = demo_slices(40)
    outcome: dict = {}

    def upload() -> None:
        try:
            outcome["meta"] = upload_record(client, url, files)
        except (requests.RequestException, RuntimeError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.monotonic() + 120
    while set(store_files(store)) == before and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    deployment.stop_instance("render-1-1", signal.SIGKILL)
    thread.join(timeout=60)
    restart_node(deployment)

    stored = records_on(deployment.client("admin"), url)
    assert len(stored) <= 1
    if stored:  # the kill came after the record was complete: it must be whole
        record = stored[0]
        assert record["frames"] == len(files)
        client.call("POST", f"{url}/api/v1/records/{record['id']}/load", ok=(200, 202))
        assert wait_ready(client, url, record["id"])["frames_ready"] == len(files)
    again = upload_record(client, url, files)
    assert again["frames"] == len(files)
    client.call("POST", f"{url}/api/v1/records/{again['id']}/load", ok=(200, 202))
    status = wait_ready(client, url, again["id"])
    assert status["state"] == "ready" and not status["errors"]


def test_node_killed_mid_load_comes_back_with_its_records(make_deployment):
    deployment = make_deployment()
    client, url = deployment.client("physician"), deployment.url("render-1-1")
    meta = upload_record(client, url, demo_slices(60))
    client.call("POST", f"{url}/api/v1/records/{meta['id']}/load", ok=(200, 202))
    deployment.stop_instance("render-1-1", signal.SIGKILL)

    with pytest.raises(requests.ConnectionError):
        client.session.get(f"{url}/api/v1/records/{meta['id']}/frames/0", timeout=5)

    restart_node(deployment)
    assert [r["id"] for r in records_on(deployment.client("admin"), url)] == [meta["id"]]
    client.call("POST", f"{url}/api/v1/records/{meta['id']}/load", ok=(200, 202))
    status = wait_ready(client, url, meta["id"])
    assert status["state"] == "ready" and status["frames_ready"] == 60
    image = client.call("GET", f"{url}/api/v1/records/{meta['id']}/frames/59", params={"format": "png"})
    assert image.content[:4] == b"\x89PNG"


def test_institution_down_leaves_search_and_other_institutions_working(make_deployment):
    deployment = make_deployment(institution_names=["Up Hospital", "Down Clinic"], nodes_per_institution=0)
    client = deployment.client("physician")
    top = deployment.url("toplevel")
    patient = find_or_create_patient(client, top, {
        "first_name": "Grace", "last_name": "Hopper", "sex": "F",
        "birth_date": "1946-12-09", "insurance_number": "FAULT-0002"})
    up, down = deployment.layout.institutions
    deployment.stop_instance("institution-2")

    assert client.call("GET", f"{top}/api/v1/patients", params={"q": "hopp"}).json()["total"] == 1
    assert client.call("GET", f"{up['server_url']}/api/v1/findings",
                       params={"patient_id": patient["id"]}).json()["items"] == []
    with pytest.raises(requests.ConnectionError):
        client.session.get(f"{down['server_url']}/api/v1/findings",
                           params={"patient_id": patient["id"]}, timeout=5)


@pytest.mark.postgres
@pytest.mark.exclusive
def test_daemons_reconnect_after_the_database_restarts(make_deployment, pg_database_factory):
    restart = os.environ.get("SIVR_TEST_PG_RESTART")
    if not restart:
        pytest.skip("SIVR_TEST_PG_RESTART not set (installers/run-tests.sh sets it)")
    deployment = make_deployment(
        nodes_per_institution=0,
        database_urls={"toplevel": pg_database_factory(), "institution-1": pg_database_factory()})
    client = deployment.client("physician")
    top, inst = deployment.url("toplevel"), deployment.layout.institutions[0]["server_url"]
    patient = find_or_create_patient(client, top, {
        "first_name": "Alan", "last_name": "Turing", "sex": "M",
        "birth_date": "1954-06-07", "insurance_number": "FAULT-0003"})

    subprocess.run(shlex.split(restart), check=True, capture_output=True, timeout=120)

    for _ in range(3):  # each worker's first request after the restart must work too
        assert client.call("GET", f"{top}/api/v1/patients", params={"q": "turing"}).json()["total"] == 1
        assert client.call("GET", f"{inst}/api/v1/findings",
                           params={"patient_id": patient["id"]}).status_code == 200
    assert deployment.client("admin").call("GET", f"{top}/api/v1/audit").json()["total"] > 0


def _mount_tiny_store(layout, size_kib: int) -> None:
    store = Path(layout.root) / "data" / "render-1-1" / "store"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(store)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill the disk (needs root): {result.stderr.strip()}")


def test_disk_full_on_upload_is_a_clear_error_and_stores_nothing(make_deployment):
    mounted: list[Path] = []

    def fill(layout) -> None:
        _mount_tiny_store(layout, 1024)
        mounted.append(Path(layout.root) / "data" / "render-1-1" / "store")

    try:
        deployment = make_deployment(before_start=fill)
        client, url, store = deployment.client("physician"), deployment.url("render-1-1"), mounted[0]
        before = set(store_files(store))
        reply = client.session.post(f"{url}/api/v1/records", timeout=120,
                                    files=[("files", (f.name, f.read_bytes())) for f in demo_slices(12)])
        assert reply.status_code == 507, reply.text
        assert reply.json()["error"]["code"] == "insufficient_storage"
        assert records_on(deployment.client("admin"), url) == []
        assert set(store_files(store)) == before
        small = upload_record(client, url, demo_slices(1))
        assert records_on(deployment.client("admin"), url)[0]["id"] == small["id"]
    finally:
        if mounted:
            deployment.stop()
            subprocess.run(["umount", "-l", str(mounted[0])], capture_output=True)
