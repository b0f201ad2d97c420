"""The gunicorn worker every layer runs: gthread, answering gunicorn's own errors as JSON.

Some requests never reach Flask: gunicorn refuses oversized header fields (431), an overlong
request line (414) or a malformed request (400) while parsing, and answers with an HTML page.
(The same bodies answer what the nginx front refuses itself, daemons/front.py.)
Clients of SIVR expect `{"error": {"code", "message"}}` and the API's security headers on every
answer, so this worker replaces the one function gunicorn's `Worker.handle_error` writes those
answers with (`gunicorn.util.write_error`), in the worker process only.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

from shared.webapp import SECURITY_HEADERS

CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
    505: "http_version_not_supported",
}
# The request-size limits of gunicorn, which `sivr serve` runs (its defaults, passed to it explicitly).
LIMIT_REQUEST_LINE = 4094
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190
MESSAGES = {
    414: "the request line (method and URL) is longer than this server accepts",
    431: "the request's header fields are larger or more numerous than this server accepts",
    500: "the server failed; the error was logged",
    # answered by the TLS/HTTP/2 front (daemons/front.py) when its instance does not
    413: "the request body is larger than this server accepts",
    502: "the server behind this address is not running or not answering",
    503: "the server behind this address is not available",
    504: "the server behind this address did not answer in time",
}


def json_error_body(status: int, reason: str, detail: str) -> bytes:
    """The API's `{"error": {"code", "message"}}` for a refusal made before the app runs."""
    message = MESSAGES.get(status) or f"the request was refused: {detail or reason}"
    return json.dumps({"error": {"code": CODES.get(status, "http_error"), "message": message}}).encode()


ERROR_HEADERS = (
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    *SECURITY_HEADERS,
)


def json_error_bytes(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 error response in the API's JSON format, closing the connection."""
    body = json_error_body(status, reason, detail)
    fields = [("Connection", "close"), ERROR_HEADERS[0], ("Content-Length", str(len(body))), *ERROR_HEADERS[1:]]
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for `gunicorn.util.write_error`, same signature."""
    util.write_nonblock(sock, json_error_bytes(status_int, reason, mesg))


class ThreadWorker(GthreadWorker):
    """gunicorn's gthread worker whose parse and limit errors are JSON (`--worker-class` of `sivr serve`)."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
