"""Upload receipts (issue 13, item 11): a record is registered only on a node that says it stores it.

The render node signs a receipt for each upload with its own Ed25519 key; the institution checks
it against the key registered with the node. Every refusal below was a 201 before receipts.
"""

from __future__ import annotations

import hashlib
import time

import peewee
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from daemons.institution.models import upgrade
from shared.db import connect_database
from shared.receipts import issue_receipt, public_key_text

from .conftest import INSTITUTION_A, INSTITUTION_B, record_body


def _register(api, user, body, receipt):
    return api.call("POST", "/api/v1/records", user, {**body, "receipt": receipt})


def _attacks(api, users, node, other_node, body) -> dict[str, object]:
    mine, url = users["physician"], node["url"]
    key = api.node_key(url)
    return {
        "missing": None,
        "not a receipt": "stored-trust-me",
        "forged (another key)": issue_receipt(Ed25519PrivateKey.generate(), url, body["id"], INSTITUTION_A, mine.id),
        "from another node": api.receipt(other_node["id"], body["id"], mine),
        "for another record": api.receipt(node["id"], hashlib.sha256(b"other").hexdigest(), mine),
        "for another user": api.receipt(node["id"], body["id"], users["physician2"]),
        "for another institution": issue_receipt(key, url, body["id"], INSTITUTION_B, mine.id),
        "naming another node URL": issue_receipt(key, other_node["url"], body["id"], INSTITUTION_A, mine.id),
        "expired": api.receipt(node["id"], body["id"], mine, now=int(time.time()) - 3600),
        "an access token": mine.token,
    }


def test_registration_needs_the_nodes_receipt(api, users, node, patient_id, db_state):
    _, other_node = api.call("POST", "/api/v1/nodes", users["admin"], {"name": "n2", "url": "https://n2.example"})
    body = record_body(node["id"], patient_id)
    before = db_state()
    for name, receipt in _attacks(api, users, node, other_node, body).items():
        status, answer = _register(api, users["physician"], body, receipt)
        assert status == 422, (name, answer)
        expected = {"missing": "receipt_missing", "expired": "receipt_expired"}.get(name, "invalid_receipt")
        assert answer["error"]["code"] == expected, (name, answer)
    assert db_state() == before
    status, record = _register(api, users["physician"], body, api.receipt(node["id"], body["id"], users["physician"]))
    assert status == 201 and record["id"] == body["id"]


def test_node_key_is_validated_and_shown(api, users):
    for bad in ("", "abc", "A" * 44, public_key_text(Ed25519PrivateKey.generate().public_key()) + "=="):
        status, answer = api.call("POST", "/api/v1/nodes", users["admin"],
                                  {"name": "n", "url": "https://n.example", "receipt_key": bad})
        assert status == 400 and answer["error"]["code"] == "validation_error", bad
    key = public_key_text(Ed25519PrivateKey.generate().public_key())
    status, node = api.call("POST", "/api/v1/nodes", users["admin"],
                            {"name": "n", "url": "https://n.example", "receipt_key": key})
    assert status == 201 and node["receipt_key"] == key
    status, _ = api.call("PUT", f"/api/v1/nodes/{node['id']}", users["physician"], {"receipt_key": key})
    assert status == 403


def test_upgrade_of_a_schema_1_database_leaves_old_nodes_keyless_until_set(config, app, api, users, patient_id):
    """A database made before receipts: its nodes keep working for reading, but take no new
    record until an administrator registers the node's receipt key."""
    status, node = api.call("POST", "/api/v1/nodes", users["admin"], {"name": "old", "url": "https://old.example"})
    assert status == 201
    db = connect_database(config["database"]["url"])
    if not isinstance(db, peewee.SqliteDatabase):
        pytest.skip("the schema-1 database is rebuilt with SQLite's DROP COLUMN")
    db.execute_sql("ALTER TABLE node DROP COLUMN receipt_key")  # the node table as schema 1 made it
    db.execute_sql("ALTER TABLE node DROP COLUMN store")
    db.execute_sql("UPDATE schema_version SET version = 1 WHERE layer = 'institution'")
    db.close()

    assert upgrade(config) == 7
    status, shown = api.call("GET", f"/api/v1/nodes/{node['id']}", users["admin"])
    assert status == 200 and shown["receipt_key"] is None
    body = record_body(node["id"], patient_id)
    status, answer = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 422 and answer["error"]["code"] == "node_receipt_key_missing"
    assert f"/api/v1/nodes/{node['id']}" in answer["error"]["message"]

    key = public_key_text(api.node_key(node["url"]).public_key())
    assert api.call("PUT", f"/api/v1/nodes/{node['id']}", users["admin"], {"receipt_key": key})[0] == 200
    status, record = api.call("POST", "/api/v1/records", users["physician"], body)
    assert status == 201, record


def test_an_administrator_removes_a_nodes_key_and_no_upload_is_registered_until_it_is_set(api, users, node,
                                                                                          patient_id):
    """A node's key suspected stolen: `"receipt_key": null` stops registrations on the node at once,
    audited as such; the node's new key lets them through again. Before, the key could only be
    replaced, and the console's cleared field kept the old key while saying "saved"."""
    body = record_body(node["id"], patient_id)
    receipt = api.receipt(node["id"], body["id"], users["physician"])
    assert api.call("PUT", f"/api/v1/nodes/{node['id']}", users["physician"], {"receipt_key": None})[0] == 403

    status, shown = api.call("PUT", f"/api/v1/nodes/{node['id']}", users["admin"], {"receipt_key": None})
    assert status == 200 and shown["receipt_key"] is None
    assert api.call("GET", f"/api/v1/nodes/{node['id']}", users["admin"])[1]["receipt_key"] is None
    status, answer = _register(api, users["physician"], body, receipt)
    assert status == 422 and answer["error"]["code"] == "node_receipt_key_missing"
    entries = api.call("GET", "/api/v1/audit?action=node.update", users["admin"])[1]["items"]
    assert entries[0]["detail"] == "receipt_key removed" and entries[0]["object_id"] == node["id"]
    again = {"name": node["name"], "receipt_key": None}  # what a form sends again: nothing is removed twice
    assert api.call("PUT", f"/api/v1/nodes/{node['id']}", users["admin"], again)[0] == 200
    entries = api.call("GET", "/api/v1/audit?action=node.update", users["admin"])[1]["items"]
    assert entries[0]["detail"] == "nothing changed", entries[0]

    # the node's new key (a removed one is never set again: tests/institution/test_revoked_receipt_keys.py)
    api.node_keys[node["url"]] = Ed25519PrivateKey.generate()
    key = public_key_text(api.node_key(node["url"]).public_key())
    assert api.call("PUT", f"/api/v1/nodes/{node['id']}", users["admin"], {"receipt_key": key})[0] == 200
    status, answer = _register(api, users["physician"], body, receipt)  # signed with the removed key
    assert status == 422 and answer["error"]["code"] == "invalid_receipt", answer
    status, record = _register(api, users["physician"], body, api.receipt(node["id"], body["id"], users["physician"]))
    assert status == 201, record
