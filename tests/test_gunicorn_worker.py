"""The gunicorn worker every layer runs (daemons.gunicorn_worker): a connection whose client keeps
asking is served on its request thread, and never at the expense of another connection.

The first tests drive the worker's `handle` directly over a socket pair (no timing: the next
request is already sent, or another connection is already waiting); the last runs it in gunicorn
with one thread, where a connection that never pauses must not starve a second one.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn

from daemons.gunicorn_worker import ThreadWorker

REPO = Path(__file__).resolve().parents[1]


def thread_app(environ, start_response):
    """Answers with the id of the thread that served the request."""
    body = str(threading.get_ident()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class HeldPool:
    """A thread pool that keeps what is submitted: the test runs `handle` itself, on its own thread,
    as a pool thread would pick the connection up."""

    def __init__(self):
        self.submitted: list[tuple] = []

    def submit(self, function, *args) -> futures.Future:
        self.submitted.append((function, args))
        return futures.Future()


@pytest.fixture
def make_worker():
    """Workers with `threads` threads, whose pool keeps what is submitted (`HeldPool`)."""
    made: list[ThreadWorker] = []

    def make(threads: int) -> ThreadWorker:
        cfg = Config()
        cfg.set("threads", threads)
        made.append(ThreadWorker(1, os.getpid(), [], None, 30, cfg, Logger(cfg)))
        made[-1].wsgi = thread_app
        made[-1].tpool = HeldPool()
        return made[-1]

    yield make
    for one in made:
        one.tmp.close()
        one._waker.close()


@pytest.fixture
def worker(make_worker) -> ThreadWorker:
    """One thread: a second connection queued is short of a thread."""
    return make_worker(1)


@pytest.fixture
def pair():
    served, client = socket.socketpair()
    yield served, client
    served.close()
    client.close()


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: node\r\n\r\n".encode()


def answers_in(data: bytes) -> int:
    """How many whole answers `data` holds (each a head and its Content-Length body)."""
    count = 0
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        if len(rest) < length:
            break
        count, data = count + 1, rest[length:]
    return count


def answered(client: socket.socket) -> int:
    """The answers the server has written so far (what `handle` wrote is there once it returns)."""
    client.setblocking(False)
    data = b""
    try:
        while chunk := client.recv(65536):
            data += chunk
    except BlockingIOError:
        pass
    finally:
        client.setblocking(True)
    return answers_in(data)


def await_answer(client: socket.socket) -> None:
    client.settimeout(10)
    data = b""
    while not answers_in(data):
        chunk = client.recv(65536)
        assert chunk, "the connection closed before the answer"
        data += chunk


def connection(worker: ThreadWorker, served: socket.socket) -> TConn:
    """A connection submitted to the worker's pool, as gunicorn's main thread submits one."""
    conn = TConn(worker.cfg, served, ("127.0.0.1", 50000), ("127.0.0.1", 8000))
    worker.enqueue_req(conn)
    return conn


def in_thread(function, *args) -> tuple[threading.Thread, list]:
    result: list = []
    runner = threading.Thread(target=lambda: result.append(function(*args)), daemon=True)
    runner.start()
    return runner, result


def test_requests_a_client_has_already_sent_are_served_in_one_hand_off(worker, pair):
    served, client = pair
    client.sendall(request("/a") + request("/b") + request("/c"))
    conn = connection(worker, served)
    assert worker.handle(conn) is True  # keep-alive: gunicorn's main thread takes it back
    assert answered(client) == 3  # all three before handing back, none left for the poller


def test_a_connection_goes_back_to_the_poller_when_another_waits_for_a_thread(worker, pair):
    served, client = pair
    client.sendall(request("/a") + request("/b"))
    conn = connection(worker, served)
    waiting, other = socket.socketpair()
    connection(worker, waiting)  # another connection queued for the pool
    assert worker.handle(conn) is True
    assert answered(client) == 1  # the second request is left to gunicorn's main thread
    waiting.close()
    other.close()


def waiting_after_one_request(worker: ThreadWorker, pair,
                              monkeypatch) -> tuple[threading.Thread, list, TConn]:
    """`handle` running on a thread of its own, its first request answered, waiting up to 60 s for
    the connection's next one: its thread, its result once it returns, and the connection."""
    monkeypatch.setattr("daemons.gunicorn_worker.NEXT_REQUEST_WAIT_S", 60)
    served, client = pair
    client.sendall(request("/a"))
    conn = connection(worker, served)
    runner, result = in_thread(worker.handle, conn)
    await_answer(client)
    return runner, result, conn


