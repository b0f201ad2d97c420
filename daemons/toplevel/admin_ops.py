"""Operations the `sivr` command runs directly on the toplevel database (no HTTP, no token).

They exist for bootstrapping: the first institution and admin must exist before anyone can log
in. The same validation as the HTTP API applies (through `accounts`); invalid input raises
`ValueError` with the message the API would give. Each change is audited as done by `sivr-cli`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import peewee

from daemons.toplevel import accounts, sessions
from daemons.toplevel.context import USERS_LOCK
from daemons.toplevel.models import MODELS, AuditEntry, Institution, RecordType, User
from daemons.toplevel.passwords import passwords_from_config
from daemons.toplevel.record_types import check_code
from daemons.toplevel.serialize import institution_json, record_type_json, user_json
from shared.audit import cli_entry
from shared.config import Config
from shared.db import close_database, database_from_config, exclusive_transaction
from shared.errors import ApiError, save_edit
from shared.validation import parse_uuid, validate


@contextmanager
def _database(config: Config) -> Iterator[peewee.Database]:
    """The models bound to the configured database for one operation; ApiError becomes ValueError."""
    db = database_from_config(config)
    try:
        with db.bind_ctx(MODELS), db.connection_context():
            yield db
    except ApiError as exc:
        raise ValueError(exc.message) from exc
    finally:
        close_database(db)


def _audit(action: str, object_type: str, object_id: str, detail: str) -> None:
    AuditEntry.create(**cli_entry(action, object_type, object_id, detail))


def create_institution(
    config: Config,
    name: str,
    address: str = "",
    server_url: str = "",
    institution_id: str | None = None,
) -> dict:
    """Create an institution, or return the existing one of that name (safe to run twice).

    An `institution_id` other than the existing one's is refused (ValueError): the caller asked for
    an institution under that id, and the configs written with it would name one the toplevel lacks.
    """
    with _database(config):
        data = validate({"name": name, "address": address, "server_url": server_url},
                        accounts.INSTITUTION_FIELDS)
        ident = parse_uuid(institution_id, "institution_id") if institution_id is not None else None
        existing = Institution.get_or_none(Institution.name == data["name"])
        if existing is not None:
            if ident is not None and ident != existing.id:
                raise ValueError(f"institution {data['name']!r} already exists with id {existing.id}, "
                                 f"not {ident}")
            return institution_json(existing)
        institution = accounts.create_institution(data, ident)
        _audit("institution.create", "institution", institution.id, f"name={institution.name}")
        return institution_json(institution)


def create_user(
    config: Config,
    username: str,
    password: str,
    role: str,
    institution_id: str,
    full_name: str = "",
) -> dict:
    """Create a user; ValueError names what is wrong (taken username, short password, ...)."""
    with _database(config):
        body = {"username": username, "password": password, "full_name": full_name,
                "role": role, "institution_id": institution_id}
        user = accounts.create_user(body, passwords_from_config(config),
                                    config["auth"]["min_password_length"])
        _audit("user.create", "user", user.id,
               f"username={user.username} role={user.role} institution={user.institution_id}")
        return user_json(user)


def set_role(config: Config, username: str, role: str) -> dict:
    """Give a user another role and end their sessions (their tokens name the old one), under the
    lock of every change of a user row (`context.USERS_LOCK`): an edit through the API that read
    the user before this would otherwise write the old role back."""
    with _database(config) as db, exclusive_transaction(db, USERS_LOCK):
        data = validate({"role": role}, {"role": accounts.USER_UPDATE_FIELDS["role"]})
        user = User.get_or_none(User.username == username.strip().lower())
        if user is None:
            raise ValueError(f"no user named {username!r}")
        if user.role != data["role"]:
            previous, user.role = user.role, data["role"]
            save_edit(user, "user", only=[User.role])
            sessions.revoke_user_sessions(user.id)
            _audit("user.update", "user", user.id, f"role={user.role} (was {previous})")
        return user_json(user)


def list_institutions(config: Config) -> list[dict]:
    with _database(config):
        return [institution_json(i) for i in Institution.select().order_by(Institution.name)]


def ensure_record_types(config: Config, types: Sequence[tuple[str, str]]) -> list[dict]:
    """Create the record types whose code is missing; existing codes are left as they are."""
    with _database(config) as db:
        with db.atomic():
            for code, name in types:
                code = check_code(code, "code")
                if RecordType.get_or_none(RecordType.code == code) is None:
                    created = RecordType.create(code=code, name=name.strip()[:200] or code)
                    _audit("record_type.create", "record_type", created.id, f"code={code}")
        return [record_type_json(r) for r in RecordType.select().order_by(RecordType.code)]
