"""Two institution servers sharing one database (daemons/institution/models.py allows it): each
shows its administrators only what it wrote itself, the audit log included."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

from daemons.institution.app import create_app
from daemons.institution.models import database_proxy, upgrade

from .conftest import INSTITUTION_B, institution_config, sqlite_at_schema


def _audit(client, user, query: str = "") -> list[dict]:
    response = client.get(f"/api/v1/audit{query}", headers=user.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def test_each_institution_server_shows_only_its_own_audit_log(config, app, api, users, make_user, finding,
                                                              patient_id):
    """B's server on A's database: A's administrators (and a system admin asking A) must not read who at
    B read which patient's findings, nor what B refused to whom; B's administrators see just that."""
    config_b = copy.deepcopy(config)
    config_b["institution"]["id"] = INSTITUTION_B
    server_b = create_app(config_b).test_client()
    physician_b, admin_b = make_user("physician", INSTITUTION_B), make_user("instadmin", INSTITUTION_B)
    patient_read_at_b = str(uuid.uuid4())
    assert server_b.get(f"/api/v1/findings?patient_id={patient_read_at_b}",
                        headers=physician_b.headers).status_code == 200
    assert server_b.delete(f"/api/v1/nodes/{uuid.uuid4()}", headers=physician_b.headers).status_code == 403
    assert api.call("GET", f"/api/v1/findings?patient_id={patient_id}", users["physician2"])[0] == 200

    for reader in (users["admin"], make_user("sysadmin", INSTITUTION_B)):
        at_a = _audit(api.client, reader)
        assert physician_b.id not in {entry["user_id"] for entry in at_a}, reader.role
        assert _audit(api.client, reader, f"?patient_id={patient_read_at_b}") == []
        assert {(users["physician2"].id, "finding.search")} <= {(e["user_id"], e["action"]) for e in at_a}
    at_b = _audit(server_b, admin_b)
    assert {entry["user_id"] for entry in at_b} == {physician_b.id}
    assert {entry["action"] for entry in at_b} == {"finding.search", "access.denied"}


def test_entries_written_before_schema_4_stay_in_the_log(tmp_path: Path, signing_keys, make_user):
    """An upgrade adds the column, keeps every entry and shows the old ones (no institution) as before."""
    path = tmp_path / "v3.db"
    db = sqlite_at_schema(path, 3)
    db.execute_sql("CREATE TABLE audit_entry (id VARCHAR(36) PRIMARY KEY, at DATETIME NOT NULL, "
                   "user_id VARCHAR(36) NOT NULL, username VARCHAR(150) NOT NULL, action VARCHAR(64) NOT NULL, "
                   "object_type VARCHAR(32) NOT NULL, object_id VARCHAR(64), patient_id VARCHAR(36), "
                   "client_ip VARCHAR(64) NOT NULL, detail TEXT NOT NULL)")
    old_reader = str(uuid.uuid4())
    db.execute_sql("INSERT INTO audit_entry VALUES ('e1', '2026-01-01 00:00:00', ?, 'old-reader', 'finding.read', "
                   "'finding', NULL, NULL, '127.0.0.1', '')", (old_reader,))
    db.close()
    config = institution_config(f"sqlite:///{path}", signing_keys)
    assert upgrade(config) == 7  # schema 7: the receipt keys revoked
    assert upgrade(config) == 7
    client = create_app(config).test_client()
    assert [entry["user_id"] for entry in _audit(client, make_user("instadmin"))] == [old_reader]
    database_proxy.close()
