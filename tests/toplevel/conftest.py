"""Fixtures for the toplevel API tests: the real app on a fresh database, real argon2 and tokens.

Every test runs once on a temporary SQLite file and once on an emptied PostgreSQL database when
`SIVR_TEST_PG_URL` names a server where databases may be created (`.ci/run` starts one). The
first institutions and users are created through `admin_ops`, the path `sivr user add` takes.
argon2 runs with small costs here so the suite stays fast; the algorithm is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemons.toplevel import admin_ops
from daemons.toplevel.app import create_app
from daemons.toplevel.models import MODELS, database_proxy, upgrade
from daemons.toplevel.settings import KEYS
from shared.config import Config, build_config

from .support import PASSWORDS, Api

#: The toplevel's own audience (its base URL): what session tokens name.
TOPLEVEL_AUDIENCE = "https://toplevel.test:5001"
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}


@pytest.fixture(scope="session")
def pg_server_database(pg_session_database_factory) -> str:
    """One PostgreSQL database for this test session (skips when `SIVR_TEST_PG_URL` is unset).

    Creating a database costs about a second (a checkpoint); each test instead gets an empty
    `public` schema in this one (see `database_url`), which is just as fresh and much cheaper.
    """
    return pg_session_database_factory()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """A database nobody else uses: a temporary SQLite file, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'toplevel.db'}"
        return
    url = request.getfixturevalue("pg_server_database")
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        conn.close()
    yield url


@pytest.fixture
def make_config(database_url: str, signing_keys) -> Callable[..., Config]:
    """A toplevel Config on the test database; keyword sections override the defaults."""

    def make(**sections: dict[str, Any]) -> Config:
        values: dict[str, dict[str, Any]] = {
            "database": {"url": database_url},
            "tokens": {"private_key": str(signing_keys[0]), "public_key": str(signing_keys[1]),
                       "audience": TOPLEVEL_AUDIENCE},
            "auth": dict(FAST_ARGON2),
        }
        for section, body in sections.items():
            values.setdefault(section, {}).update(body)
        return build_config("toplevel", KEYS, values)

    return make


@pytest.fixture
def config(make_config) -> Config:
    return make_config()


@dataclass
class Seed:
    """Two institutions and a physician in each; `admin` is a system admin of A, `admin_b` the
    institution admin of B."""

    institution_a: dict[str, Any]
    institution_b: dict[str, Any]
    users: dict[str, dict[str, Any]]


@pytest.fixture
def seed(config: Config) -> Seed:
    upgrade(config)
    inst_a = admin_ops.create_institution(config, "General Hospital A", "Main St 1",
                                          "https://inst-a.example:5002")
    inst_b = admin_ops.create_institution(config, "Clinic B", "Side St 2", "https://inst-b.example:5002")
    users = {
        "admin": admin_ops.create_user(config, "admin", PASSWORDS["admin"], "sysadmin", inst_a["id"], "Ada Admin"),
        "physician": admin_ops.create_user(config, "dr.house", PASSWORDS["physician"], "physician",
                                           inst_a["id"], "Gregory House"),
        "admin_b": admin_ops.create_user(config, "admin.b", PASSWORDS["admin_b"], "instadmin", inst_b["id"],
                                         "Bob Admin"),
        "physician_b": admin_ops.create_user(config, "dr.b", PASSWORDS["physician_b"], "physician",
                                             inst_b["id"], "Beatrix Doc"),
    }
    return Seed(inst_a, inst_b, users)


@pytest.fixture
def app(config: Config, seed: Seed):
    application = create_app(config)
    application.config["TESTING"] = True
    yield application
    if not database_proxy.is_closed():
        database_proxy.close()


@pytest.fixture
def api(app) -> Api:
    return Api(app.test_client())


@pytest.fixture
def tokens(api: Api, seed: Seed) -> dict[str, str]:
    """A fresh access token for every seeded user."""
    return {role: api.login(user["username"], PASSWORDS[role])["access_token"]
            for role, user in seed.users.items()}


@pytest.fixture
def db_state(app) -> Callable[[], dict[str, list[tuple]]]:
    """Every row of every toplevel table except the audit log (refusals are audited by design)."""

    def snapshot() -> dict[str, list[tuple]]:
        state = {}
        with database_proxy.connection_context():
            for model in MODELS:
                if model._meta.table_name == "audit_entry":
                    continue
                state[model._meta.table_name] = sorted(tuple(map(str, row)) for row in model.select().tuples())
        return state

    return snapshot
