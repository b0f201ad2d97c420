"""Where installers/host_bundle.py may write a host's share of a deployment (its keys travel in it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.installers.systemd_check import REPO


def bundle(source: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "installers/host_bundle.py"), "--from", str(source),
                           "--out", str(out), "--layers", "toplevel"], capture_output=True, text=True, timeout=120)


def test_a_bundle_is_not_written_where_another_user_could_swap_its_keys(tmp_path):
    """`--out` an empty folder every local user may write: the bundle was written there, and another
    user renamed its keys/ away and put a signing key of their own in its place, which
    `install.sh --from` then gave the toplevel (reproduced as root, the other user `nobody`)."""
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "init", front=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    done = bundle(tmp_path / "init", shared)
    assert done.returncode != 0 and "may be written by other users" in done.stderr, done.stderr
    assert list(shared.iterdir()) == []

    sticky = tmp_path / "tmp"  # as /tmp: all may write, but none may rename what is another's
    sticky.mkdir()
    sticky.chmod(0o1777)
    done = bundle(tmp_path / "init", sticky / "toplevel-host")
    assert done.returncode == 0, done.stderr
    assert (sticky / "toplevel-host" / "toplevel.toml").is_file()
