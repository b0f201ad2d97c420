"""Failed-login throttling per username and per client address, kept in the database.

Counting in the shared database (not in a worker's memory) makes the limit hold across gunicorn
workers and across several toplevel servers. The check runs before any password is verified, so a
throttled attacker costs the server no hashing. Counting is not transactional with the insert:
under a burst of parallel attempts a few more than the limit may be tried, never unboundedly many.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from daemons.toplevel.models import LoginFailure
from shared.db import utcnow
from shared.errors import ApiError


def _retry_after(oldest: dt.datetime, window_s: int, now: dt.datetime) -> int:
    return max(1, math.ceil((oldest + dt.timedelta(seconds=window_s) - now).total_seconds()))


def check_login_allowed(username: str, client_ip: str, auth: dict[str, Any]) -> None:
    """Raise `429 rate_limited` with `Retry-After` while either counter is at its limit.

    `auth` is the config's `[auth]` section (limits per username and per address, window).
    """
    window_s = auth["failed_login_window_s"]
    now = utcnow()
    since = now - dt.timedelta(seconds=window_s)
    for column, value, max_failures, what in (
        (LoginFailure.username, username, auth["max_failed_logins"], "this username"),
        (LoginFailure.client_ip, client_ip, auth["max_failed_logins_per_address"], "your address"),
    ):
        recent = LoginFailure.select(LoginFailure.at).where(column == value, LoginFailure.at > since)
        if recent.count() >= max_failures:
            # The limit lifts when enough of the recent failures leave the window.
            nth = recent.order_by(LoginFailure.at.desc()).offset(max_failures - 1).first()
            wait = _retry_after(nth.at if nth else now, window_s, now)
            raise ApiError(
                429, "rate_limited",
                f"too many failed logins from {what}; try again in {wait} seconds",
                headers={"Retry-After": str(wait)},
            )


def record_failure(username: str, client_ip: str, window_s: int) -> None:
    """Remember one failure and drop failures that have left the window (keeps the table small)."""
    now = utcnow()
    LoginFailure.delete().where(LoginFailure.at <= now - dt.timedelta(seconds=window_s)).execute()
    LoginFailure.create(username=username[:150], client_ip=client_ip[:64], at=now)


def clear_failures(username: str) -> None:
    """A correct password ends the username's streak (the address counter keeps running)."""
    LoginFailure.delete().where(LoginFailure.username == username).execute()
