"""Schema upgrades from several servers starting at once against one database; connections per
request (SQLite) and pooled per process (PostgreSQL)."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import peewee
import pytest
from werkzeug.exceptions import InternalServerError

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


def _backends(url: str) -> set[int]:
    """The server processes of the other connections to the database at `url`."""
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND pid <> pg_backend_pid()").fetchall()
    return {pid for (pid,) in rows}


def _pid_app(db):
    """A layer-like app: its connection bound per request, one route answering its server process."""
    from flask import Flask

    from shared.db import bind_per_request

    app = Flask(__name__)
    bind_per_request(app, db)
    app.add_url_rule("/pid", "pid", lambda: {"pid": db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]})
    return app


@pytest.mark.postgres
def test_requests_on_postgresql_share_one_pooled_connection(pg_database_factory):
    """A new PostgreSQL connection costs a password exchange (10.6 ms with SCRAM on the CI VM): the
    requests of a process take one from its pool and give it back, instead of one each."""
    from shared.db import connect_database

    url = pg_database_factory()
    db = connect_database(url)
    app = _pid_app(db)
    pids = {app.test_client().get("/pid").json["pid"] for _ in range(5)}
    assert db.is_closed()  # given back after each request
    assert len(pids) == 1
    assert _backends(url) == pids


@pytest.mark.postgres
def test_a_pooled_connection_the_server_dropped_is_replaced_on_the_next_request(pg_database_factory):
    import psycopg

    from shared.db import connect_database

    url = pg_database_factory()
    db = connect_database(url)
    app = _pid_app(db)
    before = app.test_client().get("/pid").json["pid"]
    with psycopg.connect(url) as connection:  # as a database server's restart would
        connection.execute("SELECT pg_terminate_backend(%s)", (before,))
    answer = app.test_client().get("/pid")
    assert answer.status_code == 200
    assert answer.json["pid"] != before


@pytest.mark.postgres
def test_a_connection_left_by_an_ended_thread_is_closed_when_the_next_one_is_taken(pg_database_factory):
    """Without the pool the ended thread's connection was closed with it; the pool must not keep it
    in use for the life of the process."""
    from shared.db import connect_database

    url = pg_database_factory()
    db = connect_database(url)
    left: list[int] = []
    thread = threading.Thread(target=lambda: left.append(db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]))
    thread.start()
    thread.join()
    assert left[0] in _backends(url)
    with db.connection_context():
        db.execute_sql("SELECT 1")
        assert left[0] not in _backends(url)


@pytest.mark.postgres
def test_concurrent_requests_each_take_a_connection_and_later_ones_reuse_them(pg_database_factory):
    from shared.db import connect_database

    url = pg_database_factory()
    db = connect_database(url)
    together = threading.Barrier(6)

    def query() -> int:
        with db.connection_context():
            pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
            together.wait(timeout=30)  # all six hold theirs at once
            return pid

    with ThreadPoolExecutor(6) as pool:
        first = set(pool.map(lambda _: query(), range(6)))
        assert len(first) == 6
        together = threading.Barrier(1)
        later = set(pool.map(lambda _: query(), range(30)))
    assert later <= first
    assert _backends(url) == first


@pytest.mark.postgres
def test_pooled_connections_are_bounded_in_time_and_prepare_nothing(pg_database_factory):
    """A pooled connection lives for minutes: it must give up on a vanished server within a bound, and
    leave no prepared statement on the server (PgBouncer, schema upgrades); a URL may still say otherwise."""
    from shared.db import connect_database

    url = pg_database_factory()
    db = connect_database(url)
    with db.connection_context():
        for _ in range(8):  # psycopg 3 prepares on a statement's fifth run unless told not to
            db.execute_sql("SELECT count(*) FROM pg_class WHERE relname = %s", ("x",)).fetchall()
        assert db.execute_sql("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        options = dict(item.split("=", 1) for item in db.connection().info.dsn.split())  # as libpq uses them
    assert [options[key] for key in ("tcp_user_timeout", "keepalives_idle", "connect_timeout")] == ["30000", "30", "10"]
    overridden = connect_database(url + "?tcp_user_timeout=5000")
    with overridden.connection_context():
        assert "tcp_user_timeout=5000" in overridden.connection().info.dsn.split()


def test_closing_a_requests_sqlite_connection_does_not_checkpoint_the_wal(tmp_path):
    """A request that writes closes its connection; with the app's idle holder open that close is
    not the last one, so the WAL stays (no checkpoint and fsync per request) and data is intact."""
    from flask import Flask

    from shared.db import SQLITE_HOLDER_EXTENSION, bind_per_request, connect_database

    path = tmp_path / "layer.db"
    db = connect_database(f"sqlite:///{path}")
    db.execute_sql("CREATE TABLE note (x INTEGER)")
    db.close()
    app = Flask(__name__)
    bind_per_request(app, db)

    @app.post("/write")
    def write():
        db.execute_sql("INSERT INTO note VALUES (1)")
        return "", 204

    for _ in range(3):
        assert app.test_client().post("/write").status_code == 204
        assert db.is_closed()
    assert SQLITE_HOLDER_EXTENSION in app.extensions
    assert (tmp_path / "layer.db-wal").exists()  # removed by a checkpoint when the last connection closes
    with db.connection_context():
        assert db.execute_sql("SELECT count(*) FROM note").fetchone() == (3,)


def test_a_schema_newer_than_this_release_is_refused_not_reported_as_upgraded(tmp_path):
    """A database a later release upgraded (then rolled back to this one) cannot be served by this
    code; `sivr db upgrade` used to print its version and exit 0, and readiness then sent the
    operator back to `sivr db upgrade`."""
    import peewee

    from shared.config import ConfigError
    from shared.db import SchemaVersion, connect_database, upgrade_schema

    class Thing(peewee.Model):
        x = peewee.IntegerField()

    db = connect_database(f"sqlite:///{tmp_path}/t.db")
    with db.bind_ctx([Thing, SchemaVersion]):
        assert upgrade_schema(db, "toplevel", [Thing]) == 1
        SchemaVersion.update(version=9).execute()
        with pytest.raises(ConfigError, match=r"toplevel schema 9 is newer than this release \(1\): "
                                              r"install that release or restore the pre-upgrade backup"):
            upgrade_schema(db, "toplevel", [Thing])
        assert SchemaVersion.get().version == 9  # left as it was
    db.close()


def test_sivr_db_upgrade_exits_non_zero_on_a_newer_schema(tmp_path):
    from daemons.cli import main
    from daemons.deployment import init_deployment
    from shared.db import SchemaVersion, connect_database

    layout = init_deployment(tmp_path / "d", pick_free_ports=True)
    config = next(i.config for i in layout.instances if i.layer == "toplevel")
    assert main(["db", "upgrade", "toplevel", "--config", config]) == 0
    db = connect_database(f"sqlite:///{tmp_path}/d/data/toplevel.db")
    with db.bind_ctx([SchemaVersion]):
        SchemaVersion.update(version=9).where(SchemaVersion.layer == "toplevel").execute()
    db.close()
    assert main(["db", "upgrade", "toplevel", "--config", config]) == 2


@pytest.mark.parametrize("layer", ["toplevel", "institution", "render"])
@pytest.mark.parametrize("url, cause", [
    ("postgresql://sivr:s3cret@127.0.0.1:1/sivr", "connection"),  # nothing listens on port 1
    ("postgresql://sivr@127.0.0.1:1/sivr?password=s3cret", "connection"),  # libpq takes it in the query too
    ("postgresql://sivr@127.0.0.1:1/sivr?connect_timeout=3&PASSWORD=s3cret&sslpassword=s3cret", "connection"),
    ("sqlite:///{tmp}/missing/sivr.db", "unable to open database file"),
    ("mysql://sivr:s3cret@db.example.org/sivr", "unsupported scheme 'mysql'"),
    ("sqlite:///{tmp}/sivr.db?bogus=1", "bogus"),
    ("postgresql://sivr:s3cret@db.example.org:99999/sivr", "Port"),  # ValueError naming neither file nor key
    ("postgresql://sivr:s3cret@[::1/sivr", "IPv6"),
    ("postgresql://sivr:s3cret@db.example.org:abc/sivr", "Port"),
    ("postgresql://sivr:s3cret@db.example.org:5432", "names no database"),
    ("postgresql://sivr:s3cret@db.example.org/sivr?max_connections=5", "max_connections: settings of SIVR's"),
    ("cockroachdb://sivr:s3cret@db.example.org/sivr?timeout=3", "timeout: settings of SIVR's"),
])
def test_an_unusable_database_url_is_a_config_error_without_the_password(tmp_path, capsys, layer, url, cause):
    """`sivr db upgrade` (and `serve`, `user add`, which upgrade first) used to end in a driver's
    traceback; the operator needs the file, the setting and the cause, and no password on screen."""
    from daemons.cli import main

    config = tmp_path / f"{layer}.toml"
    config.write_text(f'[database]\nurl = "{url.format(tmp=tmp_path)}"\n')
    assert main(["db", "upgrade", layer, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: database.url " in err and cause in err, err
    assert "s3cret" not in err and "Traceback" not in err


@pytest.mark.parametrize("folder", ["site#2", "site?2", "site\n2"])
def test_a_deployment_folder_an_sqlite_url_cannot_name_is_refused_not_opened_elsewhere(tmp_path, capsys, folder):
    """`sivr init --dir '/srv/x#y'` writes relative SQLite URLs; joined with the folder, the `#` ended
    the URL: every layer opened one database, `/srv/x`, outside the deployment. A `?` began the URL's
    parameters ("invalid keyword argument"), a line break gave "unable to open database file"."""
    from daemons.cli import main

    deployment = tmp_path / folder
    deployment.mkdir()
    config = deployment / "toplevel.toml"
    config.write_text('[database]\nurl = "sqlite:///data/toplevel.db"\n')
    assert main(["db", "upgrade", "toplevel", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: database.url " in err and "cannot hold '#', '?' or control characters" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]  # no database made beside it


def test_sivr_db_upgrade_names_a_schema_version_that_is_no_number(tmp_path, capsys):
    """`schema_version = 'abc'` (a database edited by hand) gave a TypeError traceback."""
    from daemons.cli import main
    from daemons.deployment import init_deployment
    from shared.db import connect_database

    layout = init_deployment(tmp_path / "d", pick_free_ports=True)
    config = next(i.config for i in layout.instances if i.layer == "toplevel")
    assert main(["db", "upgrade", "toplevel", "--config", config]) == 0
    db = connect_database(f"sqlite:///{tmp_path}/d/data/toplevel.db")
    db.execute_sql("UPDATE schema_version SET version = 'abc' WHERE layer = 'toplevel'")
    db.close()
    capsys.readouterr()
    assert main(["db", "upgrade", "toplevel", "--config", config]) == 2
    err = capsys.readouterr().err
    assert config in err and "schema_version" in err and "'abc'" in err and len(err.strip().splitlines()) == 1, err


def _error_app(db):
    """A layer-like app with the shared error handlers and its connection bound per request."""
    from flask import Flask

    from shared.db import bind_per_request
    from shared.errors import register_error_handlers

    app = Flask(__name__)
    register_error_handlers(app)
    bind_per_request(app, db)
    return app


def test_a_layer_whose_database_is_down_answers_503_and_asks_for_a_retry(tmp_path):
    """A PostgreSQL that is down or restarting answered every request that needed it with a 500
    `internal_error` (a login, a patient search), as if the server were broken; it is a 503 with
    Retry-After, which clients and proxies retry, and the log keeps the cause."""
    from daemons.deployment import free_port
    from daemons.toplevel.app import create_app
    from daemons.toplevel.settings import KEYS
    from shared.config import build_config
    from shared.tokens import generate_signing_keypair

    generate_signing_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    config = build_config("toplevel", KEYS, {
        "database": {"url": f"postgresql://sivr:unused@127.0.0.1:{free_port()}/nothing-listens-here"},
        "tokens": {"private_key": str(tmp_path / "k.pem"), "public_key": str(tmp_path / "k.pub"),
                   "audience": "https://toplevel.test"}})
    answer = create_app(config).test_client().post("/api/v1/auth/login",
                                                    json={"username": "dr.house", "password": "x" * 12})
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "database_unavailable"
    assert answer.headers["Retry-After"] == "1"


@pytest.mark.parametrize("raised, status, code", [
    (sqlite3.OperationalError("database is locked"), 503, "database_unavailable"),
    (ValueError("a bug"), 500, "internal_error"),
], ids=["database-busy", "bug"])
def test_what_an_after_request_hook_raises_is_answered_like_what_a_view_raises(tmp_path, caplog, raised, status,
                                                                                code):
    """The `access.denied` audit of a refusal is written after the view (`shared.audit.audit_denials`).
    What such a hook raised reached Flask's own 500 wrapper, which the handlers of the view's errors
    never see: werkzeug's sentence under code `http_error`, and a busy or restarting database a 500
    where a view's own database error is a 503 with Retry-After."""
    from shared.db import connect_database

    app = _error_app(connect_database(f"sqlite:///{tmp_path / 'hook.db'}"))

    @app.get("/refused")
    def refused():
        return {"error": {"code": "forbidden", "message": "no"}}, 403

    @app.after_request
    def audit(response):  # as `audit_denials`: writes for the refusal only, not for the error answered then
        if response.status_code == 403:
            raise raised
        return response

    with caplog.at_level(logging.ERROR):
        answer = app.test_client().get("/refused")
    assert answer.status_code == status, answer.json
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [raised]  # logged once, with its cause
    assert answer.json["error"]["code"] == code
    assert answer.json["error"]["message"] != InternalServerError.description
    assert (answer.headers.get("Retry-After") == "1") == (status == 503)


