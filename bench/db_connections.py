"""Requests on a deployment whose toplevel and institution use PostgreSQL: latency and the database
server's connections.

    python bench/db_connections.py --pg-url postgresql://user:pw@127.0.0.1:5432/postgres [--requests 300]

Creates two fresh databases on that server (dropped at the end), starts a deployment on loopback
(gunicorn + TLS fronts, as `sivr demo`, no render node) with the toplevel and the institution on
them, and times sequential keep-alive requests of one physician that each query the database: the
toplevel's patient search and the institution's findings of a patient. It then counts the server's
connections to each database (`pg_stat_activity`). Run it on two checkouts to compare them; results
are printed as markdown and written to bench/results/db_connections.raw.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from bench.pg import fresh_database  # noqa: E402
from daemons.demo import start_deployment  # noqa: E402


def _connections(admin_url: str, name: str) -> int:
    with psycopg.connect(admin_url) as connection:
        return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]


def _timed(call, count: int) -> dict:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"requests": count, "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(0.95 * (count - 1))], 2), "max_ms": round(times[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", required=True, help="a PostgreSQL URL of a role that may create databases")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    results: dict = {"machine": machine.describe(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    with (fresh_database(args.pg_url, "sivr_bench_toplevel") as (top_name, top_url),
          fresh_database(args.pg_url, "sivr_bench_institution") as (inst_name, inst_url),
          tempfile.TemporaryDirectory() as root):
        deployment = start_deployment(Path(root), nodes_per_institution=0,
                                      database_urls={"toplevel": top_url, "institution-1": inst_url})
        try:
            client = deployment.client("physician")
            top, inst = deployment.url("toplevel"), deployment.layout.institutions[0]["server_url"]
            patient = client.call("POST", f"{top}/api/v1/patients", json={
                "first_name": "Ada", "last_name": "Lovelace", "sex": "F", "birth_date": "1975-12-10",
                "insurance_number": f"BENCH-{uuid.uuid4().hex[:8]}"}).json()
            searches = {
                "toplevel: GET /api/v1/patients?q=": lambda: client.call(
                    "GET", f"{top}/api/v1/patients", params={"q": "lovelace"}),
                "institution: GET /api/v1/findings?patient_id=": lambda: client.call(
                    "GET", f"{inst}/api/v1/findings", params={"patient_id": patient["id"]}),
            }
            for name, call in searches.items():
                _timed(call, 20)  # every worker and thread past its first request
                results[name] = _timed(call, args.requests)
            results["server connections after"] = {"toplevel": _connections(args.pg_url, top_name),
                                                   "institution-1": _connections(args.pg_url, inst_name)}
        finally:
            deployment.stop()
    print(f"{results['started']}, {results['machine']}")
    print("| request | requests | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|")
    for name, figures in results.items():
        if isinstance(figures, dict) and "p50_ms" in figures:
            cells = [name, *(figures[key] for key in ("requests", "p50_ms", "p95_ms", "max_ms"))]
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print("server connections after:", results["server connections after"])
    out = REPO / "bench" / "results" / "db_connections.raw.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
