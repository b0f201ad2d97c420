"""One error format for every layer: `{"error": {"code", "message"}}` with a fitting status.

Clients (the web viewer, the console) show `message` to people, so it must say what went wrong
and what to do; `code` is for programs; `request_id` (also in the X-Request-Id header) lets IT find
the request's log lines. Anything unexpected is logged with a traceback and
answered as a 500 without internal details.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import peewee
from flask import Flask, Response, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed

from shared.db import TRANSIENT_ERRORS, database_error_fields, is_transient
from shared.logs import current_request_id

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "busy",
}


#: The 404 of a path with an empty segment (`/dicomweb//studies`), which no route has: every layer's
#: map keeps slashes as sent (`shared.webapp`; werkzeug would redirect to the merged path with an HTML
#: body), so a client that joins a base URL ending in `/` to a path starting with one learns why.
EMPTY_SEGMENT_MESSAGE = ("the path has an empty segment (`//`), which no resource of this server has: "
                         "join the URL's parts with a single `/`")


class ApiError(Exception):
    """An error a client caused or must know about; becomes a JSON error response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **details: Any,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def error_response(status: int, code: str, message: str, **details: Any) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(details)
    request_id = current_request_id()
    if request_id is not None:
        body["request_id"] = request_id
    response = jsonify({"error": body})
    response.status_code = status
    return response


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} does not exist")


def save_edit(row: peewee.Model, what: str, only: Sequence[peewee.Field] | None = None) -> None:
    """Write an edit of `row`, a row the view read earlier, or raise `not_found(what, row.id)`, the
    answer the view gives for an unknown id, when the UPDATE changed no row.

    A request that deleted the row between the view's read and this write leaves nothing to update,
    and peewee's `save()` says so only by returning 0: every edit view then answered 200 with the
    body of a row no longer there, and audited an update that never happened. Raising here, before
    the view's audit and answer, makes every update path say what happened.
    """
    if not row.save(only=only):
        raise not_found(what, row.id)  # type: ignore[attr-defined]  # every edited table has an `id`


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def log_failure(message: str, exc: BaseException) -> None:
    """Log what made a request fail, with its traceback; a database's error also with its SQLSTATE,
    class and the table, constraint or column it names (`shared.db.database_error_fields`), so IT
    reads a lock timeout, a lost server or a violated constraint from the line itself.

    A PostgreSQL server's own message is left out of the line, as of every line (`shared.logs.JsonFormatter`):
    it quotes the row's values and the query's parameters (`DETAIL: Key (insurance_number)=(...) already
    exists`, `invalid input syntax for type uuid: "..."`)."""
    log.error(message, exc_info=exc, extra=database_error_fields(exc))


#: Seconds a client waits before sending a request again that the database could not serve.
DATABASE_RETRY_AFTER_S = 1


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, **exc.details)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        original = getattr(exc, "original_exception", None)
        if isinstance(exc, InternalServerError) and original is not None:
            # Flask wraps what an after-request hook raised (the audit of a refusal, a database gone)
            # in an InternalServerError handled here, not by the handlers below: answer it as they
            # do; Flask has logged it ("Exception on <path>", `shared.webapp.ApiFlask.log_exception`)
            return _database_unavailable(original, logged=True)
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            message = "the request body is larger than this server accepts"
        elif status == 404 and exc is request.routing_exception and "//" in request.path:
            message = EMPTY_SEGMENT_MESSAGE
        response = error_response(status, code, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(ParseException)
    def _body_error(exc: Exception) -> Response:
        """gunicorn raises this to the view reading a malformed chunked body (werkzeug answers a
        client gone mid-body itself, 400); the connection then closes (where the next request starts
        is unknown)."""
        return error_response(400, "malformed_body", "the request body's chunked encoding is malformed")

    def _database_unavailable(exc: Exception, logged: bool = False) -> Response:
        if not is_transient(exc):
            return _unexpected(exc, logged)
        if not logged:
            log_failure("database error", exc)  # the cause (down, locked, a collision) is the operator's to read
        response = error_response(503, "database_unavailable",
                                  "the database could not be reached, was busy or rolled the transaction back "
                                  "for a concurrent one; try again")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response

    for transient in TRANSIENT_ERRORS:
        app.register_error_handler(transient, _database_unavailable)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception, logged: bool = False) -> Response:
        if not logged:
            log_failure("unhandled error", exc)
        return error_response(500, "internal_error", "the server failed; the error was logged")
