"""Failed-login throttling, kept in the database so it holds across workers and toplevel servers.

Policy (docs/operations.md, "Login throttling"): within `failed_login_window_s`,

* `max_failed_logins` failures of one username from one client address throttle that pair;
  an IPv6 client's address is its /64 network (`address_key`), which one host holds whole;
* `max_failed_logins_per_address` failures from one address (any usernames) throttle the address;
* `max_failed_logins_per_username` failures of one username from all addresses together throttle
  the username everywhere. It is much higher than the per-pair limit: an attacker at one address
  cannot lock the real user (at another address) out, while guessing one password from many
  addresses stays bounded.

Every password check is reserved before it runs: checking the counters and inserting the
attempt's row happen in one exclusive transaction (`shared.db.run_exclusive`), so N parallel
wrong logins get at most the limit's verified guesses, never more. A correct password deletes its
reservation and the pair's earlier failures; a wrong one settles its row as a failure. The check
runs before any password is hashed, so a throttled attacker costs the server no hashing.

Reservations still being checked are not failures yet: an attempt that would pass the limit only
because of them waits (at most `login_queue_s`) for them to settle instead of being refused. So a
morning burst of correct logins behind one NAT address queues rather than getting 429, while
parallel guesses still get no more checks than the limit. A reservation older than the queue time
(its worker died mid-check) counts as a failure.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
import time
from typing import Any

from daemons.toplevel.models import AuditEntry, LoginFailure, User
from shared.addresses import client_network
from shared.audit import record_audit, stored_address
from shared.db import run_exclusive, utcnow
from shared.errors import ApiError


def _retry_after(oldest: dt.datetime, window_s: int, now: dt.datetime) -> int:
    return max(1, math.ceil((oldest + dt.timedelta(seconds=window_s) - now).total_seconds()))


class _Queued(Exception):
    """The limit is reached only by checks still running: wait for them to settle."""


def address_key(client_ip: str) -> str:
    """The client address failed logins are counted by: an IPv6 address as its /64 network, an
    IPv4-mapped one (`::ffff:192.0.2.7`, a dual-stack listener's IPv4 client) as its IPv4 address
    (`shared.addresses.client_network`, the rule the DICOM listener counts peers by), anything else
    as the audit's `client_ip` holds it (`shared.audit.stored_address`).

    One host is given a /64 (SLAAC, privacy addresses, a prefix per container): counted address
    by address, it sent a new address with every guess, and the per-address and per-pair limits
    never held (89 of 90 wrong passwords over 30 usernames checked, where one address got 20).
    A /64 shared by a site's hosts is counted as an IPv4 NAT address is, for which the per-address
    limit is set higher than the per-pair one.
    """
    return client_network(client_ip) or stored_address(client_ip)


def _keys(username: str, client_ip: str) -> tuple[str, str]:
    """The username and address as a failure's row holds them, for counting as for storing: an
    address over the column's 64 characters was stored cut but counted whole, so the per-address
    and per-pair limits never matched it (an IPv6 address with a zone id, a trusted proxy's
    X-Forwarded-For value) and only the per-username limit held. The address is `address_key`'s."""
    return username[:LoginFailure.username.max_length], address_key(client_ip)


def _refuse_if_throttled(username: str, client_ip: str, auth: dict[str, Any], now: dt.datetime) -> None:
    window_s = auth["failed_login_window_s"]
    since = now - dt.timedelta(seconds=window_s)
    stale = now - dt.timedelta(seconds=auth["login_queue_s"])
    queued = False
    for condition, max_failures, what in (
        ((LoginFailure.username == username) & (LoginFailure.client_ip == client_ip),
         auth["max_failed_logins"], "this username from your address"),
        (LoginFailure.client_ip == client_ip, auth["max_failed_logins_per_address"], "your address"),
        (LoginFailure.username == username, auth["max_failed_logins_per_username"], "this username"),
    ):
        recent = LoginFailure.select(LoginFailure.at).where(condition, LoginFailure.at > since)
        failures = recent.where(LoginFailure.settled | (LoginFailure.at <= stale))
        if failures.count() >= max_failures:
            # The limit lifts when enough of the recent failures leave the window.
            nth = failures.order_by(LoginFailure.at.desc()).offset(max_failures - 1).first()
            wait = _retry_after(nth.at if nth else now, window_s, now)
            raise ApiError(
                429, "rate_limited",
                f"too many failed logins for {what}; try again in {wait} seconds",
                headers={"Retry-After": str(wait)},
            )
        queued = queued or recent.count() >= max_failures
    if queued:
        raise _Queued


def reserve_attempt(username: str, client_ip: str, auth: dict[str, Any], throttled_action: str) -> str:
    """Raise `429 rate_limited` (with `Retry-After`) while a limit is reached, else count this attempt.

    Returns the attempt's id: pass it to `attempt_succeeded` when the password was right, or to
    `attempt_failed` when it was wrong. `auth` is the config's `[auth]` section. A refusal is
    audited as `throttled_action`, so the log shows guessing that the limit stopped.
    """

    username_key, address_key = _keys(username, client_ip)

    def check_and_count(final: bool) -> str:
        now = utcnow()
        LoginFailure.delete().where(
            LoginFailure.at <= now - dt.timedelta(seconds=auth["failed_login_window_s"])).execute()
        try:
            _refuse_if_throttled(username_key, address_key, auth, now)
        except _Queued:
            if not final:
                raise
            raise ApiError(429, "rate_limited",
                           f"too many logins in progress for {username!r} or your address; try again in a few seconds",
                           headers={"Retry-After": str(max(1, math.ceil(auth["login_queue_s"])))}) from None
        return LoginFailure.create(username=username_key, client_ip=address_key, at=now, settled=False).id

    deadline = time.monotonic() + auth["login_queue_s"]
    try:
        while True:
            final = time.monotonic() >= deadline
            try:
                return run_exclusive(LoginFailure._meta.database, "sivr-login-throttle",
                                     functools.partial(check_and_count, final))
            except _Queued:
                time.sleep(random.uniform(0.05, 0.15))
    except ApiError as exc:
        audit_login_attempt(throttled_action, username, User.get_or_none(User.username == username), exc.message)
        raise


def audit_login_attempt(action: str, username: str, user: User | None, detail: str) -> None:
    """An audit entry for a login attempt, made before anyone is authenticated: the actor is the
    account the attempt names (`user`, found by `username`; None when there is none), with its
    institution and role, so that institution's administrators see the attempt."""
    record_audit(AuditEntry, action, "user", user.id if user else None, detail=detail,
                 user_id=user.id if user else "", username=username,
                 actor_institution_id=user.institution_id if user else None, actor_role=user.role if user else None)


def attempt_failed(attempt_id: str) -> None:
    """A wrong password: the reservation becomes a counted failure."""
    LoginFailure.update(settled=True).where(LoginFailure.id == attempt_id).execute()


def attempt_succeeded(attempt_id: str, username: str, client_ip: str) -> None:
    """A correct password: uncount the attempt and end this address's streak for the username.

    Failures of the username from other addresses and of the address for other usernames keep
    counting, so a successful login cannot be used to reset an attacker's budget elsewhere; checks
    of the pair still running (perhaps a guess from behind the same NAT) stay reserved.
    """
    username_key, address_key = _keys(username, client_ip)
    LoginFailure.delete().where(
        (LoginFailure.id == attempt_id)
        | ((LoginFailure.username == username_key) & (LoginFailure.client_ip == address_key)
           & LoginFailure.settled)
    ).execute()
