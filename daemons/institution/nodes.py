"""`/api/v1/nodes`: the registry of this institution's render nodes.

Every role lists and reads nodes: a viewer needs a node's URL to upload to it and to
show a record linked from a finding, and such records may be stored in another institution
(each render node still checks every token itself). Names and URLs are not patient data. Only
administrators of this institution (`shared.roles`) add, change or remove nodes.

A node's `receipt_key` (the public key it shows at `GET /api/v1/node`) is what records are
registered against: a record is registered only with an upload receipt that key verifies. Sending
`"receipt_key": null` removes it: an administrator who suspects the node's key was stolen stops every
new registration on the node (422 node_receipt_key_missing) until the node's new key is set. A key
removed so is revoked for good (`RevokedReceiptKey`): set again, on any node of this institution, it
is refused (409 receipt_key_revoked), else the thief's receipts would register again. A key replaced
by another is not revoked: a rotation that went wrong may be rolled back (docs/deployment.md).
"""

from __future__ import annotations

from typing import Any

import peewee
from flask import Blueprint, g, jsonify

from daemons.institution.access import require_admin_here, this_institution
from daemons.institution.models import AuditEntry, Node, Record, RevokedReceiptKey, database_proxy
from shared.audit import record_audit
from shared.auth import current_identity, require_auth
from shared.db import exclusive_transaction
from shared.errors import ApiError, not_found, save_edit
from shared.names import SAME_NAME_RULE, name_search_key
from shared.receipts import parse_public_key, public_key_text
from shared.roles import ADMIN_ROLES
from shared.validation import (
    MAX_URL_LENGTH,
    Field,
    iso_utc,
    json_body,
    page_args,
    parse_service_url,
    parse_uuid,
    validate,
)

bp = Blueprint("nodes", __name__)

def _receipt_key(value: str, field: str) -> str:
    """The node's receipt public key as `GET /api/v1/node` shows it (`receipt_key.public_key`)."""
    try:
        return public_key_text(parse_public_key(value))
    except ValueError as exc:
        raise ApiError(400, "validation_error", f"{field}: {exc}") from exc


#: The lock of the registry's changes, which read it (a duplicate name or URL, the node's records),
#: then write it (`shared.db.exclusive_transaction`: a plain transaction failed with "database is
#: locked" on SQLite when two came at once).
REGISTRY_LOCK = "sivr-node-registry"

NODE_FIELDS = {
    "name": Field(str, max_len=120, min_len=1),
    "url": Field(str, max_len=MAX_URL_LENGTH, min_len=1, check=parse_service_url),
    "store": Field(str, required=False, max_len=512),
    # without it no record is registered on the node (daemons.institution.records); null removes it
    "receipt_key": Field(str, required=False, max_len=64, check=_receipt_key, nullable=True),
}


def _node_columns(fields: dict[str, Any]) -> dict[str, Any]:
    """The validated fields as the node's columns: a removed receipt key is stored empty, as a node
    registered without one (the column is not nullable, and `node_to_json` shows both as null)."""
    return {**fields, "receipt_key": fields["receipt_key"] or ""} if "receipt_key" in fields else fields


def _changes(node: Node, fields: dict[str, Any]) -> str:
    """The audit detail of an edit of `node` (as it was): the fields it changes, a removed receipt key
    said as such (it stops every registration on the node, which the next administrator reading the
    log must see); a field sent with the value it had is no change."""
    changed = sorted(name for name, value in fields.items() if getattr(node, name) != value)
    return ", ".join("receipt_key removed" if name == "receipt_key" and not fields[name] else name
                     for name in changed) or "nothing changed"


def node_to_json(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "url": node.url,
        "store": node.store,
        "serving_node_ids": serving_node_ids(node.id),
        "institution_id": node.institution_id,
        "receipt_key": node.receipt_key or None,
        "created_at": iso_utc(node.created_at),
    }


def serving_node_ids(node_id: str) -> list[str]:
    """The nodes that can serve a record stored on `node_id`: itself first, then the other nodes of
    this institution that declare the same shared store (by name). The viewer tries them in order.

    The node list is read once per request, so a page of records costs one query.
    """
    if "sivr_node_stores" not in g:
        rows = Node.select(Node.id, Node.store).where(Node.institution_id == this_institution()).order_by(Node.name)
        g.sivr_node_stores = [(n.id, n.store) for n in rows]
    stores = dict(g.sivr_node_stores)
    own = stores.get(node_id, "")
    return [node_id] + [other for other, store in g.sivr_node_stores if own and store == own and other != node_id]


def get_node(node_id: str) -> Node:
    """This institution's node with that id, or 404 (another institution's node is not here)."""
    node = Node.get_or_none((Node.id == node_id) & (Node.institution_id == this_institution()))
    if node is None:
        raise not_found("node", node_id)
    return node


