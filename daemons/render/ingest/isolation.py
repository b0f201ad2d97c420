"""Untrusted uploads are parsed and decoded in separate worker processes, never in the node's own.

Why: a render node's workers serve every viewer of the decoded records they map. A codec
that panics (pylibjpeg-rle raises pyo3's PanicException, a BaseException, on RLE files with
corrupted segments), aborts, loops or allocates without bound would otherwise kill or stall that
process and every viewer with it. Here such a file costs one decode worker: it is killed if need
be, a fresh one takes its place, and the upload is answered 422 with the reason.

Each worker is forked from a forkserver (never from the multi-threaded node process) and limits
itself at start: RLIMIT_AS caps its address space at its idle size plus `decode.memory_mb`, and
before every job RLIMIT_CPU is set to the CPU time used so far plus `decode.cpu_s` (SIGXCPU then
ends it). The caller waits at most `decode.timeout_s` of wall-clock time per file, then kills the
worker. Decoding here also keeps uploads' CPU work out of the process that serves viewers (the
node's threads only wait on a pipe meanwhile), and the workers lower their own priority
(`decode.nice`), so that on busy cores the viewers' rendering is scheduled first.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import queue
import resource
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from daemons.render.imaging import jpeg2000
from shared.dumpable import make_undumpable

log = logging.getLogger(__name__)
MIB = 1024 * 1024
# the forkserver imports these before it forks any worker; the first one marks it not dumpable
PRELOAD = ["daemons.render.ingest.undumpable_forkserver", "daemons.render.ingest.upload_checks",
           "daemons.render.ingest.resend"]


@dataclass(frozen=True)
class IsolationLimits:
    """Size and limits of the decode worker pool (config section `decode`)."""

    workers: int
    memory_mb: int
    cpu_s: int
    timeout_s: float
    nice: int
    codec_threads: int

    @classmethod
    def from_config(cls, config) -> IsolationLimits:
        section = config["decode"]
        return cls(section["workers"], section["memory_mb"], section["cpu_s"], float(section["timeout_s"]),
                   section["nice"], section["codec_threads"])


class IsolatedFailure(Exception):
    """The job could not finish in its worker: it crashed, panicked, ran out of time or memory.

    `reason` is a sentence for the user ("the decoder crashed (SIGABRT)").
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _address_space() -> int:
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _serve(conn: Connection, memory_mb: int, cpu_s: int, nice: int, codec_threads: int) -> None:
    """A worker's loop: limit itself, then run jobs until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node (or gunicorn) ends workers, not a terminal's ^C
    make_undumpable()  # a worker taken over by one file must not read the next upload's pixels in another
    os.nice(nice)
    jpeg2000.use_threads(codec_threads)
    limit = _address_space() + memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    while True:
        try:
            function, args = conn.recv()
        except (EOFError, OSError):
            return
        soft = math.ceil(_cpu_used()) + cpu_s  # whole seconds: the job gets cpu_s to cpu_s + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft if cpu_hard == resource.RLIM_INFINITY else min(soft, cpu_hard),
                                                 cpu_hard))
        conn.send(_run(function, args, memory_mb))


def _run(function: Callable, args: tuple, memory_mb: int) -> tuple:
    try:
        return ("ok", function(*args))
    except MemoryError:
        return ("failure", f"decoding needs more than the {memory_mb} MiB a decode worker may use")
    except Exception as exc:
        return ("failure", f"{type(exc).__name__}: {exc}"[:500])
    except BaseException as exc:  # pyo3 PanicException derives from BaseException
        return ("failure", f"the decoder panicked ({type(exc).__name__}: {exc})"[:500])


def _exit_reason(exitcode: int | None, limits: IsolationLimits) -> str:
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        if number == signal.SIGXCPU:
            return f"decoding used more than {limits.cpu_s} s of CPU time"
        if number == signal.SIGKILL:
            return "the decoder was killed (out of memory?)"
        return f"the decoder crashed ({signal.Signals(number).name})"
    return f"the decoder exited unexpectedly (status {exitcode})"


class _Worker:
    def __init__(self, context, limits: IsolationLimits):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, limits.memory_mb, limits.cpu_s, limits.nice,
                                                            limits.codec_threads),
                                       name="sivr-decode", daemon=True)
        self.process.start()
        child.close()

    def stop(self) -> int | None:
        """End the process (it may be stuck in a codec) and return its exit code."""
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        return self.process.exitcode


class DecodePool:
    """A few worker processes that run module-level functions on untrusted bytes, one job each at a time.

    Workers start on first use (so building the app forks nothing) and are replaced after a crash,
    a timeout or a limit; a job only waits for a free worker, never for a broken one.
    """

    def __init__(self, limits: IsolationLimits):
        self.limits = limits
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(limits.workers):
            self._idle.put(None)
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self.jobs = 0
        self.replaced = 0
        self._closed = False

    def call(self, function: Callable, *args: Any) -> Any:
        """`function(*args)` in a worker; IsolatedFailure if the worker could not finish it."""
        worker = self._idle.get()
        try:
            if worker is None or not worker.process.is_alive():
                worker = self._replace(worker)
                assert worker is not None, "decode pool used after close()"
            outcome = self._exchange(worker, function, args)
        except IsolatedFailure:
            worker = self._replace(worker, counted=True)
            raise
        finally:
            self._idle.put(worker)
        if outcome[0] == "ok":
            return outcome[1]
        raise IsolatedFailure(outcome[1])

    def _exchange(self, worker: _Worker, function: Callable, args: tuple) -> tuple:
        with self._lock:
            self.jobs += 1
        try:
            worker.conn.send((function, args))
            if not worker.conn.poll(self.limits.timeout_s):
                worker.stop()
                raise IsolatedFailure(f"decoding took longer than {self.limits.timeout_s:g} s")
            return worker.conn.recv()
        except (EOFError, OSError) as exc:
            raise IsolatedFailure(_exit_reason(worker.stop(), self.limits)) from exc

    def _replace(self, worker: _Worker | None, counted: bool = False) -> _Worker | None:
        with self._lock:
            if worker is not None:
                self._all.discard(worker)
                if counted:
                    self.replaced += 1
            if self._closed:
                return None
        if worker is not None:
            code = worker.stop()
            if counted:
                log.warning("decode worker %s ended (exit %s); starting another", worker.process.pid, code)
        fresh = _Worker(self._context, self.limits)
        with self._lock:
            self._all.add(fresh)
        return fresh

    def map(self, function: Callable, items: list[tuple], failed: Callable[[Any], bool]) -> list[Any]:
        """`function(*item)` for every item, spread over the workers; results in item order.

        An IsolatedFailure is returned in its item's place. Once a result is `failed` (or a
        failure), items not yet started are skipped (None): the caller reports the first failure
        in item order, and a refused upload does not keep every worker busy.
        """
        stop = threading.Event()

        def one(item: tuple) -> Any:
            if stop.is_set():
                return None
            try:
                result = self.call(function, *item)
            except IsolatedFailure as exc:
                result = exc
            if isinstance(result, IsolatedFailure) or failed(result):
                stop.set()
            return result

        with ThreadPoolExecutor(self.limits.workers, thread_name_prefix="sivr-decode-wait") as waiters:
            return list(waiters.map(one, items))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pids = sorted(w.process.pid for w in self._all if w.process.is_alive())
        return {"workers": self.limits.workers, "running": pids, "jobs": self.jobs, "replaced": self.replaced}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.stop()


def isolated_checker(pool: DecodePool) -> Callable:
    """A `upload_checks.FileChecker` that runs `upload_checks.check_file` for each file in the pool's workers.

    A worker that could not finish a file (crash, panic, time or memory limit) refuses that file
    with 422 and the reason; a file's frames that fail one by one come back as its bad frames.
    """
    from daemons.render.ingest.upload_checks import FileCheck, check_file

    def check_files(uploads: list[tuple[str, bytes]], limits) -> list:
        results = pool.map(check_file, [(name, raw, limits) for name, raw in uploads],
                           failed=lambda r: r.refusal is not None)
        return [FileCheck((422, "undecodable_pixels", f"{name}: {result.reason}; the file was refused"))
                if isinstance(result, IsolatedFailure) else result
                for (name, _), result in zip(uploads, results, strict=True)]

    return check_files
