"""The TLS/HTTP/2 front (daemons/front.py): what browsers reach is nginx, in front of gunicorn.

The session `deployment` serves every instance through its front, as `sivr demo` does: ALPN picks
h2 on the render nodes and the web layer (and the others), many requests share one connection,
the API's errors stay JSON (the app's, gunicorn's and nginx's own), a large upload and a streamed
STOW-RS body (no Content-Length) reach the app, and the client address in the audit log is the
peer's, whatever X-Forwarded-For a client sends.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import urllib3

from daemons import front as fronts
from daemons.demo import new_user
from daemons.deployment import free_ports
from daemons.layers import get_layer
from shared.tls import create_ca, issue_server_cert
from shared.webapp import HSTS_HEADER, SECURITY_HEADERS
from tests.render.synthetic import stack

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CONCURRENT = 24


def _alpn(url: str, ca: str, offered: list[str]) -> str | None:
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(offered)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=parts.hostname) as sock:
        return sock.selected_alpn_protocol()


def _json_error(reply: httpx.Response | requests.Response, status: int) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    error = reply.json()["error"]
    assert set(error) >= {"code", "message"}
    return error


@pytest.fixture(scope="module")
def h2(deployment):
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=deployment.ca_cert), timeout=300) as client:
        yield client


@pytest.mark.parametrize("name", ["render-1-1", "web", "toplevel", "institution-1"])
def test_every_layer_negotiates_h2_by_alpn_and_still_speaks_http11(deployment, name, h2):
    url = deployment.url(name)
    assert _alpn(url, deployment.ca_cert, ["h2", "http/1.1"]) == "h2"
    assert _alpn(url, deployment.ca_cert, ["http/1.1"]) == "http/1.1"
    reply = h2.get(f"{url}/readyz")
    assert reply.http_version == "HTTP/2" and reply.status_code == 200, reply.text
    assert reply.headers["strict-transport-security"]  # the backend knows the browser came over TLS
    plain = requests.get(f"{url}/readyz", verify=deployment.ca_cert, timeout=30)  # HTTP/1.1 clients
    assert plain.status_code == 200 and plain.raw.version == 11


def test_the_web_layer_serves_the_viewer_over_h2(deployment, h2):
    page = h2.get(f"{deployment.url('web')}/")
    assert page.http_version == "HTTP/2" and page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    config = h2.get(f"{deployment.url('web')}/config.json")
    assert config.status_code == 200 and config.json()


def test_tls12_stays_aead_only_at_the_front(deployment):
    with pytest.raises(ssl.SSLError):
        parts = urlsplit(deployment.url("render-1-1"))
        context = ssl.create_default_context(cafile=deployment.ca_cert)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("AES128-SHA:AES256-SHA")
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw:
            context.wrap_socket(raw, server_hostname=parts.hostname)


def test_concurrent_image_requests_share_one_connection(deployment):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (Debian package curl)")
    client = deployment.client("physician")
    url = deployment.url("render-1-1")
    token = client.token_for(url)
    assert_one_h2_connection(curl, url, deployment.ca_cert, token)


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


def _listening_inode(port: int) -> str:
    """The inode of the socket listening on loopback `port` (/proc/net/tcp, state 0A)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def test_every_front_worker_accepts_without_blocking(deployment):
    """The CI's load test stalled for 60 s: the listening socket nginx inherits was blocking, so a
    worker that lost the race for a new connection sat in accept() with its open requests
    unanswered until another connection came (O_NONBLOCK is 0o4000 in fdinfo's flags)."""
    assert deployment.fronts
    for name, master in deployment.fronts.items():
        inode = _listening_inode(urlsplit(deployment.url(name)).port)
        workers = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
        assert workers, f"{name}: nginx has no workers"
        for pid in workers:
            fd = next(entry.name for entry in Path(f"/proc/{pid}/fd").iterdir()
                      if entry.readlink().name == f"socket:[{inode}]")
            flags = next(line for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                         if line.startswith("flags:"))
            assert int(flags.split()[1], 8) & 0o4000, f"{name}: worker {pid} accepts on a blocking socket"


