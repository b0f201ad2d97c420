"""Every route of every layer, sent hostile bodies, query parameters and path segments.

Why a walk of the url_map rather than more named attacks: the attacks table (docs/operations.md)
names what was tried route by route, and a route added since, or a field added to one, was tried by
no one. Here each layer's app (toplevel, institution, render node, web layer) is built in process
and every rule and method it serves is called, authenticated with a role that may call it, with:

- bodies (routes that read one): an array, a string, a number, null, `{}`; each field of a valid
  body replaced by each value of another JSON type and by hostile values (100,000 characters, NUL,
  U+202E, a lone surrogate escaped in JSON, 1e308, -1, 2**63, NaN, 10,000 levels of nesting); the
  valid body under a wrong Content-Type; invalid UTF-8; a duplicated key whose last value is wrong;
- query parameters (those the view reads, recorded while a valid request runs, and the searches'
  tables): given twice, empty, 10,000 characters, with NUL, not a number;
- path parameters: NUL, 1,000 characters, `..`, text beyond ASCII, -1, 25 digits;
- the headers views read (`Accept`, `Origin`, `X-Request-ID`, `If-None-Match`, `Authorization`);
- the node's uploads and STOW-RS bodies taken apart (boundaries, parts, file names);
- every method a rule does not take (405 with the error body).

Each answer must be below 500, a 4xx must carry the error body `{"error": {"code", "message"}}`,
and a 4xx must have written nothing (every table but the audit log, which audits refusals by
design, and the login failures, which count them; the node's store too). Routes are listed per
layer: a route without an entry fails `test_every_route_is_fuzzed`, so a new route is fuzzed too.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from werkzeug.datastructures import ImmutableMultiDict

from tests.dicomweb.conftest import synthetic_series, uids
from tests.institution import conftest as institution
from tests.render.conftest import build_node, close_node
from tests.toplevel.conftest import FAST_ARGON2, TOPLEVEL_AUDIENCE

#: tables a refusal may write to by design: the audit log audits it, login failures count it
REFUSAL_TABLES = frozenset({"audit_entry", "login_failure"})
STATIC = "/static/<path:filename>"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

DEEP = "[" * 10_000 + "]" * 10_000
#: values a field is replaced by whatever its type (JSON text, so NaN and nesting stay literal)
HOSTILE_VALUES: dict[str, str] = {
    "100k string": json.dumps("x" * 100_000),
    "NUL": json.dumps("a\x00b"),
    "U+202E": json.dumps("abc\u202edef"),
    "lone surrogate": '"\\ud800"',
    "1e308": "1e308",
    "-1": "-1",
    "2**63": str(2**63),
    "NaN": "NaN",
    "Infinity": "-Infinity",
    "5000 digits": "9" * 5000,
    "1e400": "1e400",
    "deep nesting": DEEP,
}
#: one value of each JSON type: a field is replaced by each of another type than its valid value's
TYPED_VALUES: dict[type, str] = {str: '"text"', int: "7", float: "7.5", bool: "true", list: '["a"]',
                                 dict: '{"a": 1}', type(None): "null"}
SHAPES: dict[str, str] = {"array": "[1, 2]", "string": '"body"', "number": "42", "null": "null",
                          "empty object": "{}", "deep nesting": DEEP,
                          "100,000 keys": json.dumps({f"k{n}": n for n in range(100_000)})}
QUERY_VALUES: dict[str, str] = {"empty": "", "10k": "9" * 10_000, "NUL": "1\x00", "not a number": "abc",
                                "U+202E": "a\u202eb", "-1": "-1", "25 digits": "9" * 25, "1e308": "1e308",
                                "NaN": "NaN", "fraction": "0.5", "Arabic digits": "\u0661\u0662"}
#: request headers views read (`Authorization` replaces the caller's), each sent with each value
HEADER_VALUES: dict[str, str] = {"10k": "a" * 10_000, "NUL": "a\x00b", "latin-1": "\u00e9\u00ff", "empty": "",
                                 "separators": ";;,,=;q=", "1000 media types": ",".join(["text/x"] * 1000),
                                 "q not a number": "*/*;q=NaN, application/dicom+json;q=2",
                                 "open quote": 'multipart/related; type="application/dicom',
                                 "any syntax": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
HEADERS = ("Accept", "Origin", "X-Request-ID", "If-None-Match", "Authorization")
#: raw in the query string: bytes that are no UTF-8 (a lone surrogate's, then 0xFF)
INVALID_UTF8_QUERY = "%ED%A0%80%FF"
PATH_VALUES: dict[str, str] = {"NUL": "a\x00b", "1000 chars": "a" * 1000, "dotdot": "..",
                               "unicode": "\u00e9\u6f22\U0001f642\u202e", "-1": "-1", "25 digits": "9" * 25}


@dataclass(frozen=True)
class Request:
    """One hostile request: what it attacks, and how it is sent."""

    attack: str
    path: str
    data: bytes | None = None
    content_type: str | None = None
    query: list[tuple[str, str]] | str = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """A valid call of one rule and method: its path values, caller, body and base query."""

    role: str
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    body_kind: str = "json"  # "multipart" for the node's uploads: only the body's shape is attacked


@dataclass
class Layer:
    """One app under fuzz: how to call it and how to see whether a refusal wrote anything."""

    name: str
    app: Flask
    headers: Callable[[str], dict[str, str]]
    path_values: dict[str, str]
    calls: dict[tuple[str, str], Call]
    snapshot: Callable[[], Any]


class RecordingArgs(ImmutableMultiDict):
    """Query parameters that note each name a view asks for: the known parameters of a route are
    those its code reads, so a parameter added to a view is fuzzed without a table to update."""

    read: ClassVar[set[str]] = set()

    def __getitem__(self, key: str) -> Any:
        RecordingArgs.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None, type: Any = None) -> Any:
        RecordingArgs.read.add(key)
        return super().get(key, default, type)

    def getlist(self, key: str, type: Any = None) -> list[Any]:
        RecordingArgs.read.add(key)
        return super().getlist(key, type)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            RecordingArgs.read.add(key)
        return super().__contains__(key)


def recording(app: Flask) -> Flask:
    """`app` whose requests parse their query string into `RecordingArgs`."""
    app.request_class = type("RecordingRequest", (app.request_class,), {"parameter_storage_class": RecordingArgs})
    return app


def table_rows(models: list[Any]) -> dict[str, list[tuple[str, ...]]]:
    """Every row of `models`' tables but those a refusal writes by design.

    Read in plain SQL: taken after each of some 6,000 attacks, peewee's query building was half of
    the test's time. The values are compared, never interpreted, so the driver's own types serve
    (a PostgreSQL `bytea` comes as a memoryview, whose text would name its address).
    """
    state = {}
    for model in models:
        table = model._meta.table_name
        if table not in REFUSAL_TABLES:
            rows = model._meta.database.execute_sql(f'SELECT * FROM "{table}"').fetchall()
            state[table] = sorted(tuple(str(bytes(v) if isinstance(v, memoryview) else v) for v in row)
                                  for row in rows)
    return state


# ---------------------------------------------------------------------------------------- layers


def _toplevel(tmp: Path, keys: tuple[Path, Path], database: str | None) -> Iterator[Layer]:
    from daemons.toplevel import admin_ops
    from daemons.toplevel.app import create_app
    from daemons.toplevel.models import MODELS, database_proxy, upgrade
    from daemons.toplevel.settings import KEYS
    from shared.config import build_config

    config = build_config("toplevel", KEYS, {
        "database": {"url": database or f"sqlite:///{tmp / 'toplevel.db'}"},
        "tokens": {"private_key": str(keys[0]), "public_key": str(keys[1]), "audience": TOPLEVEL_AUDIENCE},
        "auth": dict(FAST_ARGON2)})
    upgrade(config)
    inst_a = admin_ops.create_institution(config, "Hospital A", "Main St 1", "https://inst-a.example:5002")
    inst_b = admin_ops.create_institution(config, "Clinic B", "Side St 2", "https://inst-b.example:5002")
    password = "fuzz-password-1"
    people = {}
    for name, role in (("sysadmin", "sysadmin"), ("physician", "physician"), ("self", "physician"),
                       ("victim", "physician")):
        people[name] = admin_ops.create_user(config, f"fuzz.{name}", password, role, inst_a["id"], f"Fuzz {name}")
    app = recording(create_app(config))
    app.config["TESTING"] = True
    client = app.test_client()
    tokens = {}
    for name in people:
        reply = client.post("/api/v1/auth/login", json={"username": f"fuzz.{name}", "password": password})
        assert reply.status_code == 200, reply.json
        tokens[name] = reply.json["access_token"]
    patient = client.post("/api/v1/patients", headers={"Authorization": f"Bearer {tokens['physician']}"},
                          json={"first_name": "Ana", "last_name": "Fuzz", "sex": "F", "birth_date": "1970-03-15",
                                "insurance_number": "FZ-1"}).json
    record_type = client.post("/api/v1/record-types", headers={"Authorization": f"Bearer {tokens['sysadmin']}"},
                              json={"code": "FZ", "name": "Fuzz"}).json
    patient_body = {"first_name": "Ana", "last_name": "Fuzz", "sex": "F", "birth_date": "1970-03-15",
                    "insurance_number": "FZ-2"}
    user_body = {"full_name": "V Fuzz", "email": "v@example.org", "role": "physician",
                 "institution_id": inst_a["id"], "active": True}
    institution_body = {"name": "Fuzz Clinic", "address": "Road 1", "server_url": "https://fuzz.example:5002"}
    calls = {
        ("/api/v1/audit", "GET"): Call("sysadmin"),
        ("/api/v1/auth/login", "POST"): Call("physician", {"username": "fuzz.self", "password": password}),
        ("/api/v1/auth/logout", "POST"): Call("self"),  # reads no body: nothing but its path to attack
        ("/api/v1/auth/renew", "POST"): Call("self"),
        ("/api/v1/auth/token", "POST"): Call("physician", {"audience": "https://inst-a.example:5002"}),
        ("/api/v1/institutions", "GET"): Call("physician"),
        ("/api/v1/institutions", "POST"): Call("sysadmin", institution_body),
        ("/api/v1/institutions/", "GET"): Call("sysadmin"),
        ("/api/v1/institutions/", "PUT"): Call("sysadmin"),
        ("/api/v1/institutions/", "DELETE"): Call("sysadmin"),
        ("/api/v1/institutions/<institution_id>", "GET"): Call("sysadmin"),
        ("/api/v1/institutions/<institution_id>", "PUT"): Call("sysadmin", institution_body),
        ("/api/v1/institutions/<institution_id>", "DELETE"): Call("sysadmin"),
        ("/api/v1/me", "GET"): Call("physician"),
        ("/api/v1/me/password-policy", "GET"): Call("physician"),
        ("/api/v1/me", "PUT"): Call("physician", {"full_name": "Fuzz Me", "email": "me@example.org"}),
        ("/api/v1/me/password", "POST"): Call("self", {"old_password": password,
                                                       "new_password": "fuzz-password-2"}),
        ("/api/v1/patients", "GET"): Call("physician"),
        ("/api/v1/patients", "POST"): Call("physician", patient_body),
        ("/api/v1/patients/", "GET"): Call("physician"),
        ("/api/v1/patients/", "PUT"): Call("physician"),
        ("/api/v1/patients/", "DELETE"): Call("physician"),
        ("/api/v1/patients/<patient_id>", "GET"): Call("physician"),
        ("/api/v1/patients/<patient_id>", "PUT"): Call("physician", patient_body),
        ("/api/v1/patients/<patient_id>", "DELETE"): Call("sysadmin"),
        ("/api/v1/patients/<patient_id>/reference", "POST"): Call("physician"),
        ("/api/v1/record-types", "GET"): Call("physician"),
        ("/api/v1/record-types", "POST"): Call("sysadmin", {"code": "FY", "name": "Fuzz Y"}),
        ("/api/v1/record-types/", "GET"): Call("sysadmin"),
        ("/api/v1/record-types/", "PUT"): Call("sysadmin"),
        ("/api/v1/record-types/", "DELETE"): Call("sysadmin"),
        ("/api/v1/record-types/<record_type_id>", "PUT"): Call("sysadmin", {"code": "FZ", "name": "Fuzz Z"}),
        ("/api/v1/record-types/<record_type_id>", "DELETE"): Call("sysadmin"),
        ("/api/v1/users", "GET"): Call("sysadmin"),
        ("/api/v1/users", "POST"): Call("sysadmin", {"username": "fuzz.new", "password": password,
                                                     "full_name": "New Fuzz", "email": "n@example.org",
                                                     "role": "physician", "institution_id": inst_a["id"]}),
        ("/api/v1/users/", "GET"): Call("sysadmin"),
        ("/api/v1/users/", "PUT"): Call("sysadmin"),
        ("/api/v1/users/", "DELETE"): Call("sysadmin"),
        ("/api/v1/users/<user_id>", "GET"): Call("sysadmin"),
        ("/api/v1/users/<user_id>", "PUT"): Call("sysadmin", user_body),
        ("/api/v1/users/<user_id>", "DELETE"): Call("sysadmin"),
        ("/api/v1/users/<user_id>/password", "POST"): Call("sysadmin", {"new_password": "fuzz-password-3"}),
        ("/healthz", "GET"): Call("physician"),
        ("/readyz", "GET"): Call("physician"),
        ("/metrics", "GET"): Call("physician"),
    }
    values = {"institution_id": inst_b["id"], "patient_id": patient["id"], "record_type_id": record_type["id"],
              "user_id": people["victim"]["id"]}

    def snapshot() -> dict[str, list[tuple[str, ...]]]:
        with database_proxy.connection_context():
            return table_rows([m for m in MODELS if m._meta.table_name != "user_session"])

    yield Layer("toplevel", app, lambda role: {"Authorization": f"Bearer {tokens[role]}"}, values, calls, snapshot)
    if not database_proxy.is_closed():
        database_proxy.close()


def _institution(tmp: Path, keys: tuple[Path, Path], database: str | None) -> Iterator[Layer]:
    from daemons.institution.app import create_app
    from daemons.institution.models import MODELS, database_proxy, upgrade
    from daemons.institution.settings import KEYS
    from shared.config import build_config
    from shared.patient_refs import FIELD
    from shared.tokens import MAX_EXCHANGED_TTL_S, TokenIssuer, load_private_key

    config = build_config("institution", KEYS, {
        "database": {"url": database or f"sqlite:///{tmp / 'institution.db'}"},
        "institution": {"id": institution.INSTITUTION_A, "name": "General Hospital A"},
        "tokens": {"public_key": str(keys[1]), "issuer": institution.ISSUER, "audience": institution.AUDIENCE}})
    upgrade(config)
    app = recording(create_app(config))
    app.config["TESTING"] = True
    issuer = TokenIssuer(load_private_key(keys[0]), institution.ISSUER, institution.AUDIENCE, MAX_EXCHANGED_TTL_S)
    users = {role: institution.User(str(uuid.uuid4()), f"fuzz-{role}", role, institution.INSTITUTION_A, "")
             for role in ("instadmin", "physician")}

    def headers(role: str) -> dict[str, str]:
        user = users[role]
        return {"Authorization": f"Bearer {issuer.issue(user.id, user.username, role, user.institution_id)[0]}"}

    api = institution.Api(app.test_client(), load_private_key(keys[0]))
    physician = users["physician"]
    for user in users.values():
        user.token = headers(user.role)["Authorization"].split(" ", 1)[1]
    status, node = api.call("POST", "/api/v1/nodes", users["instadmin"],
                            {"name": "node-1", "url": "https://render1.hospital-a.example:5003"})
    assert status == 201, node
    patient_id = str(uuid.uuid4())
    status, record = api.call("POST", "/api/v1/records", physician, institution.record_body(node["id"], patient_id))
    assert status == 201, record
    status, finding = api.call("POST", "/api/v1/findings", physician,
                               institution.finding_body(patient_id, [institution.local_link(record)]))
    assert status == 201, finding
    second = institution.record_body(node["id"], patient_id, b"ct-series-2")
    status, _ = api.call("POST", "/api/v1/records", physician, second)
    assert status == 201
    reference = {FIELD: _reference(api, patient_id, physician)}
    new_record = institution.record_body(node["id"], patient_id, b"ct-series-3")
    new_record = {**new_record, "receipt": api.receipt(node["id"], new_record["id"], physician), **reference}
    finding_body = {**institution.finding_body(patient_id, [institution.local_link(record)]), **reference}
    calls = {
        ("/api/v1/audit", "GET"): Call("instadmin"),
        ("/api/v1/findings", "GET"): Call("physician", query={"patient_id": patient_id}),
        ("/api/v1/findings", "POST"): Call("physician", finding_body),
        ("/api/v1/findings/<id:finding_id>", "GET"): Call("physician"),
        ("/api/v1/findings/<id:finding_id>", "PUT"): Call("physician", finding_body),
        ("/api/v1/findings/<id:finding_id>", "DELETE"): Call("physician"),
        ("/api/v1/findings/<id:finding_id>/records", "POST"): Call(
            "physician", {"record_id": second["id"], "institution_id": institution.INSTITUTION_A,
                          "node_id": node["id"]}),
        ("/api/v1/findings/<id:finding_id>/records/<id:record_id>", "DELETE"): Call("physician"),
        ("/api/v1/findings/<id:finding_id>/versions", "GET"): Call("physician"),
        ("/api/v1/info", "GET"): Call("physician"),
        ("/api/v1/nodes", "GET"): Call("instadmin"),
        ("/api/v1/nodes", "POST"): Call("instadmin", {"name": "node-2", "url": "https://render2.example:5003",
                                                      "store": "shared-1"}),
        ("/api/v1/nodes/<id:node_id>", "GET"): Call("instadmin"),
        ("/api/v1/nodes/<id:node_id>", "PUT"): Call("instadmin", {"name": "node-1b", "store": "shared-2"}),
        ("/api/v1/nodes/<id:node_id>", "DELETE"): Call("instadmin"),
        ("/api/v1/records", "GET"): Call("physician", query={"patient_id": patient_id}),
        ("/api/v1/records", "POST"): Call("physician", new_record),
        ("/api/v1/records/<id:record_id>", "GET"): Call("physician"),
        ("/api/v1/records/<id:record_id>", "PATCH"): Call("physician", {"record_type": "CT", "description": "d"}),
        ("/api/v1/records/<id:record_id>", "DELETE"): Call("physician"),
        ("/healthz", "GET"): Call("physician"),
        ("/readyz", "GET"): Call("physician"),
        ("/metrics", "GET"): Call("physician"),
    }
    values = {"finding_id": finding["id"], "node_id": node["id"], "record_id": record["id"]}

    def snapshot() -> dict[str, list[tuple[str, ...]]]:
        state = table_rows(MODELS)
        database_proxy.close()
        return state

    yield Layer("institution", app, headers, values, calls, snapshot)
    if not database_proxy.is_closed():
        database_proxy.close()


def _reference(api: institution.Api, patient_id: str, user: institution.User) -> str:
    """A patient reference the toplevel would sign for `user`, living as long as the module runs."""
    from shared.patient_refs import issue_patient_reference

    return issue_patient_reference(api.signing_key, institution.ISSUER, patient_id, user.id, 3600)


#: query parameters of the searches, which read them all at once (`request.args.lists()`)
QIDO_PARAMS = ("PatientID", "StudyInstanceUID", "00100020", "limit", "offset", "includefield", "fuzzymatching",
               "PatientName", "StudyDate")


def _render(tmp: Path, keys: tuple[Path, Path], database: str | None) -> Iterator[Layer]:
    from tests.render.test_route_authorization import ROUTES

    harness = build_node(tmp, keys, **({"database__url": database} if database else {}))
    recording(harness.app)
    harness.client = harness.app.test_client()
    files = synthetic_series(count=4)
    reply = harness.upload([(f"{n}.dcm", raw) for n, raw in enumerate(files)])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    study, series, sop = uids(files[0])
    assert harness.client.post(f"/api/v1/records/{record_id}/load", headers=harness.headers()).status_code == 202
    assert harness.registry.get_loaded(record_id).wait_complete(60)
    upload = synthetic_series(count=1)[0]
    calls: dict[tuple[str, str], Call] = {}
    for route in ROUTES:
        role = "physician" if not route.roles or "physician" in route.roles else "instadmin"
        calls[route.rule, route.method] = Call(role)
    for rule in ("/api/v1/records", "/dicomweb/studies", "/dicomweb/studies/<study>"):
        calls[rule, "POST"] = Call("physician", {"files": upload}, body_kind="multipart")
    for rule, method in calls:
        if rule.startswith("/dicomweb/") and method == "GET" and rule.endswith(("/studies", "/series", "/instances")):
            calls[rule, method].params = QIDO_PARAMS
    probe = "/api/v1/records/<record_id>/{}/<int(signed=True):index>"
    calls[probe.format("frames") + "/value", "GET"].query = {"x": "1", "y": "1"}
    calls[probe.format("mpr/<plane>") + "/value", "GET"].query = {"x": "1", "y": "1"}
    for kind in ("frames", "mpr/<plane>"):
        calls[probe.format(kind) + "/stats", "GET"].query = {"x0": "0", "y0": "0", "x1": "4", "y1": "4",
                                                             "shape": "rect"}
    for method in ("PUT", "DELETE"):
        calls[probe.format("key-images/<plane>"), method].params = ("stack", "phase")
    for public in ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"):
        calls[public, "GET"] = Call("physician")
    values = {"record_id": record_id, "study": study, "study_uid": study, "series": series, "series_uid": series,
              "sop": sop, "sop_uid": sop, "plane": "axial", "index": "0", "frames": "1", "frame_list": "1",
              "element": "7FE00010"}
    models = harness.app.extensions["sivr_node"].models
    store = tmp / "store"

    def snapshot() -> tuple[dict[str, list[tuple[str, ...]]], list[tuple[str, int]]]:
        files = sorted((os.path.relpath(os.path.join(top, name), store), os.path.getsize(os.path.join(top, name)))
                       for top, _, names in os.walk(store) for name in names)
        return table_rows(models.all), files

    yield Layer("render", harness.app, lambda role: harness.headers(role), values, calls, snapshot)
    close_node(harness)


def _web(tmp: Path, keys: tuple[Path, Path], database: str | None) -> Iterator[Layer]:
    from shared.config import build_config
    from webviewer import settings
    from webviewer.app import create_app

    config = build_config("web", settings.KEYS, {"tokens": {"public_key": str(keys[1])},
                                                 "web": {"toplevel_url": "https://toplevel.example:5001/"}})
    app = recording(create_app(config))
    calls = {(rule, "GET"): Call("physician") for rule in ("/", "/config.json", "/healthz", "/readyz", "/metrics")}
    yield Layer("web", app, lambda role: {}, {}, calls, lambda: None)


LAYERS: dict[str, Callable[[Path, tuple[Path, Path], str | None], Iterator[Layer]]] = {
    "toplevel": _toplevel, "institution": _institution, "render": _render, "web": _web}
#: each layer with a database on SQLite and on PostgreSQL (where text with NUL once failed), the web layer once
BACKENDS = [*((name, "sqlite") for name in LAYERS),
            *(pytest.param((name, "postgresql"), marks=pytest.mark.postgres) for name in LAYERS if name != "web")]


@pytest.fixture(scope="module", params=BACKENDS, ids=lambda param: "-".join(param))
def layer(request, tmp_path_factory, signing_keys) -> Iterator[Layer]:
    """One layer's app with its seeded rows (module scoped: built once, fuzzed route by route)."""
    name, backend = request.param
    database = request.getfixturevalue("pg_session_database_factory")() if backend == "postgresql" else None
    for built in LAYERS[name](tmp_path_factory.mktemp(f"fuzz-{name}"), signing_keys, database):
        built.calls[STATIC, "GET"] = Call("physician")  # its path is attacked: `..` must not leave the folder
        built.path_values.setdefault("filename", "index.html")
        yield built


