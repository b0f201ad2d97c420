"""Viewer frame latency on one render node alone, then while uploads run (docs/operations.md).

Shows whether uploads slow viewers down: decoding uploads in isolated worker processes should
leave the node's threads (and its GIL) to the viewers. About a minute:

    python -m bench.upload_interference [--viewers 8] [--uploaders 2] [--seconds 20] [--decode-nice N]
                                        [--codec-threads N] [--render-workers N] [--viewer-client python|h2load]

`--decode-nice` sets the node's `decode.nice` (the upload checkers' niceness; default: the config's);
`--codec-threads` its `decode.codec_threads` (OpenJPEG threads per frame in an upload checker);
`--render-workers` its `server.workers` (gunicorn worker processes sharing the decoded series).

`--viewer-client` chooses what asks the frames. `python` (default): one thread per viewer in this
process, `requests` over HTTP/1.1. `h2load` (Debian's nghttp2-client): one h2load process per viewer,
one request at a time over one HTTP/2 connection, as a browser tab scrolling; the same random
frames and windows. The load generator shares the server's cores here, and the Python one takes
about a third of them at 64 viewers; h2load leaves them to the server, as remote browsers do.
Exchanged tokens live 55 s at most, so h2load runs in segments of SEGMENT_S, each viewer with a
freshly exchanged token (and a new TLS connection) per segment.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import requests

from bench import h2load
from daemons.demo import ApiClient, start_deployment
from daemons.deployment import Layout
from daemons.layers import get_layer
from shared.config import render_config_toml

REPO = Path(__file__).resolve().parents[1]
SLICES = 20
SEGMENT_S = 20.0
WINDOW_WIDTH = 400


def _frame_path(record_id: str, rng: random.Random) -> str:
    """A random frame of the record in a new window, as a scrolling viewer asks it. The centre is
    drawn to a thousandth of a unit, so no two requests of a run share a window and none is served
    from the node's image cache (whole units would repeat after ~20,000 requests)."""
    index, center = rng.randrange(SLICES), rng.uniform(-500, 500)
    return f"/api/v1/records/{record_id}/frames/{index}?window={center:.3f},{WINDOW_WIDTH}&format=jpeg"


def _viewer(session: requests.Session, url: str, record_id: str, stop: threading.Event, latencies: list[float],
            errors: list[str]) -> None:
    """Ask frames back to back; a failed request is counted in `errors` and the viewer goes on."""
    rng = random.Random()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            reply = session.get(f"{url}{_frame_path(record_id, rng)}", timeout=60)
        except requests.RequestException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        latencies.append(time.perf_counter() - started)
        if not reply.ok:
            errors.append(f"{reply.status_code}: {reply.text[:200]}")


def _h2load_viewers(clients: list[ApiClient], url: str, record_id: str, seconds: float, folder: Path,
                    outcome: h2load.Outcome) -> None:
    """One h2load process per viewer for `seconds`, in segments of SEGMENT_S with fresh tokens: every
    viewer's token is exchanged before the segment's processes start together."""
    rng = random.Random()
    left = seconds
    while left > 0:
        segment = min(SEGMENT_S, left)
        for client in clients:
            client.tokens.forget(url)  # a token exchanged now outlives the segment
        h2load.run_clients([h2load.Client([url + _frame_path(record_id, rng) for _ in range(5000)],
                                          {"Authorization": f"Bearer {client.token_for(url)}"})
                            for client in clients], segment, folder, outcome=outcome)
        left -= segment


def _uploader(session: requests.Session, url: str, files, stop: threading.Event, durations: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        reply = session.post(f"{url}/api/v1/records", timeout=300,
                             files=[("files", (name, data, "application/dicom")) for name, data in files])
        durations.append(time.perf_counter() - started)
        reply.raise_for_status()


def _configure(nice: int | None, codec_threads: int | None, workers: int | None):
    def configure(layout: Layout) -> None:
        for instance in layout.by_layer("render"):
            path = Path(instance.config)
            values = tomllib.loads(path.read_text())
            decode = {"nice": nice, "codec_threads": codec_threads}
            values["decode"] = {**values.get("decode", {}), **{k: v for k, v in decode.items() if v is not None}}
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
    parser.add_argument("--codec-threads", type=int)
    parser.add_argument("--render-workers", type=int)
    parser.add_argument("--viewer-client", choices=("python", "h2load"), default="python")
    args = parser.parse_args()
    if args.viewer_client == "h2load":
        h2load.require()
    files = [(p.name, p.read_bytes()) for p in sorted((REPO / "demo_data" / "ct-chest-100").glob("*.dcm"))[:SLICES]]
    deployment = start_deployment(Path(tempfile.mkdtemp()) / "deployment",
                                  before_start=_configure(args.decode_nice, args.codec_threads, args.render_workers))
    try:
        client, url = deployment.client("physician"), deployment.url("render-1-1")
        record_id = client.call("POST", f"{url}/api/v1/records", timeout=300, files=[
            ("files", (name, data, "application/dicom")) for name, data in files]).json()["id"]
        client.call("POST", f"{url}/api/v1/records/{record_id}/load", ok=(202,))
        time.sleep(3)
        # each viewer and uploader logs in once, for both phases (the toplevel limits logins per address)
        viewers = [deployment.client("physician") for _ in range(args.viewers)]
        senders = [deployment.client("physician").session for _ in range(args.uploaders)]
        for uploaders in (0, args.uploaders):
            stop, durations, outcome = threading.Event(), [], h2load.Outcome()
            latencies, errors = outcome.latencies_s, outcome.errors
            uploading = [threading.Thread(target=_uploader, args=(session, url, files, stop, durations))
                         for session in senders[:uploaders]]
            if args.viewer_client == "h2load":
                folder = Path(tempfile.mkdtemp(prefix="sivr-h2load-"))
                viewing = [threading.Thread(target=_h2load_viewers, args=(
                    viewers, url, record_id, args.seconds, folder, outcome))]
            else:
                viewing = [threading.Thread(target=_viewer, args=(v.session, url, record_id, stop, latencies, errors))
                           for v in viewers]
            started = time.perf_counter()
            for thread in uploading + viewing:
                thread.start()
            if args.viewer_client == "h2load":  # its segments end it; the uploads go on until then
                viewing[0].join()
            else:
                time.sleep(args.seconds)
            stop.set()
            for thread in uploading + viewing:
                thread.join()
            elapsed = time.perf_counter() - started
            if args.viewer_client == "h2load":
                shutil.rmtree(folder)
            p50, p95 = np.percentile(latencies, [50, 95]) * 1000
            upload = f"{statistics.median(durations):.2f} s median over {len(durations)}" if durations else "none"
            first = f" (first: {errors[0]})" if errors else ""
            print(f"{uploaders} uploaders: {len(latencies)} frames in {elapsed:.0f} s, p50 {p50:.1f} ms, "
                  f"p95 {p95:.1f} ms, {len(errors)} errors{first}; uploads: {upload}", flush=True)
    finally:
        deployment.stop()


if __name__ == "__main__":
    main()
