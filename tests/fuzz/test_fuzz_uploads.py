"""A seeded mutation fuzzer against a real render node daemon, as a standing test.

Each case (tests/fuzz/mutations.py) is uploaded; the node must answer below 500 within 30 s, its
gunicorn worker must stay the same process, and its resident memory must stay bounded. Whatever
it accepts must then load without a failed slice and render every frame (then it is deleted):
nothing is stored that cannot be shown.

Bounded for CI: SIVR_FUZZ_SECONDS (default 40) of cases, at most SIVR_FUZZ_CASES (default
unlimited), from SIVR_FUZZ_SEED (default 13). A long run: SIVR_FUZZ_SECONDS=3600.
"""

from __future__ import annotations

import os
import random
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.demo import RunningDeployment, start_deployment
from daemons.layers import get_layer
from shared.config import render_config_toml
from tests.fuzz.mutations import make_case, seed_files

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("SIVR_FUZZ_SECONDS", "40"))
MAX_CASES = int(os.environ.get("SIVR_FUZZ_CASES", "0")) or None
SEED = int(os.environ.get("SIVR_FUZZ_SEED", "13"))
REQUEST_LIMIT_S = 30.0
MEMORY_BUDGET_MB = 512
RSS_LIMIT_MB = 2048  # decoded records (budget) + image cache + interpreter, NumPy and codecs, with room
NODE = "render-1-1"


def _fuzz_config(layout) -> None:
    for instance in layout.by_layer("render"):
        path = Path(instance.config)
        values = tomllib.loads(path.read_text())
        values["memory"] = {"budget_mb": MEMORY_BUDGET_MB}
        values["render"] = {**values.get("render", {}), "image_cache_mb": 64}
        values["decode"] = {"timeout_s": 20.0, "cpu_s": 20, "memory_mb": 1024}
        path.write_text(render_config_toml("render", get_layer("render").keys, values))


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory) -> Iterator[RunningDeployment]:
    running = start_deployment(tmp_path_factory.mktemp("fuzz"), before_start=_fuzz_config)
    yield running
    running.stop()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _workers(master: int) -> list[int]:
    """The node's gunicorn workers (server.workers of them): a dead one is replaced by a new pid."""
    return sorted(int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split())


def _timed(session, method: str, url: str, **kwargs):
    started = time.monotonic()
    reply = session.request(method, url, timeout=REQUEST_LIMIT_S + 30, **kwargs)
    elapsed = time.monotonic() - started
    return reply, elapsed


def _render_everything(session, url: str, record_id: str, frames: int, findings: list[str], label: str) -> None:
    """Load an accepted record and render each of its frames; every failure is a finding."""
    reply, _ = _timed(session, "POST", f"{url}/api/v1/records/{record_id}/load")
    if reply.status_code != 202:
        findings.append(f"{label}: accepted but load answered {reply.status_code} {reply.text[:200]}")
        return
    deadline = time.monotonic() + 60
    status = {}
    while time.monotonic() < deadline:
        status = session.get(f"{url}/api/v1/records/{record_id}/status", timeout=30).json()
        if status["state"] != "loading":
            break
        time.sleep(0.1)
    if status.get("state") != "ready" or status.get("errors"):
        findings.append(f"{label}: accepted but loads as {status}"[:400])
        return
    for index in range(frames):
        reply, elapsed = _timed(session, "GET", f"{url}/api/v1/records/{record_id}/frames/{index}")
        if reply.status_code != 200 or elapsed > REQUEST_LIMIT_S:
            findings.append(f"{label}: frame {index} answered {reply.status_code} in {elapsed:.1f} s "
                            f"{reply.text[:200]}")
            return


def test_fuzzed_uploads_never_break_the_node(fuzz_node):
    client, url = fuzz_node.client("physician"), fuzz_node.url(NODE)
    session, admin = client.session, fuzz_node.client("admin")  # the node's figures are for administrators
    node = admin.call("GET", f"{url}/api/v1/node").json()
    master = fuzz_node.processes[NODE].pid
    workers, findings, outcomes = _workers(master), [], Counter()
    assert node["pid"] in workers
    seeds, rng = seed_files(), random.Random(SEED)
    stop_at, number, peak_rss = time.monotonic() + SECONDS, 0, max(map(_rss_mb, workers))
    while time.monotonic() < stop_at and (MAX_CASES is None or number < MAX_CASES):
        number += 1
        case = make_case(rng, seeds, number)
        label = f"case {number} ({case.kind}, seed {SEED})"
        try:
            reply, elapsed = _timed(session, "POST", f"{url}/api/v1/records",
                                    files=[("files", (name, data, "application/dicom")) for name, data in case.files])
        except Exception as exc:
            findings.append(f"{label}: request failed ({type(exc).__name__}: {exc})")
            break
        outcomes[f"{case.kind} {reply.status_code}"] += 1
        if reply.status_code >= 500 or elapsed > REQUEST_LIMIT_S:
            findings.append(f"{label}: {reply.status_code} in {elapsed:.1f} s {reply.text[:300]}")
        if reply.status_code in (200, 201):
            meta = reply.json()
            _render_everything(session, url, meta["id"], meta["frames"], findings, label)
            session.delete(f"{url}/api/v1/records/{meta['id']}", timeout=30)
        node = admin.call("GET", f"{url}/api/v1/node").json()
        if _workers(master) != workers:
            findings.append(f"{label}: the node's workers changed from {workers} to {_workers(master)} (one died)")
            break
        peak_rss = max(peak_rss, *map(_rss_mb, workers))
    print(f"\nfuzz: seed {SEED}, {number} cases in {SECONDS:g} s, peak node RSS {peak_rss:.0f} MiB, "
          f"decode workers replaced {node['decode_workers']['replaced']}")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome}: {count}")
    assert number >= 10, "the fuzzer ran too few cases to mean anything"
    assert not findings, "\n".join(findings)
    assert peak_rss < RSS_LIMIT_MB, f"the node's RSS reached {peak_rss:.0f} MiB"
