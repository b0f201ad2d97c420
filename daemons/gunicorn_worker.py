"""The gunicorn worker every layer runs: gthread, answering gunicorn's own errors as JSON, and
keeping a busy keep-alive connection on its thread.

Some requests never reach Flask: gunicorn refuses oversized header fields (431), an overlong
request line (414) or a malformed request (400) while parsing, and answers with an HTML page.
(The same bodies answer what the nginx front refuses itself, daemons/front.py.)
Clients of SIVR expect `{"error": {"code", "message"}}` and the API's security headers on every
answer, so this worker replaces the one function gunicorn's `Worker.handle_error` writes those
answers with (`gunicorn.util.write_error`), in the worker process only. A refused request line is
neither logged nor echoed (`ThreadWorker.handle_error`): it holds the URL's query, a patient search's
name and insurance number.

gunicorn's gthread worker hands a keep-alive connection back to its main thread after every
request: the request thread queues a callback through a pipe, the main thread re-registers the
socket with its poller, waits for it to become readable, and submits it to the pool again. For a
viewer asking for one slice after another that round trip costs, in Python, about as much as the
whole Flask request of an image served from the cache (measured with py-spy on the node: half of
the GIL's time went to the main thread). This worker serves the next request on the same thread
when it arrives within `NEXT_REQUEST_WAIT_S` and no other connection is short of a thread (queued
with no idle thread to take it; one queued so meanwhile ends the wait at once); otherwise the
connection goes back to gunicorn's poller as before, so a busy connection never starves the
others (`ThreadWorker.handle`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import socket
import threading
from typing import Any

from gunicorn import util
from gunicorn.http.errors import InvalidRequestLine
from gunicorn.workers.gthread import TConn
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


#: What a refused request line is told and logged as, in place of the line itself.
REQUEST_LINE_REFUSED = ("the request line (method, URL and HTTP version) is malformed: a URL must be printable "
                        "ASCII, each other character percent-encoded (RFC 3986), as browsers send it")


class RefusedRequestLine(InvalidRequestLine):
    """gunicorn's refusal of a request line, saying what is wrong without quoting the line.

    gunicorn's own (`InvalidRequestLine`) quotes the whole line, and its `handle_error` logs that as
    a warning: a patient search sent with a raw `ü` (curl sends the bytes as typed) put
    `GET /api/v1/patients?q=Müller&insurance_number=…` into the journal, which the front keeps out of
    its own log for the same reason (daemons/front.py, `error_log`)."""

    def __init__(self) -> None:
        super().__init__("")

    def __str__(self) -> str:
        return REQUEST_LINE_REFUSED


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


# How long a request thread waits for the next request on its connection before handing the
# connection back to the main thread's poller. A client that asks again at once (a viewer's next
# slice, the TLS front's reused upstream connection) answers within a fraction of this; one that
# pauses costs the pool a waiting thread (no CPU) for this long, unless a connection queues with
# no idle thread to take it meanwhile: that wakes the waiting threads at once (`Waker`).
NEXT_REQUEST_WAIT_S = 0.002


class Waker:
    """A pipe that the threads waiting on their connection poll beside it, written to when a
    connection queues with no idle thread to take it, so none of them sits out its wait meanwhile.

    Made on first use, in the worker process: gunicorn builds its workers in the arbiter, before
    the fork. Every method is called under the worker's lock."""

    def __init__(self) -> None:
        self._fds: tuple[int, int] | None = None

    def fileno(self) -> int:
        if self._fds is None:
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            os.set_blocking(write_end, False)
            self._fds = (read_end, write_end)
        return self._fds[0]

    def wake(self) -> None:
        self.fileno()
        with contextlib.suppress(BlockingIOError):  # a full pipe is readable already: they are woken
            os.write(self._fds[1], b"\0")  # type: ignore[index]

    def close(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def clear(self) -> None:
        if self._fds is not None:
            with contextlib.suppress(BlockingIOError):  # raised once the pipe is empty
                while os.read(self._fds[0], 4096):
                    pass


class ThreadWorker(GthreadWorker):
    """gunicorn's gthread worker whose parse and limit errors are JSON (`--worker-class` of `sivr serve`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._queued = 0  # connections submitted to the thread pool and not yet picked up
        self._busy = 0  # threads serving a connection (waits included)
        self._waiting = 0  # threads waiting for the next request of their connection
        self._waker = Waker()  # readable only while connections are short of a thread

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """gunicorn's answer and log line, with a refused request line not quoted (`RefusedRequestLine`)."""
        if isinstance(exc, InvalidRequestLine):
            exc = RefusedRequestLine()
        super().handle_error(req, client, addr, exc)

    def run(self) -> None:
        try:
            super().run()
        finally:
            with self._lock:
                self._waker.close()

    def enqueue_req(self, conn: TConn) -> None:
        with self._lock:
            self._queued += 1
            if self._waiting and self._short_of_threads():
                self._waker.wake()
        super().enqueue_req(conn)

    def handle(self, conn: TConn) -> object:
        """Serve requests of `conn` for as long as its client keeps asking without a pause and no
        other connection is short of a thread; then return as gunicorn's `handle` does (keep-alive,
        close or defer), and its main thread takes the connection back."""
        with self._lock:
            self._queued -= 1
            self._busy += 1
        try:
            keep = super().handle(conn)
            while keep is True and self.alive and not conn.is_http2 and self._next_request_soon(conn):
                keep = super().handle(conn)
            return keep
        finally:
            with self._lock:
                self._busy -= 1
                if not self._short_of_threads():
                    self._waker.clear()

    def _short_of_threads(self) -> bool:
        """Whether more connections are queued than the pool has idle threads (under the lock): a
        queued connection that an idle thread takes at once costs no waiting thread its wait."""
        return self._queued > self.cfg.threads - self._busy

    def _next_request_soon(self, conn: TConn) -> bool:
        with self._lock:
            if self._short_of_threads():
                return False
            self._waiting += 1
            waker = self._waker.fileno()
        try:
            return next_request_soon(conn.sock, conn.parser.unreader.buf, NEXT_REQUEST_WAIT_S, waker)
        finally:
            with self._lock:
                self._waiting -= 1


def next_request_soon(sock: socket.socket, buffered: io.BytesIO, wait_s: float, waker: int) -> bool:
    """Whether more of the client's bytes are here or arrive within `wait_s` (before `waker`, a
    descriptor, becomes readable): already read ahead by the parser (`buffered`, its unreader's
    buffer), decrypted and held by TLS, or on the socket."""
    if buffered.getvalue():
        return True
    pending = getattr(sock, "pending", None)  # ssl.SSLSocket: bytes TLS decrypted and holds
    if pending is not None and pending():
        return True
    poller = select.poll()  # not select.select: descriptors above 1023 are refused there
    poller.register(sock, select.POLLIN)
    poller.register(waker, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(wait_s * 1000)}
    return waker not in ready and sock.fileno() in ready
