"""Key files that docs/deployment.md has IT make by hand, made as it writes them (umask 022, a
root shell's): a key must be the owner's alone from the moment its file exists, not once a later
`chmod` runs, since a process of another user that opens it in between keeps reading it after."""

from __future__ import annotations

import os
import stat
import subprocess
import time

from tests.test_day2_procedures import _documented


def test_the_documented_new_key_encryption_key_is_never_readable_by_others(tmp_path):
    """`head -c 32 /dev/urandom > new.key; chmod 600`: the file was 0644 while head wrote it."""
    command = _documented(r"head -c 32 /dev/urandom")
    source = tmp_path / "random"
    os.mkfifo(source)  # head blocks on it: the key file is looked at while it is being written
    making = subprocess.Popen(["bash", "-c", f"umask 022; {command.replace('/dev/urandom', str(source))}"],
                              cwd=tmp_path)
    key = tmp_path / "new.key"
    try:
        deadline = time.monotonic() + 30
        while not key.exists():
            assert time.monotonic() < deadline, "the documented command made no new.key"
            time.sleep(0.01)
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, "the new KEK is readable by others while it is written"
    finally:
        with source.open("wb") as random:
            random.write(os.urandom(32))
        making.wait(timeout=30)
    assert making.returncode == 0
    assert key.stat().st_size == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
