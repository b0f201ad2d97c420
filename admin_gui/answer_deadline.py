"""A wall-clock deadline on one whole HTTP exchange of the console: connection, headers and body.

requests' read timeout bounds each wait for data, not the answer: a server sending its status
line, headers or body a byte at a time never reaches it, and would hold the call and its worker
thread for ever. `AnswerDeadline` watches the connection a call takes from urllib3's pool and, when
time is up, shuts its socket down, so whatever read is blocked in it returns at once; the caller
then sees `expired` and says so.

The socket is caught where urllib3 hands out a kept-alive connection (`_get_conn`, the pool's
one place for it) or opens a new one (`connect`), through pool and connection classes mounted on
the console's `requests.Session` (`mount_on`): requests shows no connection before the headers
have arrived, and http.client forgets the socket of an answer that ends with the connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class AnswerDeadline:
    """Cuts the connection of the calls its thread makes within it once `seconds` have passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> AnswerDeadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._timer.cancel()
        _current.deadline = None

    def watch(self, sock: socket.socket | None) -> None:
        """Cut `sock` (the call's socket, None while it is not connected yet) when time is up."""
        if sock is None:
            return
        with self._lock:
            self._socket = sock
            if self.expired:
                self._cut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._cut()

    def _cut(self) -> None:
        if self._socket is None:
            return
        # the plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop the TLS state
        # under the thread still reading; this ends that read with end-of-file
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._socket, socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedConnection:
    """Connection mixin: a new socket goes to the calling thread's deadline."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(self.sock)


class _WatchedPool:
    """Pool mixin: a kept-alive connection's socket goes to the calling thread's deadline."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        _watch(connection.sock)
        return connection


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """Watched pools for direct connections and, where HTTPS_PROXY sends a call, through a proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def mount_on(session: requests.Session) -> requests.Session:
    """`session` with its connections watched by the deadline of the thread using them."""
    adapter = _WatchedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
