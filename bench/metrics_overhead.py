"""What the Prometheus metrics cost on the 2D frame request path, in process (no network, no TLS).

One render node app (Flask test client, real store, tokens and loader) with a synthetic 512x512
16-bit record. The same requests run with the metrics as shipped and with them taken out (the
request counter/histogram hook removed and the render/encode timers replaced by no-ops), in
alternating rounds (alternating which goes first) so that drift on a shared machine hits both alike:
- cached: one frame asked for again and again (the encoded image comes from the cache) — the
  cheapest request, where a fixed cost weighs most;
- rendered: every request a new window, so each one renders and encodes a PNG.
The JSON access line is written in both variants (to /dev/null), so the difference is the metrics.

    python -m bench.metrics_overhead [--requests 6000] [--rounds 60]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from daemons.render.api import frames as api_frames
from daemons.render.app import create_app
from daemons.render.models import upgrade
from daemons.render.settings import KEYS
from shared.config import build_config
from shared.tokens import MAX_EXCHANGED_TTL_S, TokenIssuer, generate_signing_keypair, load_private_key

SIZE = 512
AUDIENCE = "https://render.bench:5003"
FRAMES = 8


def _synthetic_series(frames: int) -> list[tuple[str, bytes]]:
    from tests.render.synthetic import dataset, to_bytes

    rng = np.random.default_rng(1)
    blobs = []
    for k in range(frames):
        ds = dataset(SIZE, SIZE, series="1.2.826.0.1.3680043.99.1", position=float(k))
        ds.PixelData = rng.integers(-1000, 2000, (SIZE, SIZE)).astype(np.int16).tobytes()
        blobs.append((f"s{k}.dcm", to_bytes(ds)))
    return blobs


def build_node(root: Path):
    generate_signing_keypair(root / "t.pem", root / "t.pub")
    institution = str(uuid.uuid4())
    config = build_config("render", KEYS, {
        "tokens": {"public_key": str(root / "t.pub"), "audience": AUDIENCE},
        "database": {"url": f"sqlite:///{root}/render.db"},
        "node": {"institution_id": institution, "receipt_key": str(root / "receipt.pem")},
        "storage": {"dir": str(root / "store"), "key_file": str(root / "store.key")},
        "log": {"level": "info"},
    })
    upgrade(config)
    app = create_app(config)
    issuer = TokenIssuer(load_private_key(root / "t.pem"), "sivr-toplevel", AUDIENCE, MAX_EXCHANGED_TTL_S)
    user = str(uuid.uuid4())

    def headers() -> dict[str, str]:
        """A fresh token: exchanged tokens live MAX_EXCHANGED_TTL_S, less than the whole run."""
        return {"Authorization": f"Bearer {issuer.issue(user, 'bench', 'physician', institution)[0]}"}

    client = app.test_client()
    import io
    files = [(io.BytesIO(data), name) for name, data in _synthetic_series(FRAMES)]
    record_id = client.post("/api/v1/records", data={"files": files}, headers=headers(),
                            content_type="multipart/form-data").json["id"]
    client.post(f"/api/v1/records/{record_id}/load", headers=headers())
    assert app.extensions["sivr_records"].get_loaded(record_id).wait_complete(60)
    return app, client, headers, record_id


@contextlib.contextmanager
def metrics_removed(app):
    """The app without its metrics: no request hook, no render/encode timers."""
    hooks = app.after_request_funcs[None]
    kept = [f for f in hooks if f.__name__ != "_count"]
    assert len(kept) == len(hooks) - 1, "the metrics hook was not found"
    timed = api_frames.timed
    app.after_request_funcs[None] = kept
    api_frames.timed = lambda *args: contextlib.nullcontext()
    try:
        yield
    finally:
        app.after_request_funcs[None] = hooks
        api_frames.timed = timed


def run(client, headers, urls: list[str]) -> float:
    """Mean CPU microseconds of this thread per request (wall time on a shared machine is mostly
    other processes' queueing; the requests run in this thread and the loader is idle)."""
    started = time.thread_time()
    for url in urls:
        reply = client.get(url, headers=headers)
        assert reply.status_code == 200, reply.status_code
    return (time.thread_time() - started) / len(urls) * 1e6


def direct_cost_us(app, calls: int = 20000) -> float:
    """CPU microseconds of what the metrics add to one rendered frame: the request hook's counter and
    histogram, and the render and encode timers."""
    from daemons.render.metrics import RENDER_METRICS_EXTENSION

    metrics = app.extensions["sivr_metrics"]
    render = app.extensions[RENDER_METRICS_EXTENSION]
    route = "/api/v1/records/<record_id>/frames/<int:index>"
    started = time.process_time()
    for _ in range(calls):
        metrics.observe("GET", route, 200, 0.001)
        render.render_seconds.labels("frame", "png").observe(0.001)
        render.encode_seconds.labels("frame", "png").observe(0.001)
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000, help="requests per path and variant")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, open("/dev/null", "w") as dev_null:
        app, client, headers, record_id = build_node(Path(folder))
        for handler in logging.getLogger().handlers:  # the JSON lines are still formatted, then dropped
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(dev_null)
        per_round = args.requests // args.rounds
        base = f"/api/v1/records/{record_id}/frames"
        counter = iter(range(10**9))

        def urls(path: str) -> list[str]:
            if path == "cached":
                return [f"{base}/3"] * per_round
            return [f"{base}/{n % FRAMES}?window={next(counter)},2000" for n in range(per_round)]

        print(f"direct cost: {direct_cost_us(app):.1f} µs CPU per rendered frame "
              "(request counter + histogram, render and encode histograms)")
        for path in ("cached", "rendered"):
            run(client, headers(), urls(path)[:50])  # warm up
            timings: dict[str, list[float]] = {"with": [], "without": []}
            for round_no in range(args.rounds):
                for variant in (("with", "without") if round_no % 2 == 0 else ("without", "with")):
                    gc.collect()
                    with metrics_removed(app) if variant == "without" else contextlib.nullcontext():
                        timings[variant].append(run(client, headers(), urls(path)))
            with_us, without_us = (statistics.median(timings[k]) for k in ("with", "without"))
            paired = statistics.median(w / wo for w, wo in zip(timings["with"], timings["without"], strict=True))
            print(f"{path:>9}: {without_us:8.1f} µs CPU without metrics, {with_us:8.1f} µs with (medians); "
                  f"median of paired rounds {(paired - 1) * 100:+.1f} %; "
                  f"{per_round * args.rounds} requests each")


if __name__ == "__main__":
    main()
