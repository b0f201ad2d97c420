"""Copying a layer's rows into another database: a server begun on SQLite moves to PostgreSQL.

Pointing `database.url` at a new database gives an empty server (no users, patients, findings or
audit log), so IT needs the rows carried over with the server stopped (`sivr db copy`,
docs/deployment.md "3. Databases"). The copy is all or nothing: the target must be empty and at no
other schema, the source at this release's schema, and every row is written in one transaction on
the target (the source read in one transaction too, so the copy is one moment of it), so a copy cut
short (a full disk, a dropped connection, Ctrl-C) leaves the target as empty as it was and the
source untouched. Rows keep their ids, so every link between layers (a
record's patient, a finding's record, a token's user) still holds; the audit log is copied as it
was, and the copy itself is audited in the target.

A server still running on a SQLite source would go on writing rows into it after the copy began,
lost when the unit is switched to the new database: a server holds a shared lock beside its SQLite
file while it runs (`sivr serve` takes it, gunicorn and its workers inherit it), a copy an exclusive
one, so each refuses while the other holds it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import peewee
import psycopg
from playhouse.cockroachdb import CockroachDatabase

from shared.audit import cli_entry
from shared.config import Config, ConfigError
from shared.db import (
    Migration,
    SchemaVersion,
    close_database,
    database_from_config,
    exclusive_transaction,
    newer_schema,
    open_database,
    protect_database_file,
    redacted_url,
    schema_target,
    upgrade_schema,
)

#: Rows inserted per statement: SQLite builds of before 3.32 take at most 999 parameters in one,
#: and a row of the widest table has fewer than a dozen columns.
BATCH_ROWS = 80
#: Beside a SQLite database (`toplevel.db-serving.lock`): the file its server and a copy lock. Not
#: `<db>.lock`, which SQLite's unix-dotfile locking makes a folder; not a lock on the database file
#: itself, which on NFS would be emulated with the byte-range locks SQLite takes there too.
SERVING_LOCK_SUFFIX = "-serving.lock"


def copy_database(config: Config, url: str, layer: str, models: Sequence[type[peewee.Model]],
                  migrations: Iterable[Migration], audit_model: type[peewee.Model],
                  audit_fields: dict[str, Any]) -> dict[str, int]:
    """Copy every row of `layer`'s database (`config`'s `database.url`) into the empty database at
    `url`; returns the rows copied per table. `url` is read as the config would read it (a relative
    SQLite path is relative to the config file), so it can go into `database.url` as given.
    `audit_fields`: the layer's own columns of the copy's audit entry. ConfigError, nothing written,
    when either database cannot be used as a source or a target."""
    migrations = list(migrations)
    target_config = Config({**config, "database": {**config["database"], "url": url}}, config.layer, config.source)
    _check_exists(config)
    with _server_stopped(config, layer):
        return _copy(config, target_config, url, layer, models, migrations, audit_model, audit_fields)


def _copy(config: Config, target_config: Config, url: str, layer: str, models: Sequence[type[peewee.Model]],
          migrations: list[Migration], audit_model: type[peewee.Model], audit_fields: dict[str, Any]) -> dict[str, int]:
    """The copy itself, once no server runs on a SQLite source (`copy_database`)."""
    source = open_database(config)
    try:
        _check_source(source, layer, schema_target(migrations), config["database"]["url"])
        target = _open_target(target_config, url)
        try:
            # the models bound to the target throughout: peewee writes an INSERT for the database a model
            # is bound to (RETURNING where its proxy points at PostgreSQL, which a SQLite target's
            # cursor then cannot answer: a process that also serves the layer, as the tests do)
            with exclusive_transaction(target, f"sivr-copy-{layer}"), source.atomic(), target.bind_ctx(models):
                _check_empty(target, layer, models, url)  # in the transaction: two copies at once write one
                upgrade_schema(target, layer, models, migrations)
                copied = {model._meta.table_name: _copy_table(model, source, target) for model in models}
                _continue_sequences(target, models)
                detail = f"copied from {redacted_url(config['database']['url'])}: {sum(copied.values())} rows"
                entry = cli_entry("database.copy", "database", None, detail)
                audit_model.insert(**entry, **audit_fields).execute(target)
            protect_database_file(target)
            return copied
        finally:
            close_database(target)
    finally:
        close_database(source)


def hold_while_serving(config: Config) -> int | None:
    """Take the shared lock of a server on the config's SQLite database, on a descriptor that the
    process `sivr serve` execs (gunicorn) and every worker it forks keep open, so the lock is held
    as long as any of them may write; returns it (None for a database server's URL, whose servers
    may run on other hosts). ConfigError while `sivr db copy` is copying the database."""
    path = serving_lock_path(config)
    if path is None:
        return None
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{config.source}: `sivr db copy` is copying its database now; start the server once "
                          "the copy has ended, with database.url set to the copy's --to URL if it succeeded") from None
    os.set_inheritable(fd, True)
    return fd


def serving_lock_path(config: Config) -> Path | None:
    """The lock file of the config's SQLite database; None for a database server's URL."""
    database = database_from_config(config)
    if not isinstance(database, peewee.SqliteDatabase) or database.database in ("", ":memory:"):
        return None
    return Path(database.database + SERVING_LOCK_SUFFIX)


def unit_name(config: Config) -> str | None:
    """The systemd unit installers/install.sh runs this config's server as (its `unit_of`):
    `toplevel.toml` -> sivr-toplevel, `institution-2.toml` -> sivr-institution@2; None for a
    config not named after its layer, which the installer does not install."""
    name, layer = config.source.stem if config.source else "", config.layer
    if name == layer:
        return f"sivr-{layer}"
    if name.startswith(f"{layer}-"):
        return f"sivr-{layer}@{name.removeprefix(f'{layer}-')}"
    return None


@contextmanager
def _server_stopped(config: Config, layer: str) -> Iterator[None]:
    """Hold the exclusive lock of the config's SQLite database through the copy: refused, with the
    unit to stop, while its server runs; a server started meanwhile refuses to start."""
    path = serving_lock_path(config)
    if path is None:
        yield
        return
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            unit = unit_name(config)
            stop = (f"`systemctl stop {unit}`" if unit else
                    f"stop the process serving it (`sivr serve {layer} --config {config.source}`)")
            database = str(path).removesuffix(SERVING_LOCK_SUFFIX)
            raise ConfigError(f"the {layer} server of {config.source} is running on {database} and would go on "
                              f"writing rows the copy leaves behind: {stop} first, then copy; nothing was copied"
                              ) from None
        yield
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    """The lock file, made if missing, owned as the database is: a copy run as root must not make
    it a file the service user cannot open. It holds nothing (a lock only), so only its owner needs it."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        database = os.stat(path.with_name(path.name.removesuffix(SERVING_LOCK_SUFFIX)))
        if os.geteuid() == 0 and os.fstat(fd).st_uid != database.st_uid:
            os.fchown(fd, database.st_uid, database.st_gid)
    except FileNotFoundError:  # the database removed meanwhile: no owner to give it, the lock holds all the same
        pass
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_target(config: Config, url: str) -> peewee.Database:
    """The target, connected; a URL that cannot be used is named as the `--to` database, not as the
    config's database.url, which is the source and fine."""
    try:
        return open_database(config)
    except ConfigError as exc:
        cause = exc.__cause__
        raise ConfigError(f"the --to database {redacted_url(url)}: "
                          f"{str(cause).strip() if cause is not None else exc}") from exc


