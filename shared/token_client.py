"""Client side of the token exchange: one short-lived token per server, for Python clients.

A server accepts only tokens minted for its own base URL (`shared.tokens`), so a client holding
the toplevel's session token asks the toplevel (`POST /api/v1/auth/token`) for a token per server
it calls. `AudienceTokens` keeps them: fetched on first use, renewed once most of their life has
passed, one exchange at a time per server, and dropped when a server refuses one. The console,
the demo seeding, the tests and the benchmarks all use it, so the renewal rule exists once
(the browser viewer has the same rule in `webviewer/static/js/api.js`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase

from shared.origins import server_origin
from shared.tokens import normalize_audience

EXCHANGE_PATH = "/api/v1/auth/token"
#: Renew a server's token once this fraction of its life has passed (the same as the viewer).
RENEW_FRACTION = 0.7
#: 401 codes from a server after which a freshly exchanged token is worth one retry.
RETRY_CODES = frozenset({"invalid_token", "token_expired"})

#: `exchange(audience) -> (token, expires_in)`
Exchange = Callable[[str], tuple[str, int]]


def server_of(url: str) -> str:
    """The audience of the server a request URL goes to: its scheme, host and port.

    SIVR servers are addressed at the root of their origin (a server behind a path prefix would
    need its base URL passed to `AudienceTokens.token_for` directly).
    """
    parts = urlsplit(url)
    return server_origin(f"{parts.scheme}://{parts.netloc}")


class AudienceTokens:
    """Thread-safe cache of exchanged tokens, keyed by audience."""

    def __init__(self, exchange: Exchange, clock: Callable[[], float] = time.monotonic):
        self._exchange = exchange
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # audience -> (token, renew at)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def token_for(self, base_url: str) -> str:
        """A token for the server at `base_url`, exchanging a new one when due."""
        audience = normalize_audience(base_url)
        with self._guard:
            lock = self._locks.setdefault(audience, threading.Lock())
        with lock:  # one exchange in flight per server; the others wait for its token
            cached = self._tokens.get(audience)
            if cached is not None and self._clock() < cached[1]:
                return cached[0]
            token, expires_in = self._exchange(audience)
            self._tokens[audience] = (token, self._clock() + expires_in * RENEW_FRACTION)
            return token

    def forget(self, base_url: str, token: str | None = None) -> None:
        """Drop the server's token (only `token`, when given: another thread may have renewed it)."""
        audience = normalize_audience(base_url)
        with self._guard:
            cached = self._tokens.get(audience)
            if cached is not None and (token is None or cached[0] == token):
                del self._tokens[audience]

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()


def answered_for(audience: str, body: object) -> None:
    """Raise ValueError unless the toplevel's exchange answer `body` names `audience` (normalized) as
    the token's: a token answered for another server would be sent to this one, which could replay
    it there for the token's life (a toplevel, or a proxy before it, that mixed up two exchanges).
    The viewer holds the same rule (webviewer/static/js/answers_toplevel.js serverTokenShape)."""
    answered = body.get("audience") if isinstance(body, dict) else None
    if not isinstance(answered, str) or answered != normalize_audience(audience):
        raise ValueError(f"the toplevel answered the token exchange for {audience} with a token for "
                         f"{str(answered)[:200]!r}; nothing was sent to that server (tell IT)")


def exchange_with(session: requests.Session, toplevel_url: str, session_token: Callable[[], str],
                  timeout: float = 30) -> Exchange:
    """An `Exchange` that calls the toplevel with `session` (its TLS settings) and the session token."""

    def exchange(audience: str) -> tuple[str, int]:
        reply = session.post(f"{toplevel_url.rstrip('/')}{EXCHANGE_PATH}", json={"audience": audience},
                             headers={"Authorization": f"Bearer {session_token()}"}, timeout=timeout)
        reply.raise_for_status()
        body = reply.json()
        answered_for(audience, body)
        return body["access_token"], int(body["expires_in"])

    return exchange


def _error_code(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


class ExchangedTokenAuth(AuthBase):
    """`requests` auth: the session token for the toplevel, an exchanged token for every other server.

    A 401 `invalid_token`/`token_expired` from a server is retried once with a fresh token.
    """

    def __init__(self, toplevel_url: str, session_token: Callable[[], str], tokens: AudienceTokens):
        self.toplevel = normalize_audience(toplevel_url)
        self.session_token = session_token
        self.tokens = tokens

    def token_for_url(self, url: str) -> str:
        server = server_of(url)
        return self.session_token() if server == self.toplevel else self.tokens.token_for(server)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = request.url
        assert url is not None  # `requests` prepares the URL before it calls the auth
        request.headers["Authorization"] = f"Bearer {self.token_for_url(url)}"
        if server_of(url) != self.toplevel:
            request.register_hook("response", self._retry_once)
        return request

    def _retry_once(self, response: requests.Response, **kwargs) -> requests.Response:
        request = response.request
        if response.status_code != 401 or _error_code(response) not in RETRY_CODES \
                or getattr(request, "_sivr_retried", False):
            return response
        url, authorization = request.url, request.headers["Authorization"]
        assert url is not None and isinstance(authorization, str)  # both set by `__call__`
        sent = authorization.split(" ", 1)[1]
        self.tokens.forget(server_of(url), sent)
        retry = request.copy()
        retry._sivr_retried = True  # type: ignore[attr-defined]
        retry.headers["Authorization"] = f"Bearer {self.token_for_url(url)}"
        response.content  # noqa: B018  # read the refusal so its connection can be reused
        response.close()
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again
