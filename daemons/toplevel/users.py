"""User administration and the user directory.

Who may administer which user is `shared.roles` (system admins: everyone; institution admins:
their own institution's users, never a system admin); everyone else sees names only.
"""

from __future__ import annotations

import peewee
from flask import Blueprint, Response, jsonify, request

from daemons.toplevel import accounts, sessions
from daemons.toplevel.context import get_by_id, page_of, refuse_blank_id, require_user, toplevel, user_change
from daemons.toplevel.models import AuditEntry, User
from daemons.toplevel.passwords import check_body_fields, password_field
from daemons.toplevel.serialize import user_json, user_name_json
from shared.audit import describe_changes, record_audit
from shared.auth import current_identity, require_admin_of
from shared.errors import ApiError, save_edit
from shared.roles import ADMIN_ROLES, may_administer_user, may_grant_role
from shared.tokens import Identity
from shared.validation import json_body, parse_uuid, query_text, validate

bp = Blueprint("users", __name__)


@bp.get("/api/v1/users")
@require_user()
def list_users():
    query = User.select()
    q = query_text("q", User.full_name.max_length)  # as long as the longest value it matches
    if q:
        query = query.where(User.username.contains(q) | User.full_name.contains(q))
    if request.args.get("institution_id") is not None:
        query = query.where(User.institution == parse_uuid(request.args["institution_id"], "institution_id"))
    identity = current_identity()

    def shape(user: User) -> dict:
        administered = may_administer_user(identity, user.role, user.institution_id)
        return user_json(user) if administered else user_name_json(user)

    return jsonify(page_of(query, (User.username,), shape))


def _require_may_grant(identity: Identity, role: str) -> None:
    if not may_grant_role(identity, role):
        raise ApiError(403, "forbidden", f"only a system administrator may give the role {role}")


def _administered_user(user_id: str) -> User:
    """The user with this id, if the caller may administer them (else 403; unknown id: 404)."""
    identity = current_identity()
    user = get_by_id(User, user_id, "user")
    require_admin_of(identity, user.institution_id, "this user")
    _require_may_grant(identity, user.role)
    return user


@bp.post("/api/v1/users")
@require_user(*ADMIN_ROLES)
def create_user():
    top = toplevel()
    identity = current_identity()

    def authorize(data: dict) -> None:
        require_admin_of(identity, data["institution_id"], "the new user")
        _require_may_grant(identity, data["role"])

    user = accounts.create_user(json_body(), top.passwords, top.config["auth"]["min_password_length"],
                                authorize=authorize)
    record_audit(AuditEntry, "user.create", "user", user.id,
                 detail=f"username={user.username} role={user.role} institution={user.institution_id}")
    return jsonify(user_json(user)), 201


refuse_blank_id(bp, "/api/v1/users", "user", ["GET", "PUT", "DELETE"])


@bp.get("/api/v1/users/<user_id>")
@require_user(*ADMIN_ROLES)
def get_user(user_id: str):
    return jsonify(user_json(_administered_user(user_id)))


@bp.put("/api/v1/users/<user_id>")
@require_user(*ADMIN_ROLES)
def update_user(user_id: str):
    """Deactivating a user or moving them to another role or institution ends their sessions.

    The caller must administer the user as they are and as they would be after the change, so an
    institution admin can neither move a user (themselves included) elsewhere nor promote anyone
    to system admin. The user is read and written under `user_change`'s lock.
    """
    data = validate(json_body(), accounts.USER_UPDATE_FIELDS, partial=True)
    with user_change() as (identity, _caller):
        user = _administered_user(user_id)
        if "institution_id" in data:
            require_admin_of(identity, data["institution_id"], "the institution you move this user to")
        if "role" in data:
            _require_may_grant(identity, data["role"])
        if user.id == identity.user_id:
            if data.get("active") is False:
                raise ApiError(409, "conflict", "you cannot deactivate your own account")
            if data.get("role", user.role) != user.role:
                raise ApiError(409, "conflict", "you cannot change your own role; ask another admin")
        changed = {name: value for name, value in data.items() if getattr(user, name) != value}
        for name, value in changed.items():
            setattr(user, "institution" if name == "institution_id" else name, value)
        try:
            with User._meta.database.atomic():
                save_edit(user, "user")
        except peewee.IntegrityError as exc:  # its new institution deleted since it was checked
            refusal = accounts.refused_user_row(user.institution_id)
            if refusal is None:
                raise
            raise refusal from exc
        if not user.active or {"role", "institution_id"} & changed.keys():
            sessions.revoke_user_sessions(user.id)
        record_audit(AuditEntry, "user.update", "user", user.id,
                     detail=describe_changes(changed) or "no change")
    return jsonify(user_json(user))


@bp.delete("/api/v1/users/<user_id>")
@require_user(*ADMIN_ROLES)
def delete_user(user_id: str):
    with user_change() as (identity, _caller):
        user = _administered_user(user_id)
        if user.id == identity.user_id:
            raise ApiError(409, "conflict", "you cannot delete your own account")
        user.delete_instance()
        sessions.revoke_user_sessions(user.id)
        record_audit(AuditEntry, "user.delete", "user", user.id, detail=f"username={user.username}")
    return Response(status=204)


@bp.post("/api/v1/users/<user_id>/password")
@require_user(*ADMIN_ROLES)
def reset_password(user_id: str):
    """Set a new password and end the user's open sessions (their tokens may be in wrong hands)."""
    target = _administered_user(user_id)  # refused before any hashing
    body = json_body()
    check_body_fields(body, ("new_password",))
    top = toplevel()
    new_password = password_field(body, "new_password", top.config["auth"]["min_password_length"])
    if target.id == current_identity().user_id:
        raise ApiError(403, "forbidden",
                       "change your own password with POST /api/v1/me/password (it needs the old one)")
    password_hash = top.passwords.hash(new_password)
    with user_change():
        user = _administered_user(user_id)
        user.password_hash = password_hash
        save_edit(user, "user", only=[User.password_hash])
        sessions.revoke_user_sessions(user.id)
        record_audit(AuditEntry, "user.password_reset", "user", user.id)
    return Response(status=204)
