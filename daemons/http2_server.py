"""`sivr serve` with `server.http2 = true`: one process speaking HTTP/2 (and HTTP/1.1) over TLS.

Browsers open at most six HTTP/1.1 connections per server, so a viewer's many small image requests
queue behind each other on a slow link; over HTTP/2 they share one connection, multiplexed, with
one TLS handshake. gunicorn speaks HTTP/1.1 only, so this path serves the layer's WSGI app with
hypercorn (h2 for HTTP/2, ALPN over the same TLS settings: TLS >= 1.2, `shared.tls.TLS12_CIPHERS`),
in ONE process whose request threads share the app (a render node keeps one decoded copy of each
record). The socket is bound here, before the app is built, and systemd hears READY once the app
(and a render node's kernel warm-up) is ready, from this main process as the units expect.

The request-size limits are gunicorn's (`daemons.gunicorn_worker`), refused with the same JSON
answers (`RequestLimits`). Known differences from the gunicorn path (docs/deployment.md): a request
body is read whole into memory before the app sees it (bounded by the app's MAX_CONTENT_LENGTH),
and a header block beyond hypercorn's own parser limit (HEADER_BYTES) gets hypercorn's bare 400.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from daemons.gunicorn_worker import (
    ERROR_HEADERS,
    LIMIT_REQUEST_FIELD_SIZE,
    LIMIT_REQUEST_FIELDS,
    LIMIT_REQUEST_LINE,
    json_error_body,
)
from daemons.layers import get_layer
from shared.tls import TLS12_CIPHERS

DEFAULT_BODY_BYTES = 16 * 1024 * 1024
GRACE_S = 10.0  # as gunicorn's --graceful-timeout in daemons/cli.py
# hypercorn's own bound on an HTTP/1.1 header block: room for what gunicorn's limits allow, so
# that RequestLimits, not hypercorn, refuses (with the API's JSON) nearly everything over them
HEADER_BYTES = 256 * 1024
REASONS = {414: "Request-URI Too Long", 431: "Request Header Fields Too Large"}


class RequestLimits:
    """WSGI middleware: gunicorn's request-line and header limits, answered as the API's JSON.

    It also hands hypercorn at least one body chunk per response: hypercorn (0.18) sends the
    status line with the first chunk, so an empty body (a CORS preflight, a 304) would fail.
    """

    def __init__(self, app):
        self.app = app

    @staticmethod
    def refusal(environ: dict) -> int | None:
        target = len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", "")) + 1
        if target + len(environ.get("REQUEST_METHOD", "")) + len(" HTTP/1.1") + 1 > LIMIT_REQUEST_LINE:
            return 414
        fields = [(k, v) for k, v in environ.items()
                  if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")]
        too_long = any(len(k) - 3 + len(v) > LIMIT_REQUEST_FIELD_SIZE for k, v in fields)
        if len(fields) > LIMIT_REQUEST_FIELDS or too_long:
            return 431
        return None

    def __call__(self, environ: dict, start_response):
        # hypercorn hands over the whole body (read before the app runs): a body sent without
        # Content-Length (HTTP/2 DATA frames, chunked uploads) is complete, and the app may read it all
        environ["wsgi.input_terminated"] = True
        status = self.refusal(environ)
        if status is None:
            return _at_least_one_chunk(self.app(environ, start_response))
        body = json_error_body(status, REASONS[status], "")
        start_response(f"{status} {REASONS[status]}", [*ERROR_HEADERS, ("Content-Length", str(len(body)))])
        return [body]


def _at_least_one_chunk(body: Iterable[bytes]) -> Iterator[bytes]:
    sent = False
    try:
        for chunk in body:
            sent = True
            yield chunk
        if not sent:
            yield b""
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def listen_socket(host: str, port: int) -> socket.socket:
    """The layer's listening TCP socket (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def notify_ready() -> None:
    """Tell systemd (Type=notify) the layer serves; nothing when not started by systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1\nSTATUS=serving HTTP/2 and HTTP/1.1", address)


def hypercorn_config(config, sock: socket.socket, max_body: int) -> HypercornConfig:
    """hypercorn's settings from the layer's `server` and `log` sections."""
    server = config["server"]
    settings = HypercornConfig()
    settings.bind = [f"fd://{sock.fileno()}"]
    settings.keep_alive_timeout = float(server["keepalive_s"])
    settings.graceful_timeout = GRACE_S
    settings.h11_max_incomplete_size = HEADER_BYTES
    settings.wsgi_max_body_size = max_body
    # the app writes the one access line (JSON, the route without ids: docs/deployment.md "Logs"):
    # hypercorn's own would add the raw path, the Referer and the User-Agent in plain text
    settings.accesslog = None
    settings.errorlog = logging.getLogger("hypercorn.error")  # through the JSON root handler
    settings.loglevel = config["log"]["level"].upper()
    if server["tls_cert"]:
        settings.certfile, settings.keyfile = server["tls_cert"], server["tls_key"]
        settings.ciphers = TLS12_CIPHERS
    return settings


def run(layer_name: str, config, listen_fd: int | None = None) -> int:
    """Serve one layer until SIGTERM or SIGINT, then stop within GRACE_S.

    `listen_fd`: an inherited socket already bound to the config's address (`sivr serve
    --listen-fd`, as `sivr demo` and the tests start layers without a port race).
    """
    server = config["server"]
    sock = socket.socket(fileno=listen_fd) if listen_fd is not None else listen_socket(server["host"], server["port"])
    layer = get_layer(layer_name)
    app = layer.create_app(config)
    settings = hypercorn_config(config, sock, app.config.get("MAX_CONTENT_LENGTH") or DEFAULT_BODY_BYTES)
    logging.getLogger(__name__).info("sivr-%s: HTTP/2 on %s:%s", layer_name, server["host"], server["port"])

    async def main() -> None:
        # The WSGI app runs in the loop's default executor: size it like gunicorn's threads.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max(1, int(server["threads"])), thread_name_prefix=f"sivr-{layer_name}"))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        serving = asyncio.create_task(serve(RequestLimits(app), settings, mode="wsgi", shutdown_trigger=stop.wait))
        notify_ready()
        await stop.wait()
        # hypercorn waits for every client connection to close (a browser's idle keep-alive one
        # too); like gunicorn's --graceful-timeout, give requests GRACE_S, then stop regardless
        # (the process then exits normally, so the app's exit handlers still write their data).
        await asyncio.wait([serving], timeout=GRACE_S)  # not wait_for: no cancelling, no waiting for it

    # Not asyncio.run: it would cancel the connections still open after the grace and wait for
    # each one's TLS shutdown (up to 30 s for a client that does not answer); the process exits
    # instead, which closes them.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0
