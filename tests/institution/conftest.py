"""Fixtures for the institution API tests: a real app on a fresh database, real signed tokens.

The institution server holds only the toplevel's public key; the tests play the toplevel by
minting tokens with the matching private key, exactly as the real toplevel's token exchange would
(for this server's audience, living at most 60 s).
Every test runs once on a temporary SQLite file and once on PostgreSQL when `SIVR_TEST_PG_URL`
names a server where databases may be created: one uniquely named database per session, emptied
before each test (creating a database or schema per test costs seconds on PostgreSQL).
"""

from __future__ import annotations

import hashlib
import json as json_module
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from daemons.institution.app import create_app
from daemons.institution.models import MODELS, AuditEntry, database_proxy, upgrade
from daemons.institution.settings import KEYS
from shared.audit_export import ACCESS_DENIED
from shared.config import Config, build_config
from shared.patient_refs import FIELD, issue_patient_reference
from shared.receipts import issue_receipt, public_key_text
from shared.tokens import MAX_EXCHANGED_TTL_S, TokenIssuer, load_private_key
from tests.render.conftest import NodeHarness, build_node, close_node

ISSUER = "sivr-toplevel"
#: The institution server's own audience: its base URL, as the toplevel's token exchange names it.
AUDIENCE = "https://institution-a.test:5002"

INSTITUTION_A = "11111111-1111-4111-8111-111111111111"
INSTITUTION_B = "22222222-2222-4222-8222-222222222222"


