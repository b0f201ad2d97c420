"""Structured logs: one JSON object per line, each request with an id the user can quote.

Every request gets a request id: the caller's `X-Request-Id` when it is a sane token (a proxy or
the console may already have made one), otherwise a new one. It comes back in the `X-Request-Id`
response header and inside every error body, and it is on every log line written while the
request runs, so IT can find the line from the id a physician reads off an error message.

The app writes one access line per request (it knows the route, the status and the user, which
gunicorn's own access log does not); gunicorn's error log goes through the same formatter
(`daemons.gunicorn_conf`, which `sivr serve` passes to gunicorn).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from flask import Flask, Response, g, has_request_context, request

from shared.db import database_error_fields, database_error_in, database_error_summary, database_exception_text
from shared.tokens import QUERY_TOKEN_PARAM

REQUEST_ID_HEADER = "X-Request-Id"
# Letters, digits and a few separators, up to 64 characters: safe in a log line and a header.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

# Attributes of a LogRecord that are not "extra" fields given by the caller.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

access_log = logging.getLogger("sivr.access")


def current_request_id() -> str | None:
    """This request's id (made on first use), or None outside a request."""
    if not has_request_context():
        return None
    rid = g.get("request_id")
    if rid is None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        rid = offered if _VALID_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        g.request_id = rid
    return rid


#: A token in a URL (`shared.tokens.QUERY_TOKEN_PARAM`), wherever a line quotes one: gunicorn's own
#: error lines name the request's whole URI, query included.
_QUERY_TOKEN = re.compile(rf"({QUERY_TOKEN_PARAM}=)[^&\s\"'\\]+")

#: One encoder for every line (`json.dumps` with options builds a new one per call; this runs for
#: every request's access line).
_JSON_LINE = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "layer", "logger", "message", "request_id", ...extra}` on one line, with
    any token in a URL masked."""

    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "layer": self.layer,
            "logger": record.name,
            "message": _message(record),
        }
        rid = current_request_id()
        if rid is not None:
            entry["request_id"] = rid
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            exc = record.exc_info[1]
            cause = None if exc is None else database_error_in(exc)
            if exc is not None and cause is not None:
                entry.update(database_error_fields(cause))
                entry["exception"] = database_exception_text(exc)
            else:
                entry["exception"] = self.formatException(record.exc_info)
        line = _JSON_LINE.encode(entry)
        # the regular expression only where the name occurs: this runs for every request's access line
        return _QUERY_TOKEN.sub(r"\1<redacted>", line) if QUERY_TOKEN_PARAM in line else line


def _message(record: logging.LogRecord) -> str:
    """The record's message, with a database error given as the message or among its values (a
    tuple or a mapping of them) named without the server's own message
    (`shared.db.database_error_summary`): `log.error("... failed: %s", exc)` quoted a PostgreSQL
    DETAIL whole (`Key (patient_id)=(...)`), as a traceback's last line did before `format` left it
    out. Every line of every layer goes through here, whoever logs it; what a caller turned into
    text itself (`str(exc)`, an f-string) is text, and is not recognised: pass the error."""
    msg, args = record.msg, record.args
    if _answered_by_database(msg):
        msg = database_error_summary(msg)
    elif not args or not any(isinstance(arg, BaseException) for arg in _values(args)):
        return record.getMessage()
    if isinstance(args, Mapping):
        args = {key: _named(value) for key, value in args.items()}
    elif args:
        args = tuple(_named(arg) for arg in args)
    return str(msg) % args if args else str(msg)


def _values(args: tuple[object, ...] | Mapping[str, object]) -> Iterable[object]:
    return args.values() if isinstance(args, Mapping) else args


def _answered_by_database(value: object) -> TypeGuard[BaseException]:
    return isinstance(value, BaseException) and "sqlstate" in database_error_fields(value)


def _named(value: object) -> object:
    """A value of a log line: a database server's error as its summary, anything else as it is."""
    return database_error_summary(value) if _answered_by_database(value) else value


def configure_logging(layer: str, level: str) -> None:
    """Send the root logger's records to stderr as JSON lines (once per process)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(getattr(h, "_sivr_json", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._sivr_json = True  # type: ignore[attr-defined]
        handler.setFormatter(JsonFormatter(layer))
        root.addHandler(handler)


def leave_out_unwritten_fields() -> None:
    """Stop filling in the log record fields no SIVR line writes: the caller's file, function and
    line (a walk up the stack for every record), and the thread's and process's ids and names.

    Python's own advice for servers (Logging HOWTO, "Optimization"). The JSON lines name the logger
    and the request id instead. Filling them in for the access line of every image request took
    about a tenth of the CPU of an image served from a render node's cache (in process, 0.32 ms
    with them, 0.30 without; medians of ten alternated rounds). Process-wide, so it is for the
    served daemons (`daemons.gunicorn_conf`), not for an app built inside another program, whose
    own log format may show them.
    """
    logging._srcfile = None  # the switch the HOWTO documents
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def install_request_logging(app: Flask) -> None:
    """Request ids in and out, and one access line per request."""

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        current_request_id()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = current_request_id() or ""
        identity = g.get("identity")
        elapsed = request_elapsed_s()
        route = request_route()
        access_log.info(
            "%s %s %s", request.method, route, response.status_code,
            extra={
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": None if elapsed is None else round(elapsed * 1000, 2),
                "user_id": getattr(identity, "user_id", None),
                "client": request.remote_addr,
            },
        )
        return response


def request_elapsed_s() -> float | None:
    """Seconds since this request reached the app (None if the start hook did not run)."""
    started = g.get("request_started")
    return None if started is None else time.perf_counter() - started


def request_route() -> str:
    """The URL rule that matched (`/api/v1/records/<record_id>`), never the raw path, which holds ids."""
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"