def _check_exists(config: Config) -> None:
    """A source SQLite file must be there: opening a path mistyped in the config would create an
    empty database at it, and the copy would then say only that it holds no database."""
    database = database_from_config(config)
    if isinstance(database, peewee.SqliteDatabase) and not Path(database.database).is_file():
        raise ConfigError(f"{config.source}: database.url names {database.database}, which does not exist: "
                          "check the config's database.url")


def _check_source(source: peewee.Database, layer: str, target: int, url: str) -> None:
    """The source must hold this layer at this release's schema: an older one is upgraded first
    (its migrations are the upgrade's job), a newer one belongs to a later release."""
    version = None
    if source.table_exists(SchemaVersion._meta.table_name):
        with source.bind_ctx([SchemaVersion]):
            row = SchemaVersion.get_or_none(SchemaVersion.layer == layer)
        version = None if row is None else row.version
    if version is None:
        raise ConfigError(f"{redacted_url(url)} holds no {layer} database to copy: check the config's database.url")
    if version > target:
        raise ConfigError(newer_schema(layer, version, target))
    if version < target:
        raise ConfigError(f"{redacted_url(url)} holds {layer} schema {version}, this release works with {target}: "
                          f"run `sivr db upgrade {layer} --config FILE` first, then copy")


def _check_empty(target: peewee.Database, layer: str, models: Sequence[type[peewee.Model]], url: str) -> None:
    """Refuse a target that holds any row of the layer, or another layer's database: merging two
    servers' rows would mix two servers' users and patients under one set of ids, a second copy would
    double every row, and another layer's tables of the same names (`audit_entry`) lack columns."""
    if target.table_exists(SchemaVersion._meta.table_name):
        with target.bind_ctx([SchemaVersion]):
            others = [row.layer for row in SchemaVersion.select().where(SchemaVersion.layer != layer)]
        if others:
            raise ConfigError(f"{redacted_url(url)} holds the {', '.join(sorted(others))} layer's database: copy "
                              f"the {layer} into an empty database of its own; nothing was copied")
    held = []
    for model in models:
        if target.table_exists(model._meta.table_name):
            count = model.select().count(target)
            if count:
                held.append(f"{model._meta.table_name} {count}")
    if held:
        raise ConfigError(f"{redacted_url(url)} already holds rows ({', '.join(held)}): copy into an empty "
                          "database (CREATE DATABASE …); nothing was copied")


