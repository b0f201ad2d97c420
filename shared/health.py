"""Liveness (`/healthz`) and readiness (`/readyz`) of every layer.

`/healthz` says only that the process answers: a supervisor restarts a daemon that stops
answering it, and restarting cannot fix a database that is down. `/readyz` runs the checks each
layer's factory registers for what that layer needs to serve (its database at the schema this
code expects, its store, its keys) and answers 503 naming every failed check, so a load balancer
sends no traffic to it and `sivr ready` (used by the systemd units) waits for it.

Check messages are meant for operators and are public (no token is needed for either probe):
they name what is wrong but carry no exception text, which the log holds with the request id.

One run of the checks at a time per process (`Readiness`): a probe that arrives while another
request runs them answers at once from the last run, or says which check has not answered yet,
and never runs them again. Anyone may ask `/readyz`, and each run costs a database query and, on
a render node with an S3 store, a request to the object store: 40 anonymous probes at once, while
that store hung, held every request thread of the node (`/healthz` and a physician's requests
timed out after 15 s).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import peewee
from flask import Flask, jsonify

from shared import __version__
from shared.db import SchemaVersion, newer_schema
from shared.errors import error_response

log = logging.getLogger(__name__)

READINESS_EXTENSION = "sivr_readiness"

# A check returns None when all is well, or one sentence saying what is wrong and what to do.
Check = Callable[[], "str | None"]


def add_readiness_check(app: Flask, name: str, check: Check) -> None:
    """Make `/readyz` of this app run `check` under `name` (each layer's factory adds its own)."""
    app.extensions[READINESS_EXTENSION].checks[name] = check


#: How long a run of the checks may go on before a probe that overlaps it says so (503 naming the
#: check that has not answered) instead of answering the last run's results.
SLOW_RUN_S = 2.0
#: How old the last run's results may be to answer a probe that overlaps a run (else it is told to
#: ask again): probes of a load balancer and of `sivr ready` come every few seconds.
REUSED_RESULTS_S = 10.0


class _Run:
    """One run of the checks in progress: when it started, which check it is at, what it found."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.current: str | None = None
        self.results: dict[str, str] = {}


class Readiness:
    """An app's readiness checks, run by one request at a time.

    A probe that finds a run in progress does not start another and does not wait for it (a wait
    would hold its request thread as long as the slowest check, which is what an attacker wants):
    it answers the last run's results while the run in progress is young and those are recent,
    else a 503 that names the check not answered yet. Sequential probes each run the checks, so a
    probe after a change sees it.
    """

    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}
        self._lock = threading.Lock()
        self._running: _Run | None = None
        self._last: tuple[float, dict[str, str]] | None = None

    def results(self) -> dict[str, str]:
        """Each check's result, "ok" or its problem (see the class)."""
        with self._lock:
            run, last = self._running, self._last
            if run is None:
                run = self._running = _Run()
                mine = True
            else:
                mine = False
        if mine:
            try:
                results = run_checks(self.checks, run)
                with self._lock:
                    self._last = (time.monotonic(), results)
                return results
            finally:
                with self._lock:
                    self._running = None
        now = time.monotonic()
        if now - run.started < SLOW_RUN_S and last is not None and now - last[0] < REUSED_RESULTS_S:
            return last[1]
        return self._overlapping(run, now - run.started)

    def _overlapping(self, run: _Run, running_s: float) -> dict[str, str]:
        """What a run in progress has found so far: the check it is at has not answered yet."""
        results = dict(run.results)
        for name in self.checks:
            if name not in results:
                results[name] = (f"not answered after {running_s:.1f} s (checked for another request); ask again"
                                 if name == run.current else "not checked yet; ask again")
        return results


def run_checks(checks: dict[str, Check], run: _Run | None = None) -> dict[str, str]:
    """Each check's result, "ok" or its problem; a check that raises is a failed check. `run`, when
    given, follows the progress (`Readiness`)."""
    results = run.results if run is not None else {}
    for name, check in checks.items():
        if run is not None:
            run.current = name
        try:
            problem = check()
        except Exception:
            log.exception("readiness check %s failed", name)
            problem = "the check failed unexpectedly; the error was logged"
        results[name] = "ok" if problem is None else problem
    return dict(results)


def install_probes(app: Flask, layer: str) -> None:
    """`GET /healthz` (liveness) and `GET /readyz` (readiness) without authentication."""
    readiness = app.extensions[READINESS_EXTENSION] = Readiness()

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "layer": layer, "version": __version__})

    @app.get("/readyz")
    def readyz():
        results = readiness.results()
        failed = {name: result for name, result in results.items() if result != "ok"}
        if failed:
            message = "; ".join(f"{name}: {problem}" for name, problem in failed.items())
            return error_response(503, "not_ready", message, layer=layer, checks=results)
        return jsonify({"status": "ready", "layer": layer, "version": __version__, "checks": results})


def database_check(database: peewee.Database | peewee.DatabaseProxy, layer: str, expected: int) -> Check:
    """The database answers and holds `layer`'s tables at schema version `expected`.

    Uses a connection of its own and closes it, so a probe neither needs nor disturbs a request's.
    """

    def check() -> str | None:
        try:
            with database.connection_context():
                query = SchemaVersion.select(SchemaVersion.version).where(SchemaVersion.layer == layer)
                row = query.bind(database).tuples().first()
        except peewee.PeeweeException as exc:
            log.warning("readiness: %s database unusable: %s", layer, exc)
            if "schema_version" in str(exc):
                return "the database has no schema_version table (empty or not this layer's); run `sivr db upgrade`"
            return f"the database cannot be reached or read ({type(exc).__name__}); see the log"
        if row is None:
            return f"the database has no {layer} schema; run `sivr db upgrade {layer}`"
        if row[0] > expected:
            return newer_schema(layer, row[0], expected)
        if row[0] != expected:
            return (f"the database is at {layer} schema version {row[0]}, this server needs {expected}; "
                    f"run `sivr db upgrade {layer}` with this release")
        return None

    return check


def files_check(paths: list[str], what: str) -> Check:
    """Files the layer needs again at its next start (keys, certificates) are still there and readable.

    The running process loaded them at start; a file removed or made unreadable since would stop
    the next start (a systemd restart, a deploy), so readiness reports it while the old process
    still serves.
    """

    def check() -> str | None:
        missing = [p for p in paths if p and not (Path(p).is_file() and os.access(p, os.R_OK))]
        if missing:
            return f"{what} missing or not readable by this server: {', '.join(missing)}"
        return None

    return check


def directory_check(path: str | Path, what: str) -> Check:
    """A folder the layer reads and writes exists and is usable."""

    def check() -> str | None:
        folder = Path(path)
        if not folder.is_dir():
            return f"{what} {folder} does not exist"
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            return f"{what} {folder} is not readable and writable by this server"
        return None

    return check
