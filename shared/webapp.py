"""What every layer's Flask app has in common, built inside each `create_app`.

Error format, CORS for configured origins only, token verification with the public key, a body
size limit, security headers, request ids and JSON logs, `/healthz`, `/readyz` and `/metrics`, and
the audit export — so no daemon can forget one of them.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import threading
import time
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Request, Response, g, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, RequestRedirect

from shared.audit_export import install_audit_export
from shared.auth import install_verifier
from shared.config import Config, ConfigError
from shared.errors import log_failure, register_error_handlers
from shared.files import require_owner_only
from shared.health import add_readiness_check, files_check, install_probes
from shared.logs import REQUEST_ID_HEADER, configure_logging, install_request_logging
from shared.metrics import install_metrics
from shared.origins import serialized_origin
from shared.tokens import MAX_EXCHANGED_TTL_S, TokenVerifier, load_public_key, normalize_audience

#: JSON and images are never documents to render or frame: a browser that opens an API answer
#: directly runs nothing from it and no page may embed it. The web layer sets its own policy.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
#: The headers every answer of the API carries, the app's and the refusals made before it runs
#: (gunicorn's, daemons.gunicorn_worker; the nginx front's, daemons.front) alike.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", API_CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
)
#: Over TLS only (here, or at the front that forwarded the request).
HSTS_HEADER = ("Strict-Transport-Security", "max-age=31536000")


def add_missing_headers(response: Response, headers: list[tuple[str, str]]) -> None:
    """Add each header the response does not have yet (a view's own value wins): its names read
    once, where werkzeug's `setdefault` scans the whole list twice per header, on every request."""
    present = {name.lower() for name, _ in response.headers}
    for name, value in headers:
        if name.lower() not in present:
            response.headers.add(name, value)


def verifier_from_config(config: Config) -> TokenVerifier:
    tokens = config["tokens"]
    if not tokens["public_key"]:
        raise ValueError(f"{config.source}: tokens.public_key must name the toplevel's public key file")
    named = [("public_key", tokens["public_key"])] + [("extra_public_keys", p) for p in tokens["extra_public_keys"]]
    keys = []
    for name, path in named:
        try:
            keys.append(load_public_key(path))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{config.source}: tokens.{name}: cannot use {path}: {exc}") from exc
    return TokenVerifier(keys, tokens["issuer"], layer_audience(config), tokens["leeway_s"],
                         max_lifetime_s=None if config.layer == "toplevel" else MAX_EXCHANGED_TTL_S)


def layer_audience(config: Config) -> str:
    """This layer's own audience (`tokens.audience`), normalized; start-up fails without a valid one.

    Every layer needs its own: a token is accepted only by the server whose URL it names. Only the
    toplevel accepts session tokens; the others accept exchanged tokens, which live at most
    `MAX_EXCHANGED_TTL_S` (the bound on how long a revoked session keeps working there).
    """
    try:
        return normalize_audience(config["tokens"]["audience"])
    except ValueError as exc:
        raise ValueError(f"{config.source}: tokens.audience must be this server's public base URL "
                         f"(as clients call it, e.g. https://host:port): {exc}") from exc


#: The header a front (daemons/front.py) proves itself with to its loopback backend.
PROXY_SECRET_HEADER = "X-Sivr-Front"
_PROXY_SECRET_ENVIRON = "HTTP_" + PROXY_SECRET_HEADER.upper().replace("-", "_")


def read_proxy_secret(config: Config) -> str:
    """The secret of `server.proxy_secret_file`; a missing or empty file stops the start, naming the
    config, the key and the file (`sivr serve` reads it before serving, the app again when built)."""
    path = config["server"]["proxy_secret_file"]
    try:
        require_owner_only(path, f"{config.source}: server.proxy_secret_file")
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{config.source}: server.proxy_secret_file {path}: {reason}") from exc
    if len(secret) < 16:
        raise ConfigError(f"{config.source}: server.proxy_secret_file {path} holds no secret of at least "
                          "16 characters")
    return secret


class FromProxyOnly:
    """Believe X-Forwarded-For/-Proto only on requests that carry the front's secret.

    A backend behind a front listens on loopback, which every process of the host reaches: without
    the secret, any of them could name itself another client address in the audit log or the login
    throttle. Requests without it are served with the peer's own address; the header is removed
    either way, so the application never sees the secret.
    """

    def __init__(self, app: Any, trusting: Any, secret: str):
        self.app, self.trusting, self._secret = app, trusting, secret.encode()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        sent = environ.pop(_PROXY_SECRET_ENVIRON, "")
        if hmac.compare_digest(sent.encode("latin-1", "replace"), self._secret):
            return self.trusting(environ, start_response)
        return self.app(environ, start_response)


#: The most of a request body that the app left unread (a POST refused before its body was needed,
#: such as a 401) and that is read before the answer goes out, and how long that may take. The nginx
#: front streams a node's DICOM uploads to the backend as they come (`proxy_request_buffering off`
#: there; it reads every other body whole first, daemons/front.py): an answer that
#: reaches it while it is still reading the client's body makes it close the client's connection
#: after that answer, which said keep-alive, so an HTTP/1.1 client's next request on it fails with no
#: answer (measured: 25 of 300 refused POSTs). A client sends its body right behind its headers; a
#: larger body, or one that does not come within the wait, still ends its connection.
#: An authenticated caller's refused body is read whole (`_read_unread_body`).
UNREAD_BODY_LIMIT = 64 * 1024
UNREAD_BODY_WAIT_S = 1.0
#: How many request threads of a process may wait for unread bodies at once. Each wait holds its
#: thread after the answer, for up to a second or, for an authenticated caller, a whole body: a
#: client with requests that are refused at once and bodies it withholds (no token needed) had every
#: thread of a node waiting on them (attack 114). Beyond this, a refused body is not waited for and
#: its connection ends after the answer.
UNREAD_BODY_WAITERS = 2
_unread_body_waiters = threading.BoundedSemaphore(UNREAD_BODY_WAITERS)


def read_unread_body(request: Request, limit: int = UNREAD_BODY_LIMIT,
                     wait_s: float | None = UNREAD_BODY_WAIT_S) -> None:
    """Read and drop what is left of `request`'s body when it is at most `limit` bytes.

    Read through `request.stream`, so never past the body's end whatever the view read of it. When
    gunicorn serves it (`gunicorn.socket`), each wait for more bytes lasts at most what is left of
    `wait_s` and no read starts after it: a client that withholds its body holds a request thread
    about `wait_s`. One that trickles it byte by byte can hold it longer, as it can any request
    whose body a view reads (the front gives up on a client silent for 60 s). At most
    `UNREAD_BODY_WAITERS` threads of a process wait so at once; others read nothing.
    """
    chunked = request.headers.get("Transfer-Encoding", "").lower() == "chunked"
    if not chunked and not 0 < (request.content_length or 0) <= limit:
        return
    if not _unread_body_waiters.acquire(blocking=False):
        return
    try:
        _read_and_drop(request, limit, wait_s)
    finally:
        _unread_body_waiters.release()


def _read_and_drop(request: Request, limit: int, wait_s: float | None) -> None:
    sock = request.environ.get("gunicorn.socket") if wait_s is not None else None
    deadline = time.monotonic() + (wait_s or 0.0)
    before = sock.gettimeout() if sock is not None else None
    left = limit
    try:
        while left > 0:
            if sock is not None:
                if (remaining := deadline - time.monotonic()) <= 0:
                    return
                sock.settimeout(remaining)
            if not (chunk := request.stream.read(min(left, 1 << 16))):
                return
            left -= len(chunk)
    # timed out, the client went away, a malformed chunk (gunicorn's ParseException), over the body limit
    except (OSError, ParseException, HTTPException):
        pass
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(before)


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, keys in the order the views built them, and never NaN or Infinity.

    Python's json module writes a non-finite float as `NaN` or `Infinity`, which is not JSON: a
    browser's JSON.parse refuses the whole answer, and a record whose file held a spacing of 1e308
    made a patient's whole record list unreadable that way. A non-finite number reaching an answer
    is a bug of the check that let it through: it now fails loudly (a logged 500) where it was a
    200 no client could read."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


class AsciiIntegerConverter(IntegerConverter):
    """`<int:...>` in every route, of ASCII digits only (as `shared.validation.ascii_int`): werkzeug's
    `\\d+` also matches other scripts' digits, which `int()` reads, so `/frames/١` served frame 1."""

    regex = r"[0-9]+"


class ApiFlask(Flask):
    """The Flask app of every layer (`create_base_app`), with two rules of its own.

    A preflight answers before any blueprint's hook: Flask's automatic OPTIONS answer (which
    flask-cors completes) never runs a view, but it ran the hooks of the blueprint the path belongs
    to, and the toplevel's audit blueprint checks the caller's session there, so
    `OPTIONS /api/v1/audit` was a 401 that made every browser call of the log from a configured
    origin fail, where every other route answered the preflight. A browser never sends credentials
    with a preflight (Fetch standard), so nothing a blueprint checks applies to it. The app's own
    hooks still run: request ids, and the DICOMweb root's own preflight (`daemons.render.dicomweb.cors`).

    A redirect made by routing (werkzeug's 308 to a rule's trailing `/`) names the path only:
    werkzeug wrote the absolute URL with the request's Host header, so a request sent with
    `Host: evil.example` got `Location: https://evil.example/...`, a redirect to any host the
    client named, which a cache in between would hand to others.

    And what Flask logs itself, an exception of an after-request hook, is logged by the one rule
    (`shared.errors.log_failure`): a database's SQLSTATE in, its message's row values out.
    """

    def preprocess_request(self) -> Any:
        # Flask's own test for its automatic answer (`dispatch_request`); no rule matched: None
        if request.method == "OPTIONS" and getattr(request.url_rule, "provide_automatic_options", False):
            for before_func in self.before_request_funcs.get(None, ()):
                answer = self.ensure_sync(before_func)()
                if answer is not None:
                    return answer
            return None  # the dispatch answers it (`make_default_options_response`)
        return super().preprocess_request()

    def log_exception(self, exc_info: Any) -> None:
        """What an after-request hook raised (Flask logs it, then answers a 500 or, for a database
        error, `shared.errors` a 503) is logged as the error handlers log theirs (`log_failure`)."""
        log_failure(f"Exception on {request.path} [{request.method}]", exc_info[1])

    def raise_routing_exception(self, request: Request) -> NoReturn:
        redirect = request.routing_exception
        if isinstance(redirect, RequestRedirect):
            target = urlsplit(redirect.new_url)
            # one leading `/`: `//host/...` is a reference to another host
            raise RequestRedirect(urlunsplit(("", "", "/" + target.path.lstrip("/"), target.query, "")))
        super().raise_routing_exception(request)


def exact_origin(origin: str) -> re.Pattern[str]:
    """A configured origin as both CORS doors match a request's Origin (flask-cors here, for
    `cors.origins`; the DICOMweb root's own, `daemons.render.dicomweb.cors`, for
    `dicomweb.cors_origins`): its `serialized_origin`, the whole string, in any ASCII letter case.

    flask-cors reads a string holding `[`, `]`, `*` or `?` as a regular expression matched at its
    start only, so the IPv6 origin `https://[::1]:8443` matched neither itself nor only itself but
    `https://1:8443` and any longer port; the origins are explicit (docs/API.md), never patterns.
    ASCII only: Unicode case folding would let `ſ` (U+017F) stand for `s`, which no browser sends.
    """
    return re.compile(re.escape(serialized_origin(origin)) + r"\Z", re.IGNORECASE | re.ASCII)


def create_base_app(import_name: str, config: Config, verifies_tokens: bool = True,
                    expose_headers: tuple[str, ...] = ()) -> Flask:
    """A Flask app with the behaviour every SIVR layer shares; the caller adds its blueprints.

    Layers with authenticated endpoints need `tokens.public_key`; the web layer, which serves
    only the static client, passes `verifies_tokens=False` and runs without it. `expose_headers`:
    the layer's own response headers a page of a configured origin may read (CORS), beside those
    every layer's answers may carry.
    """
    app = ApiFlask(import_name)
    app.url_map.converters["int"] = AsciiIntegerConverter
    # A path with an empty segment (`/dicomweb//studies`) is no resource: werkzeug would answer a
    # 308 to the merged path with an HTML body, which never reaches the JSON error handlers; the
    # 404 says why (`shared.errors.EMPTY_SEGMENT_MESSAGE`)
    app.url_map.merge_slashes = False
    proxies = config["server"]["trusted_proxies"]
    if proxies:
        # the client address in the audit log and the login throttle is then the proxy's X-Forwarded-For
        trusting = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
        secret_file = config["server"]["proxy_secret_file"]
        app.wsgi_app = (  # type: ignore[method-assign]
            FromProxyOnly(app.wsgi_app, trusting, read_proxy_secret(config)) if secret_file else trusting)
    app.config["SIVR"] = config
    app.config["MAX_CONTENT_LENGTH"] = config["server"]["max_request_mb"] * 1024 * 1024
    app.json = StrictJSONProvider(app)
    configure_logging(config.layer, config["log"]["level"])
    install_request_logging(app)
    install_metrics(app, config)
    install_audit_export(app, config)
    register_error_handlers(app)
    install_probes(app, config.layer)
    if verifies_tokens:
        install_verifier(app, verifier_from_config(config))
        tokens = config["tokens"]
        add_readiness_check(app, "token_keys", files_check([tokens["public_key"], *tokens["extra_public_keys"]],
                                                           "token public key file(s)"))
    if config["cors"]["origins"]:
        CORS(
            app,
            origins=[exact_origin(origin) for origin in config["cors"]["origins"]],
            allow_headers=["Authorization", "Content-Type", "If-None-Match", REQUEST_ID_HEADER],
            expose_headers=["ETag", "Retry-After", "Content-Length", REQUEST_ID_HEADER, *expose_headers],
            methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            max_age=600,
            vary_header=False,  # `_vary_on_origin` names Origin on every answer, once
        )

        @app.after_request
        def _vary_on_origin(response: Response) -> Response:
            """Whether an answer carries Access-Control-Allow-Origin depends on the request's Origin,
            also with one origin configured (flask-cors says so only for several): a cache must not
            hand the answer made without it to a cross-origin call (Fetch standard, CORS and caching)."""
            response.vary.add("Origin")
            return response

    @app.after_request
    def _read_unread_body(response: Response) -> Response:
        """An authenticated caller may send a body this large anyway: after a refused upload (403,
        422...) its connection stays usable however large the body was (gunicorn itself drains at
        most 64 KiB, then closes); not after a 5xx (503 busy: reading it all would add load), nor
        after a 429 (a bound on what one caller holds at once, which reading its body would undo).
        Anyone else's is read only when small and prompt. Runs before the access log's hook, whose
        duration includes it."""
        if 400 <= response.status_code < 500 and response.status_code != 429 and g.get("identity") is not None:
            read_unread_body(request, app.config["MAX_CONTENT_LENGTH"], wait_s=None)
        else:
            read_unread_body(request)
        return response

    @app.after_request
    def _security_headers(response: Response) -> Response:
        wanted = list(SECURITY_HEADERS)
        if request.is_secure:  # TLS here, or at the front that forwarded it (X-Forwarded-Proto)
            wanted.append(HSTS_HEADER)
        if response.mimetype == "application/json":
            wanted.append(("Cache-Control", "no-store"))
        add_missing_headers(response, wanted)
        return response

    return app