def _refuse_duplicate(fields: dict[str, Any], node: Node | None = None) -> None:
    """`409 conflict` when another node of this institution has the URL, or a name users read as the
    one sent (`shared.names.name_search_key(..., keep_accents=True)`, as the toplevel compares
    institution names: "node-1", "NODE-1", full-width "ｎｏｄｅ－１", "node‑1" with U+2011 and
    "node-1" with a zero-width space are one name). The unique index compares names as typed.

    Called under `REGISTRY_LOCK`, so two requests cannot both find a name free. An edit of `node`
    that sends its stored name again (the console's form sends every field) is not compared: a
    registry holding two such names from before keeps working, and either may be renamed.
    """
    query = Node.select(Node.id, Node.name, Node.url).where(Node.institution_id == this_institution())
    others = list(query if node is None else query.where(Node.id != node.id))
    if "url" in fields and any(other.url == fields["url"] for other in others):
        raise ApiError(409, "conflict", "a node with this url is already registered")
    if "name" not in fields or (node is not None and fields["name"] == node.name):
        return
    key = name_search_key(fields["name"], keep_accents=True)
    for other in others:
        if name_search_key(other.name, keep_accents=True) == key:
            raise ApiError(409, "conflict",
                           f"a node named {other.name!r} is already registered (id {other.id}); {SAME_NAME_RULE}: "
                           "choose another name, or edit that node")


def _refuse_revoked(fields: dict[str, Any]) -> None:
    """409 `receipt_key_revoked` for a key an administrator removed from a node of this institution."""
    key = fields.get("receipt_key")
    if not key:
        return
    revoked = RevokedReceiptKey.get_or_none((RevokedReceiptKey.institution_id == this_institution())
                                            & (RevokedReceiptKey.public_key == key))
    if revoked is not None:
        raise ApiError(409, "receipt_key_revoked",
                       f"this receipt key was removed from node {revoked.node_name!r} on "
                       f"{iso_utc(revoked.revoked_at)} by {revoked.revoked_by} as possibly stolen, and is "
                       "never registered again: give the node a new key (docs/deployment.md, \"Rotating a "
                       "node's receipt key\") and register the one it then shows")


def _revoke_removed(node: Node, fields: dict[str, Any]) -> None:
    """Keep the key `fields` remove from `node` as revoked (`_refuse_revoked`), and take it off every
    other node of this institution that holds it (a node registered twice, under two URLs; a key
    pasted on two entries), each audited: the thief's receipts for such a node's URL registered."""
    if "receipt_key" not in fields or fields["receipt_key"] or not node.receipt_key:
        return
    RevokedReceiptKey.get_or_create(
        institution_id=this_institution(), public_key=node.receipt_key,
        defaults={"node_id": node.id, "node_name": node.name, "revoked_by": current_identity().username})
    holding = Node.select().where((Node.institution_id == this_institution()) & (Node.id != node.id)
                                  & (Node.receipt_key == node.receipt_key))
    for other in holding:
        other.receipt_key = ""
        save_edit(other, "node")
        record_audit(AuditEntry, "node.update", "node", other.id,
                     detail=f"receipt_key removed (revoked on node {node.name})")


@bp.get("/api/v1/nodes")
@require_auth()
def list_nodes():
    limit, offset = page_args()
    query = Node.select().where(Node.institution_id == this_institution())
    total = query.count()
    rows = query.order_by(Node.name, Node.id).limit(limit).offset(offset)
    return jsonify({"items": [node_to_json(n) for n in rows], "total": total})


@bp.post("/api/v1/nodes")
@require_auth(*ADMIN_ROLES)
def create_node():
    require_admin_here("this node registry")
    fields = _node_columns(validate(json_body(), NODE_FIELDS))
    with exclusive_transaction(database_proxy, REGISTRY_LOCK):
        _refuse_duplicate(fields)
        _refuse_revoked(fields)
        try:
            node = Node.create(institution_id=this_institution(), **fields)
        except peewee.IntegrityError as exc:
            raise ApiError(409, "conflict", "a node with this name is already registered") from exc
        record_audit(AuditEntry, "node.create", "node", node.id, detail=f"{node.name} {node.url}")
    return jsonify(node_to_json(node)), 201


@bp.get("/api/v1/nodes/<id:node_id>")
@require_auth()
def read_node(node_id: str):
    return jsonify(node_to_json(get_node(parse_uuid(node_id, "node id"))))


@bp.put("/api/v1/nodes/<id:node_id>")
@require_auth(*ADMIN_ROLES)
def update_node(node_id: str):
    require_admin_here("this node registry")
    node_id = parse_uuid(node_id, "node id")
    fields = _node_columns(validate(json_body(), NODE_FIELDS, partial=True))
    with exclusive_transaction(database_proxy, REGISTRY_LOCK):
        node = get_node(node_id)
        _refuse_duplicate(fields, node)
        _refuse_revoked(fields)
        changes = _changes(node, fields)
        _revoke_removed(node, fields)
        for name, value in fields.items():
            setattr(node, name, value)
        try:
            save_edit(node, "node")
        except peewee.IntegrityError as exc:
            raise ApiError(409, "conflict", "a node with this name is already registered") from exc
        record_audit(AuditEntry, "node.update", "node", node.id, detail=changes)
    return jsonify(node_to_json(node))


@bp.delete("/api/v1/nodes/<id:node_id>")
@require_auth(*ADMIN_ROLES)
def delete_node(node_id: str):
    require_admin_here("this node registry")
    node_id = parse_uuid(node_id, "node id")
    with exclusive_transaction(database_proxy, REGISTRY_LOCK):
        node = get_node(node_id)
        stored = Record.select().where(Record.node == node).count()
        if stored:
            raise ApiError(409, "conflict",
                           f"{stored} record(s) are still registered on this node; delete them first")
        try:
            node.delete_instance()
        except peewee.IntegrityError as exc:  # a record registered on it meanwhile (its own lock)
            raise ApiError(409, "conflict", "a record was registered on this node meanwhile; delete it first") from exc
        record_audit(AuditEntry, "node.delete", "node", node.id, detail=node.name)
    return "", 204
