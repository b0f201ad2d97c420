"""An install stopped half-way (a full disk, an interrupted `install.sh`) and run again.

The file size limit (RLIMIT_FSIZE) stands in for a full disk: a write beyond it fails with EFBIG
after the bytes below it were written, as ENOSPC does, without needing root to mount a small disk.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from daemons.layers import LAYERS
from shared.config import load_config

REPO = Path(__file__).resolve().parents[2]
PLACE = REPO / "installers" / "place_deployment.py"
ALL_LAYERS = "toplevel institution render web"


def place(init: Path, etc: Path, data: Path, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, str(PLACE), "--from", str(init), "--etc", str(etc), "--data", str(data),
         "--data-real", str(data), "--layers", ALL_LAYERS, "--with-ca-key"],
        capture_output=True, text=True, timeout=120, preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'installers'}"})


# 10,000 bytes: the first front config (12.5 kB) fails; 100,000: the toplevel's database (147 kB)
@pytest.mark.parametrize("file_size_limit", [10_000, 100_000])
def test_a_placement_stopped_by_a_full_disk_is_completed_whole_by_a_rerun(tmp_path, file_size_limit):
    """A key, front config or database copied in place was left empty or truncated under its own
    name when the disk filled; the re-run kept it as already placed (a 0-byte proxy secret, an
    nginx config cut at 8 kB, a toplevel database without the institutions `sivr init` registered)."""
    from daemons.cli import register_institutions
    from daemons.deployment import init_deployment

    init = tmp_path / "init"
    register_institutions(init_deployment(init, front=True))
    etc, data = tmp_path / "etc", tmp_path / "data"

    stopped = place(init, etc, data, file_size_limit)
    assert stopped.returncode != 0, stopped.stdout
    # nothing under a placed name is less than whole, and no config names an instance half placed
    for placed in (p for p in etc.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = placed.relative_to(etc)
        assert placed.suffix != ".toml", f"{relative} written before every instance's files were placed"
        assert placed.read_bytes() == (init / relative).read_bytes(), f"{relative} placed incomplete"
    assert [p.name for p in etc.rglob(".partial-*")] == []

    done = place(init, etc, data)
    assert done.returncode == 0, done.stderr
    for relative in ("keys/toplevel.front-secret", "keys/token_ed25519.pem", "keys/render-1-1.store.key",
                     "front/toplevel.conf", "front/render-1-1.conf", "tls/server.key", "tls/ca.key"):
        assert (etc / relative).read_bytes() == (init / relative).read_bytes(), relative
    assert (data / "toplevel" / "toplevel.db").read_bytes() == (init / "data" / "toplevel.db").read_bytes()
    for name in ("toplevel", "institution-1", "render-1-1", "web"):
        load_config(str(etc / f"{name}.toml"), name.split("-")[0], LAYERS[name.split("-")[0]].keys)