# ------------------------------------------------------------------------------------- requests


def served(app: Flask) -> list[tuple[str, str]]:
    """Every (rule, method) of `app` but static files, HEAD and OPTIONS (Flask answers those itself)."""
    return sorted((rule.rule, method) for rule in app.url_map.iter_rules()
                  for method in rule.methods - {"HEAD", "OPTIONS"})


_PLACEHOLDER = re.compile(r"<(?:[^:>]+:)?([^>]+)>")


def concrete(rule: str, values: dict[str, str], attacked: str | None = None, value: str = "") -> str:
    """`rule` with each placeholder replaced by its valid value, or `attacked`'s by `value` (quoted)."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == attacked:
            return quote(value, safe="")
        if name == "plane" and "/key-images/" in rule:
            return "native"
        return values[name]

    return _PLACEHOLDER.sub(fill, rule)


_MARK = "\u0000fuzz-value\u0000"


def _json_text(body: Any, where: tuple[Any, ...] = (), text: str = "") -> str:
    """`body` as JSON text, the value at `where` (keys and list indexes) written as the raw JSON `text`
    (so NaN, Infinity and 10,000 levels of nesting stay literal); no `where`: the body as it is."""
    if not where:
        return json.dumps(body)
    marked = json.loads(json.dumps(body))
    holder = marked
    for step in where[:-1]:
        holder = holder[step]
    holder[where[-1]] = _MARK
    return json.dumps(marked).replace(json.dumps(_MARK), text)


def fields(body: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, value) of every value in `body`, nested objects and lists of objects included: a link
    inside a finding's `records` is parsed by its own rules."""
    items = body.items() if isinstance(body, dict) else enumerate(body) if isinstance(body, list) else ()
    for key, value in items:
        yield (*where, key), value
        yield from fields(value, (*where, key))


