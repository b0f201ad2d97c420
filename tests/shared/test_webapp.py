"""What every layer inherits from shared.webapp: error format, CORS, headers, proxies, body limit."""

import io
import socket
import threading
import time

import pytest
from flask import g, request
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.errors import InvalidChunkSize
from gunicorn.http.unreader import SocketUnreader
from werkzeug import Request

from shared.config import ConfigError, build_config
from shared.errors import EMPTY_SEGMENT_MESSAGE
from shared.origins import serialized_origin
from shared.tokens import generate_signing_keypair
from shared.webapp import SECURITY_HEADERS, UNREAD_BODY_LIMIT, UNREAD_BODY_WAITERS, create_base_app, read_unread_body
from tests.origin_cases import CONFIGURED, SENT


@pytest.fixture
def make_app(tmp_path):
    generate_signing_keypair(tmp_path / "k.pem", tmp_path / "k.pub")

    def make(**sections):
        values = {"tokens": {"public_key": str(tmp_path / "k.pub"), "audience": "https://web.test"}, **sections}
        app = create_base_app(__name__, build_config("web", (), values))

        @app.get("/ip")
        def ip():
            return {"ip": request.remote_addr}

        @app.get("/boom")
        def boom():
            raise RuntimeError("secret internal detail")

        @app.post("/echo")
        def echo():
            return {"n": len(request.get_data())}

        @app.post("/refuse")
        def refuse():
            return {"error": {"code": "unauthorized", "message": "no"}}, 401

        @app.post("/broken")
        def broken():
            raise InvalidChunkSize(b"zz")  # as gunicorn's body does to a view reading a malformed chunk

        @app.get("/own/headers")
        def own_headers():  # a view that sets some of the defaults itself, in another letter case
            return {"ok": True}, 200, {"cache-control": "max-age=5", "x-frame-options": "SAMEORIGIN"}

        @app.get("/infinite")
        def infinite():  # a number a check let through: no answer a client's JSON.parse refuses
            return {"width_mm": float("inf")}

        @app.post("/forbid")
        def forbid():
            g.identity = object()  # as shared.auth does once the caller's token is verified
            return {"error": {"code": "forbidden", "message": "no"}}, 403

        return app.test_client()

    return make


def test_errors_are_json_with_code_and_message(make_app):
    client = make_app()
    for path, method, status, code in [("/nope", "get", 404, "not_found"),
                                       ("/ip", "post", 405, "method_not_allowed"),
                                       ("/boom", "get", 500, "internal_error"),
                                       # an empty path segment: no HTML redirect to the merged path
                                       ("/own//headers", "get", 404, "not_found")]:
        reply = getattr(client, method)(path)
        assert reply.status_code == status
        assert reply.json["error"]["code"] == code and reply.json["error"]["message"]
    assert "secret" not in client.get("/boom").get_data(as_text=True)


def test_a_path_with_an_empty_segment_is_a_404_that_says_so(make_app):
    """Every layer keeps slashes as sent; its 404 for `/own//headers` said only "not found", as for
    a path that names nothing, though the same path with one `/` exists."""
    client = make_app()
    for path in ("/own//headers", "/own/headers//", "/nope//", "/ip//?x=1"):
        error = client.get(path).json["error"]
        assert error["code"] == "not_found" and error["message"] == EMPTY_SEGMENT_MESSAGE, path
    for path in ("/nope", "/nope?next=//x"):  # slashes in the query are no path segment
        assert client.get(path).json["error"]["message"] != EMPTY_SEGMENT_MESSAGE, path


def test_body_over_the_limit_is_413_json(make_app):
    client = make_app(server={"max_request_mb": 1})
    reply = client.post("/echo", data=b"x" * (1024 * 1024 + 1))
    assert reply.status_code == 413 and reply.json["error"]["code"] == "payload_too_large"


