"""Failed-login throttling, kept in the database so it holds across workers and toplevel servers.

Policy (docs/operations.md, "Login throttling"): within `failed_login_window_s`,

* `max_failed_logins` failures of one username from one client address throttle that pair;
* `max_failed_logins_per_address` failures from one address (any usernames) throttle the address;
* `max_failed_logins_per_username` failures of one username from all addresses together throttle
  the username everywhere. It is much higher than the per-pair limit: an attacker at one address
  cannot lock the real user (at another address) out, while guessing one password from many
  addresses stays bounded.

Every password check is reserved before it runs: checking the counters and inserting the
attempt's row happen in one exclusive transaction (`shared.db.run_exclusive`), so N parallel
wrong logins get at most the limit's verified guesses, never more. A correct password deletes its
reservation and the pair's earlier failures; a wrong one leaves the row as the failure. The check
runs before any password is hashed, so a throttled attacker costs the server no hashing.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from daemons.toplevel.models import AuditEntry, LoginFailure, User
from shared.audit import record_audit
from shared.db import run_exclusive, utcnow
from shared.errors import ApiError


def _retry_after(oldest: dt.datetime, window_s: int, now: dt.datetime) -> int:
    return max(1, math.ceil((oldest + dt.timedelta(seconds=window_s) - now).total_seconds()))


def _refuse_if_throttled(username: str, client_ip: str, auth: dict[str, Any], now: dt.datetime) -> None:
    window_s = auth["failed_login_window_s"]
    since = now - dt.timedelta(seconds=window_s)
    for condition, max_failures, what in (
        ((LoginFailure.username == username) & (LoginFailure.client_ip == client_ip),
         auth["max_failed_logins"], "this username from your address"),
        (LoginFailure.client_ip == client_ip, auth["max_failed_logins_per_address"], "your address"),
        (LoginFailure.username == username, auth["max_failed_logins_per_username"], "this username"),
    ):
        recent = LoginFailure.select(LoginFailure.at).where(condition, LoginFailure.at > since)
        if recent.count() >= max_failures:
            # The limit lifts when enough of the recent failures leave the window.
            nth = recent.order_by(LoginFailure.at.desc()).offset(max_failures - 1).first()
            wait = _retry_after(nth.at if nth else now, window_s, now)
            raise ApiError(
                429, "rate_limited",
                f"too many failed logins for {what}; try again in {wait} seconds",
                headers={"Retry-After": str(wait)},
            )


def reserve_attempt(username: str, client_ip: str, auth: dict[str, Any], throttled_action: str) -> str:
    """Raise `429 rate_limited` (with `Retry-After`) while a limit is reached, else count this attempt.

    Returns the attempt's id: pass it to `attempt_succeeded` when the password was right; left
    alone, it stays counted as a failure. `auth` is the config's `[auth]` section. A refusal is
    audited as `throttled_action`, so the log shows guessing that the limit stopped.
    """

    def check_and_count() -> str:
        now = utcnow()
        LoginFailure.delete().where(
            LoginFailure.at <= now - dt.timedelta(seconds=auth["failed_login_window_s"])).execute()
        _refuse_if_throttled(username, client_ip, auth, now)
        return LoginFailure.create(username=username[:150], client_ip=client_ip[:64], at=now).id

    try:
        return run_exclusive(LoginFailure._meta.database, "sivr-login-throttle", check_and_count)
    except ApiError as exc:
        user = User.get_or_none(User.username == username)
        record_audit(AuditEntry, throttled_action, "user", user.id if user else None, detail=exc.message,
                     user_id=user.id if user else "", username=username)
        raise


def attempt_succeeded(attempt_id: str, username: str, client_ip: str) -> None:
    """A correct password: uncount the attempt and end this address's streak for the username.

    Failures of the username from other addresses and of the address for other usernames keep
    counting, so a successful login cannot be used to reset an attacker's budget elsewhere.
    """
    LoginFailure.delete().where(
        (LoginFailure.id == attempt_id)
        | ((LoginFailure.username == username[:150]) & (LoginFailure.client_ip == client_ip[:64]))
    ).execute()