def wrong_types(value: Any) -> dict[str, str]:
    """A value of each JSON type other than `value`'s (an int and a float are both numbers)."""
    numbers = (int, float)
    own = type(value)
    return {f"type {kind.__name__}": text for kind, text in TYPED_VALUES.items()
            if kind is not own and not (own in numbers and kind in numbers)}


#: file names an upload's part may carry
FILE_NAMES: dict[str, str] = {"dotdot": "../../../outside.dcm", "NUL": "a\x00b.dcm", "1000 chars": "\u00e9" * 1000,
                              "empty": "", "U+202E": "x\u202emcd.exe"}


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "fuzzboundary", end: bool = True) -> bytes:
    """A multipart body of (part headers, content) parts."""
    body = b"".join(f"--{boundary}\r\n{headers}\r\n\r\n".encode("utf-8", "surrogatepass") + content + b"\r\n"
                    for headers, content in parts)
    return body + (f"--{boundary}--\r\n".encode() if end else b"")


def multipart_attacks(path: str, dicom: bytes, related: bool) -> Iterator[Request]:
    """An upload's (form-data) or a STOW-RS request's (multipart/related) body, taken apart."""
    media = 'multipart/related; type="application/dicom"; boundary=' if related else "multipart/form-data; boundary="
    part = "Content-Type: application/dicom" if related else \
        'Content-Disposition: form-data; name="files"; filename="{}"\r\nContent-Type: application/dicom'
    yield Request("multipart without a boundary", path, b"--x\r\n\r\n", media.split(";")[0])
    yield Request("no parts", path, b"--x--\r\n", media + "x")
    yield Request("unterminated", path, _multipart([(part.format("a.dcm"), dicom)], end=False), media + "fuzzboundary")
    yield Request("10k boundary", path, _multipart([(part.format("a.dcm"), dicom)], "b" * 10_000), media + "b" * 10_000)
    for name, content in {"empty part": b"", "not DICOM": b"\x00" * 300, "truncated DICOM": dicom[:200],
                          "DICOM and 1 MiB of noise": dicom + b"\xff" * 2**20}.items():
        yield Request(name, path, _multipart([(part.format("a.dcm"), content)]), media + "fuzzboundary")
    if related:
        for name, headers in {"part of another type": "Content-Type: text/plain",
                              "part without a type": "Content-Location: x", "part type with NUL": "Content-Type: a\x00b"
                              }.items():
            yield Request(name, path, _multipart([(headers, dicom)]), media + "fuzzboundary")
        return
    for name, filename in FILE_NAMES.items():
        yield Request(f"file name {name}", path, _multipart([(part.format(filename), dicom)]), media + "fuzzboundary")
    yield Request("another field's name", path, _multipart([(part.replace("files", "f\x00").format("a"), dicom)]),
                  media + "fuzzboundary")


