"""Database from a URL (SQLite, PostgreSQL, CockroachDB through peewee) and schema upgrades.

SQLite is the zero-set-up default; several toplevel servers share one PostgreSQL or CockroachDB
cluster in production. A SQLite connection is opened per request and closed after it. A database
server's connections are pooled per process (`ThreadPooledDatabase`): a new one costs a password
exchange (10.6 ms on PostgreSQL with SCRAM), which per request was more than most requests' own
queries. An idle pooled connection is checked with a round trip when it is taken, so a restarted
database server is simply reconnected on the next request.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import peewee
import psycopg
from flask import Flask
from playhouse.cockroachdb import CockroachDatabase, PooledCockroachDatabase
from playhouse.db_url import connect, parse
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase

from shared.config import ConfigError

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,
    "synchronous": "normal",
}

Migration = Callable[[peewee.Database], None]
T = TypeVar("T")


def new_id() -> str:
    return str(uuid.uuid4())


#: What no database column holds in text: NUL (PostgreSQL refuses it; no DICOM text VR's repertoire has
#: it, PS3.5 6.1, yet pydicom reads it from a file as it is) and lone surrogates (no database encodes
#: them). SQLite stored both, so a value stored there was a 500 on PostgreSQL.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with what no database holds (`UNSTORABLE`) as U+FFFD, the same on SQLite and
    PostgreSQL: for text a server keeps of what a caller or a file said (an audit entry quoting a
    refused path, the catalogue's names and descriptions of a file, which itself is stored as it
    came); visibly changed, never dropped."""
    return UNSTORABLE.sub("\ufffd", text)


