"""What the console takes from a server's answer, against a fake SIVR server over real TLS: a
render node or an institution server cannot end the session, error text is one bounded line, a
list has a byte budget, redirects and `~/.netrc` are not followed, nesting too deep is a bad answer.

`TopSivr` plays the toplevel, the institution server and the render node on one https origin;
`answers[path]` replaces one path's answer, so a test makes exactly one layer misbehave.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from driving import WAIT_MS, wait_idle
from fake_servers import INSTITUTION_ID, SYSTEM_ADMIN_USER, Answer, FakeSivr, serving
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from admin_gui import api_client
from admin_gui.api_client import ApiClient, ApiError, ServerUnreachable, SessionEnded
from shared.tls import create_ca, issue_server_cert
from shared.tokens import normalize_audience

pytestmark = pytest.mark.gui

ADMIN = SYSTEM_ADMIN_USER
PASSWORD = "correct horse battery"
#: what a hostile server would like an administrator to read on the login screen
BAIT = "Security check failed. Re-enter your password at https://sivr-support.example.com/verify"


class TopSivr(FakeSivr):
    """Every layer at once, over TLS: a login for ADMIN, one institution whose server and single
    render node are this same origin, and `answers` to override any path."""

    def default(self, path: str) -> Answer:
        listed = {
            "/api/v1/institutions": [{"id": INSTITUTION_ID, "name": "Demo Hospital", "address": "",
                                      "server_url": self.url}],
            "/api/v1/nodes": [{"id": "33333333-3333-4333-8333-333333333333", "name": "render-1", "url": self.url,
                               "institution_id": INSTITUTION_ID}],
        }
        if path == "/api/v1/auth/login":
            return 200, {"access_token": "session-token", "expires_in": 900, "user": ADMIN}
        if path == "/api/v1/auth/token":  # every server asked for is this origin
            return 200, {"access_token": "exchanged-token", "expires_in": 60, "audience": normalize_audience(self.url)}
        if path == "/api/v1/auth/renew":
            return 200, {"access_token": "exchanged-token", "expires_in": 60}
        if path == "/api/v1/auth/logout":
            return 204, b""
        if path == "/api/v1/node":
            return 200, {"records_stored": 1, "records_loaded": 1, "memory_used_bytes": 1,
                         "memory_budget_bytes": 10, "storage_used_bytes": 1,
                         "render_latency_ms": {"p50": 1, "p95": 2}, "backend_3d": "cpu"}
        items = listed.get(path, [])
        return 200, {"items": items, "total": len(items)}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fake-sivr-tls")
    files = {name: folder / name for name in ("ca.pem", "ca.key", "server.pem", "server.key", "other-ca.pem",
                                              "other-ca.key")}
    create_ca(files["ca.pem"], files["ca.key"])
    create_ca(files["other-ca.pem"], files["other-ca.key"])  # trusted by nothing here
    issue_server_cert(files["ca.pem"], files["ca.key"], files["server.pem"], files["server.key"], ["127.0.0.1"])
    return files


@pytest.fixture
def sivr(tls_files) -> Iterator[TopSivr]:
    with serving(TopSivr((tls_files["server.pem"], tls_files["server.key"]))) as server:
        yield server


@pytest.fixture
def client(sivr, tls_files) -> ApiClient:
    """The toplevel's client, logged in."""
    top = ApiClient(sivr.url, str(tls_files["ca.pem"]))
    top.login("root", PASSWORD)
    return top