def body_attacks(path: str, call: Call) -> Iterator[Request]:
    """Hostile bodies of a route that reads one."""
    json_type = "application/json"
    for name, text in SHAPES.items():
        yield Request(f"body {name}", path, text.encode(), json_type)
    yield Request("invalid UTF-8", path, b'{"a": "\xff\xfe\xc3"}', json_type)
    if call.body_kind == "multipart":
        yield from multipart_attacks(path, call.body["files"], related=path.startswith("/dicomweb/"))
        return
    assert call.body is not None
    yield Request("wrong Content-Type", path, _json_text(call.body).encode(), "text/plain")
    yield Request("UTF-16 body", path, _json_text(call.body).encode("utf-16"), json_type)
    yield Request("charset=utf-16 label", path, _json_text(call.body).encode(), f"{json_type}; charset=utf-16")
    yield Request("byte order mark", path, _json_text(call.body).encode("utf-8-sig"), json_type)
    yield Request("form Content-Type", path, urlencode(call.body).encode(), "application/x-www-form-urlencoded")
    for where, value in fields(call.body):
        name = ".".join(map(str, where))
        for attack, text in {**wrong_types(value), **HOSTILE_VALUES}.items():
            yield Request(f"{name}: {attack}", path, _json_text(call.body, where, text).encode(), json_type)
        if isinstance(value, list) and value:  # a list's items are checked one by one: 100,000 of them
            many = json.dumps([value[0]] * 100_000)
            yield Request(f"{name}: 100,000 items", path, _json_text(call.body, where, many).encode(), json_type)
    for name, value in call.body.items():
        duplicated = _json_text(call.body)[:-1] + f", {json.dumps(name)}: " + next(iter(wrong_types(value).values()))
        yield Request(f"{name}: duplicated, last of another type", path, (duplicated + "}").encode(), json_type)