def test_errors_through_the_front_stay_json(deployment, h2):
    node, top = deployment.url("render-1-1"), deployment.url("toplevel")
    unauthorised, missing = h2.get(f"{node}/api/v1/presets"), h2.get(f"{node}/no/such/path")
    assert unauthorised.http_version == missing.http_version == "HTTP/2"
    assert _json_error(unauthorised, 401)["code"]  # the app's
    assert _json_error(missing, 404)["code"] == "not_found"
    # over the 1 MiB the front reads whole (fronts.BUFFERED_BODY_MB): refused before it reaches the app
    too_big = requests.post(f"{top}/api/v1/auth/login", data=b"x" * (2 * 1024 * 1024), verify=deployment.ca_cert,
                            timeout=60, headers={"Content-Type": "application/json"})
    assert _json_error(too_big, 413)["code"] == "payload_too_large"
    # the front's own refusals carry every header the app's answers do (HSTS: the front is TLS)
    for name, value in (*SECURITY_HEADERS, HSTS_HEADER):
        assert too_big.headers.get(name) == value, name
    # a request line gunicorn refuses (over 4094 bytes), and one nginx refuses (over its 16 KiB buffers)
    for length in (5000, 20000):
        long_url = requests.get(f"{node}/api/v1/{'x' * length}", verify=deployment.ca_cert, timeout=30)
        assert _json_error(long_url, 414)["code"] == "uri_too_long"
    assert _json_error(h2.get(f"{node}{fronts.ERROR_PATH}502"), 404)["code"] == "not_found"  # internal only
    # plain HTTP sent to the HTTPS port: nginx's own refusal, as JSON
    parts = urlsplit(node)
    plain = requests.get(f"http://{parts.hostname}:{parts.port}/readyz", timeout=30)
    assert _json_error(plain, 400)["code"] == "bad_request"
    assert "content-security-policy" in plain.headers  # every refusal has the API's headers
    # methods and protocol versions nginx refuses by itself
    assert _json_error(h2.request("TRACE", f"{node}/api/v1/presets"), 405)["code"] == "method_not_allowed"
    odd_coding = requests.post(f"{node}/api/v1/presets", data=b"x", verify=deployment.ca_cert, timeout=30,
                               headers={"Transfer-Encoding": "gzip"})
    assert _json_error(odd_coding, 501)["code"] == "not_implemented"


