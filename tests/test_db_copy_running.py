"""`sivr db copy` while the layer's server still runs (IT forgot `systemctl stop`).

The copy read the SQLite file while the running server went on writing to it: a failed login
audited after the copy began was in the SQLite file and not in the copy, lost once the unit was
switched to PostgreSQL. Now `sivr serve` holds a shared lock beside the SQLite file for as long as
gunicorn or a worker of it runs, and a copy takes it exclusively: each refuses while the other runs.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import requests

from daemons.cli import main
from daemons.deployment import LocalDeployment, init_deployment
from daemons.layers import get_layer
from shared.db_copy import SERVING_LOCK_SUFFIX, serving_lock_path


def _tables(url: str) -> list[str]:
    """The tables a database at `url` holds (none: nothing was written)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return []
        with sqlite3.connect(path) as conn:
            return [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    import psycopg

    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def test_a_copy_is_refused_naming_the_unit_while_the_server_runs_and_done_once_it_stopped(tmp_path, empty_database,
                                                                                           capsys):
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True, hold_ports=True)
    configs = {"toplevel": str(layout.first("toplevel").config), "institution": str(layout.first("institution").config)}
    units = {"toplevel": "sivr-toplevel", "institution": "sivr-institution@1"}
    targets = {layer: empty_database() for layer in configs}
    with LocalDeployment(layout, layers=("toplevel", "institution")) as running:
        for layer, config in configs.items():
            assert main(["db", "copy", layer, "--config", config, "--to", targets[layer]]) == 2
            err = capsys.readouterr().err
            assert f"`systemctl stop {units[layer]}` first" in err and "nothing was copied" in err, err
            assert _tables(targets[layer]) == [], "nothing is written into the target"
        # the server was not disturbed: it still answers, and writes (a failed login is audited)
        reply = requests.post(f"{running.url('toplevel')}/api/v1/auth/login",
                              json={"username": "nobody", "password": "not the password"},
                              verify=running.ca_cert, timeout=10)
        assert reply.status_code == 401
    for layer, config in configs.items():  # stopped: the copy goes through, with the row written last
        assert main(["db", "copy", layer, "--config", config, "--to", targets[layer]]) == 0, capsys.readouterr().err
    assert "login_failure 1" in capsys.readouterr().out


def test_a_server_does_not_start_while_a_copy_holds_its_database(tmp_path):
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True)
    config = str(layout.first("toplevel").config)
    assert main(["db", "upgrade", "toplevel", "--config", config]) == 0
    lock = serving_lock_path(get_layer("toplevel").load_config(config))
    assert lock is not None
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as `sivr db copy` holds it while it copies
        started = subprocess.run([sys.executable, "-P", "-m", "daemons.cli", "serve", "toplevel", "--config", config],
                                 capture_output=True, text=True, timeout=60)
    finally:
        os.close(fd)
    assert started.returncode == 2, started.stdout + started.stderr
    assert "`sivr db copy` is copying its database now" in started.stderr


def test_a_server_refused_during_a_copy_leaves_the_schema_alone(tmp_path):
    """A server of a newer release started while a copy runs must not migrate the database being
    copied: the lock is taken before the schema upgrade (here the database does not exist yet, and an
    upgrade would have made it)."""
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True)
    config = str(layout.first("toplevel").config)
    lock = serving_lock_path(get_layer("toplevel").load_config(config))
    assert lock is not None
    database = lock.with_name(lock.name.removesuffix(SERVING_LOCK_SUFFIX))
    assert not database.exists()
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = subprocess.run([sys.executable, "-P", "-m", "daemons.cli", "serve", "toplevel", "--config", config],
                                 capture_output=True, text=True, timeout=60)
    finally:
        os.close(fd)
    assert started.returncode == 2, started.stdout + started.stderr
    assert not database.exists(), "the refused server upgraded the database's schema"