def query_attacks(path: str, call: Call, names: set[str]) -> Iterator[Request]:
    """Each known query parameter given twice, empty, long, with NUL, not a number (the rest valid)."""
    for name in sorted(names):
        base = [(key, value) for key, value in call.query.items() if key != name]
        kept = call.query.get(name, "1")
        yield Request(f"?{name} twice", path, query=[*base, (name, kept), (name, kept)])
        for attack, value in QUERY_VALUES.items():
            yield Request(f"?{name} {attack}", path, query=[*base, (name, value)])
        raw = "&".join(filter(None, (urlencode(base), f"{quote(name)}={INVALID_UTF8_QUERY}")))
        yield Request(f"?{name} invalid UTF-8", path, query=raw)


def path_attacks(rule: str, values: dict[str, str], query: dict[str, str]) -> Iterator[Request]:
    for name in _PLACEHOLDER.findall(rule):
        for attack, value in PATH_VALUES.items():
            yield Request(f"<{name}> {attack}", concrete(rule, values, name, value), query=list(query.items()))


def header_attacks(path: str, call: Call) -> Iterator[Request]:
    """Each header a view or the layers' shared code reads, with each hostile value (the caller's
    token kept but where `Authorization` itself is attacked, which must be a 401)."""
    for header in HEADERS:
        for attack, value in HEADER_VALUES.items():
            yield Request(f"{header}: {attack}", path, query=list(call.query.items()), headers={header: value})


