"""`sivr db copy`: a server begun on SQLite moves to PostgreSQL with its rows (IT's day 2).

Before it, pointing `database.url` at PostgreSQL and running `sivr db upgrade` gave an empty server:
every user, patient, finding and audit entry stayed behind in the SQLite file, and the institutions'
records named patients the toplevel no longer had. Each test runs against SQLite and, where
SIVR_TEST_PG_URL names a server (`.ci/run`), against a fresh PostgreSQL database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import peewee
import pytest

from daemons.cli import main
from daemons.institution import models as institution_models
from daemons.layers import get_layer
from daemons.toplevel import models as toplevel_models
from daemons.toplevel.admin_ops import create_user
from shared.config import Config
from shared.db import close_database, database_from_config

PASSWORD = "a long enough password"


@pytest.fixture
def deployment(tmp_path, capsys) -> Path:
    """A deployment made by `sivr init`, its toplevel with a user, a patient and audit entries."""
    root = tmp_path / "deployment"
    assert main(["init", "--dir", str(root), "--nodes-per-institution", "1"]) == 0
    config = str(root / "toplevel.toml")
    assert main(["db", "upgrade", "toplevel", "--config", config]) == 0
    assert main(["db", "upgrade", "institution", "--config", str(root / "institution-1.toml")]) == 0
    loaded = get_layer("toplevel").load_config(config)
    with _bound(loaded, toplevel_models.MODELS):
        institution = toplevel_models.Institution.get()
    create_user(loaded, "alice", PASSWORD, "physician", institution.id)
    with _bound(loaded, toplevel_models.MODELS):
        toplevel_models.Patient.create(first_name="Ana", last_name="Novak", sex="F", birth_date=dt.date(1960, 5, 1),
                                       insurance_number="HR-12")
    capsys.readouterr()
    return root


class _bound:
    """The layer's models bound to the database a config names, for a test's reads and writes."""

    def __init__(self, config: Path | Config, models):
        self.config = config if isinstance(config, Config) else get_layer("toplevel").load_config(str(config))
        self.models = models

    def __enter__(self) -> peewee.Database:
        self.db = database_from_config(self.config)
        self.ctx = self.db.bind_ctx(self.models)
        self.ctx.__enter__()
        return self.db

    def __exit__(self, *exc) -> None:
        self.ctx.__exit__(*exc)
        close_database(self.db)


def _rows(config: Config, models) -> dict[str, list[dict]]:
    with _bound(config, models):
        return {m._meta.table_name: list(m.select().order_by(m._meta.primary_key).dicts()) for m in models}


def _pointed_at(config: Config, url: str) -> Config:
    return Config({**config, "database": {**config["database"], "url": url}}, config.layer, config.source)


@pytest.fixture
def serving_elsewhere():
    """The layers' models pointed at a database that writes INSERT … RETURNING, as in a process
    whose app runs on PostgreSQL (the suite's other modules): the copy must write each INSERT for its
    own target (a SQLite target failed, "no attribute 'lastrowid'")."""
    elsewhere = peewee.SqliteDatabase(":memory:", returning_clause=True)
    kept = [(proxy, proxy.obj) for proxy in (toplevel_models.database_proxy, institution_models.database_proxy)]
    for proxy, _ in kept:
        proxy.initialize(elsewhere)
    yield
    for proxy, obj in kept:
        proxy.initialize(obj)


def test_a_toplevel_moves_with_its_rows_and_its_users_log_in_there(deployment, empty_database, capsys,
                                                                   serving_elsewhere):
    layer = get_layer("toplevel")
    source = layer.load_config(str(deployment / "toplevel.toml"))
    url = empty_database()

    assert main(["db", "copy", "toplevel", "--config", str(deployment / "toplevel.toml"), "--to", url]) == 0
    said = capsys.readouterr().out
    assert "rows copied (institution 1, app_user 1, record_type 0, patient 1" in said and "set database.url" in said

    target = _pointed_at(source, url)
    before, after = _rows(source, toplevel_models.MODELS), _rows(target, toplevel_models.MODELS)
    [copy_entry] = [entry for entry in after["audit_entry"] if entry["action"] == "database.copy"]
    after["audit_entry"].remove(copy_entry)
    assert after == before  # every row, id and value, dates and booleans as they were
    assert (copy_entry["action"], copy_entry["username"]) == ("database.copy", "sivr-cli")
    assert "copied from sqlite:///" in copy_entry["detail"]

    app = layer.create_app(target)  # the server started on the new database: its user logs in
    answer = app.test_client().post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert answer.status_code == 200, answer.get_json()

    assert main(["db", "copy", "toplevel", "--config", str(deployment / "toplevel.toml"), "--to", url]) == 2
    assert "already holds rows (institution 1, app_user 1, patient 1" in capsys.readouterr().err
    assert len(_rows(target, toplevel_models.MODELS)["app_user"]) == 1  # nothing doubled


def test_an_institutions_new_rows_after_the_copy_get_new_numbers(deployment, empty_database, capsys,
                                                                 serving_elsewhere):
    """Records and finding links are numbered by the database (serial columns); on PostgreSQL the
    copied rows left the sequence at 1, so the first record registered after the move collided."""
    layer = get_layer("institution")
    source = layer.load_config(str(deployment / "institution-1.toml"))
    models = institution_models.MODELS
    record = {"node": None, "rows": 512, "columns": 512, "frames": 3, "modality": "CT", "patient_id": "p",
              "registered_by": "u"}
    with _bound(source, models):
        node = institution_models.Node.create(name="render-1", url="https://render-1.example:5003",
                                              institution_id=source["institution"]["id"])
        for k in range(3):
            institution_models.Record.create(**{**record, "node": node, "id": f"{k:064x}"})
    url = empty_database()

    assert main(["db", "copy", "institution", "--config", str(deployment / "institution-1.toml"), "--to", url]) == 0
    target = _pointed_at(source, url)
    with _bound(target, models):
        added = institution_models.Record.create(**{**record, "node": node.id, "id": "f" * 64})
        assert added.pk == 4
        entry = institution_models.AuditEntry.get(institution_models.AuditEntry.action == "database.copy")
        assert entry.institution_id == source["institution"]["id"]


def test_a_source_not_at_this_releases_schema_or_no_database_is_refused_and_nothing_written(deployment, tmp_path,
                                                                                             capsys):
    config = deployment / "toplevel.toml"
    target = tmp_path / "target.db"
    with _bound(config, toplevel_models.MODELS) as db:
        db.execute_sql("UPDATE schema_version SET version = 4 WHERE layer = 'toplevel'")
    assert main(["db", "copy", "toplevel", "--config", str(config), "--to", f"sqlite:///{target}"]) == 2
    said = capsys.readouterr().err
    assert "holds toplevel schema 4, this release works with 5: run `sivr db upgrade toplevel" in said

    mistyped = deployment / "mistyped.toml"  # a path that is not there is not made a database
    mistyped.write_text(config.read_text().replace("toplevel.db", "top1evel.db"))
    assert main(["db", "copy", "toplevel", "--config", str(mistyped), "--to", f"sqlite:///{target}"]) == 2
    assert "top1evel.db, which does not exist: check the config's database.url" in capsys.readouterr().err
    assert not (deployment / "data" / "top1evel.db").exists()

    with _bound(config, toplevel_models.MODELS) as db:
        db.execute_sql("UPDATE schema_version SET version = 5 WHERE layer = 'toplevel'")
    institution = deployment / "institution-1.toml"  # a target holding another layer's database
    said = _copy_refused(config, f"sqlite:///{deployment / 'data' / 'institution-1.db'}", capsys)
    assert "holds the institution layer's database: copy the toplevel into an empty database of its own" in said
    assert main(["db", "copy", "institution", "--config", str(institution), "--to", "sqlite:///nowhere/x.db"]) == 2
    said = capsys.readouterr().err  # a target that cannot be opened is named as the --to database
    assert said.startswith("sivr: the --to database sqlite:///nowhere/x.db: ") and "institution-1.toml" not in said

    other = deployment / "other.toml"  # a database of another layer
    other.write_text(config.read_text().replace("toplevel.db", "institution-1.db"))
    assert main(["db", "copy", "toplevel", "--config", str(other), "--to", f"sqlite:///{target}"]) == 2
    assert "holds no toplevel database to copy" in capsys.readouterr().err
    assert not target.exists() or target.stat().st_size == 0


def _copy_refused(config: Path, url: str, capsys) -> str:
    assert main(["db", "copy", "toplevel", "--config", str(config), "--to", url]) == 2
    return capsys.readouterr().err


def test_a_row_sqlite_holds_but_cannot_read_stops_the_copy_naming_its_table(deployment, tmp_path, capsys):
    config = deployment / "toplevel.toml"
    with _bound(config, toplevel_models.MODELS) as db:
        db.execute_sql("UPDATE institution SET name = CAST(x'41ff42' AS TEXT)")  # not UTF-8
    said = _copy_refused(config, f"sqlite:///{tmp_path / 'target.db'}", capsys)
    assert said.startswith("sivr: table institution: the copy stopped after 0 of its rows: ") and "nothing was" in said


def test_a_copy_that_fails_half_way_leaves_the_target_empty(deployment, pg_database_factory, capsys):
    """SQLite keeps a NUL in a text column, PostgreSQL refuses it: the copy stops at that row, and
    the tables it had already filled are rolled back with it."""
    config = deployment / "toplevel.toml"
    with _bound(config, toplevel_models.MODELS):
        toplevel_models.Patient.update(last_name="Nov\x00ak").execute()
    url = pg_database_factory()
    said = _copy_refused(config, url, capsys)
    assert said.startswith("sivr: table patient: the copy stopped after 0 of its rows: ") and "NUL" in said
    target = _pointed_at(get_layer("toplevel").load_config(str(config)), url)
    db = database_from_config(target)
    try:
        assert db.get_tables() == []
    finally:
        close_database(db)