def _answer(sock: ssl.SSLSocket) -> bytes:
    """The status line of one HTTP/1.1 answer read off `sock` (b"" when the connection was closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (chunk := sock.recv(65536)):
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return lines[0]


def test_a_post_refused_before_its_body_keeps_its_connection(deployment):
    """An HTTP/1.1 client (the console, dicomweb-client, scripts) reuses its connection after a
    refused POST; the front closed it when the backend answered before the body had come through
    (its answer said keep-alive), and the next request got no answer."""
    parts = urlsplit(deployment.url("toplevel"))
    context = ssl.create_default_context(cafile=deployment.ca_cert)
    body = b'{"audience": "https://127.0.0.1:1"}'
    head = (f"POST /api/v1/auth/token HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer not-a-token\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=parts.hostname) as sock:
        for _ in range(2):
            sock.sendall(head)
            time.sleep(0.3)  # the body comes after the backend could answer without it
            sock.sendall(body)
            assert _answer(sock) == b"HTTP/1.1 401 UNAUTHORIZED"
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        assert _answer(sock) == b"HTTP/1.1 200 OK"


def test_a_withheld_body_holds_a_refusal_only_briefly(deployment):
    """Waiting for a body that does not come holds a request thread of the backend: about a second
    (shared.webapp.UNREAD_BODY_WAIT_S), not until the front gives up on the client (60 s)."""
    parts = urlsplit(deployment.url("render-1-1"))
    context = ssl.create_default_context(cafile=deployment.ca_cert)
    head = (f"POST /api/v1/records HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer not-a-token\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as raw, \
            context.wrap_socket(raw, server_hostname=parts.hostname) as sock:
        started = time.monotonic()
        sock.sendall(head + b"x" * 10)
        assert _answer(sock) == b"HTTP/1.1 401 UNAUTHORIZED"
        assert time.monotonic() - started < 10  # about 1 s; the front would give up on the client at 60 s


@contextlib.contextmanager
def trickling(deployment, instance, count: int, start: bytes, settle_s: float = 0.0) -> Iterator[None]:
    """`count` TLS connections to `instance`'s front, each sending `start`, then (after `settle_s`)
    one more byte each and nothing after it, held open while the block runs."""
    parts = urlsplit(instance.url)
    context = ssl.create_default_context(cafile=deployment.ca_cert)
    slow = []
    try:
        for _ in range(count):
            raw = socket.create_connection((parts.hostname, parts.port), timeout=20)
            slow.append(context.wrap_socket(raw, server_hostname=parts.hostname))
            slow[-1].sendall(start)
        time.sleep(settle_s)
        for sock in slow:
            sock.sendall(b" ")  # one more byte each, the request never ending
        yield
    finally:
        for sock in slow:
            sock.close()


def test_slow_request_heads_starve_no_other_client(deployment):
    """More connections than the node has request threads, each sending a request head byte by
    byte (slowloris), while another client asks: gunicorn alone gives each of them a thread until
    its head is whole, and 30 made a node answer nobody (docs/deployment.md, "Slow clients");
    the front reads heads itself and passes only whole requests on."""
    instance = next(i for i in deployment.instances if i.name == "render-1-1")
    server = get_layer("render").load_config(instance.config)["server"]
    head = f"GET /healthz HTTP/1.1\r\nHost: {urlsplit(instance.url).netloc}\r\nX-Slow:".encode()
    with trickling(deployment, instance, server["workers"] * server["threads"] + 8, head):
        started = time.monotonic()
        answer = requests.get(f"{instance.url}/healthz", verify=deployment.ca_cert, timeout=10)
        assert answer.status_code == 200 and time.monotonic() - started < 5


def test_slow_request_bodies_starve_no_other_client(deployment):
    """More connections than the toplevel has request threads, each sending a login's head and then
    its JSON body a byte now and then: gunicorn gives each a thread from its first byte, and 24 of
    them made the toplevel answer nobody, not even /healthz, and no one could log in (attack 113).
    The front reads such a body whole before the backend sees the request."""
    instance = next(i for i in deployment.instances if i.name == "toplevel")
    server = get_layer("toplevel").load_config(instance.config)["server"]
    head = (f"POST /api/v1/auth/login HTTP/1.1\r\nHost: {urlsplit(instance.url).netloc}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode()
    # eight for each request thread: a gthread worker takes connections beyond its free threads, so
    # one worker may take most of them and leave the other free (with three, the old front passed
    # this test one run in three); the wait lets every request reach the backend, which the old
    # front passed heads on to at once
    with trickling(deployment, instance, 8 * server["workers"] * server["threads"], head, settle_s=2):
        user = deployment.users["physician"]
        started = time.monotonic()
        assert requests.get(f"{instance.url}/healthz", verify=deployment.ca_cert, timeout=10).status_code == 200
        login = requests.post(f"{instance.url}/api/v1/auth/login", verify=deployment.ca_cert, timeout=10,
                              json={"username": user["username"], "password": user["password"]})
        assert login.status_code == 200 and time.monotonic() - started < 5


def test_withheld_bodies_of_refused_uploads_starve_no_other_client(deployment):
    """Attack 114, without a token: more connections than the node has request threads, each the
    head of an upload whose small body never comes. Each refusal waited about a second for the body
    (`UNREAD_BODY_WAIT_S`), so a client that keeps sending them kept every thread waiting; now at
    most `UNREAD_BODY_WAITERS` threads of a process wait."""
    instance = next(i for i in deployment.instances if i.name == "render-1-1")
    server = get_layer("render").load_config(instance.config)["server"]
    head = (f"POST /api/v1/records HTTP/1.1\r\nHost: {urlsplit(instance.url).netloc}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n").encode()
    # eight a thread: before, about eight seconds of waits queued ahead of any other request
    with trickling(deployment, instance, 8 * server["workers"] * server["threads"], head, settle_s=0.5):
        started = time.monotonic()
        assert requests.get(f"{instance.url}/healthz", verify=deployment.ca_cert, timeout=10).status_code == 200
        assert time.monotonic() - started < 4


def test_one_user_trickling_uploads_starves_no_other_client(deployment):
    """Attack 114, with a token: one user's uploads, more than the node has request threads, each
    body sent a byte now and then. Each held a thread until its last byte, and the node answered
    nobody; now one user holds at most `limits.uploads_per_user` threads of a process (half of them
    by default), the others are refused at once (429) and the node answers everyone else."""
    instance = next(i for i in deployment.instances if i.name == "render-1-1")
    server = get_layer("render").load_config(instance.config)["server"]
    token = deployment.client("physician").token_for(instance.url)
    head = (f"POST /api/v1/records HTTP/1.1\r\nHost: {urlsplit(instance.url).netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {10 * 1024 * 1024}\r\n\r\n--b\r\n").encode()
    with trickling(deployment, instance, 4 * server["workers"] * server["threads"], head, settle_s=1):
        started = time.monotonic()
        assert requests.get(f"{instance.url}/healthz", verify=deployment.ca_cert, timeout=10).status_code == 200
        admin = deployment.client("admin")
        assert admin.call("GET", f"{instance.url}/api/v1/records", timeout=10).status_code == 200
        assert time.monotonic() - started < 5


def test_a_front_for_localhost_listens_on_loopback_only():
    front = fronts.Front("render-1-1", "localhost", 5003, 15003, "c.pem", "k.pem", 64)
    config = fronts.render_config(front).splitlines()
    listens = [line.split()[1] for line in config if line.strip().startswith("listen")]
    assert listens == ["127.0.0.1:5003"]


def test_an_oversized_body_over_h2_is_refused_as_json_with_or_without_length(deployment, tmp_path):
    """curl, not httpx: httpx's HTTP/2 client reads no answer before it has sent the whole body."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (Debian package curl)")
    body = tmp_path / "body.json"
    body.write_bytes(b"x" * (17 * 1024 * 1024))
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):  # curl then sends DATA frames without a length
        done = subprocess.run(
            [curl, "--http2", "--silent", "--cacert", deployment.ca_cert, "-H", "Content-Type: application/json",
             *extra, "--data-binary", f"@{body}", f"{deployment.url('toplevel')}/api/v1/auth/login",
             "-w", "\n%{http_version} %{response_code} %{content_type}"],
            capture_output=True, text=True, timeout=120, check=True)
        answer, status = done.stdout.rsplit("\n", 1)
        assert status == "2 413 application/json", (extra, done.stdout)
        assert json.loads(answer)["error"]["code"] == "payload_too_large"


