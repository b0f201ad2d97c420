"""HTTP/1.1 (six connections, like a browser) against HTTP/2 (one connection) for small frames.

Two real render nodes started from the same deployment folder layout with `sivr serve`: one under
gunicorn alone (HTTP/1.1 over its own TLS), one behind its nginx front (daemons/front.py, as
`sivr init --front` and `sivr demo` serve it; it also answers HTTP/1.1, measured too, to separate
the protocol from the server). The layers' own HTTP/2 server (`server.http2 = true`, hypercorn),
which this compared until then, was retired on 2026-12-01. Each loads the demo CT
(demo_data/ct-chest-100) and answers N concurrent requests for 128x128 JPEG frames, every one
with its own window so no image cache answers; over TLS, from a fresh client (handshakes counted);
then 60 frames one at a time on a warm connection (median: the server's own latency).

    python bench/bench_http2.py [--requests 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemons.deployment import LocalDeployment, init_deployment  # noqa: E402
from shared.tokens import TokenIssuer, load_private_key  # noqa: E402

DEMO = REPO / "demo_data" / "ct-chest-100"


def start_node(root: Path, front: bool):
    layout = init_deployment(root, pick_free_ports=True, front=front)
    instance = layout.first("render")
    running = LocalDeployment(layout, layers=("render",))
    running.start(timeout_s=300)
    issuer = TokenIssuer(load_private_key(root / "keys" / "token_ed25519.pem"), "sivr-toplevel", instance.url, 60)
    token = lambda: issuer.issue(str(uuid.uuid4()), "bench", "physician", instance.institution)[0]  # noqa: E731
    files = [("files", (p.name, p.read_bytes())) for p in sorted(DEMO.rglob("*.dcm"))]
    headers = {"Authorization": f"Bearer {token()}"}
    record = requests.post(f"{instance.url}/api/v1/records", files=files, headers=headers,
                           verify=layout.ca_cert, timeout=300).json()["id"]
    requests.post(f"{instance.url}/api/v1/records/{record}/load", headers=headers, verify=layout.ca_cert, timeout=60)
    while requests.get(f"{instance.url}/api/v1/records/{record}/status", headers={"Authorization": f"Bearer {token()}"},
                       verify=layout.ca_cert, timeout=60).json()["state"] != "ready":
        time.sleep(0.5)
    return running, instance.url, layout.ca_cert, token, record, len(files)


async def sequential(url: str, ca: str, token: str, record: str, slices: int, n: int, http2: bool, salt: int):
    """Median time of one small frame at a time on a warm connection: the server's own latency."""
    context = ssl.create_default_context(cafile=ca)
    async with httpx.AsyncClient(http2=http2, http1=not http2, verify=context, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        times = []
        for i in range(n + 1):
            start = time.perf_counter()
            reply = await client.get(f"{url}/api/v1/records/{record}/frames/{i % slices}",
                                     params={"format": "jpeg", "size": "128x128",
                                             "window": f"{40 + 1e-6 * (salt * 100_000 + i):.6f},400"})
            assert reply.status_code == 200
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])  # the first pays the TLS handshake


async def burst(url: str, ca: str, token: str, record: str, slices: int, n: int, http2: bool, salt: int):
    limits = httpx.Limits(max_connections=1 if http2 else 6)
    context = ssl.create_default_context(cafile=ca)
    async with httpx.AsyncClient(http2=http2, http1=not http2, verify=context, limits=limits, timeout=120,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def one(i: int) -> tuple[float, int, str]:
            start = time.perf_counter()
            reply = await client.get(f"{url}/api/v1/records/{record}/frames/{i % slices}",
                                     params={"format": "jpeg", "size": "128x128",
                                             # a new cache key per request, the same image
                                             "window": f"{40 + 1e-6 * (salt * 100_000 + i):.6f},400"})
            assert reply.status_code == 200, reply.text[:200]
            return time.perf_counter() - start, len(reply.content), reply.http_version
        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    return {"wall_s": wall, "per_s": n / wall, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p95_ms": 1000 * latencies[int(len(latencies) * 0.95)], "bytes": statistics.mean(r[1] for r in results),
            "version": results[0][2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {platform.node()} {platform.platform()} cpus={os.cpu_count()} {when}")
    cases = [("gunicorn", False), ("nginx front", False), ("nginx front", True)]
    with tempfile.TemporaryDirectory() as tmp:
        nodes = {}
        for server, front in (("gunicorn", False), ("nginx front", True)):
            nodes[server] = start_node(Path(tmp) / server.replace(" ", "-"), front)
        try:
            for case, (server, http2) in enumerate(cases):
                _, url, ca, token, record, slices = nodes[server]
                runs = [asyncio.run(burst(url, ca, token(), record, slices, args.requests, http2,
                                          case * args.rounds + r)) for r in range(args.rounds)]
                best = max(runs, key=lambda r: r["per_s"])
                one_ms = asyncio.run(sequential(url, ca, token(), record, slices, 60, http2, 90 + case))
                label = f"{server} {'HTTP/2, 1 connection' if http2 else 'HTTP/1.1, 6 connections'}"
                print(f"{label:<40} {args.requests} frames: best of {args.rounds}: {best['per_s']:.0f}/s "
                      f"(wall {best['wall_s']:.2f} s), p50 {best['p50_ms']:.0f} ms, p95 {best['p95_ms']:.0f} ms, "
                      f"{best['bytes']:.0f} B/frame, {best['version']}; one at a time: {one_ms:.1f} ms; "
                      "all rounds/s: "
                      + ", ".join(f"{r['per_s']:.0f}" for r in runs))
        finally:
            for running, *_ in nodes.values():
                running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