@pytest.fixture(scope="session")
def pg_test_database(pg_session_database_factory) -> str:
    """One fresh PostgreSQL database for this session (skips when `SIVR_TEST_PG_URL` is unset)."""
    return pg_session_database_factory()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path: Path) -> str:
    """A temporary SQLite file, or the session's PostgreSQL database (emptied by `app`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'institution.db'}"
    return request.getfixturevalue("pg_test_database")


@pytest.fixture(scope="session")
def issuer(signing_keys) -> TokenIssuer:
    return TokenIssuer(load_private_key(signing_keys[0]), ISSUER, AUDIENCE, MAX_EXCHANGED_TTL_S)


def institution_config(database_url: str, signing_keys, **institution: str) -> Config:
    """Institution A's server config on `database_url`, trusting the test toplevel's key
    (`institution` adds to or replaces A's id, e.g. `name=`)."""
    return build_config("institution", KEYS, {
        "database": {"url": database_url},
        "institution": {"id": INSTITUTION_A, **institution},
        "tokens": {"public_key": str(signing_keys[1]), "issuer": ISSUER, "audience": AUDIENCE},
    })


def sqlite_at_schema(path: Path, version: int) -> peewee.SqliteDatabase:
    """A SQLite file whose institution schema says `version`, open for the test to add the older
    tables it needs (then close it); upgrades start from there."""
    db = peewee.SqliteDatabase(str(path))
    db.execute_sql("CREATE TABLE schema_version (layer VARCHAR(32) PRIMARY KEY, version INTEGER NOT NULL)")
    db.execute_sql("INSERT INTO schema_version VALUES ('institution', ?)", (version,))
    return db


@pytest.fixture
def config(database_url: str, signing_keys) -> Config:
    return institution_config(database_url, signing_keys, name="General Hospital A")


@pytest.fixture
def app(config: Config):
    """The institution app on a database holding the current schema and no rows."""
    upgrade(config)
    application = create_app(config)
    application.config["TESTING"] = True
    with database_proxy.atomic():
        for model in reversed(MODELS):  # links before the rows they point to
            model.delete().execute()
    database_proxy.close()
    yield application
    if not database_proxy.is_closed():
        database_proxy.close()


@dataclass
class User:
    """A caller as the toplevel knows it, with a token it minted."""

    id: str
    username: str
    role: str
    institution_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(issuer: TokenIssuer):
    def make(role: str, institution_id: str = INSTITUTION_A, username: str | None = None) -> User:
        user_id = str(uuid.uuid4())
        username = username or f"{role}-{user_id[:8]}"
        token, _ = issuer.issue(user_id, username, role, institution_id)
        return User(user_id, username, role, institution_id, token)

    return make


@pytest.fixture
def users(make_user) -> dict[str, User]:
    """The cast of every test: each role here and in another institution."""
    return {
        "admin": make_user("instadmin"),
        "physician": make_user("physician"),
        "physician2": make_user("physician"),
        "admin_b": make_user("instadmin", INSTITUTION_B),
        "physician_b": make_user("physician", INSTITUTION_B),
    }


class Api:
    """The Flask test client with a caller's token; returns (status, json).

    Like the viewer, it sends a patient reference (as the toplevel would sign it) with every
    finding or record it writes for a patient, unless the body already has `patient_reference`
    (or `references=False`).
    """

    def __init__(self, client, signing_key):
        self.client = client
        self.signing_key = signing_key
        self.node_keys: dict[str, Ed25519PrivateKey] = {}  # render nodes' receipt keys, by URL
        self.node_urls: dict[str, str] = {}  # registered node id -> URL

    def node_key(self, url: str) -> Ed25519PrivateKey:
        """The receipt key of the (imaginary) render node at `url`."""
        return self.node_keys.setdefault(url, Ed25519PrivateKey.generate())

    def receipt(self, node_id: str, record_id: str, user: User, **kwargs) -> str:
        """The receipt the node `node_id` would answer `user`'s upload of `record_id` with."""
        url = self.node_urls[node_id]
        return issue_receipt(self.node_key(url), url, record_id, INSTITUTION_A, user.id, **kwargs)

    def call(self, method: str, path: str, user: User | None = None, json: Any = None,
             references: bool = True, **kwargs) -> tuple[int, Any]:
        """Like the viewer and the console, it also registers nodes with their receipt key and
        records with the node's upload receipt (unless the body has its own, or `references=False`)."""
        if (references and user is not None and method in ("POST", "PUT") and isinstance(json, dict)
                and isinstance(json.get("patient_id"), str) and FIELD not in json):
            json = {**json, FIELD: issue_patient_reference(self.signing_key, ISSUER, json["patient_id"], user.id, 300)}
        if (references and method == "POST" and path == "/api/v1/nodes" and isinstance(json, dict)
                and isinstance(json.get("url"), str) and "receipt_key" not in json):
            json = {**json, "receipt_key": public_key_text(self.node_key(json["url"]).public_key())}
        if (references and user is not None and method == "POST" and path == "/api/v1/records"
                and isinstance(json, dict) and "receipt" not in json
                and isinstance(json.get("node_id"), str) and json["node_id"] in self.node_urls):
            json = {**json, "receipt": self.receipt(json["node_id"], json.get("id"), user)}
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers.update(user.headers)
        if json is not None:  # as a Python client sends it: Infinity and NaN included (the app never answers them)
            kwargs.update(data=json_module.dumps(json), content_type="application/json")
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        answer = response.get_json(silent=True)
        if path.startswith("/api/v1/nodes") and method in ("POST", "PUT") and response.status_code in (200, 201):
            self.node_urls[answer["id"]] = answer["url"]
        return response.status_code, answer


@pytest.fixture
def api(app, signing_keys) -> Api:
    return Api(app.test_client(), load_private_key(signing_keys[0]))


@pytest.fixture
def node(api: Api, users) -> dict[str, Any]:
    status, body = api.call("POST", "/api/v1/nodes", users["admin"],
                            {"name": "node-1", "url": "https://render1.hospital-a.example:5003"})
    assert status == 201, body
    return body


def record_body(node_id: str, patient_id: str, content: bytes = b"ct-series-1", **extra) -> dict[str, Any]:
    body = {
        "id": hashlib.sha256(content).hexdigest(),
        "node_id": node_id,
        "rows": 512,
        "columns": 512,
        "frames": 100,
        "modality": "CT",
        "record_type": "CT",
        "patient_id": patient_id,
        "description": "Abdomen CT",
        "study_date": "2026-11-02",
    }
    body.update(extra)
    return body


@pytest.fixture
def patient_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def record(api: Api, users, node, patient_id) -> dict[str, Any]:
    status, body = api.call("POST", "/api/v1/records", users["physician"], record_body(node["id"], patient_id))
    assert status == 201, body
    return body


@pytest.fixture
def db_state(app):
    """Every row of every institution table, to assert that a refused request changed nothing; but
    the `access.denied` entry that audits each refusal (`shared.audit.audit_denials`)."""

    def snapshot() -> dict[str, list[tuple]]:
        state = {}
        for model in MODELS:
            rows = model.select().tuples()
            if model is AuditEntry:
                rows = rows.where(AuditEntry.action != ACCESS_DENIED)
            state[model._meta.table_name] = sorted(tuple(map(str, row)) for row in rows)
        database_proxy.close()
        return state

    return snapshot


def finding_body(patient_id: str, links: list[dict[str, Any]], **extra) -> dict[str, Any]:
    body = {
        "patient_id": patient_id,
        "description": "CT abdomen with contrast",
        "findings": "Hypodense lesion 12 mm in liver segment VI.",
        "conclusion": "Probable haemangioma.",
        "recommendation": "MR follow-up in 6 months.",
        "date": "2026-11-03",
        "records": links,
    }
    body.update(extra)
    return body


def local_link(record: dict[str, Any]) -> dict[str, Any]:
    return {"record_id": record["id"], "institution_id": INSTITUTION_A, "node_id": record["node_id"]}


@pytest.fixture
def finding(api: Api, users, record, patient_id) -> dict[str, Any]:
    status, body = api.call("POST", "/api/v1/findings", users["physician"],
                            finding_body(patient_id, [local_link(record)]))
    assert status == 201, body
    return body


def reference_attacks(api, users, patient_id) -> dict[str, object]:
    """Every way a write may try to name a patient the toplevel did not vouch for (issue 13, item 11)."""
    other_key = Ed25519PrivateKey.generate()
    mine = users["physician"]
    return {
        "missing": None,
        "not a token": "patient-exists-trust-me",
        "for another patient": issue_patient_reference(api.signing_key, ISSUER, str(uuid.uuid4()), mine.id, 300),
        "for another user": issue_patient_reference(api.signing_key, ISSUER, patient_id, users["physician2"].id, 300),
        "expired": issue_patient_reference(api.signing_key, ISSUER, patient_id, mine.id, 60,
                                           now=int(time.time()) - 3600),
        "other key": issue_patient_reference(other_key, ISSUER, patient_id, mine.id, 300),
        "an access token": mine.token,
    }


def at_once(app, requests: list[tuple[str, str, dict | None]], user: User) -> list[int]:
    """The statuses, sorted, of `requests` (method, path, JSON body) sent together from as many
    threads, each with its own client: for the races of read-then-write changes."""
    barrier = threading.Barrier(len(requests))
    statuses: list[int] = []

    def send(method: str, path: str, body: dict | None) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.open(path, method=method, json=body, headers=user.headers).status_code)

    threads = [threading.Thread(target=send, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


@pytest.fixture
def render_node(tmp_path_factory, signing_keys) -> Iterator[NodeHarness]:
    """A real render node of institution A trusting the same toplevel as the institution app."""
    harness = build_node(tmp_path_factory.mktemp("render-node"), signing_keys, institution_id=INSTITUTION_A)
    yield harness
    close_node(harness)


@pytest.fixture
def registered(api, users, render_node) -> dict:
    """The node in the institution's registry with the receipt key it publishes."""
    shown = render_node.client.get("/api/v1/node", headers=render_node.headers("instadmin")).get_json()
    status, body = api.call("POST", "/api/v1/nodes", users["admin"], {
        "name": "render-1", "url": shown["receipt_key"]["url"],
        "receipt_key": shown["receipt_key"]["public_key"]})
    assert status == 201, body
    return body
