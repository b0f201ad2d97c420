"""A real render node served by two gunicorn workers (`server.workers = 2`): what a viewer and a
modality see does not depend on which worker answers, and a worker's death loses nothing.

The node runs from `init_deployment` + `sivr serve`, as operators run it; `test_node_workers.py`
has the same rules between two apps of one process, step by step.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from daemons.deployment import dicom_endpoint
from daemons.render.runtime import RUNTIME_ENV
from tests.render.dimse_peers import echo
from tests.render.test_render_daemon import Node, running_node

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _environ(pid: int) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry)


def _runtime_folder(master: int) -> Path:
    return Path(_environ(master)[RUNTIME_ENV])


def _maps(pid: int, path: Path) -> bool:
    return str(path) in Path(f"/proc/{pid}/maps").read_text()


def _new_workers(master: int, gone: int, count: int = 2, timeout_s: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = _children(master)
        if len(workers) == count and gone not in workers:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"gunicorn did not replace worker {gone}: {_children(master)}")


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[Node]:
    yield from running_node(tmp_path_factory.mktemp("render-workers"),
                            lambda values: values["server"].update(workers=2))


def _upload(node: Node, paths: list[Path]) -> str:
    files = [("files", (path.name, path.read_bytes(), "application/dicom")) for path in paths]
    reply = requests.post(node.url + "/api/v1/records", files=files, verify=node.ca, timeout=120,
                          headers={"Authorization": f"Bearer {node.token}"})
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def _wait_ready(node: Node, record_id: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = node.get(f"/api/v1/records/{record_id}/status").json()
        if status["state"] == "ready":
            return
        time.sleep(0.2)
    raise AssertionError(f"record {record_id} did not load: {status}")


def test_two_workers_serve_one_decoded_copy_that_outlives_the_worker_that_loaded_it(node, ct_series):
    master = node.running.processes[node.instance.name].pid
    assert len(_children(master)) == 2
    record_id = _upload(node, sorted(ct_series.glob("*.dcm"))[:12])
    reply = requests.post(f"{node.url}/api/v1/records/{record_id}/load", verify=node.ca, timeout=30,
                          headers={"Authorization": f"Bearer {node.token}"})
    assert reply.status_code == 202, reply.text
    _wait_ready(node, record_id)
    for index in range(24):  # each on a new connection: either worker may answer; none says "not loaded"
        reply = node.get(f"/api/v1/records/{record_id}/frames/{index % 12}?format=png")
        assert reply.status_code == 200, reply.text
    (frames,) = _runtime_folder(master).glob("*.frames")  # one copy on the node
    inode = frames.stat().st_ino
    for worker in [w for w in _children(master) if _maps(w, frames)]:  # the workers holding it die
        os.kill(worker, signal.SIGKILL)
        _new_workers(master, worker)
    for index in range(12):  # served from the same memory by workers that never loaded it
        reply = node.get(f"/api/v1/records/{record_id}/frames/{index}?format=png")
        assert reply.status_code == 200, reply.text
    assert [path.stat().st_ino for path in _runtime_folder(master).glob("*.frames")] == [inode]


def test_the_node_reports_its_render_latencies_whichever_worker_answers(node, ct_series):
    """The console's node health (GET /api/v1/node) gives the node's render latencies: the same
    figures from both workers, after one frame rendered by one of them."""
    master = node.running.processes[node.instance.name].pid
    record_id = _upload(node, sorted(ct_series.glob("*.dcm"))[20:22])
    reply = requests.post(f"{node.url}/api/v1/records/{record_id}/load", verify=node.ca, timeout=30,
                          headers={"Authorization": f"Bearer {node.token}"})
    assert reply.status_code == 202, reply.text
    _wait_ready(node, record_id)
    assert node.get(f"/api/v1/records/{record_id}/frames/1?format=png&window=37,401").status_code == 200
    # the rings of workers killed earlier in this module went with them (gunicorn's child_exit)
    rings = {path.name for path in _runtime_folder(master).glob("latency-*")}
    assert rings and rings <= {f"latency-{worker}" for worker in _children(master)}, rings
    admin = node.issuer.issue(str(uuid.uuid4()), "admin", "instadmin", node.instance.institution)[0]
    answers: dict[int, dict] = {}
    deadline = time.monotonic() + 60
    while set(answers) != set(_children(master)):  # each on a new connection, until both workers answered
        assert time.monotonic() < deadline, f"only workers {sorted(answers)} answered"
        figures = requests.get(f"{node.url}/api/v1/node", headers={"Authorization": f"Bearer {admin}"},
                               verify=node.ca, timeout=30).json()
        answers[figures["pid"]] = figures["render_latency_ms"]
    assert len({json.dumps(latency, sort_keys=True) for latency in answers.values()}) == 1, answers
    assert all(latency["p95"] is not None for latency in answers.values())


def test_the_workers_keep_two_malloc_arenas_unless_the_operator_chose(node):
    """Without it each worker thread's freed decode and encode buffers stayed in an arena of its
    own: a node held 1.35-1.47x a series' size after serving it (docs/operations.md)."""
    master = node.running.processes[node.instance.name].pid
    expected = os.environ.get("MALLOC_ARENA_MAX", "2")
    assert {_environ(pid).get("MALLOC_ARENA_MAX") for pid in [master, *_children(master)]} == {expected}


def test_the_node_probes_opengl_once_for_all_its_workers(node):
    from daemons.render.volume.backend import PROBE_ENV

    master = node.running.processes[node.instance.name].pid
    shared = {_environ(pid).get(PROBE_ENV) for pid in [master, *_children(master)]}
    assert len(shared) == 1 and set(json.loads(shared.pop())) == {"ok", "renderer", "reason"}


def test_exactly_one_worker_serves_dicom_and_another_takes_over_when_it_dies(node):
    endpoint = dicom_endpoint(node.running.layout.first("render"))
    port, title = int(endpoint["port"]), endpoint["ae_title"]
    assert echo(port, called=title)
    master = node.running.processes[node.instance.name].pid
    for worker in list(_children(master)):  # one of them held the listener
        os.kill(worker, signal.SIGKILL)
        _new_workers(master, worker)
        deadline = time.monotonic() + 60
        while not echo(port, called=title) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert echo(port, called=title), f"nobody serves DICOM after worker {worker} died"


def test_the_runtime_folder_goes_when_the_node_stops(node):
    master = node.running.processes[node.instance.name].pid
    folder = _runtime_folder(master)
    assert folder.is_dir()
    instance = node.running.layout.first("render")
    node.running.stop_instance(instance.name)
    assert not folder.exists()
    node.running.start_instance(instance)
    node.running.wait_healthy(instance)
