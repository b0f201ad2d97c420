"""A receipt key removed from the registry is revoked for good (session 62, attack 270).

An administrator who suspects a render node's receipt key was stolen removes it
(`PUT /api/v1/nodes/{id} {"receipt_key": null}`): no registration on the node until its new key is
set. But the removed key itself could be set again, by a second administrator pasting it back from
an old note, or on another node of the institution: every receipt the thief signed with it then
registered again (201). Now a removed key is kept (`RevokedReceiptKey`, institution schema 7) and
refused on any node of the institution, 409 `receipt_key_revoked`, saying who removed it from which
node and when, and what to do. A key replaced by another is not revoked: a rotation gone wrong may be
rolled back (docs/deployment.md, "Rotating a node's receipt key").
"""

from __future__ import annotations

import base64
import copy

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from daemons.institution.app import create_app
from daemons.institution.models import copy as copy_institution
from daemons.institution.models import upgrade
from shared.db import connect_database
from shared.receipts import issue_receipt, public_key_text

from .conftest import INSTITUTION_A, INSTITUTION_B, record_body


def _key_of(api, node) -> str:
    return public_key_text(api.node_key(node["url"]).public_key())


def _put(api, admin, node, key):
    return api.call("PUT", f"/api/v1/nodes/{node['id']}", admin, {"receipt_key": key})


def test_a_removed_key_is_refused_on_its_node_and_on_any_other(api, users, node, patient_id):
    admin, stolen = users["admin"], _key_of(api, node)
    body = record_body(node["id"], patient_id)
    thiefs_receipt = api.receipt(node["id"], body["id"], users["physician"])  # signed with the stolen key
    assert _put(api, admin, node, None)[0] == 200

    status, answer = _put(api, admin, node, stolen)
    assert status == 409 and answer["error"]["code"] == "receipt_key_revoked", answer
    message = answer["error"]["message"]
    assert "'node-1'" in message and admin.username in message and "new key" in message, message
    assert api.call("GET", f"/api/v1/nodes/{node['id']}", admin)[1]["receipt_key"] is None  # nothing stored

    status, answer = api.call("POST", "/api/v1/nodes", admin, {"name": "node-2", "url": "https://render2.example:5003",
                                                               "receipt_key": stolen})
    assert status == 409 and answer["error"]["code"] == "receipt_key_revoked", answer
    assert api.call("GET", "/api/v1/nodes", admin)[1]["total"] == 1

    status, answer = api.call("POST", "/api/v1/records", users["physician"], {**body, "receipt": thiefs_receipt})
    assert status == 422 and answer["error"]["code"] == "node_receipt_key_missing", answer


def test_the_revocation_outlives_the_node_and_survives_a_restart(config, app, api, users, node):
    admin, stolen = users["admin"], _key_of(api, node)
    assert _put(api, admin, node, None)[0] == 200
    assert api.call("DELETE", f"/api/v1/nodes/{node['id']}", admin)[0] == 204
    assert upgrade(config) == 7  # as at the next start
    status, answer = api.call("POST", "/api/v1/nodes", admin, {"name": "node-1", "url": node["url"],
                                                               "receipt_key": stolen})
    assert status == 409 and answer["error"]["code"] == "receipt_key_revoked", answer


def test_a_replaced_key_may_be_set_back_and_a_new_one_always(api, users, node):
    """Rotation: the old key replaced, then set back (the rotation rolled back); no revocation."""
    admin, old = users["admin"], _key_of(api, node)
    new = public_key_text(Ed25519PrivateKey.generate().public_key())
    assert _put(api, admin, node, new)[0] == 200
    assert _put(api, admin, node, old)[0] == 200
    # removing twice revokes once; a new key after the removal is taken
    assert _put(api, admin, node, None)[0] == 200
    assert _put(api, admin, node, None)[0] == 200
    fresh = public_key_text(Ed25519PrivateKey.generate().public_key())
    status, shown = _put(api, admin, node, fresh)
    assert status == 200 and shown["receipt_key"] == fresh


