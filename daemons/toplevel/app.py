"""The toplevel layer's application factory: users, institutions, record types, patients, tokens."""

from __future__ import annotations

from collections.abc import Callable

import peewee
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from daemons.toplevel import auth, institutions, patients, profile, record_types, users
from daemons.toplevel.context import EXTENSION, Toplevel, require_live_session
from daemons.toplevel.models import MIGRATIONS, AuditEntry, User, database_proxy
from daemons.toplevel.passwords import passwords_from_config
from shared.audit import audit_blueprint
from shared.auth import VERIFIER_EXTENSION
from shared.config import Config
from shared.db import bind_models, bind_per_request, schema_target
from shared.files import require_owner_only
from shared.health import add_readiness_check, database_check, files_check
from shared.roles import grantable_roles, is_system_admin
from shared.tokens import Identity, TokenIssuer, load_private_key
from shared.webapp import create_base_app, layer_audience


def signing_key_from_config(config: Config) -> Ed25519PrivateKey:
    tokens = config["tokens"]
    if not tokens["private_key"]:
        raise ValueError(f"{config.source}: tokens.private_key must name the token signing key file")
    require_owner_only(tokens["private_key"], f"{config.source}: tokens.private_key (the token signing key)")
    return load_private_key(tokens["private_key"])


def issuer_from_config(config: Config, key: Ed25519PrivateKey | None = None) -> TokenIssuer:
    tokens = config["tokens"]
    return TokenIssuer(key or signing_key_from_config(config), tokens["issuer"], layer_audience(config),
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


def _audit_scope(identity: Identity, query: peewee.ModelSelect) -> peewee.ModelSelect:
    """System admins read the whole log. An institution admin reads what was done by users they
    administered when it was done (of their institution, in a role they grant, as the entry states:
    a user moved elsewhere, demoted or deleted keeps their history where they acted), and what
    anyone did to the users they administer now (a system admin resetting one's password), both by
    `shared.roles.may_administer_user`: never what a system admin did, or their logins, though that
    admin is a member of their institution (`GET /users/<id>` refuses them too). Entries from before
    the actor was recorded (schema 3) follow the user's present membership, as they always did.
    """
    if is_system_admin(identity):
        return query
    grantable = grantable_roles(identity)
    # may_administer_user in SQL (a subquery: a list of every user's id would pass the databases'
    # limits on bound parameters in a large institution): its institution's users of a role it grants
    administered = User.select(User.id).where((User.institution == identity.institution_id)
                                              & User.role.in_(grantable))
    acted_here = (AuditEntry.actor_institution_id == identity.institution_id) & AuditEntry.actor_role.in_(grantable)
    before_actors_were_kept = AuditEntry.actor_role.is_null() & AuditEntry.user_id.in_(administered)
    return query.where(acted_here | before_actors_were_kept
                       | ((AuditEntry.object_type == "user") & AuditEntry.object_id.in_(administered)))


def create_app(config: Config) -> Flask:
    """Build the app; the schema must already exist (`sivr db upgrade` / `models.upgrade`).

    The models' proxy is pointed at this app's database: one toplevel app per process, as under
    gunicorn.
    """
    app = create_base_app(__name__, config)
    database = bind_models(database_proxy, config)
    bind_per_request(app, database)
    key = signing_key_from_config(config)
    issuer = issuer_from_config(config, key)
    app.extensions[EXTENSION] = Toplevel(
        config=config, issuer=issuer, passwords=passwords_from_config(config), signing_key=key,
    )
    add_readiness_check(app, "database", database_check(database, "toplevel", schema_target(MIGRATIONS)))
    add_readiness_check(app, "signing_key", signing_key_check(issuer, app))
    add_readiness_check(app, "signing_key_file", files_check([config["tokens"]["private_key"]], "token signing key"))
    for blueprint in (auth.bp, profile.bp, users.bp, institutions.bp, record_types.bp, patients.bp):
        app.register_blueprint(blueprint)
    audit = audit_blueprint(AuditEntry, scope=_audit_scope)
    # the shared endpoint checks the token alone; here a logged-out or deactivated admin is refused too
    audit.before_request(_refuse_ended_sessions)
    app.register_blueprint(audit)
    return app
