"""Liveness (`/healthz`) and readiness (`/readyz`) of every layer.

`/healthz` says only that the process answers: a supervisor restarts a daemon that stops
answering it, and restarting cannot fix a database that is down. `/readyz` runs the checks each
layer's factory registers for what that layer needs to serve (its database at the schema this
code expects, its store, its keys) and answers 503 naming every failed check, so a load balancer
sends no traffic to it and `sivr ready` (used by the systemd units) waits for it.

Check messages are meant for operators and are public (no token is needed for either probe):
they name what is wrong but carry no exception text, which the log holds with the request id.
"""

from __future__ import annotations

import logging
import os
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
    app.extensions[READINESS_EXTENSION][name] = check


def run_checks(checks: dict[str, Check]) -> dict[str, str]:
    """Each check's result, "ok" or its problem; a check that raises is a failed check."""
    results = {}
    for name, check in checks.items():
        try:
            problem = check()
        except Exception:
            log.exception("readiness check %s failed", name)
            problem = "the check failed unexpectedly; the error was logged"
        results[name] = "ok" if problem is None else problem
    return results


def install_probes(app: Flask, layer: str) -> None:
    """`GET /healthz` (liveness) and `GET /readyz` (readiness) without authentication."""
    app.extensions[READINESS_EXTENSION] = {}

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "layer": layer, "version": __version__})

    @app.get("/readyz")
    def readyz():
        results = run_checks(app.extensions[READINESS_EXTENSION])
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