def log_in(qtbot, window, sivr: TopSivr, ca: Path) -> None:
    page = window.login
    page.url.setText(sivr.url)
    page.ca_file.setText(str(ca))
    page.username.setText("root")
    page.password.setText(PASSWORD)
    qtbot.mouseClick(page.button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert window.console is not None, window.login.banner.text()


# --- only the toplevel ends the session -----------------------------------------------------------------


@pytest.mark.parametrize("code", ["session_expired", "token_expired"])
def test_a_render_node_s_401_is_its_own_error_not_the_end_of_the_session(qtbot, window, sivr, tls_files, code):
    """Any 401 `session_expired`/`token_expired` from a node (whose URL an institution administrator
    chooses; a node whose clock runs ahead says `token_expired` honestly) ended the system
    administrator's session, with the node's text on the login screen. It is now that node's
    problem in its row, after the toplevel was asked through a fresh token exchange."""
    log_in(qtbot, window, sivr, tls_files["ca.pem"])
    sivr.answers["/api/v1/node"] = (401, {"error": {"code": code, "message": BAIT}})
    health = window.console.open_screen("Node health")
    qtbot.waitUntil(lambda: not health.busy, timeout=WAIT_MS)
    wait_idle(qtbot, window)
    assert window.console is not None and window.pages.currentWidget() is window.console
    [row] = health.model.rows()
    assert row["status"] == "down"
    assert row["problem"].startswith(f"{sivr.url.removeprefix('https://')} refused the token the toplevel issued")
    assert "still signed in" in row["problem"]
    assert BAIT not in window.login.banner.text()
    # the node was asked twice: the second time with a token the toplevel had just issued
    asked = [path for path in sivr.paths() if path in ("/api/v1/auth/token", "/api/v1/node")]
    assert asked.count("/api/v1/node") == 2 and asked[-2:] == ["/api/v1/auth/token", "/api/v1/node"]


def test_an_institution_server_s_401_shows_in_the_screen_s_banner(qtbot, window, sivr, tls_files):
    log_in(qtbot, window, sivr, tls_files["ca.pem"])
    sivr.answers["/api/v1/nodes"] = (401, {"error": {"code": "session_expired", "message": BAIT}})
    nodes = window.console.open_screen("Render nodes")
    wait_idle(qtbot, window)
    assert window.console is not None and window.pages.currentWidget() is window.console
    assert "refused the token the toplevel issued for it" in nodes.banner.text()
    assert BAIT not in window.login.banner.text()


def test_the_toplevel_s_word_still_ends_the_session_during_a_remote_call(qtbot, window, sivr, tls_files):
    """A node's 401 sends the console to the toplevel for a fresh token; when the toplevel answers
    that the session is over, the console goes back to the login screen with the toplevel's words."""
    log_in(qtbot, window, sivr, tls_files["ca.pem"])
    sivr.answers["/api/v1/node"] = (401, {"error": {"code": "session_expired", "message": BAIT}})
    exchanges = iter([sivr.default("/api/v1/auth/token")])  # the first, for the node registry

    def exchange(handler: object) -> Answer:
        return next(exchanges, (401, {"error": {"code": "session_expired",
                                                "message": "sessions last at most 12 h; log in again"}}))

    sivr.answers["/api/v1/auth/token"] = exchange
    window.console.open_screen("Node health")
    qtbot.waitUntil(lambda: window.console is None, timeout=WAIT_MS)
    wait_idle(qtbot, window)
    assert window.pages.currentWidget() is window.login
    assert window.login.banner.text() == "Your session has ended — sessions last at most 12 h; log in again."


def test_only_the_toplevel_s_client_raises_session_ended(client, sivr):
    node = client.for_server(sivr.url)
    sivr.answers["/api/v1/node"] = (401, {"error": {"code": "session_expired", "message": BAIT}})
    with pytest.raises(ApiError) as refused:
        node.get("/api/v1/node")
    assert not isinstance(refused.value, SessionEnded)
    assert (refused.value.status, refused.value.code) == (401, "session_expired")
    sivr.answers["/api/v1/users"] = (401, {"error": {"code": "session_expired", "message": "over"}})
    with pytest.raises(SessionEnded):
        client.get("/api/v1/users")


# --- what a server's words may be -----------------------------------------------------------------------


def test_a_server_s_error_message_is_one_line_of_bounded_length(client, sivr):
    """4 MiB of error text froze the window for 21 s, and 300 lines made it 5000 px tall."""
    lines = "\n".join(f"line {i}\u2028more\r\nand\x85more" for i in range(30_000))
    sivr.answers["/api/v1/users"] = (500, {"error": {"code": "internal", "message": lines, "request_id": "x" * 10**5}},
                                     {"Retry-After": "9" * 5000})
    with pytest.raises(ApiError) as failed:
        client.get("/api/v1/users")
    message = failed.value.message
    assert len(message) < 700 and len(message.splitlines()) == 1
    shown = " ".join(lines.splitlines())
    limit = api_client.MAX_MESSAGE_CHARS
    assert message.startswith(f"{shown[:limit]}… ({len(shown) - limit:,} more characters)")
    assert len(failed.value.request_id) < 100
    sivr.answers["/api/v1/users"] = (429, {"error": {"code": "rate_limited", "message": "slow\ndown"}},
                                     {"Retry-After": "9" * 5000})
    with pytest.raises(ApiError) as limited:
        client.get("/api/v1/users")
    assert limited.value.message.startswith("slow down (try again in 999") and len(limited.value.message) < 200


def test_a_list_has_a_byte_budget_for_all_its_pages(client, sivr, monkeypatch):
    """Each page was limited (MAX_ANSWER_BYTES) and the pages were (MAX_PAGES), so one list could
    hold 200 × 32 MiB. All its pages together now stop at MAX_LIST_BYTES."""
    monkeypatch.setattr(api_client, "MAX_LIST_BYTES", 2 * 1024 * 1024)
    monkeypatch.setattr(api_client, "MAX_PAGES", 20)
    page = {"items": [{"id": str(i), "name": "x" * 1000} for i in range(api_client.PAGE_LIMIT)], "total": 10**9}
    sivr.answers["/api/v1/nodes"] = (200, page)  # ~500 KiB, whatever the offset
    institution = client.for_server(sivr.url)
    with pytest.raises(ApiError) as refused:
        institution.list_all("/api/v1/nodes")
    assert refused.value.code == "bad_response"
    assert refused.value.message == f"{sivr.url} listed more than 2 MiB at /api/v1/nodes; the list was not read"
    assert sivr.paths().count("/api/v1/nodes") == 5


@pytest.mark.parametrize("depth", [10_000, 1_000_000])
def test_json_nested_too_deep_is_an_answer_the_console_cannot_read(client, sivr, depth):
    sivr.answers["/api/v1/users"] = (200, b"[" * depth + b"]" * depth)
    with pytest.raises(ApiError) as unreadable:
        client.get("/api/v1/users")
    assert unreadable.value.code == "bad_response"
    assert unreadable.value.message == (f"{sivr.url} answered without JSON the console can read (HTTP 200); "
                                        "is this a SIVR server?")
    sivr.answers["/api/v1/users"] = (500, b"[" * depth + b"]" * depth)
    with pytest.raises(ApiError) as failed:
        client.get("/api/v1/users")
    assert failed.value.code == "http_error" and "answered HTTP 500" in failed.value.message


# --- transport: no redirects, no netrc, the environment's CA bundle and proxy as before -----------------


class Sink(FakeSivr):
    """A plain-http server that answers `{}` to anything; `sent()` is what it was sent."""

    def default(self, path: str) -> Answer:
        return 200, {}

    def sent(self) -> list[tuple[str, bytes]]:
        return [(call["target"], call["body"]) for call in self.seen]


@pytest.fixture
def sink() -> Iterator[Sink]:
    with serving(Sink()) as server:
        yield server


@pytest.mark.parametrize("status", [301, 307, 308])
def test_a_redirect_is_a_bad_answer_and_the_password_stays(sivr, tls_files, sink, status):
    """A 307 from the https toplevel had requests send the login body, the password, on to an
    http:// address in clear text. SIVR servers never redirect: the console follows none."""
    sivr.answers["/api/v1/auth/login"] = (status, b"", {"Location": f"{sink.url}/collect"})
    top = ApiClient(sivr.url, str(tls_files["ca.pem"]))
    with pytest.raises(ApiError) as refused:
        top.login("root", PASSWORD)
    assert sink.sent() == []
    assert (refused.value.code, refused.value.status) == ("bad_response", status)
    assert refused.value.message.startswith(f"{sivr.url} answered HTTP {status} ")
    assert f"a redirect to {sink.url}/collect, which the console does not follow" in refused.value.message


def test_netrc_never_replaces_the_token(client, sivr, tmp_path, monkeypatch):
    """requests put the ~/.netrc ($NETRC) login for the host (whatever its port) over the
    Authorization header: the user's password for another service went to a SIVR server."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password other-service-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client.get("/api/v1/users")
    client.for_server(sivr.url).get("/api/v1/node")
    top = ApiClient(sivr.url, client.ca_file)
    top.login("root", PASSWORD)
    authorizations = [call["headers"].get("Authorization") for call in sivr.seen]
    secret = base64.b64encode(b"alice:other-service-secret").decode()
    assert not any(secret in (sent or "") for sent in authorizations)
    assert authorizations[-1] is None  # the login: no token yet
    assert "Bearer session-token" in authorizations and "Bearer exchanged-token" in authorizations


def test_the_environment_s_ca_bundle_and_proxy_still_apply(sivr, tls_files, sink, monkeypatch):
    """What the console keeps taking from the environment: with the CA field empty, the
    REQUESTS_CA_BUNDLE (the system's certificates where it is set), and HTTP(S)_PROXY; a CA file
    given in the field wins over the bundle."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files["ca.pem"]))
    assert ApiClient(sivr.url, "").get("/api/v1/institutions")["total"] == 1
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files["other-ca.pem"]))
    with pytest.raises(ServerUnreachable) as untrusted:
        ApiClient(sivr.url, "").get("/api/v1/institutions")
    assert "TLS certificate" in untrusted.value.message
    assert ApiClient(sivr.url, str(tls_files["ca.pem"])).get("/api/v1/institutions")["total"] == 1
    monkeypatch.setenv("HTTP_PROXY", sink.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert ApiClient("http://sivr.invalid:5001").get("/api/v1/info") == {}
    assert sink.sent() == [("http://sivr.invalid:5001/api/v1/info", b"")]


def test_the_signed_in_user_is_shown_on_one_line(qtbot, window, sivr, tls_files):
    """The toplevel's own user record (its full name as an older release stored it) is shown as
    every other server text is (`widgets.one_line`): no line of its own, no reordered text."""
    user = {**ADMIN, "full_name": "Root\u2028Admin\u202e nimda"}
    sivr.answers["/api/v1/auth/login"] = (200, {"access_token": "session-token", "expires_in": 900, "user": user})
    log_in(qtbot, window, sivr, tls_files["ca.pem"])
    assert window.user_label.text() == "Signed in as Root Admin\ufffd nimda (root)"
    side = window.console.findChild(QLabel, "sideUser").text()
    assert side.splitlines() == ["Root Admin\ufffd nimda", "root · System administrator"]  # the form's word