def served_on_the_waiting_thread(client: socket.socket, runner: threading.Thread, result: list,
                                 path: str) -> None:
    """A request sent now is answered while `runner` goes on; the client's close then ends it."""
    client.sendall(request(path))
    await_answer(client)
    assert runner.is_alive()
    client.shutdown(socket.SHUT_WR)
    runner.join(10)
    assert result == [False]  # the end of the stream, read on the same thread: closed


def test_a_request_that_arrives_while_the_thread_waits_is_served_on_it(worker, pair, monkeypatch):
    runner, result, _ = waiting_after_one_request(worker, pair, monkeypatch)
    served_on_the_waiting_thread(pair[1], runner, result, "/b")  # sent only now, during the wait


def test_a_connection_queued_meanwhile_ends_the_wait_at_once(worker, pair, monkeypatch):
    runner, result, _ = waiting_after_one_request(worker, pair, monkeypatch)
    waiting, other = socket.socketpair()
    connection(worker, waiting)  # queued while the thread waits for /a's successor
    runner.join(10)  # not the 60 s of the wait
    assert result == [True]  # handed back, still keep-alive
    waiting.close()
    other.close()


def test_once_the_queued_connection_is_taken_a_thread_waits_on_its_connection_again(worker, pair, monkeypatch):
    runner, result, conn = waiting_after_one_request(worker, pair, monkeypatch)
    waiting, other = socket.socketpair()
    other.sendall(request("/other"))
    queued = connection(worker, waiting)  # wakes the waiting thread, which hands its connection back
    runner.join(10)
    assert result == [True]
    other_runner, other_result = in_thread(worker.handle, queued)  # the pool's one thread takes it
    await_answer(other)
    client = pair[1]
    worker.enqueue_req(conn)  # the first connection, back from gunicorn's poller: short of the one thread
    other_runner.join(10)  # as a pool of one thread does, the next connection only once this one is handed back
    assert other_result == [True]
    client.sendall(request("/b"))
    runner, result = in_thread(worker.handle, conn)
    await_answer(client)
    # sent during the wait: served on the same thread, no wake-up left over
    served_on_the_waiting_thread(client, runner, result, "/c")
    waiting.close()
    other.close()


def test_a_connection_an_idle_thread_takes_does_not_end_the_wait(make_worker, pair, monkeypatch):
    worker = make_worker(2)
    runner, result, _ = waiting_after_one_request(worker, pair, monkeypatch)
    waiting, other = socket.socketpair()
    other.sendall(request("/other"))
    queued = connection(worker, waiting)  # the pool's second thread is idle: it takes this one
    other_runner, _ = in_thread(worker.handle, queued)
    await_answer(other)
    # the first thread still waits on its connection and serves it
    served_on_the_waiting_thread(pair[1], runner, result, "/b")
    other.shutdown(socket.SHUT_WR)
    other_runner.join(10)
    waiting.close()
    other.close()


def test_a_stopping_worker_hands_the_connection_back_after_one_request(worker, pair):
    served, client = pair
    client.sendall(request("/a") + request("/b"))
    conn = connection(worker, served)
    worker.alive = False
    assert worker.handle(conn) is False  # a stopping worker answers with Connection: close
    assert answered(client) == 1


def test_a_client_that_closes_ends_the_hold(worker, pair):
    served, client = pair
    client.sendall(request("/a"))
    client.shutdown(socket.SHUT_WR)
    conn = connection(worker, served)
    assert worker.handle(conn) is False  # the end of the stream is read on this thread: closed
    assert answered(client) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def until(condition, runner: threading.Thread) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert runner.is_alive(), "the busy client stopped"
        assert time.monotonic() < deadline, "the busy connection was not served for 30 s"
        time.sleep(0.01)


def test_in_gunicorn_a_connection_that_never_pauses_does_not_starve_another(tmp_path):
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--chdir", str(REPO), "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--threads", "1", "--worker-class", "daemons.gunicorn_worker.ThreadWorker",
             "tests.test_gunicorn_worker:thread_app"],
            stdout=subprocess.DEVNULL, stderr=output, start_new_session=True)
    stop = threading.Event()
    busy_answers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)

        def busy() -> None:
            busy_client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                busy_client.request("GET", "/busy")
                busy_client.getresponse().read()
                busy_answers.append(1)
            busy_client.close()

        runner = threading.Thread(target=busy)
        runner.start()
        until(lambda: len(busy_answers) >= 20, runner)  # the busy connection holds the only thread by now
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        other.request("GET", "/other")
        reply = other.getresponse()
        assert reply.status == 200 and reply.read()
        other.close()
        held_before = len(busy_answers)
        until(lambda: len(busy_answers) >= held_before + 5, runner)  # and the busy one is still served
    finally:
        stop.set()
        server.terminate()
        server.wait(30)
    runner.join(30)
