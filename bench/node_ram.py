"""RAM a render node spends on one loaded series, with one or several gunicorn workers.

    python -m bench.node_ram [--render-workers N ...]   (about 30 s per worker count)

The node runs as operators run it (`sivr serve`, `server.workers` workers sharing the decoded
series in their runtime folder). For each worker count: the proportional set size (PSS: a page
shared by k processes counts 1/k in each) summed over the gunicorn master and its workers, before
the 100-slice demo CT is loaded, once it is loaded (`ratio_loaded`), and after 300 of its images
are served over new connections (`ratio`: every worker answers some and maps the series), against
the series' decoded size.
The growth includes what the workers keep besides the series (encoded images in their caches,
parsed manifests); the issue's bound is 1.2x the decoded size per node.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import requests

from bench.bench_2d import REPO, Setup, start_node

DEMO_CT = REPO / "demo_data" / "ct-chest-100"


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _node_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *(int(child) for child in children)]


def measure(workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="sivr-bench-ram-") as folder:
        setup = Setup(Path(folder), workers)
        node = start_node(setup, f"ram-{workers}", tls=False)
        try:
            files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(DEMO_CT.glob("*.dcm"))]
            record_id = requests.post(f"{node.url}/api/v1/records", files=files, headers=setup.headers,
                                      timeout=300).json()["id"]
            meta = requests.get(f"{node.url}/api/v1/records/{record_id}", headers=setup.headers, timeout=30).json()
            for _ in range(20):  # every worker has answered something before the baseline
                requests.get(f"{node.url}/api/v1/records/{record_id}", headers=setup.headers, timeout=30)
            time.sleep(1)
            pids = _node_pids(node.process.pid)
            before = sum(_pss(pid) for pid in pids)
            requests.post(f"{node.url}/api/v1/records/{record_id}/load", headers=setup.headers, timeout=30)
            while requests.get(f"{node.url}/api/v1/records/{record_id}/status", headers=setup.headers,
                               timeout=30).json()["state"] != "ready":
                time.sleep(0.1)
            loaded = sum(_pss(pid) for pid in _node_pids(node.process.pid))
            for index in range(300):  # each on a new connection: every worker serves some
                reply = requests.get(f"{node.url}/api/v1/records/{record_id}/frames/{index % meta['frames']}"
                                     f"?format=jpeg", headers=setup.headers, timeout=30)
                reply.raise_for_status()
            time.sleep(1)
            pids = _node_pids(node.process.pid)
            after = sum(_pss(pid) for pid in pids)
            decoded = meta["frames"] * meta["rows"] * meta["columns"] * 2
            return {"workers": workers, "processes": len(pids), "decoded_mib": decoded / 2**20,
                    "pss_before_mib": before / 2**20, "pss_loaded_mib": loaded / 2**20,
                    "pss_after_mib": after / 2**20, "growth_mib": (after - before) / 2**20,
                    "ratio_loaded": (loaded - before) / decoded, "ratio": (after - before) / decoded}
        finally:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-workers", type=int, nargs="+", default=[1, 2])
    for workers in parser.parse_args().render_workers:
        print(json.dumps(measure(workers)), flush=True)


if __name__ == "__main__":
    main()