def test_a_large_upload_streams_through_the_front_over_h2(deployment, h2):
    client, url = deployment.client("physician"), deployment.url("render-1-1")
    files = stack(AXIAL, count=80, rows=512, cols=512)  # 80 slices of 512 x 512 x 16 bit: 40 MiB
    assert sum(len(data) for _, data in files) > 40 * 1024 * 1024
    reply = h2.post(f"{url}/api/v1/records", headers={"Authorization": f"Bearer {client.token_for(url)}"},
                    files=[("files", (name, data, "application/dicom")) for name, data in files])
    assert reply.http_version == "HTTP/2" and reply.status_code in (200, 201), reply.text[:500]
    assert reply.json()["frames"] == 80


def test_a_stow_body_without_content_length_reaches_the_app(deployment, h2):
    """STOW-RS streamed as HTTP/2 DATA frames without Content-Length: nginx passes it on chunked,
    gunicorn hands it to the app whole."""
    from daemons.render.dicomweb.multipart import new_boundary, related_content_type, write_related
    from tests.render.synthetic import dataset, to_bytes

    client, url = deployment.client("physician"), deployment.url("render-1-1")
    boundary = new_boundary()
    body = b"".join(write_related([("application/dicom", to_bytes(dataset()))], boundary, "a STOW-RS body"))
    headers = {"Authorization": f"Bearer {client.token_for(url)}", "Accept": "application/dicom+json",
               "Content-Type": related_content_type("application/dicom", boundary)}
    stored = h2.post(f"{url}/dicomweb/studies", headers=headers, content=iter([body[:100], body[100:]]))
    assert stored.http_version == "HTTP/2" and "content-length" not in stored.request.headers
    assert stored.status_code == 200, stored.text
    assert stored.json()["00081199"]["Value"], stored.text  # ReferencedSOPSequence: the instance is stored


def test_the_audit_log_has_the_peer_address_not_a_forged_one(deployment):
    top = deployment.url("toplevel")
    physician = deployment.users["physician"]
    login = requests.post(f"{top}/api/v1/auth/login", json=physician, verify=deployment.ca_cert, timeout=30,
                          headers={"X-Forwarded-For": "203.0.113.7", "Forwarded": "for=203.0.113.8"})
    assert login.status_code == 200, login.text
    admin = deployment.client("admin")
    entries = admin.call("GET", f"{top}/api/v1/audit",
                         params={"username": physician["username"], "limit": 20}).json()["items"]
    assert entries
    assert {e["client_ip"] for e in entries} == {"127.0.0.1"}


