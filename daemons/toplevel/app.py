"""The toplevel layer's application factory: users, institutions, record types, patients, tokens."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from shared.audit import audit_blueprint
from shared.auth import VERIFIER_EXTENSION
from shared.config import Config
from shared.db import bind_models, bind_per_request, schema_target
from shared.health import add_readiness_check, database_check, files_check
from shared.tokens import TokenIssuer, load_private_key
from shared.webapp import create_base_app

from daemons.toplevel import auth, institutions, patients, profile, record_types, users
from daemons.toplevel.context import EXTENSION, Toplevel, require_live_session
from daemons.toplevel.models import MIGRATIONS, AuditEntry, database_proxy
from daemons.toplevel.passwords import passwords_from_config


def issuer_from_config(config: Config) -> TokenIssuer:
    tokens = config["tokens"]
    if not tokens["private_key"]:
        raise ValueError(f"{config.source}: tokens.private_key must name the token signing key file")
    return TokenIssuer(load_private_key(tokens["private_key"]), tokens["issuer"], tokens["audience"],
                       tokens["access_ttl_s"])


def signing_key_check(issuer: TokenIssuer, app: Flask) -> Callable[[], str | None]:
    """Tokens this server signs must verify with a key the layers accept (tokens.public_key or an extra)."""

    def check() -> str | None:
        if issuer.key_id not in app.extensions[VERIFIER_EXTENSION].public_keys:
            return ("tokens.private_key does not match tokens.public_key or tokens.extra_public_keys: "
                    "the tokens it signs would be refused")
        return None

    return check


def _refuse_ended_sessions() -> None:
    """A `before_request` hook must return None to let the view run."""
    require_live_session()


def create_app(config: Config) -> Flask:
    """Build the app; the schema must already exist (`sivr db upgrade` / `models.upgrade`).

    The models' proxy is pointed at this app's database: one toplevel app per process, as under
    gunicorn.
    """
    app = create_base_app(__name__, config)
    database = bind_models(database_proxy, config)
    bind_per_request(app, database)
    issuer = issuer_from_config(config)
    app.extensions[EXTENSION] = Toplevel(config=config, issuer=issuer, passwords=passwords_from_config(config))
    add_readiness_check(app, "database", database_check(database, "toplevel", schema_target(MIGRATIONS)))
    add_readiness_check(app, "signing_key", signing_key_check(issuer, app))
    add_readiness_check(app, "signing_key_file", files_check([config["tokens"]["private_key"]], "token signing key"))
    for blueprint in (auth.bp, profile.bp, users.bp, institutions.bp, record_types.bp, patients.bp):
        app.register_blueprint(blueprint)
    audit = audit_blueprint(AuditEntry)
    # the shared endpoint checks the token alone; here a logged-out or deactivated admin is refused too
    audit.before_request(_refuse_ended_sessions)
    app.register_blueprint(audit)
    return app
