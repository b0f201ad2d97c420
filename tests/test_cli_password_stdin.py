"""`sivr user add --password-stdin` stores the password on the line, without its line ending.

A password file written on Windows ends in CR LF: only LF was taken off, and the stored password
ended in a CR that nobody can type at the login form. Spaces are part of a password and stay.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

SIVR = [sys.executable, "-m", "daemons.cli"]


def sivr(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([*SIVR, *args], input=stdin, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def toplevel_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("init")
    done = sivr("init", "--dir", str(root), "--institution-name", "General Hospital")
    assert done.returncode == 0, done.stderr
    return root / "toplevel.toml"


def stored_hash(config: Path, username: str) -> str:
    with sqlite3.connect(config.parent / "data" / "toplevel.db") as db:
        (found,) = db.execute("SELECT password_hash FROM app_user WHERE username = ?", (username,)).fetchone()
    return found


def takes(stored: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(stored, password)
    except VerificationError:
        return False


@pytest.mark.parametrize(("username", "line", "password"), [
    ("windows-admin", b"a-long-password-1\r\n", "a-long-password-1"),
    ("unix-admin", b"a-long-password-1\n", "a-long-password-1"),
    ("no-ending-admin", b"a-long-password-1", "a-long-password-1"),
    ("spaced-admin", b" a long password 1 \r\n", " a long password 1 "),
    ("tabbed-admin", b"a-long-password-1\t\n", "a-long-password-1\t"),
])
def test_the_stored_password_is_the_line_without_its_ending(toplevel_config, username, line, password):
    done = sivr("user", "add", "--config", str(toplevel_config), "--username", username, "--role", "sysadmin",
                "--password-stdin", stdin=line)
    assert done.returncode == 0, done.stderr
    stored = stored_hash(toplevel_config, username)
    assert takes(stored, password), f"{line!r} did not store {password!r}"
    assert not takes(stored, password + "\r")
