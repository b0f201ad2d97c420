"""Validation of ids and JSON bodies before anything touches the database or disk.

A blank or malformed id must never reach a query (where it could match "all rows" or nothing);
each failure names the field so a person can correct the input.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, request

from shared import field_rules
from shared.errors import ApiError
from shared.origins import server_base_url
from shared.shown_text import BIDI

_SHA256 = re.compile(r"[0-9a-f]{64}")
# C0 controls, DEL and lone surrogates (JSON can carry "\ud800"): PostgreSQL cannot store NUL,
# no database can encode a lone surrogate, and none of them belongs in a name or a report.
# Bidirectional embedding, override and isolate controls too (`shared.shown_text`): none belongs in
# a name or a report.
# The C1 controls (U+0080-U+009F) as well, and in a one-line field the line and paragraph separators
# (U+2028, U+2029; NEL, U+0085, is a C1 control): plain-text displays break lines at them, so a node
# name could add sentences of its own to the console's "Remove render node" confirmation.
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029{BIDI}]")
_CONTROL_EXCEPT_LINE_BREAKS = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff{BIDI}]")


def refuse_controls(value: str, name: str, multiline: bool = False) -> None:
    """`400 validation_error` naming `name` when `value` holds a character no typed text may hold
    (above), line breaks and tabs too unless `multiline`: the rule of every string field of
    `validate`, and of a text read without it (the login's username)."""
    if (_CONTROL_EXCEPT_LINE_BREAKS if multiline else _CONTROL).search(value):
        raise ApiError(400, "validation_error",
                       f"{name} must not contain control characters"
                       f"{'' if multiline else ', line breaks or separators'}, bidirectional controls "
                       "(U+202A-U+202E, U+2066-U+2069) or invalid Unicode")


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: spaces and characters that show nothing alone (zero-width space,
    joiners, direction marks, byte order mark, fillers: `field_rules.shows_nothing`), which
    str.strip() keeps."""
    return not "".join(c for c in text if not field_rules.shows_nothing(c)).strip()


def check_person_name(value: str, field: str) -> str:
    """The `Field.check` of every person's name (a patient's first and last name, a user's full
    name): `400 validation_error` naming the field and the first character in it that shows nothing
    (`shared.field_rules.invisible_character`), which the sender must remove."""
    char = field_rules.invisible_character(value)
    if char is not None:
        raise ApiError(400, "validation_error",
                       f"{field} holds an invisible character ({field_rules.describe_character(char)}): "
                       "remove it, and type the name as it is written")
    return value


def parse_uuid(value: Any, field: str = "id") -> str:
    """Canonical lower-case UUID string, or `400 invalid_id`."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_id", f"{field} is missing or blank")
    try:
        parsed = uuid.UUID(value.strip())
    except ValueError as exc:
        raise ApiError(400, "invalid_id", f"{field} {value[:80]!r} is not a valid UUID") from exc
    if str(parsed) != value.strip().lower():
        raise ApiError(400, "invalid_id", f"{field} {value[:80]!r} is not a canonical UUID")
    return str(parsed)


def is_record_id(value: Any) -> bool:
    """Whether `value` has a record id's form: 64 lower-case hex digits (a SHA-256 digest)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def parse_record_id(value: Any, field: str = "record_id") -> str:
    """A record id is the SHA-256 hex digest of the record's content."""
    if not is_record_id(value):
        raise ApiError(400, "invalid_id", f"{field} must be 64 lower-case hex characters (SHA-256)")
    return value


