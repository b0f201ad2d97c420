"""A render node started with a filled kernel cache compiles nothing, before or after it serves.

The mechanism, not a timing (this machine is too noisy for one): numba's own cache statistics.
The cache is filled the way installers/install.sh fills it (`python -m daemons.render.warm` with
NUMBA_CACHE_DIR set, as the systemd units set it); then a real `sivr serve render` warms up from
it before gunicorn starts, its worker warms up again before accepting requests, and the node
reports that warm-up in `GET /api/v1/node`: zero compilations, every kernel loaded from the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from daemons.deployment import LocalDeployment, init_deployment
from daemons.render.warm import KERNELS
from shared.tokens import TokenIssuer, load_private_key

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # filling an empty cache compiles every kernel: a minute or more


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("numba-cache")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "daemons.render.warm"], env=env, capture_output=True,
                          text=True, timeout=900, check=True)
    assert " 0 compiled" not in done.stdout, "an empty cache must have been filled by compiling"
    return cache


def test_install_time_warm_up_leaves_an_index_per_kernel(kernel_cache):
    indexes = {path.name.split("-")[0] for path in kernel_cache.rglob("*.nbi")}
    expected = {f"{k.py_func.__module__.rsplit('.', 1)[-1]}.{k.py_func.__name__}" for k in KERNELS}
    assert expected <= indexes
    assert list(kernel_cache.rglob("*.nbc")), "no compiled code in the cache"


def test_node_started_on_a_warm_cache_compiles_nothing(tmp_path, kernel_cache, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(kernel_cache))
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True)
    node = layout.first("render")
    running = LocalDeployment(layout, layers=("render",))
    try:
        running.start(timeout_s=300)
        serve_log = running.log_path(node.name).read_text(errors="replace")
        assert "kernels warm in" in serve_log and " 0 compiled" in serve_log, serve_log[-2000:]
        assert f"loaded from the cache in {kernel_cache}" in serve_log
        issuer = TokenIssuer(load_private_key(Path(layout.root, "keys", "token_ed25519.pem")),
                             "sivr-toplevel", node.url, 60)
        token, _ = issuer.issue(str(uuid.uuid4()), "ops", "instadmin", node.institution or str(uuid.uuid4()))
        reply = requests.get(f"{node.url}/api/v1/node", headers={"Authorization": f"Bearer {token}"},
                             verify=layout.ca_cert, timeout=60)
        assert reply.status_code == 200, reply.text
        warm = reply.json()["warm_up"]
        assert warm["compiled"] == 0, warm
        assert warm["from_cache"] > 0
    finally:
        running.stop()
