"""Schema upgrades from several servers starting at once against one database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UPGRADE = """
import peewee
from shared.db import connect_database, upgrade_schema
class Thing(peewee.Model):
    x = peewee.IntegerField()
db = connect_database({url!r})
with db.bind_ctx([Thing]):
    versions = {{upgrade_schema(db, "toplevel", [Thing]) for _ in range(30)}}
print(*versions)
"""


def _upgrade_at_once(url: str, servers: int = 12) -> list[tuple[int, str]]:
    """Upgrade once (a deployment that exists), then `servers` processes upgrade repeatedly together."""
    subprocess.run([sys.executable, "-c", UPGRADE.format(url=url)], cwd=REPO, check=True, capture_output=True)
    processes = [subprocess.Popen([sys.executable, "-c", UPGRADE.format(url=url)], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(servers)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        results.append((process.returncode, out.strip() or err.strip()[-300:]))
    return results


def test_servers_starting_together_on_sqlite_all_upgrade(tmp_path):
    assert _upgrade_at_once(f"sqlite:///{tmp_path}/shared.db") == [(0, "1")] * 12


@pytest.mark.postgres
def test_servers_starting_together_on_postgresql_all_upgrade(pg_database_factory):
    assert _upgrade_at_once(pg_database_factory()) == [(0, "1")] * 12


@pytest.mark.postgres
def test_postgresql_is_driven_by_psycopg_3(pg_database_factory):
    """psycopg 3 even where psycopg2 is installed too (peewee would otherwise take psycopg2)."""
    import psycopg

    from shared.db import connect_database

    db = connect_database(pg_database_factory())
    try:
        assert isinstance(db.connection(), psycopg.Connection)
        assert db.execute_sql("SELECT %s + 1", (41,)).fetchone() == (42,)
    finally:
        db.close()