def utcnow() -> dt.datetime:
    """Naive UTC time, stored the same way on every database."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# A pooled connection older than this is closed when it is given back or taken instead of being
# reused: a server process's caches grow with what it has served, and a recycled connection
# costs one password exchange in this long.
POOL_RECYCLE_S = 600


class ThreadPooledDatabase(PooledDatabase):
    """peewee's connection pool, for a process whose threads do not all give their connection back.

    `close()` returns a thread's connection to the pool, and peewee then keeps it in use for as long
    as that thread does not: a thread that ended without closing (a DICOM association refused
    before any release, a helper thread that queried) would hold a server connection for the life
    of the process, where without a pool the ended thread's connection was closed with it. So each
    connection remembers the thread it was handed to, and taking one first closes those of ended
    threads. The pool has no size of its own: each thread holds at most one connection, and the
    threads (gunicorn's `server.threads` per worker, the DICOM associations, a few helpers) bound
    them, as they bounded connections opened per request (docs/deployment.md, "Connections").
    """

    def __init__(self, database: str, **kwargs) -> None:
        self._owners: dict[int, threading.Thread] = {}
        super().__init__(database, max_connections=None, stale_timeout=POOL_RECYCLE_S, **kwargs)

    def _connect(self):
        with self._pool_lock:
            for key, owner in list(self._owners.items()):
                if not owner.is_alive():
                    del self._owners[key]
                    ended = self._in_use.pop(key, None)
                    if ended is not None:
                        self._close_raw(ended.connection)
            conn = super()._connect()
            self._owners[self.conn_key(conn)] = threading.current_thread()
            return conn

    def _close(self, conn, close_conn: bool = False) -> None:
        with self._pool_lock:
            self._owners.pop(self.conn_key(conn), None)
            super()._close(conn, close_conn)


class PooledPostgres(ThreadPooledDatabase, PooledPostgresqlDatabase):
    """PostgreSQL through `ThreadPooledDatabase`."""


#: The classes a database's passing trouble comes in; `is_transient` tells which of them it is.
#: peewee wraps the DB-API's OperationalError and InterfaceError; psycopg's transaction rollbacks
#: reach the caller unwrapped (their class is not a DB-API name peewee maps).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (peewee.OperationalError, peewee.InterfaceError,
                                                 psycopg.OperationalError)
#: PostgreSQL's SQLSTATE classes of trouble that passes (PostgreSQL's Appendix A): connection
#: exception, transaction rollback (a serialization failure or a deadlock: CockroachDB's way of
#: ordering writers), insufficient resources, operator intervention (shutdown, "cannot connect
#: now", a cancelled statement), system error (I/O).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
#: Single SQLSTATEs of passing trouble in classes that otherwise mean a mistake: "lock not
#: available" (class 55), a `lock_timeout` the database's administrator set ran out while another
#: transaction held the row or table.
TRANSIENT_SQLSTATES = ("55P03",)
#: CockroachDB's "result is ambiguous" (class 40, but the transaction may have committed).
AMBIGUOUS_RESULT = "40003"
#: What SQLite says when another writer holds the file, or the file cannot be reached.
TRANSIENT_SQLITE_MESSAGES = ("database is locked", "database table is locked", "unable to open database file",
                             "disk i/o error", "database or disk is full")


def driver_error(exc: BaseException) -> BaseException:
    """The database driver's exception behind `exc`: the one peewee wrapped (twice for a connection
    opened by a BEGIN), or `exc` itself."""
    cause = exc
    while isinstance(cause, peewee.PeeweeException):
        wrapped = getattr(cause, "orig", None)
        if not isinstance(wrapped, BaseException):
            break
        cause = wrapped
    return cause


#: The parts of a PostgreSQL error's diagnostics that name the schema, never a row: a log line's fields.
_DIAGNOSTIC_NAMES = {"db_table": "table_name", "db_constraint": "constraint_name", "db_column": "column_name"}


def database_error_fields(exc: BaseException) -> dict[str, str]:
    """What a log line says of the database error behind `exc`, for IT to act on: the driver's
    error class (`UniqueViolation`, `SQLITE_BUSY`), PostgreSQL's SQLSTATE (`sqlstate`: 23505 a
    duplicate, 40001 a serialization failure, 55P03 a lock timeout, 57P01 a server shut down, the
    codes of PostgreSQL's Appendix A and CockroachDB's) and the table, constraint and column the
    server names; `{}` for anything else. Never the server's message, whose DETAIL and CONTEXT
    quote the row's values and the query's parameters (`Key (insurance_number)=(...)`): a log is
    not the place of patient data (`shared.logs.JsonFormatter` leaves that message out of every line)."""
    cause = driver_error(exc)
    if isinstance(cause, psycopg.Error):
        fields = {"db_error": type(cause).__name__}
        if cause.sqlstate:
            fields["sqlstate"] = cause.sqlstate
            fields.update({field: value for field, name in _DIAGNOSTIC_NAMES.items()
                           if (value := getattr(cause.diag, name))})
        return fields
    if isinstance(cause, sqlite3.Error):
        return {"db_error": getattr(cause, "sqlite_errorname", None) or type(cause).__name__}
    return {}


def _chain(exc: BaseException) -> list[tuple[BaseException, str]]:
    """`exc` and the exceptions it was raised from or while handling, outermost first, each with the
    line Python prints after it when it prints the chain (cycles cut)."""
    chain: list[tuple[BaseException, str]] = []
    link: BaseException | None = exc
    joint = ""
    while link is not None and all(link is not seen for seen, _ in chain):
        chain.append((link, joint))
        if link.__cause__ is not None:
            link, joint = link.__cause__, _CAUSE
        elif link.__context__ is not None and not link.__suppress_context__:
            link, joint = link.__context__, _CONTEXT
        else:
            link = None
    return chain


def database_error_in(exc: BaseException) -> BaseException | None:
    """The outermost exception of `exc`'s chain that a database server answered (with a SQLSTATE),
    if any: the one whose fields a log line names (`database_error_fields`)."""
    return next((link for link, _ in _chain(exc) if "sqlstate" in database_error_fields(link)), None)


def database_exception_text(exc: BaseException) -> str | None:
    """`exc`'s traceback as a log line carries it, chained exceptions included, with the SQLSTATE and
    error class in place of each database error's message (the server's, which quotes row values:
    `database_error_fields`); None when no link of the chain is an error a server answered (no
    SQLSTATE: a refused connection, SQLite), whose messages name no row."""
    chain = [(link, joint, "sqlstate" in database_error_fields(link)) for link, joint in _chain(exc)]
    if not any(answered for _, _, answered in chain):
        return None
    text = []
    for link, joint, answered in reversed(chain):  # the first cause first, as Python prints a chain
        last = (database_error_summary(link) + "\n" if answered
                else "".join(traceback.format_exception_only(link)))
        frames = "".join(traceback.format_tb(link.__traceback__))
        text.append(f"Traceback (most recent call last):\n{frames}{last}{joint}" if frames else f"{last}{joint}")
    return "".join(text).rstrip("\n")


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def database_error_summary(exc: BaseException) -> str:
    """`exc` in one line without the server's message: `peewee.IntegrityError: SQLSTATE 23505
    UniqueViolation (...)`, for a log line that names an error among its values."""
    fields = database_error_fields(exc)
    return (f"{type(exc).__module__}.{type(exc).__qualname__}: SQLSTATE {fields.get('sqlstate')} "
            f"{fields.get('db_error')} (the server's message is left out: it may quote the row's values)")


def is_transient(exc: BaseException) -> bool:
    """Whether the same request may succeed if sent again: the database is down or restarting,
    busy, out of room, or rolled the transaction back for a concurrent one. The HTTP layers answer
    those 503 with Retry-After (`shared.errors`). The same classes also carry the node's own
    mistakes (SQLite's "parser stack overflow" for a query built too deep, PostgreSQL's "statement
    too complex"): those stay a 500, which no retry mends and which must not hide as "try again"."""
    cause = driver_error(exc)
    if isinstance(cause, psycopg.InterfaceError):
        return False  # psycopg 3: a closed cursor, no dumper (a closed connection is an OperationalError)
    if isinstance(cause, psycopg.Error):
        state = cause.sqlstate
        if state == AMBIGUOUS_RESULT:
            return False  # it may have committed: a retried POST could apply twice
        return (state is None  # no server answered
                or state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES)
    if isinstance(cause, sqlite3.OperationalError):
        return str(cause).lower().startswith(TRANSIENT_SQLITE_MESSAGES)
    return False


class PooledCockroach(ThreadPooledDatabase, PooledCockroachDatabase):
    """CockroachDB through `ThreadPooledDatabase`."""


# Connection settings a database URL may override. A pooled connection lives for minutes, so:
# - a server that vanished without a reset (a fail-over, a cut link) must fail its queries within
#   a bound (TCP keepalives on idle connections, tcp_user_timeout on unacknowledged data), not
#   after the kernel's 15 minutes: peewee checks an idle connection while holding the database's
#   lock, which every thread of the worker takes to connect;
# - psycopg 3 would prepare a statement on the server after its fifth run on a connection;
#   prepared statements that outlive a request break behind PgBouncer in transaction mode and
#   across a schema upgrade ("cached plan must not change result type"), so none are made.
SERVER_CONNECTION_DEFAULTS = {
    "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
    "keepalives_count": 3, "tcp_user_timeout": 30_000, "prepare_threshold": None,
}
# The pool's own settings, which a URL must not pass as connection parameters (`ThreadPooledDatabase`).
POOL_SETTINGS = ("max_connections", "stale_timeout", "timeout")


def connect_database(url: str) -> peewee.Database:
    """`sqlite:///path`, `postgresql://user:pw@host:port/db` or `cockroachdb://...`; a server's through
    a pool (`ThreadPooledDatabase`). ValueError for a server URL without a database name or with a
    pool setting among its parameters."""
    if url.startswith("sqlite"):
        return connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    # percent-encoded user names and passwords (e.g. `p%40ss`) are decoded, as in libpq URLs;
    # the driver is psycopg 3 (peewee would take psycopg2 first if a host happens to have it)
    params = parse(url, unquote_password=True, unquote_user=True)
    if not params.get("database"):
        raise ValueError("names no database (scheme://user@host:port/DATABASE)")
    refused = sorted(set(params) & set(POOL_SETTINGS))
    if refused:
        raise ValueError(f"{', '.join(refused)}: settings of SIVR's connection pool, not connection parameters")
    pooled = PooledCockroach if urlsplit(url).scheme == "cockroachdb" else PooledPostgres
    return pooled(**{**SERVER_CONNECTION_DEFAULTS, **params}, autoconnect=True, prefer_psycopg3=True)


def close_database(db: peewee.Database) -> None:
    """Close a database opened for one operation (a CLI command, an upgrade) and, for a server's, the
    connections its pool keeps: `close()` alone would leave them to the garbage collector."""
    if isinstance(db, PooledDatabase):
        db.close_all()
    elif not db.is_closed():
        db.close()


def schema_target(migrations: Sequence[Migration]) -> int:
    """The schema version a layer's code works with: 1 (tables as created) plus one per migration."""
    return len(migrations) + 1


