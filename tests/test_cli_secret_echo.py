"""What `sivr` prints about arguments it does not take: never their values.

`sivr user add ... --password S3cret` (a flag it has no such option for) printed "unrecognized
arguments: S3cret" to standard error, and `--pass=S3cret` (read as an abbreviation of
`--password-stdin`) "ignored explicit argument 'S3cret'": the password went on into whatever
keeps the command's output (a configuration tool's log, a CI job's, a terminal recording).
"""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys
import time

import pytest

from tests.test_cli_password_stdin import stored_hash, takes

SIVR = [sys.executable, "-m", "daemons.cli"]
SECRET = "S3cret-do-not-print"


def run_sivr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SIVR, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("given", [
    ["--password", SECRET],
    [f"--password={SECRET}"],
    [f"--pass={SECRET}"],
    ["--passwd", SECRET],
    [SECRET],
    [f"-p{SECRET}"],  # a short option's value in the same word, as `mysql -p` takes it
    [f"-p={SECRET}"],
])
def test_an_argument_sivr_does_not_take_is_named_without_its_value(tmp_path, given):
    done = subprocess.run([*SIVR, "user", "add", "--config", str(tmp_path / "toplevel.toml"), "--username", "admin",
                           "--role", "sysadmin", *given], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert SECRET not in done.stdout + done.stderr, done.stderr
    assert "unrecognized arguments" in done.stderr and "--password-stdin" in done.stderr, done.stderr
    assert not (tmp_path / "toplevel.toml").exists()


def test_an_unknown_option_is_still_named(tmp_path):
    done = subprocess.run([*SIVR, "init", "--dir", str(tmp_path / "d"), "--hostnme=a.example"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "unrecognized arguments: --hostnme" in done.stderr and "a.example" not in done.stderr, done.stderr


def _on_a_terminal(argv: list[str], typed: bytes) -> bytes:
    """What a terminal shows of `sivr argv` run in it (a pseudo-terminal) while `typed` is typed."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: sivr with the terminal as its standard input and output
        os.execv(sys.executable, [sys.executable, "-m", "daemons.cli", *argv])
    shown = b""
    try:
        time.sleep(1.0)  # the prompt's turn; a terminal keeps what is typed early all the same
        os.write(terminal, typed)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([terminal], [], [], 0.5)[0]:
                continue
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # the child has gone: the terminal is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.waitpid(pid, 0)
        os.close(terminal)
    return shown


def test_password_stdin_at_a_terminal_does_not_show_the_password(tmp_path):
    """`sivr user add --password-stdin` with nothing piped in read the password from the terminal
    as it echoed it: the password stayed on the screen and in its scroll-back (and a recording)."""
    assert run_sivr("init", "--dir", str(tmp_path / "d")).returncode == 0
    config = tmp_path / "d" / "toplevel.toml"
    shown = _on_a_terminal(["user", "add", "--config", str(config), "--username", "tty-admin", "--role",
                            "sysadmin", "--password-stdin"], f"{SECRET}\n".encode())
    assert SECRET.encode() not in shown, shown
    assert b"user tty-admin (sysadmin) created" in shown, shown
    assert takes(stored_hash(config, "tty-admin"), SECRET)


def test_demo_json_is_rewritten_owner_only_whatever_mode_it_had(tmp_path):
    """demo.json holds the demo users' passwords. It was opened with O_TRUNC and mode 0600, which
    only a new file takes: one already there readable by every local user (copied in, restored
    from a backup, `chmod 644` to share the addresses) was filled with the new passwords and kept
    its mode."""
    from daemons.demo import write_demo_json
    from daemons.deployment import LocalDeployment, init_deployment

    layout = init_deployment(tmp_path / "demo", pick_free_ports=True)
    earlier = tmp_path / "demo" / "demo.json"
    earlier.write_text("{}")
    earlier.chmod(0o644)
    path = write_demo_json(LocalDeployment(layout), {"admin": {"username": "admin", "password": SECRET}})
    assert SECRET in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_demo_users_file_is_made_owner_only_again_when_it_is_kept(tmp_path):
    """demo-users.json (the demo users' passwords) is kept across `sivr demo` runs; one opened to every
    local user meanwhile was read and left as it was."""
    from daemons.demo import _users_file, seed_base
    from daemons.deployment import init_deployment

    layout = init_deployment(tmp_path / "demo", pick_free_ports=True)
    users = seed_base(layout)
    path = _users_file(tmp_path / "demo")
    path.chmod(0o644)
    assert seed_base(layout) == users
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_value_given_to_an_option_that_takes_none_is_not_repeated(tmp_path):
    """`--password-stdin=S3cret` was answered "ignored explicit argument 'S3cret'"."""
    done = subprocess.run([*SIVR, "user", "add", "--config", str(tmp_path / "toplevel.toml"), "--username", "admin",
                           "--role", "sysadmin", f"--password-stdin={SECRET}"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert SECRET not in done.stdout + done.stderr and "--password-stdin" in done.stderr, done.stderr