def test_revocations_are_the_institutions_own(config, api, users, node, make_user):
    """Institution B's server on A's database may register a key A's administrator revoked: their
    registries are their own, and B is told nothing of A's."""
    stolen = _key_of(api, node)
    assert _put(api, users["admin"], node, None)[0] == 200
    config_b = copy.deepcopy(config)
    config_b["institution"]["id"] = INSTITUTION_B
    server_b = create_app(config_b).test_client()
    reply = server_b.post("/api/v1/nodes", headers=make_user("instadmin", INSTITUTION_B).headers,
                          json={"name": "node-b", "url": "https://render.b.example:5003", "receipt_key": stolen})
    assert reply.status_code == 201, reply.get_json()


def test_upgrade_from_schema_6_adds_the_table_and_keeps_the_nodes(config, app, api, users, node):
    db = connect_database(config["database"]["url"])
    db.execute_sql("DROP TABLE revoked_receipt_key")
    db.execute_sql("UPDATE schema_version SET version = 6 WHERE layer = 'institution'")
    db.close()
    assert upgrade(config) == 7
    assert _put(api, users["admin"], node, None)[0] == 200
    status, answer = _put(api, users["admin"], node, _key_of(api, node))
    assert status == 409 and answer["error"]["code"] == "receipt_key_revoked", answer


def test_a_key_removed_from_one_node_is_taken_off_every_node_holding_it(api, users, node, patient_id):
    """Found by the session's review: two nodes holding one key (a node registered twice, under two
    URLs; a key pasted on two entries). Removing it from node-1 left it on node-2, and a receipt the
    thief signed for node-2's URL registered (201). Now it is taken off node-2 too, audited there."""
    admin, stolen_private = users["admin"], api.node_key(node["url"])
    stolen = public_key_text(stolen_private.public_key())
    url2 = "https://render2.hospital-a.example:5003"
    status, node2 = api.call("POST", "/api/v1/nodes", admin, {"name": "node-2", "url": url2, "receipt_key": stolen})
    assert status == 201, node2
    assert _put(api, admin, node, None)[0] == 200

    assert api.call("GET", f"/api/v1/nodes/{node2['id']}", admin)[1]["receipt_key"] is None
    body = record_body(node2["id"], patient_id)
    forged = issue_receipt(stolen_private, url2, body["id"], INSTITUTION_A, users["physician"].id)
    status, answer = api.call("POST", "/api/v1/records", users["physician"], {**body, "receipt": forged})
    assert status == 422 and answer["error"]["code"] == "node_receipt_key_missing", answer
    entries = api.call("GET", f"/api/v1/audit?action=node.update&object_id={node2['id']}", admin)[1]["items"]
    assert [e["detail"] for e in entries] == ["receipt_key removed (revoked on node node-1)"]


def test_spellings_of_a_revoked_key_are_refused(api, users, node):
    """Found sound by the session's review: a key is read into one canonical form (`_receipt_key`), so
    blanks around it, its padding left out and the other values of its last character's two unused
    bits are the same key, refused, or no key at all (400)."""
    admin = users["admin"]
    stolen = public_key_text(api.node_key(node["url"]).public_key())
    assert _put(api, admin, node, None)[0] == 200
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(stolen[42])
    variants = [f"  {stolen}\n", stolen.rstrip("=")] + [f"{stolen[:42]}{alphabet[(last & ~3) | bits]}="
                                                          for bits in range(4)]
    assert base64.b64decode(variants[-1]) == base64.b64decode(stolen)
    for variant in variants:
        status, answer = _put(api, admin, node, variant)
        assert status == 400 or (status == 409 and answer["error"]["code"] == "receipt_key_revoked"), (variant, answer)


def test_a_database_copy_keeps_the_revocations(config, api, users, node, tmp_path, database_url):
    """`sivr db copy` carries the revoked keys: the copy's server refuses them too."""
    if not database_url.startswith("sqlite"):
        pytest.skip("a copy from SQLite, as `sivr db copy` moves a server off SQLite")
    stolen = _key_of(api, node)
    assert _put(api, users["admin"], node, None)[0] == 200
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    assert copy_institution(config, target)["revoked_receipt_key"] == 1
    moved = copy.deepcopy(config)
    moved["database"]["url"] = target
    reply = create_app(moved).test_client().put(f"/api/v1/nodes/{node['id']}", headers=users["admin"].headers,
                                                json={"receipt_key": stolen})
    assert reply.status_code == 409 and reply.get_json()["error"]["code"] == "receipt_key_revoked", reply.get_json()
