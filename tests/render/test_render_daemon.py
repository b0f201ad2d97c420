"""A real render node under gunicorn with TLS: its answers' headers, gunicorn's own errors, the TLS
suites it offers, and the image-view audit written when the node stops.

The node runs from `init_deployment` + `sivr serve` (what operators run), with tokens minted by
the deployment's own signing key.
"""

from __future__ import annotations

import json
import socket
import ssl
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import peewee
import pytest
import requests

from daemons.deployment import LocalDeployment, init_deployment
from daemons.render.settings import KEYS
from shared.audit import make_audit_model
from shared.config import render_config_toml
from shared.tokens import MAX_EXCHANGED_TTL_S, TokenIssuer, load_private_key, normalize_audience
from tests.render.synthetic import dataset, to_bytes

pytestmark = pytest.mark.slow

API_CSP = "default-src 'none'; frame-ancestors 'none'"


class Node:
    def __init__(self, running: LocalDeployment, root: Path):
        self.running, self.root = running, root
        self.instance = running.instances[0]
        self.url = self.instance.url
        self.ca = running.ca_cert
        self.issuer = TokenIssuer(load_private_key(root / "keys" / "token_ed25519.pem"), "sivr-toplevel",
                                  normalize_audience(self.url), MAX_EXCHANGED_TTL_S)
        self.user_id, self.session_id = str(uuid.uuid4()), str(uuid.uuid4())

    @property
    def token(self) -> str:
        """A fresh token of one session for this node, as the toplevel's exchange mints them (<= 60 s)."""
        return self.issuer.issue(self.user_id, "dr.who", "physician", self.instance.institution,
                                 session_id=self.session_id)[0]

    def get(self, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.get(self.url + path, headers=headers, verify=self.ca, timeout=30, **kwargs)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("https://").rsplit(":", 1)
        return host.strip("[]"), int(port)


def running_node(root: Path, configure: Callable[[dict], None]) -> Iterator[Node]:
    """One render node of a fresh deployment in `root`, its config values changed by `configure`
    before it starts; stopped when the caller's fixture ends."""
    layout = init_deployment(root, pick_free_ports=True, hold_ports=True, institution_names=["Hospital A"])
    config = Path(layout.first("render").config)
    values = tomllib.loads(config.read_text())
    configure(values)
    config.write_text(render_config_toml("render", KEYS, values))
    running = LocalDeployment(layout, layers=("render",))
    try:
        running.start()
        yield Node(running, root)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[Node]:
    def configure(values: dict) -> None:
        values.setdefault("audit", {})["flush_s"] = 60  # only the shutdown writes within this test

    yield from running_node(tmp_path_factory.mktemp("render-daemon"), configure)


def test_every_answer_has_the_api_security_headers(node):
    for reply in (node.get("/healthz"), node.get("/api/v1/node"), node.get("/api/v1/nope")):
        assert reply.headers["Content-Security-Policy"] == API_CSP, reply.url
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("headers, status, code", [
    ({"X-Big": "a" * 9000}, 431, "headers_too_large"),
    ({f"X-Many-{i}": "1" for i in range(120)}, 431, "headers_too_large"),
])
def test_headers_gunicorn_refuses_get_the_json_error(node, headers, status, code):
    reply = node.get("/healthz", headers=headers)
    assert reply.status_code == status
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["error"]["code"] == code and reply.json()["error"]["message"]
    assert reply.headers["Content-Security-Policy"] == API_CSP


def test_an_overlong_request_line_gets_the_json_error(node):
    reply = node.get("/healthz?" + "a" * 6000)
    assert reply.status_code == 414 and reply.json()["error"]["code"] == "uri_too_long"


def _handshake(node: Node, cipher: str) -> str:
    """The suite negotiated when a TLS 1.2 client offers only `cipher` (ssl.SSLError if refused)."""
    context = ssl.create_default_context(cafile=node.ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    with (socket.create_connection(node.address, timeout=10) as raw,
          context.wrap_socket(raw, server_hostname=node.address[0]) as tls):
        return tls.cipher()[0]


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256",
                                    "ECDHE-ECDSA-AES256-SHA", "AES128-SHA256", "AES256-GCM-SHA384"])
def test_tls12_refuses_cbc_and_static_rsa_suites(node, cipher):
    with pytest.raises(ssl.SSLError):
        _handshake(node, cipher)


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls12_offers_aead_ecdhe_suites(node, cipher):
    assert _handshake(node, cipher) == cipher


def test_image_views_pending_at_shutdown_are_written(node):
    series = f"1.2.826.0.9.{uuid.uuid4().int % 10**12}"
    files = [("files", (f"{z}.dcm", to_bytes(dataset(16, 16, series=series, position=float(z)))))
             for z in range(3)]
    upload = requests.post(node.url + "/api/v1/records", files=files, verify=node.ca, timeout=60,
                           headers={"Authorization": f"Bearer {node.token}"})
    assert upload.status_code == 201, upload.text
    record_id = upload.json()["id"]
    load = requests.post(f"{node.url}/api/v1/records/{record_id}/load", verify=node.ca, timeout=30,
                         headers={"Authorization": f"Bearer {node.token}"})
    assert load.status_code == 202
    for index in (0, 1, 2, 1):
        assert node.get(f"/api/v1/records/{record_id}/frames/{index}").status_code == 200
    node.running.stop_instance(node.instance.name)

    database = peewee.SqliteDatabase(str(node.root / "data" / node.instance.name / "render.db"))
    audit = make_audit_model(database)
    views = list(audit.select().where(audit.action == "record.view"))
    # one entry per worker that served some of the session's images: together, every image
    assert {v.object_id for v in views} == {record_id}
    assert sum(json.loads(v.detail)["frame"] for v in views) == 4
    database.close()
