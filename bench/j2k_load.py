"""Loading a JPEG 2000 series into a node's RAM: the node's imagecodecs plugin against pydicom's
default (pylibjpeg-openjpeg), alternating, in one run (docs/benchmarks-2d.md).

The demo CT (100 slices, JPEG 2000 lossless) is uploaded to an in-process node with
`render.load_threads = 2`, then loaded and unloaded a few times with each decoder:

    python -m bench.j2k_load [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from daemons.render.imaging import jpeg2000
from shared.tokens import generate_signing_keypair
from tests.render.conftest import build_node, close_node

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sivr-bench-j2k-"))
    generate_signing_keypair(root / "token.pem", root / "token.pub")
    (root / "node").mkdir()
    node = build_node(root / "node", (root / "token.pem", root / "token.pub"), render__load_threads=2)
    plugin_for = jpeg2000.plugin_for
    try:
        reply = node.upload(sorted((REPO / "demo_data" / "ct-chest-100").glob("*.dcm")))
        assert reply.status_code == 201, reply.json
        record_id = reply.json["id"]
        times: dict[str, list[float]] = {"pylibjpeg-openjpeg (pydicom's default)": [], "imagecodecs (the node's)": []}
        for _ in range(args.rounds):
            for name in times:
                jpeg2000.plugin_for = plugin_for if name.startswith("imagecodecs") else (lambda syntax: "")
                node.registry.unload(record_id)
                started = time.perf_counter()
                assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
                assert node.registry.get_loaded(record_id).wait_complete(300)
                times[name].append(time.perf_counter() - started)
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        for name, values in times.items():
            print(f"{name}: " + ", ".join(f"{value:.2f} s" for value in values))
    finally:
        jpeg2000.plugin_for = plugin_for
        close_node(node)


if __name__ == "__main__":
    main()
