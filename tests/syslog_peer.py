"""A syslog receiver on loopback: the real peer the audit exporter (shared.audit_export) sends to,
over UDP, TCP (RFC 6587 octet-counted frames) or TLS."""

from __future__ import annotations

import socketserver
import ssl
import threading


class _Frames(socketserver.StreamRequestHandler):
    """RFC 6587 octet-counted frames, as the exporter sends over TCP."""

    def handle(self):
        while True:
            length = b""
            while not length.endswith(b" "):
                byte = self.rfile.read(1)
                if not byte:
                    return
                length += byte
            self.server.received.append(self.rfile.read(int(length)))


class _Datagrams(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.received.append(self.request[0])


class Listener:
    """Messages received on `transport` ("udp", "tcp"; "tcp" with `context` is TLS), at `port`
    (0: any free one)."""

    def __init__(self, transport: str, context: ssl.SSLContext | None = None, port: int = 0):
        if transport == "udp":
            self.server = socketserver.ThreadingUDPServer(("127.0.0.1", port), _Datagrams)
        else:
            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", port), _Frames)
            if context is not None:
                self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.server.received = []
        self.url = f"{transport}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def received(self) -> list[bytes]:
        return self.server.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
