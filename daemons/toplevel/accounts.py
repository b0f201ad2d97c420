"""User and institution field rules and row creation, shared by the HTTP views and the `sivr` CLI.

Neither function here needs a request, so `sivr user add` and `POST /api/v1/users` apply exactly
the same rules (username form, password length, existing institution, unique name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee

from daemons.toplevel.models import Institution, User
from daemons.toplevel.passwords import Passwords, check_body_fields, password_field
from shared import field_rules
from shared.db import exclusive_transaction
from shared.errors import ApiError, save_edit
from shared.names import SAME_NAME_RULE, name_search_key
from shared.roles import ROLES
from shared.validation import Field, check_person_name, parse_service_url, parse_uuid, validate


def check_username(value: str, field: str) -> str:
    """The username as stored (`shared.field_rules.username`: lower-case)."""
    name = field_rules.username(value)
    if name is None:
        raise ApiError(400, "validation_error", f"{field} must be {field_rules.USERNAME_RULE}")
    return name


def check_email(value: str, field: str) -> str:
    if value and not field_rules.email(value):
        raise ApiError(400, "validation_error", f"{field} {value[:80]!r} is not an e-mail address")
    return value


def check_institution_ref(value: str, field: str) -> str:
    """A body reference to an institution must name one that exists."""
    ident = parse_uuid(value, field)
    if Institution.get_or_none(Institution.id == ident) is None:
        raise ApiError(400, "validation_error", f"{field}: institution {ident} does not exist")
    return ident


def check_server_url(value: str, field: str) -> str:
    """The institution server's URL (clients send every user's token there), or empty."""
    return parse_service_url(value, field) if value else value


USER_UPDATE_FIELDS = {
    "full_name": Field(str, max_len=200, check=check_person_name),
    "email": Field(str, max_len=field_rules.MAX_EMAIL_LENGTH, check=check_email),
    "role": Field(str, choices=ROLES),
    "institution_id": Field(str, max_len=36, check=check_institution_ref),
    "active": Field(bool),
}

USER_CREATE_FIELDS = {
    "username": Field(str, max_len=field_rules.MAX_USERNAME_LENGTH, check=check_username),
    "password": Field(str, max_len=4096),
    "full_name": Field(str, max_len=200, check=check_person_name),
    "email": Field(str, required=False, max_len=field_rules.MAX_EMAIL_LENGTH, check=check_email),
    "role": Field(str, choices=ROLES),
    "institution_id": Field(str, max_len=36, check=check_institution_ref),
}

INSTITUTION_FIELDS = {
    "name": Field(str, max_len=200, min_len=1),
    "address": Field(str, required=False, max_len=500),
    "server_url": Field(str, required=False, max_len=500, check=check_server_url),
}


def create_user(body: dict[str, Any], passwords: Passwords, min_password_length: int,
                authorize: Callable[[dict[str, Any]], None] | None = None) -> User:
    """Validate a new user's fields and insert it; `409 conflict` if the username is taken.

    `authorize` sees the validated fields before anything is written (the API's role and
    institution check; the CLI, run by the server's operator, passes none).
    """
    check_body_fields(body, tuple(USER_CREATE_FIELDS))
    password = password_field(body, "password", min_password_length)
    data = validate(body, USER_CREATE_FIELDS)
    if authorize is not None:
        authorize(data)
    if User.get_or_none(User.username == data["username"]) is not None:
        raise username_taken(data["username"])
    try:
        with User._meta.database.atomic():
            return User.create(
                username=data["username"],
                password_hash=passwords.hash(password),
                full_name=data["full_name"],
                email=data.get("email", ""),
                role=data["role"],
                institution=data["institution_id"],
            )
    except peewee.IntegrityError as exc:
        raise (refused_user_row(data["institution_id"]) or username_taken(data["username"])) from exc


def username_taken(username: str) -> ApiError:
    return ApiError(409, "conflict", f"the username {username!r} is already taken")


def refused_user_row(institution_id: str) -> ApiError | None:
    """The 409 of a user row the database refused because its institution was deleted after
    `check_institution_ref` found it (the foreign key); None when it still exists. A move there was
    a 500, a new user there a 409 saying the username was taken."""
    if Institution.get_or_none(Institution.id == institution_id) is not None:
        return None
    return ApiError(409, "conflict", f"institution {institution_id} was deleted meanwhile; choose another")


def create_institution(data: dict[str, Any], institution_id: str | None = None) -> Institution:
    """Insert validated institution fields; `409 conflict` if the name is taken (`save_institution`)."""
    fields = {"name": data["name"], "address": data.get("address", ""),
              "server_url": data.get("server_url", "")}
    if institution_id is not None:
        fields["id"] = institution_id
    institution = Institution(**fields)
    save_institution(institution, create=True)
    return institution


#: The lock every institution create and rename takes: a name is compared with every other, then written.
INSTITUTION_NAMES_LOCK = "sivr-institution-names"


def save_institution(institution: Institution, create: bool, renamed: bool = True) -> None:
    """Insert `institution` or save an edit of it; `409 conflict` naming the institution whose name
    users read as the same (`name_search_key(..., keep_accents=True)`: "Clinic A" and "clinic a").

    The unique index compares names as typed, so both could be created, or one renamed into the
    other. The names are compared inside the transaction that writes, under a lock every create and
    rename takes (`shared.db.exclusive_transaction`), so two requests cannot both find a name free.
    An edit that keeps the stored name (`renamed` False) is not compared: a store holding two such
    names from before keeps working, and either may be renamed to another name.
    """
    try:
        with exclusive_transaction(Institution._meta.database, INSTITUTION_NAMES_LOCK):
            if renamed:
                _refuse_name_read_the_same(institution)
            if create:
                institution.save(force_insert=True)
            else:
                save_edit(institution, "institution")
    except peewee.IntegrityError as exc:
        raise ApiError(409, "conflict",
                       f"an institution named {institution.name!r} (or with this id) already exists") from exc


def _refuse_name_read_the_same(institution: Institution) -> None:
    key = name_search_key(institution.name, keep_accents=True)
    others = Institution.select(Institution.id, Institution.name).where(Institution.id != institution.id)
    for other in others:
        if name_search_key(other.name, keep_accents=True) == key:
            raise ApiError(409, "conflict",
                           f"an institution named {other.name!r} already exists (id {other.id}); {SAME_NAME_RULE}")
