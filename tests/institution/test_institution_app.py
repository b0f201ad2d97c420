"""Info, audit log access, schema upgrades, start-up checks and the error format."""

from __future__ import annotations

import datetime as dt
import uuid

import peewee
import pytest

from daemons.institution.app import create_app
from daemons.institution.models import Node, database_proxy, upgrade
from daemons.institution.settings import KEYS
from shared.config import ConfigError, build_config

from .conftest import AUDIENCE, INSTITUTION_A


@pytest.mark.parametrize("who", ["admin", "physician", "admin_b", "physician_b"])
def test_info_names_this_institution(api, users, who):
    status, body = api.call("GET", "/api/v1/info", users[who])
    assert status == 200 and body == {"institution_id": INSTITUTION_A, "name": "General Hospital A",
                                      "issuer_of_patient_id": ""}


def test_healthz_needs_no_token(api):
    status, body = api.call("GET", "/healthz")
    assert status == 200 and body["status"] == "ok" and body["layer"] == "institution"


def test_audit_is_for_admins_of_this_institution(api, users, finding, patient_id):
    admin = users["admin"]
    status, body = api.call("GET", f"/api/v1/audit?patient_id={patient_id}", admin)
    assert status == 200
    assert {e["action"] for e in body["items"]} == {"record.create", "finding.create"}
    assert all(e["patient_id"] == patient_id for e in body["items"])
    for who in ("physician", "admin_b", "physician_b"):
        status, answer = api.call("GET", "/api/v1/audit", users[who])
        assert status == 403 and answer["error"]["code"] == "forbidden" and "items" not in answer
    status, answer = api.call("GET", "/api/v1/audit")
    assert status == 401


def test_audit_filters(api, users, finding, patient_id):
    admin, physician = users["admin"], users["physician"]
    api.call("GET", f"/api/v1/findings/{finding['id']}", users["physician_b"])
    by_user = api.call("GET", f"/api/v1/audit?user_id={users['physician_b'].id}", admin)[1]
    assert [(e["action"], e["object_id"], e["username"]) for e in by_user["items"]] == \
        [("finding.read", finding["id"], users["physician_b"].username)]
    by_action = api.call("GET", "/api/v1/audit?action=finding.create", admin)[1]
    assert [e["user_id"] for e in by_action["items"]] == [physician.id]
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert api.call("GET", f"/api/v1/audit?since={tomorrow}", admin)[1]["total"] == 0
    assert api.call("GET", f"/api/v1/audit?until={tomorrow}", admin)[1]["total"] >= 3
    for bad in ("user_id=x", "patient_id=all", "since=yesterday"):
        status, answer = api.call("GET", f"/api/v1/audit?{bad}", admin)
        assert status == 400, bad


def test_upgrade_is_idempotent_and_keeps_data(config, app, api, users, node):
    assert upgrade(config) == 7
    assert upgrade(config) == 7
    status, body = api.call("GET", "/api/v1/nodes", users["admin"])
    assert status == 200 and [n["id"] for n in body["items"]] == [node["id"]]


def test_upgrade_from_version_1_adds_the_receipt_key_then_the_node_store(tmp_path):
    """A database made before receipts and stores gets both columns (migrations 2 and 3), rows kept, both ""."""
    path = tmp_path / "v1.db"
    db = peewee.SqliteDatabase(str(path))
    db.execute_sql("CREATE TABLE node (id VARCHAR(36) PRIMARY KEY, name VARCHAR(120) NOT NULL, "
                   "url VARCHAR(2048) NOT NULL, institution_id VARCHAR(36) NOT NULL, created_at DATETIME NOT NULL)")
    db.execute_sql("INSERT INTO node VALUES ('n1', 'render-1', 'https://r1:5003', 'i1', '2026-01-01 00:00:00')")
    db.execute_sql("CREATE TABLE schema_version (layer VARCHAR(32) PRIMARY KEY, version INTEGER NOT NULL)")
    db.execute_sql("INSERT INTO schema_version VALUES ('institution', 1)")
    db.close()
    config = build_config("institution", KEYS, {"database": {"url": f"sqlite:///{path}"},
                                                "institution": {"id": INSTITUTION_A}})
    assert upgrade(config) == 7
    db = peewee.SqliteDatabase(str(path))
    assert db.execute_sql("SELECT name, receipt_key, store FROM node").fetchall() == [("render-1", "", "")]


@pytest.mark.parametrize("bad", ["", "   ", "hospital-a", "11111111-1111-4111-8111-11111111111Z"])
def test_server_refuses_to_start_without_a_valid_institution_id(signing_keys, tmp_path, bad):
    config = build_config("institution", KEYS, {
        "database": {"url": f"sqlite:///{tmp_path / 'i.db'}"},
        "institution": {"id": bad},
        "tokens": {"public_key": str(signing_keys[1]), "audience": AUDIENCE},
    })
    with pytest.raises(ConfigError, match="institution.id"):
        create_app(config)


def test_upper_case_institution_id_is_canonicalised(signing_keys, tmp_path, make_user):
    """Tokens carry the lower-case id, so an upper-case config value must not lock everyone out."""
    config = build_config("institution", KEYS, {
        "database": {"url": f"sqlite:///{tmp_path / 'i.db'}"},
        "institution": {"id": INSTITUTION_A.upper()},
        "tokens": {"public_key": str(signing_keys[1]), "audience": AUDIENCE},
    })
    upgrade(config)
    client = create_app(config).test_client()
    response = client.get("/api/v1/nodes", headers=make_user("instadmin").headers)
    assert response.status_code == 200
    info = client.get("/api/v1/info", headers=make_user("instadmin").headers).get_json()
    assert info["institution_id"] == INSTITUTION_A


def test_unknown_routes_and_methods_answer_json(api, users):
    status, body = api.call("GET", "/api/v1/nothing", users["admin"])
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = api.call("PATCH", f"/api/v1/nodes/{uuid.uuid4()}", users["admin"])
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    status, body = api.call("DELETE", "/api/v1/nodes", users["admin"])
    assert status == 405


def test_responses_are_not_cached_and_carry_security_headers(api, users):
    response = api.client.get("/api/v1/nodes", headers=users["physician"].headers)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_models_work_outside_requests_for_operators(app, config):
    """`sivr` subcommands use the models directly after `upgrade`; nothing depends on a request."""
    node = Node.create(name="cli-node", url="https://cli.example", institution_id=INSTITUTION_A)
    assert Node.get_by_id(node.id).url == "https://cli.example"
    database_proxy.close()
