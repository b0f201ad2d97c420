"""The institution server as operators run it: gunicorn, TLS on loopback, real toplevel tokens.

On SQLite it uses the session's shared `deployment` (two institutions), creating everything
under unique names so other modules sharing it are not disturbed; on PostgreSQL (when
`SIVR_TEST_PG_URL` is set) a private deployment whose institution servers use fresh databases.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

import certifi
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from daemons.demo import ApiClient, start_deployment
from shared.receipts import issue_receipt, public_key_text
from shared.tokens import TokenIssuer, load_private_key, normalize_audience
from tests.conftest import cheap_password_hashing

pytestmark = pytest.mark.slow


def _tag() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def pg_institution_databases(pg_database_factory) -> dict[str, str]:
    """Fresh PostgreSQL databases for both institution servers of the private deployment."""
    return {instance: pg_database_factory() for instance in ("institution-1", "institution-2")}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployed(request, tmp_path_factory):
    """A running deployment with two institutions whose servers use the given database."""
    if request.param == "sqlite":
        yield request.getfixturevalue("deployment")
        return
    urls = request.getfixturevalue("pg_institution_databases")
    running = start_deployment(tmp_path_factory.mktemp("institution-pg"),
                               institution_names=["Hospital A", "Clinic B"], database_urls=urls,
                               before_start=cheap_password_hashing)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def world(deployed):
    """Institution A (demo admin and physician), institution B with its own admin and physician."""
    inst_a, inst_b = deployed.layout.institutions[:2]
    top = deployed.url("toplevel")
    admin_a = deployed.client("admin")
    accounts = {}
    for role, inst in (("instadmin", inst_b), ("physician", inst_b)):
        username = f"inst-test-{role}-{_tag()}"
        password = f"pw-{uuid.uuid4().hex}"
        admin_a.call("POST", f"{top}/api/v1/users", json={
            "username": username, "password": password, "full_name": f"Test {role} B",
            "role": role, "institution_id": inst["id"]})
        accounts[role] = ApiClient(deployed, username, password)
    return {
        "a": inst_a, "b": inst_b, "top": top,
        "admin_a": admin_a, "physician_a": deployed.client("physician"),
        "admin_b": accounts["instadmin"], "physician_b": accounts["physician"],
    }


@pytest.fixture
def node_a(world):
    """A node registered at institution A by its admin, with the receipt key the test signs with."""
    tag = _tag()
    key = Ed25519PrivateKey.generate()
    reply = world["admin_a"].call("POST", f"{world['a']['server_url']}/api/v1/nodes",
                                  json={"name": f"it-node-{tag}", "url": f"https://render-{tag}.example:5003",
                                        "receipt_key": public_key_text(key.public_key())})
    assert reply.status_code == 201
    node = reply.json()
    yield {**node, "receipt_signer": key}
    # the shared deployment outlives this module: leave no unreachable node behind where possible
    world["admin_a"].session.delete(f"{world['a']['server_url']}/api/v1/nodes/{node['id']}", timeout=30)


def _nodes(world) -> list[dict]:
    return world["admin_a"].call("GET", f"{world['a']['server_url']}/api/v1/nodes",
                                 params={"limit": 500}).json()["items"]


def test_served_over_tls_with_the_local_ca(deployed, world):
    url = world["a"]["server_url"]
    assert url.startswith("https://")
    reply = requests.get(f"{url}/healthz", verify=deployed.ca_cert, timeout=10)
    assert reply.json()["layer"] == "institution"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/healthz", verify=certifi.where(), timeout=10)  # public CAs do not vouch for it


def test_info_of_each_institution(world):
    for key in ("a", "b"):
        info = world["physician_a"].call("GET", f"{world[key]['server_url']}/api/v1/info").json()
        # issuer_of_patient_id: the work list's matching rule (identity.issuer_of_patient_id, unset here)
        assert info == {"institution_id": world[key]["id"], "name": world[key]["name"], "issuer_of_patient_id": ""}


def test_admin_of_another_institution_cannot_manage_our_nodes(world, node_a):
    server = world["a"]["server_url"]
    evil = world["admin_b"].session
    before = _nodes(world)
    assert evil.put(f"{server}/api/v1/nodes/{node_a['id']}", json={"url": "https://evil.example"},
                    timeout=30).status_code == 403
    assert evil.delete(f"{server}/api/v1/nodes/{node_a['id']}", timeout=30).status_code == 403
    reply = evil.post(f"{server}/api/v1/nodes", json={"name": f"evil-{_tag()}", "url": "https://evil.example"},
                      timeout=30)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "forbidden"
    assert _nodes(world) == before


def test_physician_cannot_manage_nodes(world, node_a):
    server = world["a"]["server_url"]
    doctor = world["physician_a"].session
    before = _nodes(world)
    assert doctor.delete(f"{server}/api/v1/nodes/{node_a['id']}", timeout=30).status_code == 403
    assert doctor.post(f"{server}/api/v1/nodes", json={"name": "x", "url": "https://x.example"},
                       timeout=30).status_code == 403
    assert _nodes(world) == before


@pytest.mark.parametrize("bad", ["", "%20", "not-a-uuid", "*"])
def test_blank_or_malformed_id_on_delete(world, node_a, bad):
    before = _nodes(world)
    reply = world["admin_a"].session.delete(f"{world['a']['server_url']}/api/v1/nodes/{bad}", timeout=30)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_id"
    assert _nodes(world) == before


def _forged(deployment, kind: str) -> str:
    """A token for institution A's own audience that must still be refused for `kind`."""
    now = int(time.time())
    audience = normalize_audience(deployment.layout.institutions[0]["server_url"])
    if kind == "alg_none":
        claims = {"iss": "sivr-toplevel", "aud": audience, "sub": str(uuid.uuid4()), "iat": now,
                  "exp": now + 300, "role": "sysadmin", "inst": deployment.layout.institutions[0]["id"],
                  "name": "mallory", "sid": str(uuid.uuid4()), "auth_time": now}
        part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
        return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    if kind == "other_key":
        issuer = TokenIssuer(Ed25519PrivateKey.generate(), "sivr-toplevel", audience, 60)
        return issuer.issue(str(uuid.uuid4()), "mallory", "sysadmin", deployment.layout.institutions[0]["id"])[0]
    # expired: signed with the real toplevel key (the test plays a toplevel of an hour ago)
    real = load_private_key(f"{deployment.layout.root}/keys/token_ed25519.pem")
    issuer = TokenIssuer(real, "sivr-toplevel", audience, 60)
    return issuer.issue(str(uuid.uuid4()), "admin", "sysadmin", deployment.layout.institutions[0]["id"],
                        now=now - 3600)[0]


