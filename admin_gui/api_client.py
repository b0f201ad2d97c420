"""HTTP client for the SIVR layers, as the console uses them (docs/API.md).

Every call turns into either the decoded JSON answer or an `ApiError` whose message a person can
read: the server's own `{"error": {"code", "message"}}` words when there are any, otherwise a
sentence about the connection (refused, timed out, certificate not trusted). The console never
shows a traceback or a bare status code.

One `ApiClient` talks to one server; `for_server()` gives a client for another layer (an
institution server, a render node) that shares the same session, so a background renewal reaches
every screen at once. Only the toplevel receives the session token: a client for another server
sends a short-lived token that the toplevel exchanged for that server's URL alone
(`shared.token_client.AudienceTokens`, shared by all clients of one session), and retries once
with a fresh one when the server refuses it as invalid or expired (or says the session is over).
Only the toplevel's word ends the session (`SessionEnded`): another server's URL is chosen by an
institution administrator, and its clock may run ahead; its 401 is its own error, and the fresh
token of the retry is what asks the toplevel. Calls run on worker threads, hence one
`requests.Session` per thread (a Session is not documented as thread-safe).
"""

from __future__ import annotations

import json as jsonlib
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.auth import AuthBase

from admin_gui import answer_deadline
from admin_gui.form_checks import check_server_url
from admin_gui.server_text import in_its_place
from shared.shown_text import on_one_line
from shared.token_client import EXCHANGE_PATH, RETRY_CODES, AudienceTokens, answered_for

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
#: The longest a whole exchange may take, headers included (admin_gui.answer_deadline).
ANSWER_DEADLINE_S = 60.0
#: The largest answer read (the longest list the console asks for is a page of PAGE_LIMIT items).
MAX_ANSWER_BYTES = 32 * 1024 * 1024
PAGE_LIMIT = 500
#: Pages `list_all` reads at most: a server that ignores `offset` cannot keep it reading.
MAX_PAGES = 200
#: Bytes `list_all` reads at most for one list, all its pages together: MAX_PAGES answers of
#: MAX_ANSWER_BYTES each let one server make the console hold gigabytes.
MAX_LIST_BYTES = 64 * 1024 * 1024
#: 401 codes from the toplevel meaning "the session is over, log in again" (docs/API.md).
SESSION_ENDING_CODES = frozenset({"missing_token", "invalid_token", "token_expired", "session_expired"})
#: 401 codes from another server after which the call is sent once more with a freshly exchanged
#: token: the token client's (`RETRY_CODES`), and `session_expired`, which only the toplevel may
#: say: the exchange asks it, and its own `session_expired` ends the session.
REMOTE_RETRY_CODES = RETRY_CODES | {"session_expired"}