def _counter_app(pg_database_factory):
    """A fresh PostgreSQL database with one row to fight over, and an app answering with the layers'
    error handlers on it."""
    import psycopg

    from shared.db import connect_database

    url = pg_database_factory()
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE TABLE counter (id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0)")
    db = connect_database(url)
    return url, db, _error_app(db)


def _retry_asked_then_count(app, path: str, url: str) -> int:
    """POST `path`, check it was answered 503 `database_unavailable`, and return the counter as stored."""
    import psycopg

    answer = app.test_client().post(path)
    assert answer.status_code == 503, answer.json
    assert answer.json["error"]["code"] == "database_unavailable"
    with psycopg.connect(url) as check:
        return check.execute("SELECT n FROM counter").fetchone()[0]


@pytest.mark.postgres
def test_a_transaction_rolled_back_for_a_concurrent_one_is_a_503_not_a_500(pg_database_factory):
    """PostgreSQL (and CockroachDB, for every transaction that loses) rolls back a serializable
    transaction that collides with one committed meanwhile (SQLSTATE 40001); psycopg raises that
    unwrapped by peewee, and it ended the request as a 500."""
    import psycopg

    url, db, app = _counter_app(pg_database_factory)

    @app.post("/collide")
    def collide():
        with db.atomic():
            db.execute_sql("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            db.execute_sql("SELECT n FROM counter WHERE id = 1")
            with psycopg.connect(url, autocommit=True) as other:  # a concurrent writer commits first
                other.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
            db.execute_sql("UPDATE counter SET n = n + 1 WHERE id = 1")
        return {}

    assert _retry_asked_then_count(app, "/collide", url) == 1  # the loser's write is not kept


@pytest.mark.postgres
def test_a_lock_timeout_that_ran_out_is_a_503_not_a_500(pg_database_factory):
    """An administrator's `lock_timeout` ends a statement that waited for a row another transaction
    holds (SQLSTATE 55P03, class 55 whose other codes are mistakes): that is passing trouble, and it
    was a 500."""
    import psycopg

    url, db, app = _counter_app(pg_database_factory)

    @app.post("/wait")
    def wait():
        with psycopg.connect(url) as holder:  # another transaction holds the row
            holder.execute("SELECT n FROM counter WHERE id = 1 FOR UPDATE")
            with db.atomic():
                db.execute_sql("SET LOCAL lock_timeout = '100ms'")
                db.execute_sql("UPDATE counter SET n = n + 1 WHERE id = 1")
        return {}

    assert _retry_asked_then_count(app, "/wait", url) == 0


def test_a_query_the_node_built_wrong_stays_a_500_not_a_503(tmp_path):
    """SQLite says "parser stack overflow" for a query nested too deep, in the same class as "database
    is locked": a retry never mends it, so it must not be answered "try again" (it hid the node's
    own fault: a QIDO-RS search with 100 modalities got 503 at every try)."""
    from shared.db import connect_database

    db = connect_database(f"sqlite:///{tmp_path / 'x.db'}")
    app = _error_app(db)
    app.add_url_rule("/deep", "deep", lambda: {"v": db.execute_sql("SELECT " + "(" * 5000 + "1" + ")" * 5000)
                                                .fetchone()[0]})
    answer = app.test_client().get("/deep")
    assert answer.status_code == 500 and answer.json["error"]["code"] == "internal_error"


def test_a_database_locked_by_another_writer_is_a_503(tmp_path):
    import sqlite3

    path = tmp_path / "x.db"
    db = peewee.SqliteDatabase(str(path), timeout=0)  # the layers wait 10 s (busy_timeout) first
    db.execute_sql("CREATE TABLE t (n int)")
    db.close()
    holder = sqlite3.connect(path, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer
    app = _error_app(db)
    app.add_url_rule("/write", "write", lambda: {"n": db.execute_sql("INSERT INTO t VALUES (1)").rowcount},
                     methods=["POST"])
    try:
        answer = app.test_client().post("/write")
    finally:
        holder.rollback()
        holder.close()
    assert answer.status_code == 503 and answer.json["error"]["code"] == "database_unavailable"


def _pg_error(sqlstate: str | None, message: str, kind: str = "OperationalError") -> Exception:
    import psycopg

    return (getattr(psycopg, kind) if sqlstate is None else psycopg.errors.lookup(sqlstate))(message)


@pytest.mark.parametrize(("sqlstate", "message", "kind", "transient"), [
    (None, "the connection is closed", "OperationalError", True),  # psycopg 3's closed connection
    ("40001", "could not serialize access", None, True),
    ("57P01", "terminating connection due to administrator command", None, True),
    ("40003", "result is ambiguous", None, False),  # it may have committed: never "try again"
    ("55P03", "canceling statement due to lock timeout", None, True),  # an administrator's lock_timeout
    ("55000", "object not in prerequisite state", None, False),
    ("54001", "stack depth limit exceeded", None, False),
    (None, "the cursor is closed", "InterfaceError", False),  # psycopg 3's own: the caller's mistake
])
def test_which_postgresql_errors_pass(sqlstate, message, kind, transient):
    from shared.db import is_transient

    exc = _pg_error(sqlstate, message, kind or "OperationalError")
    assert is_transient(exc) is transient
    assert is_transient(peewee.OperationalError(exc)) is transient  # as peewee wraps it


def _refusing_app(url: str, tmp_path: Path):
    """A layer's app (`create_base_app`) on a PostgreSQL database, with views the server refuses:
    a duplicate of a unique patient number (a 500), a read of a table another transaction locks (a 503)."""
    from shared.config import build_config
    from shared.db import bind_per_request, connect_database
    from shared.tokens import generate_signing_keypair
    from shared.webapp import create_base_app

    generate_signing_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    app = create_base_app(__name__, build_config("web", (), {
        "tokens": {"public_key": str(tmp_path / "k.pub"), "audience": "https://web.test"}}))
    db = connect_database(url)
    bind_per_request(app, db)
    db.execute_sql("CREATE TABLE patient (insurance_number text CONSTRAINT patient_number UNIQUE)")
    db.execute_sql("INSERT INTO patient VALUES (%s)", (PATIENT_NUMBER,))
    db.close()

    @app.post("/duplicate")
    def duplicate():
        db.execute_sql("INSERT INTO patient VALUES (%s)", (PATIENT_NUMBER,))
        return {}

    @app.get("/locked")
    def locked():
        with db.atomic():
            db.execute_sql("SET LOCAL lock_timeout = '100ms'")  # as an administrator's lock_timeout
            db.execute_sql("SELECT count(*) FROM patient")
        return {}

    return app, db


PATIENT_NUMBER = "INS-4711-PATIENT"


@pytest.mark.postgres
@pytest.mark.parametrize(("path", "status", "sqlstate", "error", "names"), [
    ("/duplicate", 500, "23505", "UniqueViolation", {"db_table": "patient", "db_constraint": "patient_number"}),
    ("/locked", 503, "55P03", "LockNotAvailable", {}),
])
def test_a_database_refusal_is_logged_with_its_sqlstate_and_without_the_rows_values(
        pg_database_factory, tmp_path, caplog, path, status, sqlstate, error, names):
    """The log line of a request PostgreSQL refused named no SQLSTATE (IT could not tell a lock
    timeout from a lost server without reading the message), and quoted the server's message whole:
    `DETAIL: Key (insurance_number)=(INS-4711-PATIENT) already exists`, a patient's number in the log."""
    import psycopg

    from shared.logs import JsonFormatter

    url = pg_database_factory()
    app, db = _refusing_app(url, tmp_path)
    try:
        with psycopg.connect(url) as holder, caplog.at_level(logging.ERROR):
            if path == "/locked":
                holder.execute("LOCK TABLE patient IN ACCESS EXCLUSIVE MODE")
            answer = app.test_client().open(path, method="POST" if path == "/duplicate" else "GET")
    finally:
        db.close_all()
    assert answer.status_code == status
    record = next(r for r in caplog.records if r.levelno == logging.ERROR and r.name == "shared.errors")
    assert (record.sqlstate, record.db_error) == (sqlstate, error)
    assert {name: getattr(record, name) for name in names} == names
    line = JsonFormatter("web").format(record)
    assert f'"sqlstate": "{sqlstate}"' in line and "Traceback" in line
    assert PATIENT_NUMBER not in line


@pytest.mark.postgres
def test_no_log_line_quotes_a_database_servers_message_whoever_logs_it(pg_database_factory):
    """Request failures went through `log_failure`, but the render node's background work (the
    catalogue's indexing, the image-view audit, ingest clean-ups) logs its failures itself:
    `log.exception(...)` and `log.error("... %s", exc)` quoted PostgreSQL's DETAIL whole, a patient's
    number in the log, and so did an error raised from a database error (the chain's first link)."""
    import peewee

    from shared.db import connect_database
    from shared.logs import JsonFormatter

    db = connect_database(pg_database_factory())
    try:
        db.execute_sql("CREATE TABLE patient (insurance_number text CONSTRAINT patient_number UNIQUE)")
        db.execute_sql("INSERT INTO patient VALUES (%s)", (PATIENT_NUMBER,))
        try:
            db.execute_sql("INSERT INTO patient VALUES (%s)", (PATIENT_NUMBER,))
        except peewee.IntegrityError as exc:
            refused = exc
        try:
            raise RuntimeError("the series could not be indexed") from refused
        except RuntimeError as exc:
            chained = exc
    finally:
        db.close()
    log = logging.getLogger("sivr.test.background")
    records = [log.makeRecord(log.name, logging.ERROR, __file__, 1, "indexing failed", (), (type(refused), refused,
                              refused.__traceback__)),
               log.makeRecord(log.name, logging.ERROR, __file__, 1, "indexing failed: %s", (refused,), None),
               log.makeRecord(log.name, logging.ERROR, __file__, 1, "indexing failed", (), (type(chained), chained,
                              chained.__traceback__)),
               log.makeRecord(log.name, logging.ERROR, __file__, 1, refused, (), None),  # log.error(exc)
               log.makeRecord(log.name, logging.ERROR, __file__, 1, "failed: %(e)s", ({"e": refused},), None)]
    lines = [JsonFormatter("render").format(record) for record in records]
    for line in lines:
        assert PATIENT_NUMBER not in line, line
        assert "SQLSTATE 23505 UniqueViolation" in line, line
    for line in lines[0], lines[2]:  # the error's fields, also where it is the cause of the one logged
        assert '"sqlstate": "23505"' in line and '"db_constraint": "patient_number"' in line, line
    assert "RuntimeError: the series could not be indexed" in lines[2] and "direct cause" in lines[2]
    plain = log.makeRecord(log.name, logging.ERROR, __file__, 1, "failed: %s %d", (ValueError("no row"), 3), None)
    assert '"message": "failed: no row 3"' in JsonFormatter("render").format(plain)  # other errors as they are
