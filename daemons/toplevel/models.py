"""The toplevel's tables: users, institutions, record types, patients, login throttling, sessions, audit.

Models sit on a `DatabaseProxy` (`shared.db.model_base`) so one set of classes serves SQLite,
PostgreSQL and CockroachDB; `create_app` points the proxy at the configured database. Ids are UUID
strings in `CharField`s (the same on every database). State that must hold across gunicorn workers and across several
toplevel servers on one database cluster (failed logins, sessions) lives in tables, never
in process memory.
"""

from __future__ import annotations

import logging
import unicodedata

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from shared.audit import make_audit_model
from shared.config import Config
from shared.db import Migration, model_base, new_id, upgrade_from_config, utcnow
from shared.db_copy import copy_database
from shared.field_rules import MAX_USERNAME_LENGTH
from shared.names import name_search_key
from shared.roles import LEGACY_ADMIN, SYSTEM_ADMIN

log = logging.getLogger(__name__)

database_proxy = peewee.DatabaseProxy()
BaseModel = model_base(database_proxy)


class Institution(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    name = peewee.CharField(max_length=200, unique=True)
    address = peewee.CharField(max_length=500, default="")
    server_url = peewee.CharField(max_length=500, default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "institution"


class User(BaseModel):

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    username = peewee.CharField(max_length=MAX_USERNAME_LENGTH, unique=True)
    password_hash = peewee.CharField(max_length=512)
    full_name = peewee.CharField(max_length=200, default="")
    email = peewee.CharField(max_length=254, default="")
    role = peewee.CharField(max_length=16)
    institution = peewee.ForeignKeyField(Institution, backref="users", on_delete="RESTRICT")
    active = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "app_user"


class RecordType(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    code = peewee.CharField(max_length=16, unique=True)
    name = peewee.CharField(max_length=200)

    class Meta:
        table_name = "record_type"


class Patient(BaseModel):
    """`name_key` holds both names folded for search (see `name_search_key`), kept in step on save."""

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    first_name = peewee.CharField(max_length=100)
    last_name = peewee.CharField(max_length=100)
    sex = peewee.CharField(max_length=1)
    birth_date = peewee.DateField()
    insurance_number = peewee.CharField(max_length=64, unique=True)
    name_key = peewee.CharField(max_length=210, index=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "patient"

    def save(self, *args, **kwargs):
        self.name_key = name_search_key(f"{self.first_name} {self.last_name}")
        return super().save(*args, **kwargs)


class LoginFailure(BaseModel):
    """One password check, reserved before it runs; counted per username and per client address within
    a window. `settled` once the password proved wrong (a right one deletes the row)."""

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    at = peewee.DateTimeField(default=utcnow, index=True)
    username = peewee.CharField(max_length=MAX_USERNAME_LENGTH, index=True)
    client_ip = peewee.CharField(max_length=64, index=True)
    settled = peewee.BooleanField(default=True)

    class Meta:
        table_name = "login_failure"


class UserSession(BaseModel):
    """One login: its id is the tokens' `sid`. Logout, a password reset or deactivation revoke it.

    Rows are kept until the session would have hit its absolute limit anyway (plus one token
    lifetime), then pruned at the next login.
    """

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    user_id = peewee.CharField(max_length=36, index=True)
    started_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField(index=True)
    revoked_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "user_session"


class AuditEntry(make_audit_model(database_proxy)):  # type: ignore[misc]
    """The shared audit table, plus who the actor was when they acted: their institution and role
    then. One toplevel log holds every institution's users, and an institution admin's view of it
    (`app._audit_scope`) follows where a user acted, not where the user is now: a user moved to
    another institution does not take their history along, and one deleted or demoted does not hide
    it. Entries written before schema 4 have neither (NULL) and are scoped by the user's membership."""

    actor_institution_id = peewee.CharField(max_length=36, null=True, index=True)
    actor_role = peewee.CharField(max_length=16, null=True)

    class Meta:
        table_name = "audit_entry"


MODELS: tuple[type[peewee.Model], ...] = (
    Institution,
    User,
    RecordType,
    Patient,
    LoginFailure,
    UserSession,
    AuditEntry,
)


def _split_admin_role(db: peewee.Database) -> None:
    """Schema 1 -> 2: the one `admin` role became `sysadmin` and `instadmin`.

    Every existing admin becomes a system administrator, so no deployment is locked out of its
    institutions and record types; demote those who should administer one institution only with
    `sivr user set-role USERNAME instadmin`. Their open tokens name the retired role and are
    refused everywhere from now on: they log in again.
    """
    db.execute_sql(f"UPDATE app_user SET role = {db.param} WHERE role = {db.param}", (SYSTEM_ADMIN, LEGACY_ADMIN))


def _add_login_failure_settled(db: peewee.Database) -> None:
    """Schema 2 -> 3: reservations of password checks still running are told from failures.

    Rows from before were failures (or checks cut short), so they are all settled.
    """
    if "settled" not in {column.name for column in db.get_columns("login_failure")}:
        migrate(SchemaMigrator.from_database(db).add_column("login_failure", "settled",
                                                            peewee.BooleanField(default=True)))


def _add_audit_actor(db: peewee.Database) -> None:
    """Schema 3 -> 4: audit entries keep the actor's institution and role at the time (NULL before)."""
    columns = {column.name for column in db.get_columns("audit_entry")}
    migrator = SchemaMigrator.from_database(db)
    steps = []
    if "actor_institution_id" not in columns:  # its index, named as a new install names it, comes from create_tables
        steps.append(migrator.add_column("audit_entry", "actor_institution_id",
                                         peewee.CharField(max_length=36, null=True)))
    if "actor_role" not in columns:
        steps.append(migrator.add_column("audit_entry", "actor_role", AuditEntry.actor_role))
    migrate(*steps)


def insurance_number_form(value: str) -> str:
    """An insurance number as it is stored and searched for: in NFKC form (a full-width `ＨＲ-１２` is
    `HR-12`), runs of spaces as one space (`patients.check_insurance_number` refuses the rest)."""
    return " ".join(unicodedata.normalize("NFKC", value).split())


def _insurance_numbers_as_stored(db: peewee.Database) -> None:
    """Schema 4 -> 5: every stored insurance number in `insurance_number_form`, as new ones are
    stored and every search reads them: a number stored in full-width letters before could no longer
    be found by typing it, and its ASCII form could be created beside it. A number whose form another
    patient's number has already is left as it was and logged: which of the two is the patient's is
    a physician's decision, never a merge made by an upgrade."""
    rows = db.execute_sql("SELECT id, insurance_number FROM patient").fetchall()
    taken = {number for _, number in rows}
    for ident, number in rows:
        form = insurance_number_form(number)
        if form == number:
            continue
        if form in taken:
            log.warning("patient %s: insurance number %r is kept as stored: its form %r is another patient's "
                        "number; ask a physician which of the two patients it is", ident, number, form)
            continue
        db.execute_sql(f"UPDATE patient SET insurance_number = {db.param} WHERE id = {db.param}", (form, ident))
        taken.discard(number)
        taken.add(form)


MIGRATIONS: tuple[Migration, ...] = (_split_admin_role, _add_login_failure_settled, _add_audit_actor,
                                     _insurance_numbers_as_stored)


def upgrade(config: Config) -> int:
    """Create or upgrade the toplevel schema in `database.url`; returns the schema version."""
    return upgrade_from_config(config, "toplevel", MODELS, MIGRATIONS)


def copy(config: Config, url: str) -> dict[str, int]:
    """Copy the toplevel's rows into the empty database at `url` (`sivr db copy`); rows per table."""
    return copy_database(config, url, "toplevel", MODELS, MIGRATIONS, AuditEntry, {})
