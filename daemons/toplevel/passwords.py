"""Password hashing (argon2id through argon2-cffi) and the password fields of request bodies.

The hasher's cost comes from the config so an operator can raise it over time; a login with a
hash made under older parameters is rehashed on the spot. A login for an unknown username still
runs one verification against a dummy hash, so the answer time does not reveal which usernames
exist.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.config import Config, ConfigError
from shared.errors import ApiError

MAX_PASSWORD_LENGTH = 1024
# argon2id (RFC 9106, 3.1): at most 2^24 - 1 lanes, and at least 8 KiB of memory per lane
ARGON2_MAX_LANES = 2**24 - 1
ARGON2_MIN_KIB_PER_LANE = 8
# JSON can carry lone surrogates ("\ud800"); argon2 hashes UTF-8 bytes, which they have none of.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Passwords:
    """Hash, verify and rehash-check with one parameter set."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int):
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def burn_dummy(self, password: str) -> None:
        """Spend the time of one verification, for usernames that do not exist."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def check_argon2(config: Config) -> None:
    """Refuse memory too small for the lanes, naming both keys, instead of argon2's bare "memory
    cost is too small" in a worker that `sivr serve` already forked (`daemons.cli.check_served_files`)."""
    auth = config["auth"]
    least_kib = ARGON2_MIN_KIB_PER_LANE * auth["argon2_parallelism"]
    if auth["argon2_memory_kib"] < least_kib:
        raise ConfigError(f"{config.source or '<config>'}: auth.argon2_memory_kib must be at least "
                          f"{ARGON2_MIN_KIB_PER_LANE} per lane ({least_kib} for auth.argon2_parallelism = "
                          f"{auth['argon2_parallelism']}), got {auth['argon2_memory_kib']}")


def passwords_from_config(config: Config) -> Passwords:
    """The hasher of the config (`check_argon2` first)."""
    check_argon2(config)
    auth = config["auth"]
    return Passwords(auth["argon2_time_cost"], auth["argon2_memory_kib"], auth["argon2_parallelism"])


def password_field(body: dict[str, Any], name: str, min_length: int = 1) -> str:
    """The password exactly as typed (never stripped: spaces are part of it), length-checked.

    `shared.validation.validate` strips strings, which is right for names but would silently
    change a password, so password fields are read here.
    """
    value = body.get(name)
    if value is None:
        raise ApiError(400, "validation_error", f"{name} is required")
    if not isinstance(value, str):
        raise ApiError(400, "validation_error", f"{name} must be of type str")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise ApiError(400, "validation_error", f"{name} is longer than {MAX_PASSWORD_LENGTH} characters")
    if _LONE_SURROGATE.search(value):
        raise ApiError(400, "validation_error", f"{name} contains invalid Unicode (a lone surrogate)")
    if len(value) < min_length or not value.strip():
        raise ApiError(400, "validation_error",
                       f"{name} must be at least {min_length} characters and not only spaces")
    return value


def check_body_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse unknown fields in bodies read without `validate` (typos must not pass silently)."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, "validation_error", f"unknown field(s): {', '.join(unknown)}")