def parse_date(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "validation_error", f"{field} must be a date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise ApiError(400, "validation_error", f"{field} {value[:40]!r} is not a date YYYY-MM-DD") from exc


def parse_datetime(value: str, field: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise ApiError(400, "validation_error", f"{field} must be an ISO 8601 time") from exc
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise ApiError(400, "validation_error", f"{field} is outside the years 1 to 9999 in UTC") from exc
    return parsed


def iso_utc(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(microsecond=0).isoformat() + "Z"


@dataclass(frozen=True)
class Field:
    """One JSON body field: its type, whether required, and limits."""

    kind: type | tuple[type, ...]
    required: bool = True
    max_len: int = 255
    min_len: int = 0
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any, str], Any] | None = None
    nullable: bool = False
    multiline: bool = False


#: What a JSON body must be (RFC 8259 §8.1: UTF-8, no byte order mark), said by every refusal of its encoding.
UTF8_JSON = "send the JSON body encoded as UTF-8, without a byte order mark"
#: The charsets of a Content-Type that name UTF-8 (RFC 8259 defines none for JSON; UTF-8 is harmless).
_UTF8_CHARSETS = ("utf-8", "utf8")


def _json_text() -> str:
    """The request body as UTF-8 text, or a 400/415 that says to send UTF-8.

    Flask hands json bytes, and json detects their encoding: a body in UTF-16 or UTF-32, or after a
    byte order mark, was read as the same JSON, so one request passed as two different byte strings
    any filter or signature in front of the server compares. The API's JSON is UTF-8 (RFC 8259
    §8.1, docs/API.md); decoding it here first leaves json only UTF-8 to read."""
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.strip().lower() not in _UTF8_CHARSETS:
        raise ApiError(415, "unsupported_media_type",
                       f"the Content-Type names the charset {charset[:40]!r}: {UTF8_JSON}")
    data = request.get_data(cache=True)
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        raise ApiError(400, "invalid_json", f"the request body starts with a byte order mark: {UTF8_JSON}")
    if b"\x00" in data:  # no JSON text holds NUL; UTF-16 and UTF-32 text of ASCII does
        raise ApiError(400, "invalid_json", f"the request body holds NUL bytes, as UTF-16 or UTF-32 does: {UTF8_JSON}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the request body is not UTF-8: {UTF8_JSON}") from exc


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400/415 that says what is wrong with it."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
    text = _json_text()
    try:
        body = current_app.json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser allows
        body = None
    if body is None:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return body


def _refuse_longer(value: str, name: str, max_len: int, normalised: bool = False) -> None:
    """`400 validation_error` when `value` is longer than `max_len` (`Field.max_len`, its column's).

    Checked as sent, which bounds what a `Field.check` reads, and again on what a check returns
    (`normalised`), which is what is stored: a check may lengthen what it normalises (Unicode
    lower-casing makes `İ` two characters), and a URL whose host was lower-cased so, though it fit
    as sent, overflowed its PostgreSQL column: a 500."""
    if len(value) > max_len:
        raise ApiError(400, "validation_error",
                       f"{name} is longer than {max_len} characters"
                       + (f" in the form it is stored in ({len(value)})" if normalised else ""))


def validate(body: dict[str, Any], fields: dict[str, Field], partial: bool = False) -> dict[str, Any]:
    """Check `body` against `fields`; unknown fields are refused so typos do not pass silently.

    With `partial=True` (updates) no field is required but at least one must be present.
    """
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(400, "validation_error", f"unknown field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in body:
            if spec.required and not partial:
                raise ApiError(400, "validation_error", f"{name} is required")
            continue
        value = body[name]
        if value is None and spec.nullable:
            out[name] = None
            continue
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ApiError(400, "validation_error", f"{name} must be of type {kinds[0].__name__}")
        if not isinstance(value, kinds):
            raise ApiError(400, "validation_error", f"{name} must be of type {kinds[0].__name__}")
        if isinstance(value, str):
            value = value.strip()
            refuse_controls(value, name, spec.multiline)
            _refuse_longer(value, name, spec.max_len)
            if len(value) < spec.min_len or (spec.min_len and is_blank(value)):
                raise ApiError(400, "validation_error",
                               f"{name} must not be empty" if spec.min_len == 1
                               else f"{name} must be at least {spec.min_len} characters")
        if spec.choices is not None and value not in spec.choices:
            raise ApiError(400, "validation_error",
                           f"{name} must be one of {', '.join(map(str, spec.choices))}")
        if spec.check is not None:
            value = spec.check(value, name)
            if isinstance(value, str):
                _refuse_longer(value, name, spec.max_len, normalised=True)
        out[name] = value
    if partial and not out:
        raise ApiError(400, "validation_error", f"send at least one of: {', '.join(fields)}")
    return out


#: Numbers in a URL, as clients write them: ASCII digits. Python's `int()` and `float()` (and `\d`
#: in a str pattern) also read other scripts' digits (`١٢`), `_` separators and padding, so `١٢`
#: would be served as 12 while the access log and the image cache key show something else.
_INTEGER = re.compile(r"-?[0-9]{1,16}")
#: Up to 24 digits before and after the point: JavaScript writes numbers from 1e-7 to 1e21 without an
#: exponent, so `String(x)` has up to 21 digits before the point and 23 after it (`0.000000123...`)
_DECIMAL = re.compile(r"[-+]?(?:[0-9]{1,24}(?:\.[0-9]{0,24})?|\.[0-9]{1,24})(?:[eE][-+]?[0-9]{1,3})?")


def ascii_int(text: str) -> int | None:
    """`text` as an integer of at most 16 ASCII digits, optionally negative; None otherwise."""
    return int(text) if _INTEGER.fullmatch(text) else None


def ascii_float(text: str) -> float | None:
    """`text` as a decimal number in ASCII (`-12.5`, `.5`, `1e3`); None otherwise (`nan` and `inf` too)."""
    if not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None  # 1e999


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = ascii_int(raw)
    if value is None:
        raise ApiError(400, "validation_error", f"query parameter {name} must be an integer")
    if not low <= value <= high:
        raise ApiError(400, "validation_error", f"query parameter {name} must be between {low} and {high}")
    return value


def query_uuid(name: str) -> str | None:
    """An optional UUID query parameter; present but blank or malformed is `400 invalid_id`."""
    if name not in request.args:
        return None
    return parse_uuid(request.args[name], name)


def query_text(name: str, max_len: int) -> str:
    """A free-text query parameter, stripped; `""` when absent.

    Longer than `max_len` is `400 validation_error`: it was cut to `max_len`, and a search for a
    65-character DICOM patient ID (`patient_id_dicom`, matched exactly) then listed the records of
    another patient, the one whose 64-character ID is its first 64. No stored value is longer.
    Control characters are `400 validation_error` rather than a database error (a 500) on
    PostgreSQL, and no name, username or insurance number holds one anyway.
    """
    value = request.args.get(name, "").strip()
    if len(value) > max_len:
        raise ApiError(400, "validation_error", f"query parameter {name} is {len(value)} characters long; "
                       f"at most {max_len} are matched (no stored value is longer)")
    if _CONTROL.search(value):
        raise ApiError(400, "validation_error", f"query parameter {name} must not contain control characters")
    return value


MAX_URL_LENGTH = 2048


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_service_url(value: str, field: str = "url") -> str:
    """The URL of a SIVR server that browsers send tokens to, without a trailing slash.

    It must be TLS (plain http only on loopback, for local deployments) and carry no user name,
    password, query or fragment, because every user can read it. It is kept as the token audience
    it is (`shared.origins.server_base_url`: scheme and host in lower case, no default port), so one
    server is one value: `https://RENDER1.example:443/` was registered beside `https://render1.example`
    as a second node although the registry's URLs are unique, and both took the same upload receipts.
    Its host is ASCII (`shared.origins.split_origin`), and its length is that of the URL returned.
    """
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        # checked before parsing: urlsplit silently drops tabs and newlines
        raise ApiError(400, "validation_error", f"{field} must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # a port outside 0..65535 raises here
    except ValueError as exc:
        raise ApiError(400, "validation_error", f"{field} is not a valid URL: {exc}") from exc
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ApiError(400, "validation_error", f"{field} must be an https:// URL with a host name")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ApiError(400, "validation_error",
                       f"{field} must use https:// (http:// is accepted only for loopback addresses)")
    if parts.username is not None or parts.password is not None:
        raise ApiError(400, "validation_error", f"{field} must not contain a user name or password")
    if "?" in value or "#" in value:
        raise ApiError(400, "validation_error", f"{field} must not have a query or fragment")
    if port == 0:
        raise ApiError(400, "validation_error", f"{field} has an invalid port")
    try:
        url = server_base_url(value)
    except ValueError as exc:
        raise ApiError(400, "validation_error", f"{field}: {exc}") from exc
    if len(url) > MAX_URL_LENGTH:
        raise ApiError(400, "validation_error", f"{field} is longer than {MAX_URL_LENGTH} characters")
    return url


def page_args() -> tuple[int, int]:
    """`(limit, offset)` from the query string, bounded."""
    return query_int("limit", 50, 1, 500), query_int("offset", 0, 0, 10_000_000)