def known_params(layer: Layer, rule: str, method: str) -> set[str]:
    """The query parameters the route's view reads: recorded while a valid GET runs, or declared."""
    call = layer.calls[rule, method]
    names = set(call.params)
    if method == "GET":
        RecordingArgs.read.clear()
        client = layer.app.test_client()
        client.get(concrete(rule, layer.path_values), query_string=call.query, headers=layer.headers(call.role))
        names |= RecordingArgs.read
    return names


def attacks(layer: Layer, rule: str, method: str) -> list[Request]:
    """Every hostile request of one rule and method."""
    call = layer.calls[rule, method]
    path = concrete(rule, layer.path_values)
    found: list[Request] = []
    if method in BODY_METHODS and call.body is not None:
        found += body_attacks(path, call)
    found += query_attacks(path, call, known_params(layer, rule, method))
    found += path_attacks(rule, layer.path_values, call.query)
    if method == "GET":  # a valid write or DELETE with an odd header would change what later routes find
        found += header_attacks(path, call)
    return found


def send(layer: Layer, call: Call, method: str, request: Request) -> Any:
    headers = {**layer.headers(call.role), **request.headers}
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    query = request.query or list(call.query.items())
    return layer.app.test_client().open(request.path, method=method, data=request.data, headers=headers,
                                        query_string=query)