def _backend_server(deployment, name: str) -> dict:
    instance = next(i for i in deployment.instances if i.name == name)
    return get_layer(instance.layer).load_config(instance.config)["server"]


def _fresh_user(deployment, username: str) -> dict[str, str]:
    institution = deployment.layout.institutions[0]["id"]
    return new_user(deployment.client("admin"), deployment.url("toplevel"), institution, username, "physician")


def _addresses_audited(deployment, username: str) -> set[str]:
    admin = deployment.client("admin")
    entries = admin.call("GET", f"{deployment.url('toplevel')}/api/v1/audit",
                         params={"username": username, "limit": 50}).json()["items"]
    return {entry["client_ip"] for entry in entries}


@pytest.mark.parametrize("secret", [None, "not-the-front-secret-at-all"])
def test_a_local_process_reaching_the_backend_cannot_forge_its_address(deployment, secret):
    """The backend listens on loopback, which every process of the host reaches: only a request
    that carries the front's secret has its X-Forwarded-For believed."""
    server = _backend_server(deployment, "toplevel")
    headers = {"X-Forwarded-For": "203.0.113.9"}
    if secret:
        headers["X-Sivr-Front"] = secret
    user = _fresh_user(deployment, f"front.forger.{'secret' if secret else 'none'}")
    reply = requests.post(f"http://{server['host']}:{server['port']}/api/v1/auth/login", json=user,
                          headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    assert _addresses_audited(deployment, user["username"]) == {"127.0.0.1"}


def _plain_answer(host: str, port: int, request: bytes) -> tuple[int, dict]:
    """Status and JSON body of one answer to `request`, sent raw over plain HTTP (a backend)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("body", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX"], ids=["chunk size", "terminator"])
def test_a_malformed_chunked_body_straight_at_the_backend_is_a_400_or_the_refusal(deployment, body):
    """The front refuses a malformed chunked body itself; a local process can send one straight to the
    backend, where gunicorn raises to whatever reads it (a view, or the read of an unread body)."""
    server, url = _backend_server(deployment, "render-1-1"), deployment.url("render-1-1")
    token = deployment.client("physician").token_for(url)
    stow = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    status, answer = _plain_answer(server["host"], server["port"], stow + body)
    assert (status, answer["error"]["code"]) == (400, "malformed_body"), answer
    anonymous = stow.replace(f"Bearer {token}".encode(), b"Bearer not-a-token")
    status, answer = _plain_answer(server["host"], server["port"], anonymous + body)
    assert (status, answer["error"]["code"]) == (401, "invalid_token"), answer


def test_the_front_passes_the_address_it_saw(deployment):
    """A client at 127.0.0.2 is audited as 127.0.0.2: the backend believes its front."""
    user = _fresh_user(deployment, "front.peer")
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=deployment.ca_cert,
                               source_address=("127.0.0.2", 0))
    reply = pool.request("POST", f"{deployment.url('toplevel')}/api/v1/auth/login", json=user, timeout=30)
    assert reply.status == 200, reply.data
    assert _addresses_audited(deployment, user["username"]) == {"127.0.0.2"}


def test_the_front_config_holding_the_proxy_secret_is_private(deployment):
    for name in deployment.fronts:
        conf = fronts.config_path(Path(deployment.layout.root), name)
        assert conf.stat().st_mode & 0o077 == 0, f"{conf} is readable by others"
        secret = Path(_backend_server(deployment, name)["proxy_secret_file"]).read_text().strip()
        assert f"X-Sivr-Front '{secret}'" in conf.read_text()


@pytest.fixture
def lone_front(tmp_path):
    """A front whose backend is not running (its port is free): what a browser gets when a daemon
    is down but its host is up."""
    create_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    issue_server_cert(tmp_path / "ca.pem", tmp_path / "ca.key", tmp_path / "server.pem", tmp_path / "server.key",
                      ["127.0.0.1"])
    port, backend = free_ports(2)
    conf = fronts.write_config(tmp_path, fronts.Front("lone", "127.0.0.1", port, backend,
                                                      "../server.pem", "../server.key", 16))
    run = tmp_path / "run"
    run.mkdir()
    process = subprocess.Popen(fronts.command(conf, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            requests.get(url, verify=str(tmp_path / "ca.pem"), timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    assert process.poll() is None, process.stdout.read() if process.stdout else ""
    yield url, str(tmp_path / "ca.pem"), process
    process.terminate()
    process.wait(timeout=20)


def test_a_backend_that_is_down_answers_json_502(lone_front):
    url, ca, _ = lone_front
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca), timeout=30) as client:
        reply = client.get(f"{url}/api/v1/node")
    assert reply.http_version == "HTTP/2"
    assert _json_error(reply, 502)["code"] == "bad_gateway"


def test_the_front_logs_no_request_line_when_its_backend_is_down(lone_front):
    """nginx logged `request: "GET /api/v1/patients?q=Mustermann...&insurance_number=..."` and the
    upstream URL at every 502: the patient search's query in the journal."""
    url, ca, process = lone_front
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca), timeout=30) as client:
        reply = client.get(f"{url}/api/v1/patients",
                           params={"q": "Mustermann, Erika", "insurance_number": "A123456789"})
    assert reply.status_code == 502
    process.terminate()
    output, _ = process.communicate(timeout=20)
    assert b"Mustermann" not in output and b"A123456789" not in output, output