@pytest.mark.parametrize("kind, code", [("alg_none", "invalid_token"), ("other_key", "invalid_token"),
                                        ("expired", "token_expired")])
def test_forged_and_expired_tokens_change_nothing(deployed, world, node_a, kind, code):
    before = _nodes(world)
    headers = {"Authorization": f"Bearer {_forged(deployed, kind)}"}
    reply = requests.delete(f"{world['a']['server_url']}/api/v1/nodes/{node_a['id']}", headers=headers,
                            verify=deployed.ca_cert, timeout=30)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == code
    assert _nodes(world) == before


def test_findings_are_shared_across_institutions_and_every_read_is_audited(world, node_a):
    top, server = world["top"], world["a"]["server_url"]
    doctor_a, doctor_b = world["physician_a"], world["physician_b"]
    patient = doctor_a.call("POST", f"{top}/api/v1/patients", json={
        "first_name": "Grace", "last_name": "Hopper", "sex": "F", "birth_date": "1936-12-09",
        "insurance_number": f"INST-IT-{_tag()}"}).json()
    record_id = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    record_body = {"id": record_id, "node_id": node_a["id"], "rows": 512, "columns": 512, "frames": 12,
                   "modality": "CT", "record_type": "CT", "patient_id": str(uuid.uuid4()), "study_date": "2026-11-01"}
    refused = doctor_a.call("POST", f"{server}/api/v1/records", ok=(400,), json=record_body).json()
    assert refused["error"]["code"] == "invalid_patient_reference"  # a patient the toplevel does not know
    record_body.update(patient_id=patient["id"], patient_reference=doctor_a.patient_reference(patient["id"]))
    unproven = doctor_a.call("POST", f"{server}/api/v1/records", ok=(422,), json=record_body).json()
    assert unproven["error"]["code"] == "receipt_missing"  # no node said it stores the record
    doctor_a_id = doctor_a.call("GET", f"{top}/api/v1/me").json()["id"]
    receipt = issue_receipt(node_a["receipt_signer"], node_a["url"], record_id, world["a"]["id"], doctor_a_id)
    record = doctor_a.call("POST", f"{server}/api/v1/records", json={**record_body, "receipt": receipt}).json()
    finding = doctor_a.call("POST", f"{server}/api/v1/findings", json={
        "patient_reference": doctor_a.patient_reference(patient["id"]),
        "patient_id": patient["id"], "description": "CT chest", "findings": "Small nodule RUL.",
        "conclusion": "Likely benign.", "recommendation": "CT in 12 months.", "date": "2026-11-02",
        "records": [{"record_id": record_id, "institution_id": world["a"]["id"], "node_id": node_a["id"]}]}).json()
    me = doctor_a.call("GET", f"{top}/api/v1/me").json()
    assert finding["author_id"] == me["id"] and finding["author_name"] == me["username"]

    # a physician of institution B reads A's findings and record for this patient, not all rows
    listed = doctor_b.call("GET", f"{server}/api/v1/findings", params={"patient_id": patient["id"]}).json()
    assert [f["id"] for f in listed["items"]] == [finding["id"]]
    assert record["editable"] is True  # the uploader's own record
    assert doctor_b.call("GET", f"{server}/api/v1/records/{record_id}").json() == {**record, "editable": False}
    assert doctor_b.session.get(f"{server}/api/v1/findings", timeout=30).status_code == 400
    assert doctor_b.session.get(f"{server}/api/v1/records", timeout=30).status_code == 400

    # only the author edits; B's physician and A's admin cannot
    for intruder in (doctor_b, world["admin_a"]):
        reply = intruder.session.put(f"{server}/api/v1/findings/{finding['id']}",
                                     json={"conclusion": "forged"}, timeout=30)
        assert reply.status_code == 403
    assert doctor_a.call("GET", f"{server}/api/v1/findings/{finding['id']}").json()["conclusion"] == "Likely benign."

    # the audit log at A names who read what, from where; only A's admins see it
    me_b = doctor_b.call("GET", f"{top}/api/v1/me").json()
    audit = world["admin_a"].call("GET", f"{server}/api/v1/audit",
                                  params={"patient_id": patient["id"], "user_id": me_b["id"]}).json()["items"]
    assert {(e["action"], e["client_ip"]) for e in audit} == {("finding.search", "127.0.0.1"),
                                                              ("record.read", "127.0.0.1")}
    assert world["admin_b"].session.get(f"{server}/api/v1/audit", timeout=30).status_code == 403
    assert doctor_a.session.get(f"{server}/api/v1/audit", timeout=30).status_code == 403

    # B's physician cannot register records or write findings at A
    reply = doctor_b.session.post(f"{server}/api/v1/findings", json={
        "patient_id": patient["id"], "description": "x", "findings": "x", "conclusion": "x",
        "date": "2026-11-02", "records": [{"record_id": record_id, "institution_id": world["a"]["id"]}]},
        timeout=30)
    assert reply.status_code == 403
    assert len(doctor_a.call("GET", f"{server}/api/v1/findings",
                             params={"patient_id": patient["id"]}).json()["items"]) == 1
