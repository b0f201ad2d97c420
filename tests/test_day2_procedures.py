"""IT's procedures after the install, run as docs/deployment.md writes them: backups, restores,
the token signing-key rotation. Each test takes the command from the document itself, so a step
that loses or exposes data fails here, not at a hospital."""

from __future__ import annotations

import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOYMENT_DOC = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
SIVR = [sys.executable, "-m", "daemons.cli"]

needs_sqlite3 = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 command is not installed")


def _documented(pattern: str) -> str:
    """The one command of docs/deployment.md that matches `pattern` (inside backticks)."""
    found = re.findall(rf"`([^`]*{pattern}[^`]*)`", DEPLOYMENT_DOC.read_text(encoding="utf-8"))
    assert found, f"docs/deployment.md gives no command matching {pattern!r}"
    return found[0]


def _run_documented(command: str, file: Path, copy: Path) -> None:
    """Run a documented command with its FILE and COPY, under the usual umask 022 of a root shell."""
    line = command.replace("FILE", str(file)).replace("COPY", str(copy))
    subprocess.run(["bash", "-c", f"umask 022; {line}"], check=True, timeout=60)


def _database_with_rows(path: Path, *names: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS app_user (username TEXT)")
        db.executemany("INSERT INTO app_user VALUES (?)", [(n,) for n in names])
    db.close()
    path.chmod(0o600)


def _usernames(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return sorted(row[0] for row in db.execute("SELECT username FROM app_user"))
    finally:
        db.close()


@needs_sqlite3
def test_the_documented_sqlite_backup_is_as_private_as_the_database(tmp_path):
    """The copy holds every password hash and patient: it was written 0644 beside a 0600 database."""
    database, copy = tmp_path / "toplevel.db", tmp_path / "toplevel.backup.db"
    _database_with_rows(database, "admin", "dr.house")

    _run_documented(_documented(r'sqlite3 FILE "\.backup COPY"'), database, copy)

    assert _usernames(copy) == ["admin", "dr.house"]
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600


@needs_sqlite3
def test_the_documented_sqlite_restore_gives_back_the_backup_despite_the_wal_a_stopped_daemon_left(tmp_path):
    """A daemon stopped by systemd leaves FILE-wal; a restore that copied over FILE replayed it,
    and the "restored" database kept a user created after the backup."""
    database, copy = tmp_path / "toplevel.db", tmp_path / "toplevel.backup.db"
    _database_with_rows(database, "admin")
    _run_documented(_documented(r'sqlite3 FILE "\.backup COPY"'), database, copy)
    # the daemon writes on after the backup and ends without closing its connection, as one stopped does
    writer = (f"import os, sqlite3; db = sqlite3.connect({str(database)!r}); "
              "db.execute(\"INSERT INTO app_user VALUES ('after.backup')\"); db.commit(); os._exit(0)")
    subprocess.run([sys.executable, "-c", writer], check=True, timeout=60)
    assert Path(f"{database}-wal").stat().st_size > 0

    _run_documented(_documented(r'sqlite3 FILE "\.restore COPY"'), database, copy)

    assert _usernames(database) == ["admin"]
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_a_key_set_twice_as_a_rotation_step_once_read_is_refused_naming_it_and_the_fix(tmp_path):
    """Rotation step 2 said "add extra_public_keys = [...] under [tokens]"; every config already has
    `extra_public_keys = []`, and each unit then refused to start with "Cannot overwrite a value"."""
    root = tmp_path / "deploy"
    init = subprocess.run([*SIVR, "init", "--dir", str(root)], capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    config = root / "toplevel.toml"
    text = config.read_text(encoding="utf-8")
    assert "\nextra_public_keys = []\n" in text
    config.write_text(text.replace("[tokens]\n", '[tokens]\nextra_public_keys = ["keys/token_ed25519.next.pub"]\n', 1),
                      encoding="utf-8")

    result = subprocess.run([*SIVR, "db", "upgrade", "toplevel", "--config", str(config)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert "sets extra_public_keys a second time" in result.stderr
    assert "keep one line for it" in result.stderr
    step = _documented(r"extra_public_keys = \[\"keys/token_ed25519\.next\.pub\"\]")
    config.write_text(text.replace("extra_public_keys = []", step, 1), encoding="utf-8")
    fixed = subprocess.run([*SIVR, "db", "upgrade", "toplevel", "--config", str(config)],
                           capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0, fixed.stderr