def test_init_with_front_writes_configs_nginx_accepts(tmp_path):
    """What `sivr init --front` writes for IT: backends on loopback without TLS that believe one
    proxy, DICOM TLS still with the certificate, and an nginx config per instance that `nginx -t`
    accepts, its certificate paths relative to it (the folder is copied to /etc/sivr)."""
    from daemons.deployment import init_deployment
    from daemons.layers import get_layer

    layout = init_deployment(tmp_path / "d", hostnames=["::1", "localhost"], front=True)
    assert layout.front
    run = tmp_path / "run"
    run.mkdir()
    for instance in layout.instances:
        config = get_layer(instance.layer).load_config(instance.config)
        server = config["server"]
        assert (server["host"], server["tls_cert"], server["trusted_proxies"]) == ("127.0.0.1", "", 1)
        public_port = int(instance.url.rsplit(":", 1)[1])
        assert server["port"] == public_port + fronts.BACKEND_PORT_OFFSET
        if instance.layer == "render":
            assert Path(config["dicom"]["tls_cert"]).is_file()
        conf = fronts.config_path(Path(layout.root), instance.name)
        text = conf.read_text()
        assert f"listen [::1]:{public_port} ssl http2;" in text
        assert f"server 127.0.0.1:{server['port']};" in text
        assert f"client_max_body_size {min(server['max_request_mb'], fronts.BUFFERED_BODY_MB)}m;" in text
        streamed = get_layer(instance.layer).streamed_locations
        assert bool(streamed) == (instance.layer == "render")  # only a node's DICOM uploads are streamed
        for location in streamed:
            assert (f"location {location} {{\n            client_max_body_size {server['max_request_mb']}m;\n"
                    "            proxy_request_buffering off;") in text
        argv = [a for a in fronts.command(conf, run) if a not in ("-g", "daemon off;")]
        checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr


def test_a_refused_request_line_is_neither_logged_nor_echoed(deployment):
    """A patient search whose URL holds raw non-ASCII bytes (curl sends `?q=Müller` as typed) passes
    the front and is refused by gunicorn; its warning quoted the whole request line, the patient's
    name and insurance number included, into the toplevel's log, and the 400 echoed it."""
    parts = urlsplit(deployment.url("toplevel"))
    context = ssl.create_default_context(cafile=deployment.ca_cert)
    line = "GET /api/v1/patients?q=Müllerfrontlog&insurance_number=ZZ4711LOG HTTP/1.1\r\n".encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=parts.hostname) as sock:
        sock.sendall(line + f"Host: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 400"), data
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and "percent-encoded" in error["message"], error
    assert "ZZ4711LOG" not in error["message"]
    time.sleep(0.5)
    logged = deployment.log_path("toplevel").read_text(encoding="utf-8", errors="replace")
    assert "request line" in logged  # the refusal is logged, as a warning
    assert "ZZ4711LOG" not in logged and "frontlog" not in logged
