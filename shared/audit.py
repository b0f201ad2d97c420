"""Audit log of every read or change of patient data: who, what, when, from where.

Each layer keeps its own log in its own database (backends never call each other), with the
same table shape and the same admin-only query endpoint, so the console can show them together.
Every request refused to a known caller for who they are (403 `forbidden`) is audited too, as
`access.denied` (`audit_denials`, installed with the endpoint), whichever check refused it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import peewee
from flask import Blueprint, Response, current_app, g, jsonify, request

from shared.audit_export import ACCESS_DENIED, export_entry
from shared.auth import current_identity, require_admin_of, require_auth
from shared.db import new_id, storable_text, utcnow
from shared.errors import ApiError
from shared.field_rules import MAX_USERNAME_LENGTH
from shared.roles import ADMIN_ROLES
from shared.tokens import Identity
from shared.validation import iso_utc, page_args, parse_datetime, parse_uuid, query_text

#: The characters an entry's `client_ip` holds (`stored_address` cuts what is longer).
CLIENT_IP_CHARS = 64

AUDIT_FILTERS = frozenset({"user_id", "username", "patient_id", "object_id", "action", "since", "until",
                           "limit", "offset"})


def make_audit_model(database: peewee.DatabaseProxy | peewee.Database) -> type[peewee.Model]:
    """The audit table bound to one layer's database."""

    class AuditEntry(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
        at = peewee.DateTimeField(default=utcnow, index=True)
        user_id = peewee.CharField(max_length=36, index=True)
        # as long as a username: a login's audit entry names the account it tried, as it was looked up
        username = peewee.CharField(max_length=MAX_USERNAME_LENGTH, index=True)
        action = peewee.CharField(max_length=64, index=True)
        object_type = peewee.CharField(max_length=32)
        object_id = peewee.CharField(max_length=64, null=True)
        patient_id = peewee.CharField(max_length=36, null=True, index=True)
        client_ip = peewee.CharField(max_length=CLIENT_IP_CHARS)
        detail = peewee.TextField(default="")

        class Meta:
            table_name = "audit_entry"

    AuditEntry._meta.database = database
    return AuditEntry


#: Who an entry written by the `sivr` command names (no user, no client address: a shell on the host).
CLI_USER = "sivr-cli"


def cli_entry(action: str, object_type: str, object_id: str | None, detail: str) -> dict[str, Any]:
    """The columns of an audit entry the `sivr` command writes (`user add`, `db copy`, …): one form
    for every command and layer, the layer's own columns added by the caller."""
    return {"user_id": "", "username": CLI_USER, "action": action, "object_type": object_type,
            "object_id": object_id, "client_ip": "local", "detail": detail}


def client_address() -> str:
    """The peer address as gunicorn sees it; proxies are not trusted unless configured there."""
    return request.remote_addr or "unknown"


def stored_address(address: str) -> str:
    """`address` as an entry's `client_ip` holds it: at most `CLIENT_IP_CHARS` characters, a longer
    one cut and ending in `…` so the log shows that it was cut.

    A peer address can be longer than the column: an IPv6 address with a zone id, the
    X-Forwarded-For value gunicorn passes as the address when a proxy is trusted, a unix socket's
    path, a DICOM peer a caller names. PostgreSQL refused the insert (500, the entry lost); every
    entry's address goes through here (`record_audit`, `record_audit_many`, the render node's image
    views).
    """
    address = storable_text(address)
    if len(address) <= CLIENT_IP_CHARS:
        return address
    return address[:CLIENT_IP_CHARS - 1] + "…"


def describe_changes(changes: dict[str, Any]) -> str:
    """An update's audit detail, `field=value, ...`, so the log says what an edit changed."""
    return ", ".join(f"{name}={value}" for name, value in changes.items())


# An entry's detail holds 2000 characters; a value quoted in it is cut to this many (its length noted),
# so an edit of two fields always shows both fields, old and new.
AUDIT_VALUE_CHARS = 440


def _quoted(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= AUDIT_VALUE_CHARS:
        return text
    return f"{text[:AUDIT_VALUE_CHARS]}…({len(text)} chars)"


def describe_values(values: dict[str, Any]) -> str:
    """`field: "value"; ...` (JSON-quoted): what a deleted object held, kept in its audit entry."""
    return "; ".join(f"{name}: {_quoted(value)}" for name, value in values.items())


def describe_old_new(old: dict[str, Any], new: dict[str, Any]) -> str:
    """`field: "old" -> "new"; ...`: an edit's audit detail when the log must show what was there before
    (a record relabelled after it was read under its first label)."""
    return "; ".join(f"{name}: {_quoted(old.get(name))} -> {_quoted(value)}" for name, value in new.items())


def record_audit(
    model: type[peewee.Model],
    action: str,
    object_type: str,
    object_id: str | None = None,
    patient_id: str | None = None,
    detail: str = "",
    user_id: str | None = None,
    username: str | None = None,
    client_ip: str | None = None,
    actor_institution_id: str | None = None,
    actor_role: str | None = None,
) -> None:
    """Write one entry for the current request (and export it, when configured); `user_id`/`username`
    override for logins (with the actor's institution and role, where the model keeps them), and
    all three (with `client_ip`) for work outside an HTTP request (a DICOM association names its peer)."""
    if user_id is None or username is None:
        identity = current_identity()
        user_id, username = identity.user_id, identity.username
        actor_institution_id, actor_role = identity.institution_id, identity.role
    entry = model.create(
        **_actor_columns(model, actor_institution_id, actor_role),
        user_id=user_id,
        username=username,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else storable_text(object_id),
        patient_id=patient_id,
        client_ip=stored_address(client_ip or client_address()),
        detail=storable_text(detail[:2000]),
    )
    export_entry(model, entry)


def _actor_columns(model: type[peewee.Model], institution_id: str | None, role: str | None) -> dict[str, Any]:
    """The actor's institution and role when they acted, for an audit table that keeps them (the
    toplevel's, where one log holds every institution's users: daemons/toplevel/models.py)."""
    if "actor_role" not in model._meta.fields:
        return {}
    return {"actor_institution_id": institution_id, "actor_role": role}


def record_audit_many(model: type[peewee.Model], action: str, objects: list[tuple[str, str | None]],
                      detail: str = "") -> None:
    """One entry per (object_type, object_id) for the current request, as `record_audit` writes them,
    in one prepared INSERT run per row: a search that shows a hundred records must not spend its
    time having peewee build a hundred INSERTs (that costs more than the database does)."""
    identity = current_identity()
    now, address = utcnow(), stored_address(client_address())
    actor = _actor_columns(model, identity.institution_id, identity.role)
    entries = [model(id=new_id(), at=now, user_id=identity.user_id, username=identity.username, action=action,
                     object_type=object_type, object_id=None if object_id is None else storable_text(object_id),
                     patient_id=None, client_ip=address, detail=storable_text(detail[:2000]), **actor)
               for object_type, object_id in objects]
    if not entries:
        return
    fields = list(model._meta.sorted_fields)
    rows = [[field.db_value(entry.__data__[field.name]) for field in fields] for entry in entries]
    database = model._meta.database
    with database.atomic():
        template, _params = model.insert_many(rows[:1], fields=fields).sql()
        database.cursor().executemany(template, rows)
        for entry in entries:
            export_entry(model, entry)


def audit_to_json(entry: Any) -> dict[str, Any]:
    """An audit row of any layer (each layer makes its own model with these fields)."""
    return {
        "id": entry.id,
        "at": iso_utc(entry.at),
        "user_id": entry.user_id,
        "username": entry.username,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "patient_id": entry.patient_id,
        "client_ip": entry.client_ip,
        "detail": entry.detail,
    }


#: `app.extensions` key of a layer's own reading of its paths (view arguments -> (object_type,
#: object_id), or None), for paths that name their object otherwise than by `<..._id>`: a render
#: node's DICOMweb paths name a study, series and instance by their UIDs
#: (`daemons.render.dicomweb.resolve.audited_object`).
OBJECT_NAMER_EXTENSION = "sivr_audit_object_namer"


def _named_object() -> tuple[str, str | None]:
    """The object a request names in its URL (`<user_id>`: ("user", id), or what the layer's
    `OBJECT_NAMER_EXTENSION` reads in it), else ("request", None): a refusal is then found with
    that object's other entries (`?object_id=`, and the toplevel shows an institution admin what
    was tried on their users)."""
    namer = current_app.extensions.get(OBJECT_NAMER_EXTENSION)
    named = namer(request.view_args or {}) if namer is not None else None
    if named is not None:
        return named
    for name, value in (request.view_args or {}).items():
        if name.endswith("_id") and isinstance(value, str):
            return name.removesuffix("_id"), value[:64]
    return "request", None


def audit_denials(model: type[peewee.Model]) -> Callable[[Response], Response]:
    """An after-request hook: every 403 `forbidden` answered to an authenticated caller becomes one
    `access.denied` entry (who, the method and path, why), exported with ATNA outcome 4.

    One hook rather than one call per check: the checks that refuse (`shared.auth`, the layers'
    own rules) are many, and a refused attempt (an admin trying another institution's users, a
    physician changing what they may not) is what an auditor looks for. Written after the view,
    so a refusal inside a rolled-back transaction is kept. Other 403 codes are attempts their view
    audits itself (`wrong_password`); anonymous refusals (401) have no one to name.
    """

    def audit_denial(response: Response) -> Response:
        if response.status_code != 403 or getattr(g, "identity", None) is None:
            return response
        body = response.get_json(silent=True)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or error.get("code") != "forbidden":
            return response
        object_type, object_id = _named_object()
        record_audit(model, ACCESS_DENIED, object_type, object_id,
                     detail=f"{request.method} {request.path}: {error.get('message', '')}")
        return response

    return audit_denial


AuditScope = Callable[[Identity, peewee.ModelSelect], peewee.ModelSelect]


def audit_blueprint(model: type[peewee.Model], institution_id: str | None = None,
                    scope: AuditScope | None = None) -> Blueprint:
    """`GET /api/v1/audit` for admins, filtered by user, patient, action and time range.

    With `institution_id`, only administrators of that institution (`shared.roles`) may read it
    (institution servers and render nodes). `scope` narrows the entries a caller sees (the
    toplevel's log, which spans institutions, shows an institution admin only what concerns the users
    they administer). Registering it also audits every refused request of the app (`audit_denials`).
    """
    bp = Blueprint("audit", __name__)
    bp.after_app_request(audit_denials(model))

    @bp.get("/api/v1/audit")
    @require_auth(*ADMIN_ROLES)
    def list_audit():
        identity = current_identity()
        if institution_id is not None:
            require_admin_of(identity, institution_id, "this audit log")
        limit, offset = page_args()
        query = model.select() if scope is None else scope(identity, model.select())
        args = request.args
        unknown = sorted(set(args) - AUDIT_FILTERS)
        if unknown:
            raise ApiError(400, "validation_error",
                           f"unknown filter(s): {', '.join(unknown)}; use {', '.join(sorted(AUDIT_FILTERS))}")
        blank = sorted(name for name, value in args.items() if not value.strip())
        if blank:
            raise ApiError(400, "validation_error", f"empty filter(s): {', '.join(blank)}")
        if "user_id" in args:
            query = query.where(model.user_id == parse_uuid(args["user_id"], "user_id"))
        if "username" in args:
            query = query.where(model.username.contains(query_text("username", MAX_USERNAME_LENGTH)))
        if "patient_id" in args:
            query = query.where(model.patient_id == parse_uuid(args["patient_id"], "patient_id"))
        if "object_id" in args:  # e.g. a record id: "who has seen this record" on a render node
            query = query.where(model.object_id == query_text("object_id", 64))
        if "action" in args:
            query = query.where(model.action == query_text("action", 64))
        if "since" in args:
            query = query.where(model.at >= parse_datetime(args["since"], "since"))
        if "until" in args:
            query = query.where(model.at <= parse_datetime(args["until"], "until"))
        total = query.count()
        rows = query.order_by(model.at.desc()).limit(limit).offset(offset)
        return jsonify({"items": [audit_to_json(r) for r in rows], "total": total})

    return bp
