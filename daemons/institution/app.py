"""Application factory of an institution server (run under gunicorn by `sivr serve institution`)."""

from __future__ import annotations

import peewee
from flask import Flask

from daemons.institution import finding_history, findings, info, nodes, records
from daemons.institution.models import MIGRATIONS, AuditEntry, bind_database
from daemons.institution.routes import install_id_converter
from shared.audit import AuditScope, audit_blueprint
from shared.config import Config, ConfigError
from shared.db import bind_per_request, schema_target
from shared.errors import ApiError
from shared.health import add_readiness_check, database_check
from shared.tokens import Identity
from shared.validation import parse_uuid
from shared.webapp import create_base_app


def _check_institution_id(config: Config) -> None:
    """Every authorization decision compares against this id, so a bad one must stop start-up."""
    try:
        canonical = parse_uuid(config["institution"]["id"], "institution.id")
    except ApiError as exc:
        raise ConfigError(f"{config.source or '<config>'}: {exc.message}") from exc
    config["institution"]["id"] = canonical


def entries_of_this_institution(institution_id: str) -> AuditScope:
    """The audit log an administrator here reads: the entries this institution's server wrote, and
    those written before entries named their institution (schema 4), as they were shown then.

    Two institution servers may share one database (`models`): the log of the other institution
    (who read which patient's findings there, what was refused to whom) is not this one's to show.
    """

    def scope(_identity: Identity, query: peewee.ModelSelect) -> peewee.ModelSelect:
        return query.where((AuditEntry.institution_id == institution_id) | AuditEntry.institution_id.is_null())

    return scope


def create_app(config: Config) -> Flask:
    _check_institution_id(config)
    app = create_base_app(__name__, config)
    install_id_converter(app)
    database = bind_database(config)
    bind_per_request(app, database)
    add_readiness_check(app, "database", database_check(database, "institution", schema_target(MIGRATIONS)))
    institution_id = config["institution"]["id"]
    audit = audit_blueprint(AuditEntry, institution_id=institution_id,
                            scope=entries_of_this_institution(institution_id))
    for blueprint in (info.bp, nodes.bp, records.bp, findings.bp, finding_history.bp, audit):
        app.register_blueprint(blueprint)
    return app