def newer_schema(layer: str, found: int, target: int) -> str:
    """What to do about a database a later release upgraded: this release cannot downgrade it, and
    must not serve it (its code does not know the later tables), so `sivr db upgrade` is no remedy."""
    return (f"{layer} schema {found} is newer than this release ({target}): "
            "install that release or restore the pre-upgrade backup")


class SchemaVersion(peewee.Model):
    """Which schema version each layer's tables are at (one row per layer)."""

    layer = peewee.CharField(primary_key=True, max_length=32)
    version = peewee.IntegerField()

    class Meta:
        table_name = "schema_version"


def upgrade_schema(
    db: peewee.Database,
    layer: str,
    models: Sequence[type[peewee.Model]],
    migrations: Iterable[Migration] = (),
) -> int:
    """Create missing tables, then run the migrations not yet applied; returns the new version.

    Version 1 is "tables created from the current models"; migration N (1-based) upgrades a
    database at version N to N+1, so a fresh database skips none of the history it needs.
    A database at a later version than this release's raises ConfigError (`newer_schema`).
    """
    migrations = list(migrations)
    with db.bind_ctx([SchemaVersion]), _schema_lock(db, layer):
        db.create_tables([SchemaVersion], safe=True)
        row = SchemaVersion.get_or_none(SchemaVersion.layer == layer)
        if row is not None and (not isinstance(row.version, int) or isinstance(row.version, bool)):
            raise ConfigError(f"the schema_version table holds {row.version!r} for {layer}, not a schema "
                              "version: restore the database from its backup")
        if row is None:
            db.create_tables(list(models), safe=True)
            target = schema_target(migrations)
            SchemaVersion.create(layer=layer, version=target)
            return target
        if row.version > schema_target(migrations):
            raise ConfigError(newer_schema(layer, row.version, schema_target(migrations)))
        for index, migration in enumerate(migrations, start=1):
            if row.version <= index:
                migration(db)
                row.version = index + 1
        db.create_tables(list(models), safe=True)
        row.save()
        return row.version


