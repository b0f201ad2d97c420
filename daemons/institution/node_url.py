"""Checking a render node's URL before it is stored and handed to browsers.

Browsers fetch images (patient data) from this URL with the user's token, so it must be TLS;
plain http is tolerated only on the loopback interface for local deployments.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from shared.errors import ApiError

MAX_URL_LENGTH = 2048


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_node_url(value: str, field: str = "url") -> str:
    """The URL without a trailing slash, or `400 validation_error` naming what is wrong."""
    if len(value) > MAX_URL_LENGTH:
        raise ApiError(400, "validation_error", f"{field} is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        # checked before parsing: urlsplit silently drops tabs and newlines
        raise ApiError(400, "validation_error", f"{field} must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ApiError(400, "validation_error", f"{field} is not a valid URL: {exc}") from exc
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ApiError(400, "validation_error", f"{field} must be an https:// URL with a host name")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ApiError(400, "validation_error",
                       f"{field} must use https:// (http:// is accepted only for loopback addresses)")
    if parts.username is not None or parts.password is not None:
        raise ApiError(400, "validation_error", f"{field} must not contain a user name or password")
    if "?" in value or "#" in value:
        raise ApiError(400, "validation_error", f"{field} must not have a query or fragment")
    if port == 0:
        raise ApiError(400, "validation_error", f"{field} has an invalid port")
    return value.rstrip("/")
