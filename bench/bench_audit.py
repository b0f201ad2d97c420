"""Cost of the image-view audit on the render node's frame path, in-process.

A real node app (`create_app`, real store, loader and tokens) serves the same cached frame
request through the Flask test client, alternating blocks with the audit counting (as deployed)
and with it replaced by a no-op, so the difference is the audit alone on the cheapest path a
viewer has (an image from the node's image cache: no rendering to hide the cost in). Then it
times one flush of many pending streams (the background write).

    python bench/bench_audit.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from daemons.render.app import create_app
from daemons.render.models import upgrade
from daemons.render.settings import KEYS
from daemons.render.view_audit import EXTENSION
from shared.auth import authenticate
from shared.config import build_config
from shared.tokens import MAX_EXCHANGED_TTL_S, TokenIssuer, generate_signing_keypair, load_private_key
from tests.render.synthetic import dataset, to_bytes

#: The benchmark node's audience; the bench plays the toplevel and mints tokens for it.
NODE_AUDIENCE = "https://bench-node.test"

BLOCK = 250


class _NoAudit:
    def note(self, kind: str, record_id: str) -> None:
        """The frame path without auditing (the comparison run only)."""


def _node(root: Path):
    generate_signing_keypair(root / "k.pem", root / "k.pub")
    institution = str(uuid.uuid4())
    config = build_config("render", KEYS, {
        "tokens": {"public_key": str(root / "k.pub"), "audience": NODE_AUDIENCE},
        "database": {"url": f"sqlite:///{root}/render.db"},
        "node": {"institution_id": institution, "receipt_key": str(root / "receipt.pem")},
        "server": {"workers": 1},
        "storage": {"dir": str(root / "store"), "key_file": str(root / "store.key")},
    })
    upgrade(config)
    app = create_app(config)
    issuer = TokenIssuer(load_private_key(root / "k.pem"), "sivr-toplevel", NODE_AUDIENCE, MAX_EXCHANGED_TTL_S)
    user_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())

    def headers() -> dict[str, str]:
        """A fresh token of one session, as the toplevel's exchange mints them: nodes accept <= 60 s."""
        token, _ = issuer.issue(user_id, "bench", "physician", institution, session_id=session_id)
        return {"Authorization": f"Bearer {token}"}

    return app, headers


def _timed_block(client, url: str, headers: Callable[[], dict[str, str]]) -> list[float]:
    times = []
    sent = headers()  # one token per block, as a viewer reuses its token (the node caches it)
    for _ in range(BLOCK):
        started = time.perf_counter()
        reply = client.get(url, headers=sent)
        times.append(time.perf_counter() - started)
        assert reply.status_code == 200
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        app, headers = _node(Path(folder))
        client = app.test_client()
        files = [(f"{z}.dcm", to_bytes(dataset(512, 512, series="1.2.3.99", position=float(z)))) for z in range(8)]
        reply = client.post("/api/v1/records", headers=headers(), content_type="multipart/form-data",
                            data={"files": [(io.BytesIO(data), name) for name, data in files]})
        record_id = reply.json["id"]
        client.post(f"/api/v1/records/{record_id}/load", headers=headers())
        app.extensions["sivr_records"].get_loaded(record_id).wait_complete(60)
        url = f"/api/v1/records/{record_id}/frames/3?format=webp"
        audit = app.extensions[EXTENSION]
        samples: dict[str, list[float]] = {"audited": [], "not audited": []}
        _timed_block(client, url, headers)  # warm up: render once, then served from the image cache
        for _ in range(max(1, args.requests // BLOCK)):
            for mode in samples:
                app.extensions[EXTENSION] = audit if mode == "audited" else _NoAudit()
                samples[mode] += _timed_block(client, url, headers)
        app.extensions[EXTENSION] = audit
        for mode, times in samples.items():
            print(f"{mode:>12}: {len(times)} requests, median {statistics.median(times) * 1e6:.0f} µs, "
                  f"mean {statistics.fmean(times) * 1e6:.0f} µs")
        difference = statistics.median(samples["audited"]) - statistics.median(samples["not audited"])
        print(f"audit cost per frame request (difference of medians): {difference * 1e6:.1f} µs")
        with app.test_request_context(headers=headers()):
            authenticate()
            for index in range(1000):
                audit.note("frame", f"{index:064x}")
        for what in ("new", "updated"):
            started = time.perf_counter()
            count = audit.flush()
            print(f"flush of {count} {what} streams (one transaction): "
                  f"{(time.perf_counter() - started) * 1e3:.1f} ms")
            with app.test_request_context(headers=headers()):
                authenticate()
                for index in range(1000):
                    audit.note("frame", f"{index:064x}")
        audit.close()
        app.extensions["sivr_records"].shutdown()


if __name__ == "__main__":
    main()
