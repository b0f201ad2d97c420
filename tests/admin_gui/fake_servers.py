"""One loopback HTTP server that answers for every SIVR layer at once, for console tests that need
a server's answers rather than its behaviour: hundreds of render nodes, nodes that hang, names no
honest server accepts. A test sets the answer of each path; a screen gets a console context whose
clients call it. Nobody has logged in, so no token is exchanged or sent, and plain HTTP will do.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from admin_gui.api_client import ApiClient
from admin_gui.context import ConsoleContext
from admin_gui.workers import TaskRunner
from shared.receipts import public_key_text
from shared.roles import SYSTEM_ADMIN

#: The receipt key the fake registry shows for its nodes (a real node's public key).
NODE_RECEIPT_KEY = public_key_text(Ed25519PrivateKey.generate().public_key())

INSTITUTION_ID = "11111111-1111-4111-8111-111111111111"
SYSTEM_ADMIN_USER = {"id": "22222222-2222-4222-8222-222222222222", "username": "root", "full_name": "Root Admin",
                     "role": SYSTEM_ADMIN, "institution_id": INSTITUTION_ID, "active": True}

#: What a path answers: a list (served as the pages of a paged list), (status, JSON body or raw bytes
#: [, headers]), or a callable of the request's handler that returns one of those, or None for the
#: server's default, when the call arrives (it runs on the server's thread).
Answer = list[dict[str, Any]] | tuple[Any, ...] | Callable[["_Handler"], Any]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeSivr

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        # `target` as sent: a proxy is sent the whole URL
        self.server.seen.append({"method": self.command, "target": self.path, "path": parts.path,
                                 "headers": dict(self.headers), "body": body, "query": parse_qs(parts.query)})
        answers = self.server.answers
        answer = answers.get(f"{self.command} {parts.path}", answers.get(parts.path))
        if callable(answer):
            answer = answer(self)
        if answer is None:
            answer = self.server.default(parts.path)
        if isinstance(answer, list):
            query = parse_qs(parts.query)
            offset, limit = int(query.get("offset", ["0"])[0]), int(query.get("limit", ["500"])[0])
            answer = (200, {"items": answer[offset:offset + limit], "total": len(answer)})
        status, content, *headers = answer
        raw = content if isinstance(content, bytes) else json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers[0] if headers else {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


class FakeSivr(ThreadingHTTPServer):
    """The server: `answers` maps "METHOD /path" or "/path" (any method) to an `Answer`, and any
    other path gets `default(path)` (here 404); `seen` lists the calls that arrived (method, path,
    target, headers, body, query). Plain HTTP, or TLS with `tls` (certificate, key)."""

    daemon_threads = True

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server_address[1]}"
        self.answers: dict[str, Answer] = {}
        self.seen: list[dict[str, Any]] = []

    def paths(self) -> list[str]:
        return [call["path"] for call in self.seen]

    def default(self, path: str) -> Answer:
        return 404, {"error": {"code": "not_found", "message": f"nothing at {path}"}}

    def context(self, user: dict[str, Any] | None = None) -> ConsoleContext:
        """What a screen of a signed-in console gets, with this server as its toplevel."""
        return ConsoleContext(ApiClient(self.url), TaskRunner(), user or SYSTEM_ADMIN_USER)

    def institution(self, name: str = "Demo Hospital") -> dict[str, Any]:
        """An institution whose server is this one."""
        return {"id": INSTITUTION_ID, "name": name, "address": "", "server_url": self.url}

    def node(self, number: int, name: str | None = None) -> dict[str, Any]:
        """A registry entry of a render node at its own path of this server (`/node-<number>`), with its
        receipt key registered, as the institution server shows it (`nodes.node_to_json`)."""
        return {"id": f"33333333-3333-4333-8333-{number:012d}", "name": name or f"render-{number}",
                "url": f"{self.url}/node-{number}", "store": "", "institution_id": INSTITUTION_ID,
                "serving_node_ids": [f"33333333-3333-4333-8333-{number:012d}"],
                "receipt_key": NODE_RECEIPT_KEY, "created_at": "2026-01-01T00:00:00Z"}


@contextmanager
def serving(server: FakeSivr | None = None) -> Iterator[FakeSivr]:
    """`server` (default: a plain FakeSivr) answering on a thread until the block ends."""
    server = server if server is not None else FakeSivr()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
