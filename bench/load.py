"""Load driver: simulated viewers scrolling records on render nodes, and concurrent logins.

Used by the operations benchmark (`python -m bench.load`, 32 viewers for 60 s, 100 logins) and,
with short durations, by tests that require zero 5xx under concurrency. Traffic goes only to the
URLs given (a loopback deployment); every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util.retry import Retry

WINDOWS = ["40,400", "-600,1500", "400,1800", "50,350", None]
FORMATS = ["webp", "jpeg", "png"]


@dataclass
class LoadReport:
    """Latencies and status counts of one load run."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, status: int, latency_ms: float, detail: str = "") -> None:
        with self.lock:
            self.latencies_ms.append(latency_ms)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 500 or status == 0:
                self.failures.append(f"{status} {detail}"[:300])

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 or status == 0)

    def summary(self) -> dict:
        count = len(self.latencies_ms)
        return {
            "name": self.name, "requests": count, "duration_s": round(self.duration_s, 2),
            "throughput_per_s": round(count / self.duration_s, 1) if self.duration_s else None,
            "p50_ms": round(self.percentile(50), 1), "p95_ms": round(self.percentile(95), 1),
            "max_ms": round(max(self.latencies_ms), 1) if count else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors": self.server_errors,
            "first_failures": self.failures[:5],
        }


@dataclass(frozen=True)
class ViewTarget:
    """A loaded record on a render node that a simulated viewer scrolls through."""

    node_url: str
    record_id: str
    frames: int


def pinned_session(ca_cert: str) -> requests.Session:
    """A session that trusts only the deployment's CA (environment CA bundles would override it).

    Like a browser, it sends a GET once more when a kept-alive connection turns out to have been
    closed by the server just as it was reused; nothing else is retried.
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_cert
    retry = Retry(total=1, connect=1, read=1, status=0, other=0, allowed_methods={"GET"},
                  raise_on_status=False)
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _timed(session: requests.Session, report: LoadReport, method: str, url: str, **kwargs) -> None:
    started = time.perf_counter()
    try:
        reply = session.request(method, url, timeout=60, **kwargs)
        status, detail = reply.status_code, reply.text[:200] if reply.status_code >= 500 else ""
    except requests.RequestException as exc:
        status, detail = 0, repr(exc)
    report.add(status, (time.perf_counter() - started) * 1000, f"{method} {url} {detail}")


def simulate_viewer(auth: AuthBase, ca_cert: str, targets: list[ViewTarget], duration_s: float,
                    report: LoadReport, seed: int, max_requests: int = 100_000) -> None:
    """Scroll like a reader: mostly the next slice, sometimes a jump, a window change or a format.

    `auth` is a logged-in client's (`daemons.demo.ApiClient.auth`): each node gets its own token.
    """
    rng = random.Random(seed)
    session = pinned_session(ca_cert)
    session.auth = auth
    target = rng.choice(targets)
    index, window, fmt = rng.randrange(target.frames), rng.choice(WINDOWS), rng.choice(FORMATS)
    deadline = time.monotonic() + duration_s
    for _ in range(max_requests):
        if time.monotonic() >= deadline:
            break
        roll = rng.random()
        if roll < 0.05:
            target = rng.choice(targets)
            index = rng.randrange(target.frames)
        elif roll < 0.10:
            window = rng.choice(WINDOWS)
        elif roll < 0.12:
            fmt = rng.choice(FORMATS)
        index = (index + 1) % target.frames
        params = {"format": fmt, "size": "512x512"}
        if window:
            params["window"] = window
        _timed(session, report, "GET",
               f"{target.node_url}/api/v1/records/{target.record_id}/frames/{index}", params=params)


def run_viewers(auth: AuthBase, ca_cert: str, targets: list[ViewTarget], viewers: int,
                duration_s: float) -> LoadReport:
    report = LoadReport(f"{viewers} viewers for {duration_s:g} s")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=viewers) as pool:
        for n in range(viewers):
            pool.submit(simulate_viewer, auth, ca_cert, targets, duration_s, report, n)
    report.duration_s = time.perf_counter() - started
    return report


def run_logins(toplevel_url: str, ca_cert: str, credentials: list[dict], concurrency: int) -> LoadReport:
    """`concurrency` logins at once (credentials are cycled); each must succeed or be refused cleanly."""
    report = LoadReport(f"{concurrency} concurrent logins")
    barrier = threading.Barrier(concurrency)

    def login(n: int) -> None:
        session = pinned_session(ca_cert)
        barrier.wait(timeout=60)
        _timed(session, report, "POST", f"{toplevel_url}/api/v1/auth/login",
               json=credentials[n % len(credentials)])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(login, range(concurrency)))
    report.duration_s = time.perf_counter() - started
    return report


def prepare_topology(root: Path, slices: int):
    """One toplevel, two institutions with 2 + 1 render nodes; the demo CT loaded on every node."""
    from daemons.demo import DEMO_CT, ApiClient, new_user, register_nodes, start_deployment, upload_record

    deployment = start_deployment(root, institution_names=["North Hospital", "South Clinic"],
                                  nodes_per_institution=[2, 1])
    admin, doctor = deployment.client("admin"), deployment.client("physician")
    files = sorted(DEMO_CT.glob("*.dcm"))[:slices]
    targets = []
    for institution in deployment.layout.institutions:
        if institution["id"] != deployment.layout.institutions[0]["id"]:
            continue  # the demo physician uploads to the nodes of their own institution
        for node in register_nodes(admin, institution).values():
            meta = upload_record(doctor, node["url"], files)
            targets.append(ViewTarget(node["url"], meta["id"], meta["frames"]))
    south = deployment.layout.institutions[1]
    top = deployment.url("toplevel")
    south_doctor = new_user(admin, top, south["id"], "dr.south", "physician")
    south_client = ApiClient(deployment, **south_doctor)
    south_admin = new_user(admin, top, south["id"], "admin.south", "instadmin")
    for node in register_nodes(ApiClient(deployment, **south_admin), south).values():
        meta = upload_record(south_client, node["url"], files)
        targets.append(ViewTarget(node["url"], meta["id"], meta["frames"]))
    for target in targets:
        doctor.call("POST", f"{target.node_url}/api/v1/records/{target.record_id}/load", ok=(200, 202))
    for target in targets:
        url = f"{target.node_url}/api/v1/records/{target.record_id}/status"
        while doctor.call("GET", url).json()["state"] == "loading":
            time.sleep(0.2)
    credentials = [deployment.users["physician"], south_doctor]
    return deployment, doctor, targets, credentials


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True, help="an empty folder for the throwaway deployment")
    parser.add_argument("--viewers", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--slices", type=int, default=40, help="slices of the demo CT stored on each node")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    deployment, doctor, targets, credentials = prepare_topology(Path(args.state_dir), args.slices)
    try:
        results = [run_viewers(doctor.auth, deployment.ca_cert, targets, args.viewers, args.duration).summary(),
                   run_logins(deployment.url("toplevel"), deployment.ca_cert, credentials, args.logins).summary()]
    finally:
        deployment.stop()
    text = json.dumps({"nodes": len(targets), "results": results}, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