@contextmanager
def _schema_lock(db: peewee.Database, layer: str) -> Iterator[None]:
    """Several servers of a layer start at once against one database (gunicorn hosts, systemd
    restarts): each must see the schema version only after the previous upgrade committed."""
    with exclusive_transaction(db, f"sivr-schema-{layer}"):
        yield


@contextmanager
def exclusive_transaction(db: peewee.Database | peewee.DatabaseProxy, name: str) -> Iterator[None]:
    """One transaction that holds the database's write lock (or the lock `name`) from its first statement.

    For read-then-write decisions that must not interleave across workers and servers (a schema
    upgrade, counting failed logins). SQLite takes the write lock at BEGIN IMMEDIATE (a deferred
    transaction that reads, then writes fails at once with "database is locked"); PostgreSQL
    takes a transaction-scoped advisory lock on `name`; CockroachDB's serializable transactions
    order them themselves (`run_exclusive` retries the one that loses; elsewhere the loser's
    request is a 503 that the client sends again, `TRANSIENT_ERRORS`).
    """
    db = db.obj if isinstance(db, peewee.DatabaseProxy) else db
    if isinstance(db, peewee.SqliteDatabase):
        with db.atomic(lock_type="IMMEDIATE"):
            yield
        return
    with db.atomic():
        if isinstance(db, peewee.PostgresqlDatabase) and not isinstance(db, CockroachDatabase):
            db.execute_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
        yield


def run_exclusive(db: peewee.Database | peewee.DatabaseProxy, name: str, work: Callable[[], T]) -> T:
    """`work()` inside `exclusive_transaction`; on CockroachDB retried when a concurrent one wins."""
    db = db.obj if isinstance(db, peewee.DatabaseProxy) else db
    if isinstance(db, CockroachDatabase):
        return db.run_transaction(lambda _db: work(), max_attempts=10)
    with exclusive_transaction(db, name):
        return work()


def bind_per_request(app: Flask, db: peewee.Database) -> None:
    """Close the request's connection after it, always (a server's goes back to its pool); it opens
    on the first query (autoconnect).

    Nothing is opened up front, so requests that never query (`/healthz`, `/metrics`) still answer
    while the database is down, and `/readyz` can say that it is.
    """

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        if not db.is_closed():
            db.close()

    _hold_sqlite_open(app, db)


SQLITE_HOLDER_EXTENSION = "sivr_sqlite_holder"


def _hold_sqlite_open(app: Flask, db: peewee.Database | peewee.DatabaseProxy) -> None:
    """Keep one idle connection to a SQLite file open for the app's life.

    Closing the LAST connection to a WAL database checkpoints it and removes the WAL, an fsync per
    request that wrote (2-30 ms, most of an audited search's time); while this connection is open,
    closing a request's connection costs nothing, and SQLite still checkpoints on its own every
    1000 pages. It reads once so that SQLite attaches it to the WAL, and never writes.
    """
    target = db.obj if isinstance(db, peewee.DatabaseProxy) else db
    if not isinstance(target, peewee.SqliteDatabase) or target.database in ("", ":memory:"):
        return
    holder = sqlite3.connect(target.database, check_same_thread=False)
    holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
    app.extensions[SQLITE_HOLDER_EXTENSION] = holder


# The schemes of database.url this code is written and tested for (peewee knows more, e.g. mysql,
# whose driver is not installed and whose SQL the migrations do not speak).
SCHEMES = ("sqlite", "postgresql", "postgres", "cockroachdb")


