"""The real toplevel under gunicorn with TLS on loopback, driven with `requests` verifying the CA.

The module starts its own toplevel-only deployment (the same `init_deployment` + `sivr serve`
path operators use) with two toplevel servers on one database, as a scaled-out site runs them,
rather than the shared deployment, because it logs users out and trips the failed-login
limit of a demo user, which would disturb other tests. It runs on SQLite and, with
`SIVR_TEST_PG_URL`, on a PostgreSQL database of its own.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import tomllib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import urllib3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from daemons.demo import seed_base
from daemons.deployment import Instance, LocalDeployment, free_port, init_deployment
from daemons.toplevel.settings import KEYS
from shared.config import render_config_toml
from shared.tokens import load_private_key

pytestmark = pytest.mark.slow


class Toplevel:
    """Two running toplevel servers on one database: URLs, CA file, the seeded users' credentials."""

    def __init__(self, urls: list[str], ca_cert: str, users: dict[str, dict[str, str]], root: Path):
        self.urls, self.ca_cert, self.users, self.root = urls, ca_cert, users, root
        self.url = urls[0]

    def call(self, method: str, path: str, token: str | None = None, server: int = 0,
             **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.urls[server] + path, headers=headers, verify=self.ca_cert,
                                timeout=30, **kwargs)

    def login(self, role: str) -> str:
        reply = self.call("POST", "/api/v1/auth/login", json=self.users[role])
        assert reply.status_code == 200, reply.text
        return reply.json()["access_token"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request, tmp_path_factory) -> Iterator[Toplevel]:
    database_urls: dict[str, str] = {}
    if request.param == "postgresql":
        database_urls["toplevel"] = request.getfixturevalue("pg_database_factory")()
    root = tmp_path_factory.mktemp("toplevel-https")
    layout = init_deployment(root, pick_free_ports=True, database_urls=database_urls,
                             institution_names=["Hospital A", "Clinic B"])
    users = seed_base(layout)
    running = LocalDeployment(layout, layers=("toplevel",))
    running.instances.append(_second_toplevel(layout.first("toplevel"), root))
    try:
        running.start()
        yield Toplevel([i.url for i in running.instances], layout.ca_cert, users, root)
    finally:
        running.stop()


def _second_toplevel(first: Instance, root: Path) -> Instance:
    """Another toplevel server on the same database and key, as a scaled-out deployment runs."""
    values = tomllib.loads(Path(first.config).read_text())
    port = free_port()
    values["server"]["port"] = port
    path = root / "toplevel-2.toml"
    path.write_text(render_config_toml("toplevel", KEYS, values))
    return Instance("toplevel", "toplevel-2", str(path), f"{first.url.rsplit(':', 1)[0]}:{port}")


def _users(server: Toplevel, token: str) -> list[dict[str, Any]]:
    reply = server.call("GET", "/api/v1/users", token)
    assert reply.status_code == 200
    return reply.json()["items"]


def test_tls_with_the_deployment_ca(server: Toplevel):
    reply = server.call("GET", "/healthz")
    assert reply.json()["layer"] == "toplevel"
    assert reply.headers["Strict-Transport-Security"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url + "/healthz", timeout=10, verify=True)  # system CAs do not know it


