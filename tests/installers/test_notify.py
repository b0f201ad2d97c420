"""`sivr serve` keeps the promise the units' `Type=notify` + `NotifyAccess=main` rely on.

systemd counts a unit as started only when its main process sends READY=1 on $NOTIFY_SOCKET, and
with NotifyAccess=main it ignores the message from any other process. `sivr serve` execs gunicorn
in its own process, whose arbiter sends READY once it listens. Were READY never sent, or sent by a
child, every unit would hang in "activating" and be killed after the start timeout.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from daemons.deployment import init_deployment
from tests.installers.systemd_check import REPO


def _receive_notification(sock: socket.socket) -> tuple[bytes, int]:
    """One datagram and the sender's PID, from the kernel's SCM_CREDENTIALS (not from the sender)."""
    ucred = struct.calcsize("3i")
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _uid, _gid = array.array("i", payload[:ucred])
            return data, pid
    raise AssertionError("no sender credentials on the notification")


@pytest.mark.parametrize("layer", ["toplevel", "web", "institution", "render"])
def test_serve_reports_ready_from_the_main_process(tmp_path, layer):
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True)
    config = layout.first(layer).config
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(90)
        env = {**os.environ, "NOTIFY_SOCKET": path, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, "-m", "daemons.cli", "serve", layer, "--config", config],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            messages = []
            while not any(b"READY=1" in m for m, _ in messages):
                try:
                    messages.append(_receive_notification(sock))
                except TimeoutError:
                    pytest.fail(f"no READY=1 within 90 s (exit code {process.poll()})")
            # what the units' ExecStartPost= runs next: the layer answers /readyz with 200
            ready = subprocess.run([sys.executable, "-m", "daemons.cli", "ready", layer, "--config", config,
                                    "--wait", "60"], env=env, capture_output=True, text=True, timeout=90)
            assert ready.returncode == 0 and f"{layer}: ready" in ready.stdout, ready.stderr
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    ready_from = [pid for message, pid in messages if b"READY=1" in message]
    assert ready_from == [process.pid], f"READY came from {ready_from}, main process is {process.pid}"


def test_ready_fails_naming_the_problem(tmp_path):
    """Nothing listening, then a toplevel whose database file is gone: exit 1 and the reason."""
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True)
    config = layout.first("toplevel").config
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ready = [sys.executable, "-m", "daemons.cli", "ready", "toplevel", "--config", config]
    idle = subprocess.run(ready, env=env, capture_output=True, text=True, timeout=60)
    assert idle.returncode == 1 and "no answer from 127.0.0.1" in idle.stderr
    process = subprocess.Popen([sys.executable, "-m", "daemons.cli", "serve", "toplevel", "--config", config],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert subprocess.run([*ready, "--wait", "60"], env=env, capture_output=True, timeout=90).returncode == 0
        (tmp_path / "deploy" / "data" / "toplevel.db").rename(tmp_path / "toplevel.db")
        gone = subprocess.run(ready, env=env, capture_output=True, text=True, timeout=60)
        assert gone.returncode == 1 and "database:" in gone.stderr
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