#: A password given as a query parameter, as libpq also takes one (`?password=...`, `?sslpassword=...`).
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """`url` without its passwords, in its user part or its query, fit for an error message or a
    log (also one urlsplit refuses)."""
    return _QUERY_PASSWORD.sub(r"\1***", _without_user_password(url))


def _without_user_password(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed [ of an IPv6 address: redact up to the last @ of the authority
        scheme, separator, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        user, at, host = authority.rpartition("@")
        return f"{scheme}{separator}{user.partition(':')[0]}:***@{host}{slash}{path}" if at else url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _url_problem(config, url: str, cause: object) -> ConfigError:
    """The operator's error: which file, which URL (no password), and what is wrong with it."""
    where = config.source or "<config>"
    return ConfigError(f"{where}: database.url {redacted_url(url)}: {cause}")


def database_from_config(config) -> peewee.Database:
    """Connect to `database.url`; a relative SQLite path is taken relative to the config file.

    An unsupported scheme is refused here, before any connection, as a ConfigError naming the file.
    """
    url: str = config["database"]["url"]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # read to check it: a port out of range or not a number raises here
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise _url_problem(config, url, exc) from exc
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise _url_problem(config, url, f"unsupported scheme {scheme or '(none)'!r} "
                                        "(use sqlite:///, postgresql:// or cockroachdb://)")
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path, mark, query = url[len(prefix):].partition("?")
        if config.source is not None and path and path != ":memory:" and not path.startswith("/"):
            path = str((config.source.parent / path).resolve())
        # the URL is parsed again to connect: a `#` in the path ended it there (every layer of a
        # deployment in `/srv/x#y` opened one database, `/srv/x`), a `?` started its parameters
        if "#" in path or "?" in path or not path.isprintable():
            raise _url_problem(config, prefix + path, "an SQLite path cannot hold '#', '?' or control characters "
                                                      "in a URL: move the deployment to a folder without them")
        url = prefix + path + mark + query
    try:
        return connect_database(url)
    except ValueError as exc:
        raise _url_problem(config, url, exc) from exc


def model_base(proxy: peewee.DatabaseProxy) -> type[peewee.Model]:
    """The base class of one layer's models, all following `proxy`.

    One set of model classes then serves SQLite, PostgreSQL and CockroachDB: `bind_models` points
    the proxy at the configured database when the app is built.
    """

    class BaseModel(peewee.Model):
        class Meta:
            database = proxy

    return BaseModel


def bind_models(proxy: peewee.DatabaseProxy, config) -> peewee.Database:
    """Connect to the config's database and point every model on `proxy` at it (one app per process)."""
    db = database_from_config(config)
    proxy.initialize(db)
    return db


def open_database(config) -> peewee.Database:
    """`database_from_config`, connected: a URL that cannot be used (server unreachable, SQLite file
    in a missing folder, unknown query parameter) is a ConfigError naming the file, the URL without
    its password and the cause, not a driver's traceback. `sivr db upgrade`, `serve` and the
    admin commands open the database this way first."""
    db = database_from_config(config)
    try:
        db.connect(reuse_if_open=True)
    except (peewee.PeeweeException, TypeError, ValueError) as exc:
        raise _url_problem(config, config["database"]["url"], str(exc).strip() or type(exc).__name__) from exc
    return db


def protect_database_file(database: peewee.Database) -> None:
    """Make a SQLite database (and its WAL files) readable by the layer's user only (0600).

    Every layer's database holds what must not be world-readable: the toplevel's users, password
    hashes and audit log, the institution's findings, the render node's catalogue with patient
    names in the clear (see docs/architecture.md). SQLite creates the file with the process's
    umask (0644 outside the units); a PostgreSQL database is protected by the server's own access
    control and TLS instead.
    """
    if not isinstance(database, peewee.SqliteDatabase) or database.database in ("", ":memory:"):
        return
    for suffix in ("", "-wal", "-shm"):
        path = Path(database.database + suffix)
        if path.exists():
            os.chmod(path, 0o600)


def upgrade_from_config(config, layer: str, models: Sequence[type[peewee.Model]],
                        migrations: Iterable[Migration] = ()) -> int:
    """Create or upgrade `layer`'s schema in the config's database; returns the schema version.

    The models are bound to the database only for the upgrade, so a process that also serves
    the app (tests, the demo) keeps the app's binding.
    """
    db = open_database(config)
    try:
        with db.bind_ctx(models):
            try:
                version = upgrade_schema(db, layer, models, migrations)
            except ConfigError as exc:  # a version newer than this release's or no number: name the database
                raise _url_problem(config, config["database"]["url"], exc) from exc
        protect_database_file(db)
        return version
    finally:
        close_database(db)
