"""`server.http2 = true`: a real render node over TLS speaks HTTP/2 to real clients.

ALPN picks h2 (TLS 1.2 still limited to the AEAD cipher list), many concurrent requests share one
connection (curl counts the connections it opened), and the API's errors stay JSON over HTTP/2.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from daemons.deployment import LocalDeployment, init_deployment
from shared.tokens import TokenIssuer, load_private_key

CONCURRENT = 24


def enable_http2(config_path: str) -> None:
    text = Path(config_path).read_text()
    text, found = re.subn(r"(?m)^#?\s*http2\s*=.*$", "http2 = true", text)
    if not found:
        text = text.replace("[server]\n", "[server]\nhttp2 = true\n", 1)
    Path(config_path).write_text(text)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    layout = init_deployment(tmp_path_factory.mktemp("http2"), pick_free_ports=True)
    instance = layout.first("render")
    enable_http2(instance.config)
    running = LocalDeployment(layout, layers=("render",))
    running.start(timeout_s=300)
    issuer = TokenIssuer(load_private_key(Path(layout.root, "keys", "token_ed25519.pem")),
                         "sivr-toplevel", instance.url, 60)
    token, _ = issuer.issue(str(uuid.uuid4()), "doc", "physician", instance.institution or str(uuid.uuid4()))
    yield instance.url, layout.ca_cert, token, running.log_path(instance.name)
    running.stop()


def _tls(url: str, ca: str, **context_settings) -> ssl.SSLSocket:
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    for name, value in context_settings.items():
        setattr(context, name, value) if name != "ciphers" else context.set_ciphers(value)
    raw = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return context.wrap_socket(raw, server_hostname=parts.hostname)


def test_alpn_negotiates_h2_and_tls12_stays_aead_only(node):
    url, ca, _, _ = node
    with _tls(url, ca) as sock:
        assert sock.selected_alpn_protocol() == "h2"
    with pytest.raises(ssl.SSLError):
        _tls(url, ca, maximum_version=ssl.TLSVersion.TLSv1_2, ciphers="AES128-SHA:AES256-SHA")


def test_api_answers_and_errors_are_json_over_h2(node):
    url, ca, token, _ = node
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca), timeout=60) as client:
        ok = client.get(f"{url}/api/v1/presets", headers={"Authorization": f"Bearer {token}"})
        assert ok.http_version == "HTTP/2" and ok.status_code == 200 and "window" in ok.json(), ok.text
        for refused in (client.get(f"{url}/api/v1/presets"),
                        client.get(f"{url}/api/v1/records/not-a-record/status",
                                   headers={"Authorization": f"Bearer {token}"}),
                        client.get(f"{url}/no/such/path")):
            assert refused.http_version == "HTTP/2" and 400 <= refused.status_code < 500
            assert refused.headers["content-type"].startswith("application/json")
            assert set(refused.json()["error"]) >= {"code", "message"}


@pytest.fixture(scope="module")
def toplevel(tmp_path_factory):
    """A toplevel served over HTTP/2 by `sivr serve` as its systemd unit starts it (its own socket)."""
    layout = init_deployment(tmp_path_factory.mktemp("http2-toplevel"), pick_free_ports=True)
    instance = layout.first("toplevel")
    enable_http2(instance.config)
    sivr = [sys.executable, "-m", "daemons.cli"]
    subprocess.run([*sivr, "db", "upgrade", "toplevel", "--config", instance.config], check=True, capture_output=True)
    log_path = Path(layout.root, "toplevel-h2.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen([*sivr, "serve", "toplevel", "--config", instance.config],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                context = ssl.create_default_context(cafile=layout.ca_cert)
                if httpx.get(f"{instance.url}/readyz", verify=context, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield instance.url, layout.ca_cert, log_path
    finally:
        server.terminate()
        server.wait(30)


def test_the_log_has_the_apps_json_access_line_only(toplevel):
    """hypercorn wrote an access line of its own, in plain text, with the raw path (ids), the
    client's port, the Referer and the User-Agent, beside the app's line (route only)."""
    url, ca, log_path = toplevel
    patient = "5b7e3c9a-0000-4000-8000-000000000001"
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca), timeout=60) as client:
        client.get(f"{url}/api/v1/patients/{patient}", headers={"Referer": "https://viewer.example/#patient=Doe^John"})
    deadline = time.monotonic() + 10
    while "/api/v1/patients/<patient_id>" not in Path(log_path).read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # a line of hypercorn's own would follow the app's
    lines = Path(log_path).read_text().splitlines()
    assert any("/api/v1/patients/<patient_id>" in line for line in lines)
    assert not [line for line in lines if patient in line or "Doe^John" in line]
    assert all(line.startswith("{") for line in lines if line.strip()), lines


def test_concurrent_requests_share_one_connection(node):
    url, ca, token, _ = node
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (Debian package curl)")
    assert_one_h2_connection(curl, url, ca, token)


def assert_one_h2_connection(curl: str, url: str, ca: str, token: str) -> None:
    """CONCURRENT requests at once with curl over HTTP/2: all 200, on one connection."""
    urls = [f"{url}/api/v1/presets?n={i}" for i in range(CONCURRENT)]
    done = subprocess.run(
        [curl, "--http2", "--parallel", "--parallel-max", str(CONCURRENT), "--silent", "--cacert", ca,
         "-H", f"Authorization: Bearer {token}", "-w", "%{http_version} %{response_code} %{num_connects}\\n",
         *[arg for u in urls for arg in (u, "-o", "/dev/null")]],
        capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split() for line in done.stdout.splitlines()]
    assert len(rows) == CONCURRENT
    assert {(version, code) for version, code, _ in rows} == {("2", "200")}
    assert sum(int(connects) for _, _, connects in rows) == 1, done.stdout


def test_a_body_without_content_length_reaches_the_app_over_h2(node):
    """STOW-RS streamed as HTTP/2 DATA frames (no Content-Length): the instance is stored, not
    taken for an empty body."""
    from daemons.render.dicomweb.multipart import new_boundary, related_content_type, write_related
    from tests.render.synthetic import dataset, to_bytes

    url, ca, token, _ = node
    instance = to_bytes(dataset())
    boundary = new_boundary()
    body = b"".join(write_related([("application/dicom", instance)], boundary))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json",
               "Content-Type": related_content_type("application/dicom", boundary)}
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca), timeout=120) as client:
        stored = client.post(f"{url}/dicomweb/studies", headers=headers, content=iter([body[:100], body[100:]]))
    assert stored.http_version == "HTTP/2" and "content-length" not in stored.request.headers
    assert stored.status_code == 200, stored.text
    assert stored.json()["00081199"]["Value"], stored.text  # ReferencedSOPSequence: the instance is stored