def test_login_renew_logout(server: Toplevel):
    login = server.call("POST", "/api/v1/auth/login", json=server.users["physician"])
    assert login.status_code == 200
    body = login.json()
    assert "hash" not in login.text and body["user"]["role"] == "physician"
    token = body["access_token"]
    renewed = server.call("POST", "/api/v1/auth/renew", token)
    assert renewed.status_code == 200
    old, new = (jwt.decode(t, options={"verify_signature": False}) for t in (token, renewed.json()["access_token"]))
    assert new["sid"] == old["sid"] and new["auth_time"] == old["auth_time"]
    assert server.call("POST", "/api/v1/auth/logout", token).status_code == 204
    again = server.call("POST", "/api/v1/auth/renew", renewed.json()["access_token"])
    assert again.status_code == 401 and again.json()["error"]["code"] == "session_expired"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_forged_tokens_are_refused(server: Toplevel):
    valid = server.login("admin")
    claims = jwt.decode(valid, options={"verify_signature": False})
    expired = dict(claims, exp=claims["iat"] - 3600, iat=claims["iat"] - 4000)
    real_key = load_private_key(server.root / "keys" / "token_ed25519.pem")
    attacks = {
        "other key": (jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA"), "invalid_token"),
        "alg none": (f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.", "invalid_token"),
        "expired": (jwt.encode(expired, real_key, algorithm="EdDSA"), "token_expired"),
    }
    before = _users(server, valid)
    victim = next(u for u in before if u["username"] != "admin")
    for name, (token, code) in attacks.items():
        reply = server.call("DELETE", f"/api/v1/users/{victim['id']}", token)
        assert reply.status_code == 401, name
        assert reply.json()["error"]["code"] == code, name
    assert _users(server, valid) == before


def test_physician_cannot_use_admin_endpoints(server: Toplevel):
    admin, physician = server.login("admin"), server.login("physician")
    before = _users(server, admin)
    admin_id = next(u["id"] for u in before if u["username"] == "admin")
    for method, path, body in [
        ("POST", "/api/v1/users", {"username": "mallory", "password": "mallory-pass-1", "full_name": "M",
                                   "role": "sysadmin", "institution_id": before[0]["institution_id"]}),
        ("PUT", f"/api/v1/users/{admin_id}", {"active": False}),
        ("DELETE", f"/api/v1/users/{admin_id}", None),
        ("POST", f"/api/v1/users/{admin_id}/password", {"new_password": "taken-over-pw"}),
        ("GET", "/api/v1/audit", None),
    ]:
        reply = server.call(method, path, physician, json=body)
        assert reply.status_code == 403, (method, path, reply.text)
    assert _users(server, admin) == before


def test_blank_and_malformed_ids_on_delete(server: Toplevel):
    admin = server.login("admin")
    before = _users(server, admin)
    for bad in ("", "%20", "not-a-uuid", "1%20OR%201=1"):
        reply = server.call("DELETE", f"/api/v1/users/{bad}", admin)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_id", bad
    reply = server.call("DELETE", f"/api/v1/users/{uuid.uuid4()}", admin)
    assert reply.status_code == 404
    assert _users(server, admin) == before


def test_password_change_needs_the_old_password(server: Toplevel):
    token = server.login("physician")
    reply = server.call("POST", "/api/v1/me/password", token, json={"new_password": "without-the-old-one"})
    assert reply.status_code == 400 and "old_password" in reply.json()["error"]["message"]
    assert server.call("POST", "/api/v1/auth/login", json=server.users["physician"]).status_code == 200


def test_patient_search_is_audited(server: Toplevel):
    physician, admin = server.login("physician"), server.login("admin")
    created = server.call("POST", "/api/v1/patients", physician, json={
        "first_name": "Đurđa", "last_name": "Kovačević", "sex": "F", "birth_date": "1980-05-06",
        "insurance_number": f"HTTPS-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 201
    found = server.call("GET", "/api/v1/patients", physician, params={"q": "kovacev"}).json()["items"]
    assert created.json()["id"] in {p["id"] for p in found}
    audit = server.call("GET", "/api/v1/audit", admin, params={"patient_id": created.json()["id"]}).json()
    assert [e["action"] for e in audit["items"]] == ["patient.search", "patient.create"]
    assert audit["items"][0]["client_ip"] == "127.0.0.1"


def test_logout_on_one_server_holds_on_the_other(server: Toplevel):
    login = server.call("POST", "/api/v1/auth/login", json=server.users["physician"], server=0).json()
    token = login["access_token"]
    assert server.call("GET", "/api/v1/me", token, server=1).json()["id"] == login["user"]["id"]
    assert server.call("POST", "/api/v1/auth/logout", token, server=1).status_code == 204
    for index in (0, 1):
        reply = server.call("POST", "/api/v1/auth/renew", token, server=index)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "session_expired"


def test_failed_logins_are_limited_across_workers_and_servers(server: Toplevel):
    """It throttles the physician at this address for the rest of the window (the tests after it rely on that)."""
    username = server.users["physician"]["username"]
    codes = [server.call("POST", "/api/v1/auth/login", server=i % 2,
                         json={"username": username, "password": f"guess-{i}"}).status_code for i in range(5)]
    assert codes == [401] * 5
    for index in (0, 1):
        reply = server.call("POST", "/api/v1/auth/login", json=server.users["physician"], server=index)
        assert reply.status_code == 429 and int(reply.headers["Retry-After"]) > 0


def test_parallel_guesses_get_no_more_verified_tries_than_the_limit(server: Toplevel):
    """30 wrong passwords at once, over both servers: at most `max_failed_logins` are checked (issue 13, item 8)."""
    guess = {"username": "dr.nobody", "password": "wrong-guess"}
    with ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(pool.map(
            lambda i: server.call("POST", "/api/v1/auth/login", server=i % 2, json=guess).status_code, range(30)))
    assert sorted(set(codes)) == [401, 429]
    assert codes.count(401) <= 5, codes


def test_the_real_user_at_another_address_is_not_locked_out(server: Toplevel):
    """After the test above throttled the physician at 127.0.0.1, the physician logs in from 127.0.0.2."""
    assert server.call("POST", "/api/v1/auth/login", json=server.users["physician"]).status_code == 429
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=server.ca_cert, source_address=("127.0.0.2", 0))
    reply = pool.request("POST", server.url + "/api/v1/auth/login", json=server.users["physician"], timeout=30)
    assert reply.status == 200, reply.data
    audit = server.call("GET", "/api/v1/audit", server.login("admin"),
                        params={"action": "auth.login_throttled", "username": server.users["physician"]["username"]})
    assert audit.json()["total"] >= 1 and audit.json()["items"][0]["client_ip"] == "127.0.0.1"


#: A path of each of the toplevel's blueprints (the audit log's checks the session in a hook of its own).
PREFLIGHTED = ("/api/v1/audit", "/api/v1/users", f"/api/v1/users/{uuid.uuid4()}", "/api/v1/patients",
               "/api/v1/institutions", "/api/v1/record-types", "/api/v1/auth/login", "/api/v1/me")


def test_a_preflight_from_an_allowed_origin_is_answered_on_every_route(server: Toplevel):
    """`OPTIONS /api/v1/audit` was a 401 (the audit blueprint's session hook ran for it): a browser
    page of an allowed origin could not read the audit log, though every other route answered."""
    origin = tomllib.loads((server.root / "toplevel.toml").read_text())["cors"]["origins"][0]
    headers = {"Origin": origin, "Access-Control-Request-Method": "GET",
               "Access-Control-Request-Headers": "authorization"}
    for path in PREFLIGHTED:
        reply = server.call("OPTIONS", path, headers=headers)
        assert reply.status_code == 200, (path, reply.text)
        assert reply.headers["Access-Control-Allow-Origin"] == origin, path
        assert "GET" in reply.headers["Access-Control-Allow-Methods"], path
    assert server.call("GET", "/api/v1/audit", headers={"Origin": origin}).status_code == 401


def _raw(server: Toplevel, method: str, path: str, headers: dict[str, str],
         body: bytes = b"") -> tuple[int, dict, bytes]:
    """One request with exactly these headers, `Host` included (requests would write its own)."""
    host, port = server.url.split("//", 1)[1].rsplit(":", 1)
    connection = http.client.HTTPSConnection(host.strip("[]"), int(port),
                                             context=ssl.create_default_context(cafile=server.ca_cert), timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def test_a_redirect_names_no_host_the_client_made_up(server: Toplevel):
    """werkzeug's 308 to a rule's trailing `/` wrote the request's Host into Location: `Host:
    evil.example` made the server send the client (and a cache, everyone after it) to that host."""
    for method in ("PUT", "DELETE"):
        status, headers, body = _raw(server, method, "/api/v1/users?x=1", {"Host": "evil.example"})
        assert status == 308
        assert headers["Location"] == "/api/v1/users/?x=1"
        assert b"evil.example" not in body


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_a_json_body_not_in_utf8_is_refused_saying_to_send_utf8(server: Toplevel, encoding: str):
    """The login took its JSON with a byte order mark, in UTF-16 or UTF-32 as well (json guesses the
    encoding of bytes), and a token came back: one request, many byte strings for any filter in front.
    (The admin logs in: the physician's failed-login limit is tripped by a test above.)"""
    body = json.dumps(server.users["admin"]).encode(encoding)
    reply = server.call("POST", "/api/v1/auth/login", data=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_json" and "UTF-8" in error["message"]
    labelled = server.call("POST", "/api/v1/auth/login", data=json.dumps(server.users["admin"]).encode(),
                           headers={"Content-Type": "application/json; charset=utf-16"})
    assert labelled.status_code == 415 and "UTF-8" in labelled.json()["error"]["message"]
    plain = server.call("POST", "/api/v1/auth/login", data=json.dumps(server.users["admin"]).encode(),
                        headers={"Content-Type": "application/json; charset=UTF-8"})
    assert plain.status_code == 200
