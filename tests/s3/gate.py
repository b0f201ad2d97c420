"""A TCP relay between a render node and the object store that a test can close at a chosen moment.

It injects a real network fault (the store stops receiving the node's bytes, as on a cut link),
so a test can stop a node between writing a record's objects and committing its manifest without
racing the upload's speed.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 1 << 16


class Gate:
    """Relays loopback connections on `port` to `target`; `close()` stops forwarding to the target."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._sockets: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """From now on nothing the clients send reaches the target (their requests hang)."""
        self._open.clear()

    def stop(self) -> None:
        self._stopped = True
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, towards_target: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if towards_target and not self._open.is_set():
                    return  # held: the target never sees this request or anything after it
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
