"""Anonymous callers and the probes: `/readyz` runs the layer's checks, which anyone may ask for.

A render node on an S3 store reaches the store through a relay (tests/s3/gate.py) that the test
cuts, as a network fault would: the store's check then hangs for its timeouts. Probes that overlap
a run of the checks must not each run them again and wait (shared.health.Readiness).
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from daemons.demo import RunningDeployment, start_deployment
from daemons.deployment import ObjectStore
from tests.s3.gate import Gate
from tests.s3.seaweed import started_seaweed

pytestmark = pytest.mark.slow

#: More than the render node's request threads (2 workers of 16 in the test deployment).
PROBES = 40


@pytest.fixture(scope="module")
def node_behind_a_gate(tmp_path_factory) -> Iterator[tuple[RunningDeployment, Gate]]:
    store = started_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    gate = Gate("127.0.0.1", int(store.endpoint_url.rsplit(":", 1)[1]))
    bucket = store.create_bucket(f"sivr-{secrets.token_hex(4)}")
    running = None
    try:
        running = start_deployment(tmp_path_factory.mktemp("probes"), institution_names=["Probe Hospital"],
                                   object_store=ObjectStore(gate.url, bucket, store.access_key, store.secret_key))
        yield running, gate
    finally:
        gate.stop()
        if running is not None:
            # killed: the probes' store checks still hang, and a stop waits for them (30 s of grace)
            running.stop(sig=signal.SIGKILL)
        store.stop()


def test_anonymous_probes_while_the_store_hangs_hold_no_request_threads(node_behind_a_gate):
    """40 anonymous `GET /readyz` at once while the node's S3 store does not answer: each ran the
    store check and waited for its timeouts (2 × 20 s), every request thread of the node was held and
    `/healthz` timed out after 15 s. Now one probe per process runs the checks; the others answer
    at once, and the node keeps serving."""
    deployment, gate = node_behind_a_gate
    node, ca = deployment.url("render-1-1"), deployment.ca_cert
    assert requests.get(f"{node}/readyz", verify=ca, timeout=30).status_code == 200
    gate.close()
    answers: list[int | str] = []

    def probe() -> None:
        try:
            answers.append(requests.get(f"{node}/readyz", verify=ca, timeout=120).status_code)
        except requests.RequestException as exc:
            answers.append(type(exc).__name__)

    probes = [threading.Thread(target=probe, daemon=True) for _ in range(PROBES)]
    for thread in probes:
        thread.start()
    time.sleep(3)  # every probe has reached the node
    started = time.monotonic()
    alive = requests.get(f"{node}/healthz", verify=ca, timeout=15)
    assert alive.status_code == 200 and time.monotonic() - started < 5
    assert requests.get(f"{node}/api/v1/presets", verify=ca, timeout=15).status_code == 401  # the app serves
    # a probe now, while a run hangs, is told which check has not answered
    late = requests.get(f"{node}/readyz", verify=ca, timeout=15)
    assert late.status_code == 503, late.text
    assert "store: not answered after" in late.json()["error"]["message"]
    answered_at_once = sum(1 for a in answers if a in (200, 503))
    assert answered_at_once >= PROBES - 2, answers  # at most one run per worker process waits on the store