class ApiError(Exception):
    """A call failed; `message` is for people, `code` and `status` for the program."""

    def __init__(self, message: str, code: str = "error", status: int = 0, request_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id  # the server's X-Request-Id: IT finds the request's log lines with it


class ServerUnreachable(ApiError):
    """No HTTP answer at all: refused, timed out, DNS or TLS failure."""

    def __init__(self, message: str):
        super().__init__(message, "unreachable", 0)


class ReadBudget:
    """What several answers (the pages of one list) may still read together, in bytes, and the
    refusal once that is spent."""

    def __init__(self, size: int, refusal: str):
        self.left = size
        self.refusal = refusal

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ApiError(self.refusal, "bad_response")


class BearerToken(AuthBase):
    """A call's token as requests' `auth`, passed with every call, also one without a token (a login).

    Given no `auth`, requests looks the host up in ~/.netrc ($NETRC) and puts that login over the
    Authorization header: the user's password for another service on the host (netrc knows no
    ports) went to a SIVR server, and the token did not. An `auth` is what turns the lookup off.
    `Session.trust_env = False` would too, but would also drop what the console takes from the
    environment on purpose: HTTP(S)_PROXY and NO_PROXY, and REQUESTS_CA_BUNDLE, the certificates
    trusted when the login form's CA file is left empty."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class SessionEnded(ApiError):
    """The toplevel refused the session token (expired, session over, user deactivated): log in
    again. Raised for the toplevel's answers alone, so its message is the toplevel's."""


@dataclass
class Credentials:
    """The access token shared by every client of one login session."""

    access_token: str = ""
    user: dict[str, Any] = field(default_factory=dict)
    expires_in: int = 0
    #: Tokens exchanged for other servers; set by the toplevel's client, which exchanges them.
    server_tokens: AudienceTokens | None = None


def describe_connection_error(url: str, exc: requests.RequestException) -> str:
    """A sentence saying why `url` could not be reached and what to check."""
    host = urlsplit(url).netloc or url
    if isinstance(exc, requests.exceptions.SSLError):
        return (f"The TLS certificate of {host} was not accepted: check that the CA certificate "
                f"file is the one that signed this server's certificate.")
    if isinstance(exc, requests.exceptions.Timeout):
        return f"{host} did not answer in time; the server may be overloaded or down."
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema):
        return f"{url!r} is not a valid server address (expected https://host:port)."
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"Cannot reach {host}: check the address and that the server is running."
    return f"The request to {host} failed: {exc}"


#: The most characters of a server's error message the console keeps: 4 MiB of it froze the window
#: for 21 s in a banner's layout, and a server may send up to MAX_ANSWER_BYTES.
MAX_MESSAGE_CHARS = 500
#: The most characters kept of a request id (docs/API.md: 1-64) or a Retry-After value.
MAX_SHORT_TEXT_CHARS = 64


def server_text(value: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """What a server wrote, as the console shows it: one line (`shared.shown_text.on_one_line`: 300
    lines made a banner taller than any screen) of at most `limit` characters, then how many more
    there were, with its controls and overrides shown as every server's text is
    (`admin_gui.server_text.in_its_place`)."""
    line = on_one_line(str(value))
    if len(line) <= limit:
        return in_its_place(line)
    return f"{in_its_place(line[:limit])}… ({len(line) - limit:,} more characters)"


#: what the screens read of every institution the toplevel lists (`ApiClient.list_all`'s text_keys)
INSTITUTION_KEYS = ("id", "name", "server_url")


def token_of(answer: Any, what: str) -> tuple[str, int]:
    """The access token and its lifetime in seconds of a login, renewal or exchange answer.

    Checked in the worker thread, before anything is kept: a lifetime of 0 renewed the session every
    second, and one that is no number failed after the token had been taken (a long one is the
    server's setting, `tokens.access_ttl_s`: the renewal is scheduled within the timer's range,
    `main_window.renewal_delay_s`)."""
    token = answer.get("access_token") if isinstance(answer, dict) else None
    lifetime = answer.get("expires_in") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise ApiError(f"the server's {what} answer has no access token", "bad_response")
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime < 1:
        raise ApiError(f"the server's {what} answer gives its token a lifetime of {str(lifetime)[:40]!r}, not a "
                       "whole number of seconds from 1", "bad_response")
    return token, lifetime


class ApiClient:
    """JSON calls against one server with the session's token; raises `ApiError` on failure."""

    def __init__(
        self,
        base_url: str,
        ca_file: str = "",
        credentials: Credentials | None = None,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        issues_tokens: bool = True,
    ):
        self.base_url = base_url.rstrip("/")
        self.issues_tokens = issues_tokens
        self.ca_file = ca_file
        self.credentials = credentials if credentials is not None else Credentials()
        self.timeout = timeout
        self._local = threading.local()
        if issues_tokens and self.credentials.server_tokens is None:
            self.credentials.server_tokens = AudienceTokens(self._exchange)

    def for_server(self, base_url: str, timeout: tuple[float, float] | None = None) -> ApiClient:
        """A client for another layer that uses the same CA file and the same token."""
        return ApiClient(base_url, self.ca_file, self.credentials, timeout or self.timeout,
                         issues_tokens=False)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = answer_deadline.mount_on(requests.Session())
            self._local.session = session
        return session

    def _token(self) -> str:
        """The session token for the toplevel; for any other server, one exchanged for it."""
        tokens = self.credentials.server_tokens
        if self.issues_tokens or not self.credentials.access_token or tokens is None:
            return self.credentials.access_token
        # a server named by another one (an institution's entry, a node's registration), not typed in
        # the login form: checked by the same rule before a token is exchanged for it or sent to it
        problem = check_server_url(self.base_url, "Its address")
        if problem:
            raise ApiError(f"{self.base_url!r} is not called, and no token sent to it: {problem}", "invalid_url")
        try:
            return tokens.token_for(self.base_url)
        except ValueError as exc:
            raise ApiError(f"{self.base_url!r} is not a valid server address (expected https://host:port).",
                           "invalid_url") from exc

    def _exchange(self, audience: str) -> tuple[str, int]:
        """Ask the toplevel (this client) for a token for the server at `audience`. A token the
        answer names for another server is neither kept nor sent (`answered_for`): sent to this one,
        it could replay it at the other for the token's life."""
        answer = self.post(EXCHANGE_PATH, {"audience": audience})
        try:
            answered_for(audience, answer)
        except ValueError as exc:
            raise ApiError(str(exc), "bad_response") from exc
        return token_of(answer, "token exchange")

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                budget: ReadBudget | None = None) -> Any:
        """Send one call; return the decoded JSON (None for 204) or raise `ApiError`. The answer's
        bytes are also spent from `budget`, when one is given."""
        token = self._token()
        try:
            return self._send(method, path, token, json, params, budget)
        except ApiError as exc:
            retry = (not self.issues_tokens and token and exc.status == 401 and exc.code in REMOTE_RETRY_CODES
                     and self.credentials.server_tokens is not None)
            if not retry:
                raise
            self.credentials.server_tokens.forget(self.base_url, token)
            return self._send(method, path, self._token(), json, params, budget)

    def _send(self, method: str, path: str, token: str, json: Any, params: dict[str, Any] | None,
              budget: ReadBudget | None) -> Any:
        url = self.base_url + path
        headers = {"Accept": "application/json"}
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        host = urlsplit(url).netloc or url
        late = ServerUnreachable(f"{host} did not finish its answer within {ANSWER_DEADLINE_S:.0f} s; "
                                 "the server may be overloaded or misbehaving.")
        with answer_deadline.AnswerDeadline(ANSWER_DEADLINE_S) as deadline:
            try:
                # `verify` per request: a Session-level value would lose to REQUESTS_CA_BUNDLE. No redirect
                # is followed (`_decode` refuses them): a 307 re-sent the body, a password, to any
                # URL, http:// included, that no rule of the console's had checked.
                with self._session().request(method, url, json=json, params=clean, headers=headers,
                                             auth=BearerToken(token), stream=True, timeout=self.timeout,
                                             verify=self.ca_file or True, allow_redirects=False) as response:
                    content = self._read(response, budget)
            except requests.RequestException as exc:
                raise (late if deadline.expired else ServerUnreachable(describe_connection_error(url, exc))) from exc
            except OSError as exc:
                raise ServerUnreachable(f"Cannot use the CA certificate file {self.ca_file!r}: {exc}") from exc
        if deadline.expired:  # cut in the body: what arrived ended early, not the answer
            raise late
        return self._decode(response, content)

    def _read(self, response: requests.Response, budget: ReadBudget | None) -> bytes:
        """The answer's body, read as it arrives, within MAX_ANSWER_BYTES and `budget`."""
        chunks: list[bytes] = []
        size = 0
        while chunk := self._read_some(response):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                host = urlsplit(self.base_url).netloc or self.base_url
                raise ApiError(f"{host} sent an answer larger than {MAX_ANSWER_BYTES // 2**20} MiB; "
                               "is this a SIVR server?", "bad_response", response.status_code)
            if budget is not None:
                budget.spend(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _read_some(response: requests.Response) -> bytes:
        """What has arrived of the body (b"" at its end), with urllib3's errors as requests' (as
        requests itself raises them when it reads the body)."""
        try:
            return response.raw.read1(65536, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc

    def _decode(self, response: requests.Response, content: bytes) -> Any:
        if response.status_code == 204:
            return None
        if 300 <= response.status_code < 400:  # SIVR servers never redirect: a front end or an attacker does
            location = response.headers.get("Location")
            to = f" to {server_text(location)}" if location else ""
            raise ApiError(f"{self.base_url} answered HTTP {response.status_code} {server_text(response.reason)}, "
                           f"a redirect{to}, which the console does not follow: SIVR servers do not redirect; "
                           "check the server address.", "bad_response", response.status_code)
        try:
            body = jsonlib.loads(content)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
            body = None
        if response.ok:
            if body is None:
                raise ApiError(f"{self.base_url} answered without JSON the console can read "
                               f"(HTTP {response.status_code}); is this a SIVR server?", "bad_response",
                               response.status_code)
            return body
        error = body.get("error") if isinstance(body, dict) else None
        # a proxy's {"error": "Service Unavailable"} is no SIVR error object: its status speaks
        error = error if isinstance(error, dict) else {}
        if error.get("message"):
            code, message = str(error.get("code", "error")), server_text(error["message"])
        else:
            code = "http_error"
            message = f"{self.base_url} answered HTTP {response.status_code} {server_text(response.reason)}"
        if (response.status_code == 429 and response.headers.get("Retry-After")
                and "try again" not in message):
            message += f" (try again in {server_text(response.headers['Retry-After'], MAX_SHORT_TEXT_CHARS)} s)"
        given_id = error.get("request_id") or response.headers.get("X-Request-Id")
        request_id = server_text(given_id, MAX_SHORT_TEXT_CHARS) if given_id else None
        if response.status_code >= 500 and request_id:
            message += f" (request id {request_id})"  # what the admin quotes to IT
        if response.status_code == 401 and self.issues_tokens and code in SESSION_ENDING_CODES:
            raise SessionEnded(message, code, 401, request_id)
        if response.status_code == 401 and not self.issues_tokens:
            host = urlsplit(self.base_url).netloc or self.base_url
            message = (f"{host} refused the token the toplevel issued for it: {message.rstrip('.')}. You are "
                       "still signed in; check that server's clock and token settings.")
        raise ApiError(message, code, response.status_code, request_id)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def page(self, path: str, *, text_keys: tuple[str, ...] = (), budget: ReadBudget | None = None,
             **params: Any) -> tuple[list[dict[str, Any]], int]:
        """One page of a paged list: its items and the list's `total`, checked for that shape (a
        screen shows them on the GUI thread, where a wrong type would raise), every item with a
        string at each of `text_keys` (what the caller reads from every item: an entry without
        one was a KeyError that failed every source of the audit screen at once); its bytes are
        spent from `budget`, when one is given."""
        page = self.request("GET", path, params=params, budget=budget)
        items = page.get("items") if isinstance(page, dict) else None
        total = page.get("total", 0) if isinstance(page, dict) else None
        if (not isinstance(items, list) or not all(isinstance(item, dict) for item in items)
                or not isinstance(total, int) or isinstance(total, bool)):
            raise ApiError(f"{self.base_url} answered {path} with something other than a list of items; "
                           "is this a SIVR server?", "bad_response")
        for item in items:
            missing = [key for key in text_keys if not isinstance(item.get(key), str)]
            if missing:
                raise ApiError(f"{self.base_url} listed at {path} an item without {', '.join(missing)} "
                               f"(id {str(item.get('id'))[:40]!r}); is this a SIVR server of the same version?",
                               "bad_response")
        return items, total

    def list_all(self, path: str, *, text_keys: tuple[str, ...] = (), **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list (`{"items", "total"}`), fetched page by page (`page`).

        A short page ends the list whatever `total` says, and MAX_PAGES and MAX_LIST_BYTES bound it:
        a server that ignores `offset`, overstates `total` or pads its items must not keep the
        console reading, nor make it hold gigabytes."""
        items: list[dict[str, Any]] = []
        budget = ReadBudget(MAX_LIST_BYTES, f"{self.base_url} listed more than {MAX_LIST_BYTES // 2**20} MiB at "
                                            f"{path}; the list was not read")
        for _ in range(MAX_PAGES):
            batch, total = self.page(path, text_keys=text_keys, budget=budget, limit=PAGE_LIMIT, offset=len(items),
                                     **params)
            items.extend(batch)
            if len(batch) < PAGE_LIMIT or len(items) >= total:
                return items
        raise ApiError(f"{self.base_url} listed more than {MAX_PAGES * PAGE_LIMIT:,} items at {path}; "
                       "the list was not read", "bad_response")

    # --- session -------------------------------------------------------------------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in; keeps the token for later calls and returns the logged-in User."""
        self.credentials.access_token = ""
        self._forget_server_tokens()
        answer = self.post("/api/v1/auth/login", {"username": username, "password": password})
        user = answer.get("user") if isinstance(answer, dict) else None
        if (not isinstance(user, dict) or not isinstance(user.get("full_name", ""), str)
                or not all(isinstance(user.get(key), str) and user[key]
                           for key in ("username", "role", "institution_id"))):
            raise ApiError("the server's login answer names no user (username, role, institution); "
                           "is this a SIVR server?", "bad_response")
        self._take_token(answer, "login")
        return user

    def renew(self) -> int:
        """Swap the token for a fresh one of the same session; returns its lifetime in seconds."""
        answer = self.post("/api/v1/auth/renew")
        self._take_token(answer, "renewal")
        return self.credentials.expires_in

    def logout(self) -> None:
        try:
            self.post("/api/v1/auth/logout")
        finally:
            self.credentials.access_token = ""
            self._forget_server_tokens()

    def _forget_server_tokens(self) -> None:
        if self.credentials.server_tokens is not None:
            self.credentials.server_tokens.clear()

    def _take_token(self, answer: Any, what: str) -> None:
        self.credentials.access_token, self.credentials.expires_in = token_of(answer, what)
        if isinstance(answer.get("user"), dict):
            self.credentials.user = answer["user"]