def test_cors_only_for_configured_origins(make_app):
    client = make_app(cors={"origins": ["https://viewer.example"]})
    allowed = client.get("/healthz", headers={"Origin": "https://viewer.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
    denied = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers
    assert "Access-Control-Allow-Origin" not in make_app().get(
        "/healthz", headers={"Origin": "https://viewer.example"}).headers


def test_an_ipv6_origin_is_matched_whole_not_as_a_pattern(make_app):
    """flask-cors read `https://[::1]:8443` as a regular expression: the origin itself got no
    Access-Control-Allow-Origin, `https://1:8443` and `https://::8443` did."""
    client = make_app(cors={"origins": ["https://[::1]:8443", "https://viewer.example"]})
    for origin, allowed in (("https://[::1]:8443", True), ("https://[::1]:84430", False), ("https://1:8443", False),
                            ("https://::8443", False), ("https://VIEWER.example", True),
                            ("https://viewer.example.evil", False)):
        answer = client.options("/ip", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
        assert (answer.headers.get("Access-Control-Allow-Origin") == origin) is allowed, origin


@pytest.mark.parametrize("origin, allowed", SENT)
def test_configured_origins_match_what_browsers_send(make_app, origin, allowed):
    """A trailing `/` or the default port in `cors.origins` matched no browser's Origin here (an
    upper-case host did; in `dicomweb.cors_origins` it did not): both doors answer these cases alike
    (tests/dicomweb/test_cors.py)."""
    client = make_app(cors={"origins": CONFIGURED})
    for answer in (client.options("/ip", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}),
                   client.get("/healthz", headers={"Origin": origin})):
        assert (answer.headers.get("Access-Control-Allow-Origin") == origin) is allowed
        assert ("Access-Control-Allow-Origin" in answer.headers) is allowed


@pytest.mark.parametrize("configured, sent", [
    ("HTTPS://[::1]:8443/", "https://[::1]:8443"),
    ("http://Localhost:80", "http://localhost"),
    ("https://viewer.example:8443", "https://viewer.example:8443"),
    # no `scheme://host[:port]`: kept as written, so it matches only itself
    ("null", "null"),
    ("https://viewer.example/app", "https://viewer.example/app"),
    ("https://[::1", "https://[::1"),
])
def test_a_configured_origin_is_serialized_as_browsers_send_it(configured, sent):
    assert serialized_origin(configured) == sent


def test_answers_vary_on_origin_when_cors_is_on(make_app):
    """With one origin configured flask-cors named Origin in Vary for none: the answer made without
    an Origin (no Access-Control-Allow-Origin) could be handed from a cache to the viewer's call."""
    client = make_app(cors={"origins": ["https://viewer.example"]})
    for headers in ({}, {"Origin": "https://viewer.example"}, {"Origin": "https://evil.example"}):
        assert "Origin" in client.get("/healthz", headers=headers).headers.get("Vary", ""), headers
    assert "Vary" not in make_app().get("/healthz").headers


def test_security_headers_and_health(make_app):
    reply = make_app().get("/healthz")
    assert reply.json == {"status": "ok", "layer": "web", "version": reply.json["version"]}
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert reply.headers["X-Frame-Options"] == "DENY"
    for answer in (reply, make_app().get("/nope"), make_app().get("/boom")):
        assert answer.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_a_views_own_header_wins_over_the_default_and_none_is_doubled(make_app):
    reply = make_app().get("/own/headers", headers={"X-Forwarded-Proto": "https"})
    assert reply.headers.getlist("Cache-Control") == ["max-age=5"]
    assert reply.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert reply.headers.getlist("X-Content-Type-Options") == ["nosniff"]
    names = [name.lower() for name, _ in reply.headers]
    assert len(names) == len(set(names)), names


def test_forwarded_for_is_believed_only_behind_a_configured_proxy(make_app):
    headers = {"X-Forwarded-For": "203.0.113.9"}
    assert make_app().get("/ip", headers=headers).json["ip"] == "127.0.0.1"
    assert make_app(server={"trusted_proxies": 1}).get("/ip", headers=headers).json["ip"] == "203.0.113.9"


def test_behind_a_front_only_a_request_with_its_secret_has_forwarded_for_believed(make_app, tmp_path):
    secret = tmp_path / "front-secret"
    secret.write_text("s3cret-of-the-front-0123456789\n")
    secret.chmod(0o600)
    app = make_app(server={"trusted_proxies": 1, "proxy_secret_file": str(secret)})
    forged = {"X-Forwarded-For": "203.0.113.9"}
    assert app.get("/ip", headers=forged).json["ip"] == "127.0.0.1"
    assert app.get("/ip", headers={**forged, "X-Sivr-Front": "a guess"}).json["ip"] == "127.0.0.1"
    assert app.get("/ip", headers={**forged, "X-Sivr-Front": "s3cret-of-the-front-0123456789"}).json["ip"] == \
        "203.0.113.9"


@pytest.mark.parametrize("content", [None, "", "short", "a secret every local user may read"])
def test_a_missing_empty_or_readable_proxy_secret_stops_the_start(make_app, tmp_path, content):
    secret = tmp_path / "front-secret"
    if content is not None:
        secret.write_text(content)
        secret.chmod(0o644 if len(content) > 16 else 0o600)
    with pytest.raises(ConfigError, match="proxy_secret_file"):
        make_app(server={"trusted_proxies": 1, "proxy_secret_file": str(secret)})


def test_service_urls_must_be_tls_except_on_loopback():
    from shared.errors import ApiError
    from shared.validation import parse_service_url

    assert parse_service_url("https://node.example.org:5003/") == "https://node.example.org:5003"
    assert parse_service_url("http://127.0.0.1:5003") == "http://127.0.0.1:5003"
    for bad in ["http://node.example.org", "https://user:pw@node.example.org", "ftp://x",
                "https://node.example.org/?a=1", "https://[::1", "https://x:0", "https://x\n.org", ""]:
        with pytest.raises(ApiError):
            parse_service_url(bad)


def test_only_layers_that_verify_tokens_need_the_public_key():
    from shared.webapp import create_base_app

    with pytest.raises(ValueError, match="tokens.public_key"):
        create_base_app(__name__, build_config("render", ()))
    static_only = create_base_app(__name__, build_config("web", ()), verifies_tokens=False)
    assert static_only.test_client().get("/healthz").status_code == 200


def test_a_layer_accepts_the_extra_public_keys_of_a_rotation(tmp_path):
    """The config's `tokens.extra_public_keys` (relative to the config file) are accepted besides
    `tokens.public_key`; a token of a key in neither is refused with 401."""
    from shared.auth import require_auth
    from shared.config import load_config
    from shared.tokens import TokenIssuer, load_private_key

    keys = tmp_path / "keys"
    for name in ("current", "old", "stranger"):
        generate_signing_keypair(keys / f"{name}.pem", keys / f"{name}.pub")
    config_file = tmp_path / "institution.toml"
    config_file.write_text('[tokens]\npublic_key = "keys/current.pub"\nextra_public_keys = ["keys/old.pub"]\n'
                           'audience = "https://inst.test"\n')
    config = load_config(config_file, "institution", ())
    assert config["tokens"]["extra_public_keys"] == [str(keys / "old.pub")]
    app = create_base_app(__name__, config)

    @app.get("/who")
    @require_auth()
    def who():
        return {"ok": True}

    client = app.test_client()
    for name, status in (("current", 200), ("old", 200), ("stranger", 401)):
        token, _ = TokenIssuer(load_private_key(keys / f"{name}.pem"), "sivr-toplevel", "https://inst.test", 60).issue(
            "u", "alice", "physician", "i")
        reply = client.get("/who", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == status, (name, reply.json)
    assert "does not accept" in reply.json["error"]["message"]


def test_an_unreadable_extra_public_key_names_its_config_key(tmp_path):
    generate_signing_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    (tmp_path / "not-a-key.pub").write_text("hello")
    for extra, reason in (("missing.pub", "No such file"), ("not-a-key.pub", "")):
        values = {"tokens": {"public_key": str(tmp_path / "k.pub"), "extra_public_keys": [str(tmp_path / extra)],
                             "audience": "https://inst.test"}}
        with pytest.raises(ValueError, match=f"tokens.extra_public_keys: cannot use .*{extra}.*{reason}"):
            create_base_app(__name__, build_config("institution", (), values))


def test_refusals_made_before_the_app_carry_its_security_headers():
    """gunicorn's own refusals (oversized headers, request line) lacked X-Frame-Options and
    Referrer-Policy that every answer of the app carries."""
    from daemons.gunicorn_worker import json_error_bytes

    head = json_error_bytes(431, "Request Header Fields Too Large", "").split(b"\r\n\r\n")[0].decode()
    for name, value in SECURITY_HEADERS:
        assert f"\r\n{name}: {value}" in head, name


@pytest.mark.parametrize("size, chunked, read", [
    (100, False, 100),  # a refused login-sized body: read before the answer goes out
    (UNREAD_BODY_LIMIT, False, UNREAD_BODY_LIMIT),
    (UNREAD_BODY_LIMIT + 1, False, 0),  # a refused upload: left, its connection ends
    (100, True, 100),  # chunked: read up to the limit, as far as it goes
    (3 * UNREAD_BODY_LIMIT, True, UNREAD_BODY_LIMIT),
])
def test_a_body_the_app_did_not_read_is_read_before_the_answer_when_small(make_app, size, chunked, read):
    """The nginx front closes a client's keep-alive connection after an answer that came while it
    was still reading the body (the end-to-end case: tests/test_front.py)."""
    body = io.BytesIO(b"x" * size)
    headers = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)}
    terminated = {"wsgi.input_terminated": True} if chunked else {}  # as gunicorn says of a chunked body
    reply = make_app().post("/refuse", input_stream=body, headers=headers, environ_overrides=terminated)
    assert reply.status_code == 401
    assert body.tell() == read


def test_no_more_than_the_body_is_read(make_app):
    body = io.BytesIO(b"x" * 100 + b"the next request on the connection")
    reply = make_app().post("/refuse", input_stream=body, environ_overrides={"CONTENT_LENGTH": "100"})
    assert reply.status_code == 401
    assert body.tell() == 100


def test_an_authenticated_callers_refused_body_is_read_whole(make_app):
    """Its next request on the connection works however large the refused upload was (the end-to-end
    case: tests/render/test_isolation.py)."""
    size = 40 * UNREAD_BODY_LIMIT
    body = io.BytesIO(b"x" * size)
    assert make_app().post("/forbid", input_stream=body).status_code == 403
    assert body.tell() == size
    over = io.BytesIO(b"x" * (2 * 1024 * 1024))  # over the app's MAX_CONTENT_LENGTH: left, the connection ends
    assert make_app(server={"max_request_mb": 1}).post("/forbid", input_stream=over).status_code == 403
    assert over.tell() == 0


def test_a_body_gunicorn_cannot_read_is_a_400(make_app):
    reply = make_app().post("/broken", data=b"x")
    assert reply.status_code == 400 and reply.json["error"]["code"] == "malformed_body", reply.json


def _gunicorn_request(sock: socket.socket, length: int) -> Request:
    """A request whose body gunicorn reads off `sock`, as its worker builds the WSGI environ."""
    return Request({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(length), "wsgi.input_terminated": True,
                    "wsgi.input": Body(LengthReader(SocketUnreader(sock), length)), "gunicorn.socket": sock})


def test_no_answer_carries_nan_or_infinity(make_app):
    reply = make_app().get("/infinite")
    assert reply.status_code == 500 and reply.json["error"]["code"] == "internal_error"
    assert b"Infinity" not in reply.get_data()


def test_only_so_many_threads_wait_for_withheld_bodies_at_once():
    """Attack 114 (the end-to-end case: tests/test_front.py): every wait holds a request thread."""
    pairs = [socket.socketpair() for _ in range(UNREAD_BODY_WAITERS + 1)]
    try:
        waiting = [threading.Thread(target=read_unread_body, args=(_gunicorn_request(served, 1000),),
                                    kwargs={"wait_s": 3.0}) for served, _ in pairs[:UNREAD_BODY_WAITERS]]
        for thread in waiting:
            thread.start()
        time.sleep(0.3)  # each holds its place, its body withheld
        served, client = pairs[-1]
        client.sendall(b"x" * 1000)  # even a body that is here: no place left to read it
        started = time.monotonic()
        read_unread_body(_gunicorn_request(served, 1000), wait_s=3.0)
        assert time.monotonic() - started < 1
        assert served.recv(2000, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"x" * 1000  # left unread
        for thread in waiting:
            thread.join(10)
        read_unread_body(_gunicorn_request(served, 1000), wait_s=3.0)  # the places are free again
        with pytest.raises(BlockingIOError):  # this time the body was read
            served.recv(1, socket.MSG_DONTWAIT)
    finally:
        for pair in pairs:
            for end in pair:
                end.close()


def test_a_withheld_body_is_waited_for_only_briefly_and_the_socket_is_left_blocking():
    served, client = socket.socketpair()
    with served, client:
        client.sendall(b"x" * 10)  # of 1,000: the rest never comes
        started = time.monotonic()
        read_unread_body(_gunicorn_request(served, 1000), wait_s=0.2)
        assert time.monotonic() - started < 5  # not until the client gives up
        assert served.gettimeout() is None


def test_a_body_that_comes_is_read_whole_off_gunicorns_socket():
    served, client = socket.socketpair()
    with served, client:
        client.sendall(b"x" * 5000)
        request = _gunicorn_request(served, 5000)
        read_unread_body(request)
        assert request.input_stream.reader.length == 0  # gunicorn's count of the body still to read


def _with_refusing_blueprint(client):
    """A blueprint whose own hook refuses every request without a token, as the toplevel's audit log does."""
    from flask import Blueprint

    from shared.errors import ApiError

    bp = Blueprint("guarded", __name__)
    bp.before_request(lambda: (_ for _ in ()).throw(ApiError(401, "missing_token", "log in first")))
    bp.add_url_rule("/guarded", "guarded", lambda: {"ok": True}, methods=["GET", "POST"])
    bp.add_url_rule("/guarded/", "blank", lambda: {"ok": True}, methods=["PUT"])
    client.application.register_blueprint(bp)
    return client


def test_a_preflight_is_answered_before_a_blueprints_hook(make_app):
    """A blueprint's hook ran for the automatic OPTIONS answer: a 401 to every preflight of its routes."""
    client = _with_refusing_blueprint(make_app(cors={"origins": ["https://viewer.example"]}))
    preflight = client.options("/guarded", headers={"Origin": "https://viewer.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["X-Request-Id"]  # the app's own hooks still ran
    assert client.post("/guarded").status_code == 401


def test_a_routing_redirect_names_the_path_only(make_app):
    """werkzeug wrote the request's Host into a 308's Location: any host the client named."""
    client = _with_refusing_blueprint(make_app())
    for host in ("evil.example", "evil.example:443", "[::1]:1"):
        answer = client.put("/guarded?a=1", headers={"Host": host})
        assert answer.status_code == 308
        assert answer.headers["Location"] == "/guarded/?a=1"
    answer = client.put("/guarded", environ_overrides={"SCRIPT_NAME": "//evil.example"})
    assert answer.headers["Location"].startswith("/") and not answer.headers["Location"].startswith("//")