#: STOW-RS refuses instances with the standard's Store Instances Response (PS3.18 §10.5.3,
#: docs/conformance.md): its FailedSOPSequence says why for each, where other answers have `error`
FAILED_SOP_SEQUENCE = "00081198"


def is_error_body(answer: Any) -> bool:
    """Whether `answer` is an error body: `{"error": {"code", "message"}}`, or a STOW-RS refusal."""
    if isinstance(answer, dict) and FAILED_SOP_SEQUENCE in answer:
        return True
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)


def problems(layer: Layer, rule: str, method: str) -> tuple[list[str], int]:
    """What went wrong for each attack of one route, and how many attacks were sent."""
    call = layer.calls[rule, method]
    found = []
    before = layer.snapshot()
    sent = attacks(layer, rule, method)
    for request in sent:
        try:
            reply = send(layer, call, method, request)
        except Exception as exc:  # a view's exception the app did not answer (TESTING propagates it)
            found.append(f"{request.attack}: raised {type(exc).__name__}: {str(exc)[:200]}")
            before = layer.snapshot()
            continue
        status = reply.status_code
        if status >= 500:
            found.append(f"{request.attack}: {status} {reply.get_data(as_text=True)[:200]}")
        if 400 <= status < 500 and not is_error_body(reply.get_json(silent=True) if reply.is_json else None):
            found.append(f"{request.attack}: {status} without the error body: {reply.get_data(as_text=True)[:200]}")
        after = layer.snapshot()
        if 400 <= status < 500 and after != before:
            found.append(f"{request.attack}: {status} but rows or files changed")
        before = after
    return found, len(sent)


