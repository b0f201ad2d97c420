"""Viewer frame latency on one render node alone, then while uploads run (docs/operations.md).

Shows whether uploads slow viewers down: decoding uploads in isolated worker processes should
leave the node's threads (and its GIL) to the viewers. About a minute:

    python -m bench.upload_interference [--viewers 8] [--uploaders 2] [--seconds 20] [--decode-nice N]
                                        [--render-workers N]

`--decode-nice` sets the node's `decode.nice` (the upload checkers' niceness; default: the config's);
`--render-workers` its `server.workers` (gunicorn worker processes sharing the decoded series).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import requests

from daemons.demo import start_deployment
from daemons.deployment import Layout
from daemons.layers import get_layer
from shared.config import render_config_toml

REPO = Path(__file__).resolve().parents[1]
SLICES = 20


def _viewer(session: requests.Session, url: str, record_id: str, stop: threading.Event, latencies: list[float],
            errors: list[str]) -> None:
    """Ask frames back to back; a failed request is counted in `errors` and the viewer goes on."""
    while not stop.is_set():
        index, center = random.randrange(SLICES), random.randint(-500, 500)  # a new window: no cached image
        started = time.perf_counter()
        try:
            reply = session.get(f"{url}/api/v1/records/{record_id}/frames/{index}?window={center},400&format=jpeg",
                                timeout=60)
        except requests.RequestException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        latencies.append(time.perf_counter() - started)
        if not reply.ok:
            errors.append(f"{reply.status_code}: {reply.text[:200]}")


def _uploader(session: requests.Session, url: str, files, stop: threading.Event, durations: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        reply = session.post(f"{url}/api/v1/records", timeout=300,
                             files=[("files", (name, data, "application/dicom")) for name, data in files])
        durations.append(time.perf_counter() - started)
        reply.raise_for_status()


def _configure(nice: int | None, workers: int | None):
    def configure(layout: Layout) -> None:
        for instance in layout.by_layer("render"):
            path = Path(instance.config)
            values = tomllib.loads(path.read_text())
            if nice is not None:
                values["decode"] = {**values.get("decode", {}), "nice": nice}
            if workers is not None:
                values["server"] = {**values.get("server", {}), "workers": workers}
            path.write_text(render_config_toml("render", get_layer("render").keys, values))

    return configure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=8)
    parser.add_argument("--uploaders", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--decode-nice", type=int)
    parser.add_argument("--render-workers", type=int)
    args = parser.parse_args()
    files = [(p.name, p.read_bytes()) for p in sorted((REPO / "demo_data" / "ct-chest-100").glob("*.dcm"))[:SLICES]]
    deployment = start_deployment(Path(tempfile.mkdtemp()) / "deployment",
                                  before_start=_configure(args.decode_nice, args.render_workers))
    try:
        client, url = deployment.client("physician"), deployment.url("render-1-1")
        record_id = client.call("POST", f"{url}/api/v1/records", timeout=300, files=[
            ("files", (name, data, "application/dicom")) for name, data in files]).json()["id"]
        client.call("POST", f"{url}/api/v1/records/{record_id}/load", ok=(202,))
        time.sleep(3)
        # each viewer and uploader logs in once, for both phases (the toplevel limits logins per address)
        viewers = [deployment.client("physician").session for _ in range(args.viewers)]
        senders = [deployment.client("physician").session for _ in range(args.uploaders)]
        for uploaders in (0, args.uploaders):
            stop, latencies, durations, errors = threading.Event(), [], [], []
            threads = [threading.Thread(target=_viewer, args=(session, url, record_id, stop, latencies, errors))
                       for session in viewers]
            threads += [threading.Thread(target=_uploader, args=(session, url, files, stop, durations))
                        for session in senders[:uploaders]]
            for thread in threads:
                thread.start()
            time.sleep(args.seconds)
            stop.set()
            for thread in threads:
                thread.join()
            p50, p95 = np.percentile(latencies, [50, 95]) * 1000
            upload = f"{statistics.median(durations):.2f} s median over {len(durations)}" if durations else "none"
            print(f"{uploaders} uploaders: {len(latencies)} frames, p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
                  f"{len(errors)} errors{' (first: ' + errors[0] + ')' if errors else ''}; uploads: {upload}",
                  flush=True)
    finally:
        deployment.stop()


if __name__ == "__main__":
    main()