def _copy_table(model: type[peewee.Model], source: peewee.Database, target: peewee.Database) -> int:
    """Every row of `model`'s table, in primary-key order, read from `source` in one pass. A row
    that cannot be read or written (text SQLite kept that is not UTF-8, a NUL PostgreSQL refuses)
    stops the copy naming its table and the rows copied before it."""
    table, count = model._meta.table_name, 0
    batch: list[dict[str, Any]] = []
    try:
        for row in model.select().order_by(model._meta.primary_key).dicts().iterator(source):
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                model.insert_many(batch).execute(target)
                count, batch = count + len(batch), []
        if batch:
            model.insert_many(batch).execute(target)
            count += len(batch)
    except (peewee.DatabaseError, sqlite3.Error, psycopg.Error, ValueError) as exc:  # a fetch is not wrapped
        raise ConfigError(f"table {table}: the copy stopped after {count} of its rows: {exc}; nothing was copied "
                          "(a row the target refuses or the source cannot read: repair it and copy again)") from exc
    return count


def _continue_sequences(target: peewee.Database, models: Sequence[type[peewee.Model]]) -> None:
    """PostgreSQL's serial columns number new rows from their sequence, which rows inserted with
    their ids leave at 1: the server's first new finding would collide with a copied one. SQLite
    numbers from the table's largest id, CockroachDB's unique_rowid() from the clock."""
    if not isinstance(target, peewee.PostgresqlDatabase) or isinstance(target, CockroachDatabase):
        return
    for model in models:
        key = model._meta.primary_key
        if isinstance(key, peewee.AutoField):
            table, column = model._meta.table_name, key.column_name
            target.execute_sql(f'SELECT setval(pg_get_serial_sequence(%s, %s), '
                               f'COALESCE((SELECT MAX("{column}") FROM "{table}"), 0) + 1, false)',
                               (table, column))