def test_every_route_is_fuzzed(layer):
    """Every rule and method the app serves has a valid call here, and no call names a gone route."""
    assert set(served(layer.app)) == set(layer.calls)


def test_a_method_a_rule_does_not_take_is_405_with_the_error_body(layer):
    """Each rule, sent each method it does not take (with a caller allowed elsewhere): 405 and the
    error body with `Allow`, never the view of another method."""
    for rule in layer.app.url_map.iter_rules():
        path = concrete(rule.rule, layer.path_values)
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - rule.methods):
            if any(other.rule == rule.rule and method in other.methods for other in layer.app.url_map.iter_rules()):
                continue  # the same path's other rule takes it (Flask rules per method)
            reply = layer.app.test_client().open(path, method=method, headers=layer.headers("physician"),
                                                 follow_redirects=True)
            if reply.history:  # `/users` to `/users/`, whose rule (a blank id) takes the method: its 4xx
                assert [r.status_code for r in reply.history] == [308], (method, rule.rule)
                assert 400 <= reply.status_code < 500 and is_error_body(reply.get_json(silent=True))
                continue
            assert reply.status_code == 405, (method, rule.rule, reply.status_code)
            assert is_error_body(reply.get_json(silent=True)), (method, rule.rule)
            assert reply.headers["Allow"], (method, rule.rule)


def test_hostile_requests_are_answered_4xx_with_the_error_body_and_write_nothing(layer):
    """Each attack of each route (module docstring): below 500, the error body, nothing written."""
    found: list[str] = []
    total = 0
    for rule, method in served(layer.app):
        route_problems, sent = problems(layer, rule, method)
        total += sent
        found += [f"{method} {rule}: {problem}" for problem in route_problems]
    assert total > 0
    assert not found, f"{len(found)} of {total} attacks on {layer.name}:\n" + "\n".join(found[:80])
