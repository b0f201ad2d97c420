"""Checks the forms run before sending anything: pure functions, value in, problem (words) out.

They mirror what the servers enforce (docs/API.md) so an administrator learns about a typo at
once, in the dialog, instead of from a round trip; the servers still check everything.
Each returns `None` when the value is acceptable, otherwise a sentence naming the field.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

from shared import field_rules
from shared.origins import server_base_url


def check_required(value: str, label: str, max_len: int = 255) -> str | None:
    if not value.strip():
        return f"{label} is required."
    if len(value.strip()) > max_len:
        return f"{label} must be at most {max_len} characters."
    return None


def check_server_url(value: str, label: str = "Server URL") -> str | None:
    """An https URL with a host: every SIVR layer speaks TLS (DESIGN.md, security model).

    Beyond that, a server's address as every SIVR server's is (`shared.origins.split_origin`, the
    rule of token audiences): the login form took `https://root:secret@host`, logged in, and kept
    the password in the settings file and the status bar; a line break typed or pasted in was
    dropped unseen by `urlsplit`, so another host was called than the one shown."""
    value = value.strip()
    if not value:
        return f"{label} is required."
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"{label} must not contain spaces or control characters."
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return f"{label} is not a valid URL."
    if parts.scheme != "https":
        return f"{label} must start with https:// (every SIVR server uses TLS)."
    if not parts.hostname:
        return f"{label} must name a host, e.g. https://sivr.example.org:5001."
    try:
        _ = parts.port  # raises on an invalid port
    except ValueError:
        return f"{label} has an invalid port."
    if parts.query or parts.fragment:
        return f"{label} must not contain ? or #."
    if parts.username is not None or parts.password is not None:  # not repeated: it may be a password
        return f"{label} must not contain a user name or password; type them into their own fields."
    try:
        server_base_url(value)
    except ValueError as exc:
        return f"{label}: {exc}."
    return None


def check_ca_file(value: str) -> str | None:
    """Empty means the system's trusted CAs; otherwise the file must exist and look like PEM."""
    value = value.strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        return f"CA certificate file {value} does not exist."
    try:
        head = path.read_bytes()[:4096]
    except OSError as exc:
        return f"CA certificate file {value} cannot be read: {exc.strerror}."
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return f"{value} is not a PEM certificate file."
    return None


def check_username(value: str) -> str | None:
    if not value.strip():
        return "Username is required."
    if field_rules.username(value.strip()) is None:
        return f"Username must be {field_rules.USERNAME_RULE}."
    return None


def check_email(value: str) -> str | None:
    """Optional field: blank is fine."""
    if value.strip() and not field_rules.email(value.strip()):
        return f"Email {value.strip()!r} is not an email address."
    return None


def check_new_password(password: str, repeated: str, min_length: int | None,
                       max_length: int | None = None) -> str | None:
    """What the toplevel's `password_field` refuses, in its words: more than `max_length` or fewer
    than `min_length` characters (its policy, `GET /api/v1/me/password-policy`: None while it is
    not known, and from an older toplevel without it, whose own refusal then names the lengths),
    or only spaces (`str.strip()`, as the server reads it; every toplevel refuses those)."""
    if max_length is not None and len(password) > max_length:
        return f"Password is longer than {max_length} characters."
    if min_length is not None and len(password) < min_length:
        return f"Password must be at least {min_length} characters."
    if not password.strip():
        return "Password must not be only spaces."
    if password != repeated:
        return "The two passwords differ."
    return None


def check_record_type_code(value: str) -> str | None:
    if field_rules.record_type_code(value.strip()) is None:
        return f"Code must be {field_rules.RECORD_TYPE_CODE_RULE}."
    return None


def check_uuid(value: str, label: str) -> str | None:
    """Optional id field (audit filters): blank is fine, otherwise a canonical UUID."""
    value = value.strip()
    if not value:
        return None
    try:
        uuid.UUID(value)
    except ValueError:
        return f"{label} must be an id like 0b9d6f0e-6a0c-4a4b-9f3e-2d1c5b7a8e90."
    return None
