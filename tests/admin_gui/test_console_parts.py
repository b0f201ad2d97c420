"""The console's parts on their own: form checks, table sorting and filtering, the API client's
error mapping against the real servers, the entry point and the desktop entry."""

from __future__ import annotations

import configparser
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import shiboken6
from driving import WAIT_MS
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QLabel, QWidget

from admin_gui import api_client, form_checks
from admin_gui.api_client import ApiClient, ApiError, ServerUnreachable, SessionEnded
from admin_gui.main import main
from admin_gui.main_window import ConsoleWindow, renewal_delay_s
from admin_gui.screens.node_health import MemoryBarDelegate
from admin_gui.table_models import FilterProxyModel, NodeHealthModel, human_bytes, short_id
from admin_gui.widgets import FormDialog, MessageBanner, confirm
from admin_gui.workers import TaskRunner
from tests.loopback_http import serving

pytestmark = pytest.mark.gui

RESOURCES = Path(__file__).resolve().parents[2] / "admin_gui" / "resources"


def test_form_checks_name_the_field_and_accept_good_values(tmp_path):
    assert form_checks.check_server_url("https://sivr.example.org:5001") is None
    assert form_checks.check_server_url("https://sivr.example.org:99999") == "Server URL has an invalid port."
    assert form_checks.check_server_url("https://") == \
        "Server URL must name a host, e.g. https://sivr.example.org:5001."
    assert form_checks.check_server_url("https://a.org/?x=1") == "Server URL must not contain ? or #."
    assert form_checks.check_server_url("https://[::1") == "Server URL is not a valid URL."
    assert form_checks.check_server_url("https://[::1]:5001") is None
    assert form_checks.check_username("dr house") == \
        "Username must be 3-150 characters: letters, digits and . _ @ - (starting with a letter or digit)."
    assert form_checks.check_username("dr.house") is None
    assert form_checks.check_email("") is None
    assert form_checks.check_new_password("0123456789", "0123456789", 10) is None
    # the server's minimum, whatever it is (an operator's auth.min_password_length), and none before it is known
    assert form_checks.check_new_password("0123456789", "0123456789", 12) == "Password must be at least 12 characters."
    assert form_checks.check_new_password("012345678", "012345678", 8) is None
    assert form_checks.check_new_password("012", "012", None) is None
    assert form_checks.check_record_type_code("CT") is None
    assert form_checks.check_uuid("", "Patient") is None
    assert form_checks.check_uuid("0b9d6f0e-6a0c-4a4b-9f3e-2d1c5b7a8e90", "Patient") is None
    assert form_checks.check_ca_file("") is None


def test_renewal_comes_before_expiry():
    assert renewal_delay_s(300) == 240
    assert renewal_delay_s(3600) == 3540
    assert renewal_delay_s(10) == 8
    assert renewal_delay_s(1) == 1
    assert renewal_delay_s(10**10) == 24 * 3600  # within QTimer's int milliseconds (a server's long tokens)


def test_cells_read_well():
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(8 * 1024**3) == "8.0 GiB"
    assert human_bytes(None) == ""
    assert short_id("32526580-8365-4b12-8786-271f3db6692c") == "32526580…"
    assert short_id("patient") == "patient"


def test_tables_sort_numbers_as_numbers_and_filter_on_whole_ids(qapp):
    model = NodeHealthModel()
    model.set_rows([
        {"id": "a1", "name": "n-a", "institution_name": "X", "status": "up", "records_stored": 9,
         "url": "https://a:5003"},
        {"id": "b2", "name": "n-b", "institution_name": "X", "status": "up", "records_stored": 10,
         "url": "https://b:5003"},
        {"id": "c3", "name": "n-c", "institution_name": "X", "status": "down", "records_stored": None,
         "url": "https://c:5003"},
    ])
    proxy = FilterProxyModel()
    proxy.setSourceModel(model)
    stored = [c.header for c in model.columns].index("Stored")
    proxy.sort(stored, Qt.SortOrder.AscendingOrder)
    assert [proxy.index(r, 1).data() for r in range(3)] == ["n-a", "n-b", "n-c"]  # 9 < 10, blank last
    proxy.setFilterFixedString("UNREACHABLE")
    assert [proxy.index(r, 1).data() for r in range(proxy.rowCount())] == ["n-c"]


HOSTILE_FIGURES = [
    {"render_latency_ms": {"p50": "fast", "p95": [1]}, "storage_used_bytes": 10**400,
     "memory_used_bytes": 10**400, "memory_budget_bytes": 3, "records_stored": float("inf")},
    {"render_latency_ms": {"p50": 10**400}, "storage_used_bytes": "lots", "memory_used_bytes": "x",
     "memory_budget_bytes": 10**400, "records_stored": {"a": 1}},
    {"render_latency_ms": {"p50": 12.5}, "storage_used_bytes": 2048, "memory_used_bytes": 1,
     "memory_budget_bytes": 4, "records_stored": 3},
]


def test_a_node_s_nonsense_figures_show_blank_and_sort_without_crashing(qtbot):
    """A string, an infinity or an integer too large for a float in a node's figures raised inside
    Qt's calls into the model, the sort proxy and the memory bar: PySide turned that into a
    segmentation fault of the whole console. They now show as blank cells and sort last."""
    model = NodeHealthModel()
    model.set_rows([{"id": f"n{i}", "name": f"node-{i}", "status": "up", **figures}
                    for i, figures in enumerate(HOSTILE_FIGURES)])
    proxy = FilterProxyModel()
    proxy.setSourceModel(model)
    for column, header in enumerate(c.header for c in model.columns):
        proxy.sort(column, Qt.SortOrder.AscendingOrder)
        assert proxy.rowCount() == 3, header
    from PySide6.QtWidgets import QTableView
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    view.setItemDelegateForColumn(NodeHealthModel.MEMORY_COLUMN, MemoryBarDelegate(view))
    view.resize(1400, 200)
    view.show()
    qtbot.waitExposed(view)
    view.grab()  # paints every cell, the memory bars included
    texts = {model.index(row, column).data() for row in range(3) for column in range(len(model.columns))}
    assert {"12 ms", "2.0 KiB", "25%"} <= texts
    headers = [c.header for c in model.columns]
    for row in (0, 1):
        for name in ("p50", "p95", "Storage", "Memory"):
            assert model.index(row, headers.index(name)).data() == "", (row, name)


class _HostileNode(BaseHTTPRequestHandler):
    """A server that answers like a SIVR server at first sight, then misbehaves (a real socket)."""

    def do_GET(self):
        if self.path.startswith("/drip"):  # the body a byte at a time
            self._drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", b" ")
            return
        if self.path.startswith("/slow-headers"):  # the status line, then a header a byte at a time
            self._drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: ", b"x")
            return
        if self.path.startswith("/huge"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b" " * 65536)
            except OSError:
                pass
            return
        if self.path.startswith("/shape"):  # a page of the wrong shape
            body = json.dumps({"items": ["x"], "total": "many"}).encode()
        else:  # a paged list that ignores offset and overstates its total
            body = json.dumps({"items": [{"id": str(i)} for i in range(api_client.PAGE_LIMIT)],
                               "total": 10**9}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, start: bytes, byte: bytes) -> None:
        """`start`, then `byte` every 50 ms for 20 s: no single wait reaches the read timeout."""
        try:
            self.wfile.write(start)
            for _ in range(400):
                self.wfile.write(byte)
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_node():
    with serving(_HostileNode) as url:
        yield url


def test_a_server_cannot_hold_or_flood_a_call(hostile_node, monkeypatch):
    """requests' read timeout bounds each wait for data, not the answer: a server sending a byte
    at a time held the call, its worker thread, and in the end every screen of the console. An
    answer now has a deadline and a size limit, and a paged list ends on a short page or a bound."""
    monkeypatch.setattr(api_client, "ANSWER_DEADLINE_S", 1.0)
    monkeypatch.setattr(api_client, "MAX_ANSWER_BYTES", 1024 * 1024)
    node = ApiClient(hostile_node, timeout=(2.0, 2.0), issues_tokens=False)
    started = time.monotonic()
    with pytest.raises(ServerUnreachable) as held:
        node.get("/drip")
    assert time.monotonic() - started < 5 and "did not finish its answer" in held.value.message
    started = time.monotonic()
    with pytest.raises(ServerUnreachable) as held:  # the headers were read with no deadline at all
        node.get("/slow-headers")
    assert time.monotonic() - started < 5 and "did not finish its answer" in held.value.message
    with pytest.raises(ApiError) as flooded:
        node.get("/huge")
    assert flooded.value.code == "bad_response" and "larger than 1 MiB" in flooded.value.message
    monkeypatch.setattr(api_client, "MAX_PAGES", 3)
    with pytest.raises(ApiError) as endless:
        node.list_all("/api/v1/nodes")
    assert endless.value.code == "bad_response" and "more than 1,500 items" in endless.value.message
    with pytest.raises(ApiError) as misshapen:  # refused in the worker, not raised on the GUI thread
        node.page("/shape", limit=10)
    assert misshapen.value.code == "bad_response" and "list of items" in misshapen.value.message


class _ForwardProxy(BaseHTTPRequestHandler):
    """An HTTP proxy (absolute-URI GET), passing the answer on as it arrives, byte by byte."""

    def do_GET(self):
        target = urlsplit(self.path)
        with socket.create_connection((target.hostname, target.port)) as upstream:
            upstream.sendall(f"GET {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n\r\n".encode())
            try:
                while byte := upstream.recv(1):
                    self.wfile.write(byte)
                    self.wfile.flush()
            except OSError:
                pass

    def log_message(self, *args):
        pass


def test_the_deadline_holds_through_a_proxy(hostile_node, monkeypatch):
    """requests takes HTTP(S)_PROXY from the environment, and a call through a proxy used pools the
    deadline did not watch: headers sent a byte at a time held it again."""
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setattr(api_client, "ANSWER_DEADLINE_S", 1.0)
        node = ApiClient(hostile_node, timeout=(2.0, 2.0), issues_tokens=False)
        started = time.monotonic()
        with pytest.raises(ServerUnreachable) as held:
            node.get("/slow-headers")
        assert time.monotonic() - started < 5 and "did not finish its answer" in held.value.message
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_client_turns_every_failure_into_words(gui_deployment):
    top = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    with pytest.raises(SessionEnded) as ended:
        top.get("/api/v1/users")
    assert ended.value.code == "missing_token"
    top.login(**gui_deployment.users["admin"])
    with pytest.raises(ApiError) as invalid:
        top.get("/api/v1/users/not-a-uuid")
    assert (invalid.value.status, invalid.value.code) == (400, "invalid_id")
    assert "not-a-uuid" in invalid.value.message
    web = top.for_server(gui_deployment.url("web"))
    with pytest.raises(ApiError) as not_json:
        web.get("/")
    assert not_json.value.code == "bad_response"
    assert "without JSON" in not_json.value.message


def test_main_opens_the_console_with_the_given_server(qapp, tmp_path):
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path))
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    seen: dict[str, str] = {}

    def close_console() -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, ConsoleWindow) and widget.isVisible():
                seen["url"], seen["ca"] = widget.login.url.text(), widget.login.ca_file.text()
                widget.close()

    QTimer.singleShot(0, close_console)
    # as `sivr admin -- --url … --ca …` passes them
    assert main(["--", "--url", "https://sivr.example.org:5001", "--ca", str(ca)]) == 0
    assert seen == {"url": "https://sivr.example.org:5001", "ca": str(ca)}


def test_desktop_entry_starts_sivr_admin():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(RESOURCES / "sivr-admin.desktop")
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application"
    assert desktop["Exec"] == "sivr admin"
    assert desktop["Icon"] == "sivr-admin"
    assert desktop["StartupWMClass"] == "sivr-admin"
    assert desktop["Categories"].endswith(";")
    assert not QIcon(str(RESOURCES / "sivr-admin.svg")).isNull()


def test_a_form_keeps_a_current_value_it_does_not_know(qtbot):
    """Editing a user whose institution is not in the list must not move them to the first one."""
    parent = QWidget()
    qtbot.addWidget(parent)
    dialog = FormDialog(parent, "Edit", TaskRunner(parent), lambda values: {}, lambda values: None)
    dialog.add_combo("institution_id", "Institution", [("A", "id-a"), ("B", "id-b")], "id-gone")
    dialog.add_combo("role", "Role", [("Physician", "physician"), ("System administrator", "sysadmin")], "sysadmin")
    assert dialog.values() == {"institution_id": "id-gone", "role": "sysadmin"}


def test_text_from_servers_is_shown_literally_never_as_html(qtbot):
    """Names and error messages are typed by other users: markup in them must stay visible text."""
    hostile = '<img src="file:///etc/passwd"><a href="https://evil.example">log in again</a>'
    parent = QWidget()
    qtbot.addWidget(parent)
    banner = MessageBanner(parent)
    banner.show_error(f"an institution named {hostile!r} already exists")
    dialog = FormDialog(parent, f"Edit institution {hostile}", TaskRunner(parent), lambda values: {},
                        lambda values: None, intro=f"Registered on {hostile}.")
    box = confirm(parent, "Delete institution", f"Delete the institution {hostile}?", lambda: None)
    labels = [banner.label, *dialog.findChildren(QLabel)]
    assert any(hostile in label.text() for label in labels[1:])
    for label in labels:
        assert label.textFormat() == Qt.TextFormat.PlainText, label.text()
    assert box.textFormat() == Qt.TextFormat.PlainText
    box.close()
    model = NodeHealthModel()
    model.set_rows([{"id": "a1", "name": hostile, "institution_name": "X", "status": "up",
                     "records_stored": 1, "url": "https://a:5003"}])
    name = [c.header for c in model.columns].index("Node")
    tip = model.index(0, name).data(Qt.ItemDataRole.ToolTipRole)
    assert "<img" not in tip and "&lt;img" in tip


def test_runner_works_off_the_gui_thread_and_answers_on_it(qtbot):
    """A call blocked in a worker does not block the event loop; its answer arrives in the GUI thread."""
    runner = TaskRunner()
    release = threading.Event()
    seen: dict[str, object] = {}

    def work() -> bool:
        seen["work_thread"] = threading.current_thread()
        return release.wait(10)

    def done(released: bool) -> None:
        seen["done_thread"] = threading.current_thread()
        seen["released"] = released

    runner.submit(work, done)
    QTimer.singleShot(0, release.set)  # only runs if the GUI thread is free while work() waits
    qtbot.waitUntil(lambda: runner.pending == 0, timeout=WAIT_MS)
    assert seen["work_thread"] is not threading.main_thread()
    assert seen["done_thread"] is threading.main_thread()
    assert seen["released"] is True


def test_runner_routes_failures(qtbot):
    runner = TaskRunner()
    errors: list[str] = []
    unhandled: list[str] = []
    ended: list[str] = []
    runner.unhandled_error.connect(unhandled.append)
    runner.session_ended.connect(ended.append)

    def fail(error: Exception):
        def call():
            raise error
        return call

    runner.submit(fail(ApiError("refused in words", "conflict", 409)), errors.append,
                  lambda e: errors.append(e.message))
    runner.submit(fail(ApiError("nobody listens", "conflict", 409)), errors.append)
    runner.submit(fail(SessionEnded("token expired", "token_expired", 401)), errors.append,
                  lambda e: errors.append("must not be called"))
    runner.submit(fail(KeyError("bug")), errors.append, lambda e: errors.append(e.message))
    gone = QWidget()
    runner.submit(lambda: 1, lambda _: errors.append("owner was deleted"), owner=gone)
    shiboken6.delete(gone)  # before the event loop can deliver the answer
    qtbot.waitUntil(lambda: runner.pending == 0, timeout=WAIT_MS)
    assert sorted(errors) == ["Unexpected error: KeyError('bug')", "refused in words"]  # any order
    assert unhandled == ["nobody listens"]
    assert ended == ["token expired"]


def test_cycle_collection_runs_only_on_the_gui_thread_while_the_console_runs(qapp):
    import gc

    from admin_gui.gc_on_gui_thread import GuiThreadCollector, collect_due_generation

    assert not gc.isenabled()  # the suite's autouse collector, as the console's main() does
    nested = GuiThreadCollector()
    nested.stop()
    assert not gc.isenabled(), "stopping restores the state it found"

    class Cycle:
        pass

    before = gc.get_count()[0]
    for _ in range(gc.get_threshold()[0] + 10):
        node = Cycle()
        node.self = node
    assert gc.get_count()[0] > before
    collect_due_generation()
    assert gc.get_count()[0] < gc.get_threshold()[0]


def test_console_sends_each_server_a_token_exchanged_for_it(gui_deployment):
    """The session token stays with the toplevel; an institution server gets its own token, and a
    refused one is replaced once by a fresh exchange."""
    import jwt

    from shared.tokens import normalize_audience

    top = ApiClient(gui_deployment.url("toplevel"), gui_deployment.ca_cert)
    top.login(**gui_deployment.users["admin"])
    server_url = gui_deployment.layout.institutions[0]["server_url"]
    institution = top.for_server(server_url)
    assert institution.get("/api/v1/info")["institution_id"]
    tokens = top.credentials.server_tokens
    sent = tokens.token_for(server_url)
    assert jwt.decode(sent, options={"verify_signature": False})["aud"] == normalize_audience(server_url)
    assert sent != top.credentials.access_token

    stale = ApiClient(server_url, gui_deployment.ca_cert, top.credentials, issues_tokens=False)
    stale.credentials.server_tokens._tokens[normalize_audience(server_url)] = (top.credentials.access_token, 1e18)
    assert stale.get("/api/v1/info")["institution_id"]  # the session token was refused there, then replaced
    assert tokens.token_for(server_url) != top.credentials.access_token


class _OddServer(BaseHTTPRequestHandler):
    """A server whose answers have the status a SIVR server gives, in shapes it never gives:
    `answers` maps a path to (status, JSON body)."""

    answers: dict[str, tuple[int, object]] = {}

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.answers[urlsplit(self.path).path]
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def odd_server():
    with serving(_OddServer) as url:
        yield url, _OddServer.answers
    _OddServer.answers.clear()


def test_a_proxy_s_error_body_is_read_as_its_status(odd_server):
    """{"error": "Service Unavailable"} (a proxy's shape) raised AttributeError in the client:
    every banner said "Unexpected error: AttributeError(...)"."""
    url, answers = odd_server
    answers["/api/v1/nodes"] = (503, {"error": "Service Unavailable"})
    answers["/api/v1/users"] = (502, {"error": ["a", "list"]})
    client = ApiClient(url, issues_tokens=False)
    for path, status in (("/api/v1/nodes", 503), ("/api/v1/users", 502)):
        with pytest.raises(ApiError) as refused:
            client.get(path)
        assert (refused.value.code, refused.value.status) == ("http_error", status)
        assert f"answered HTTP {status}" in refused.value.message


@pytest.mark.parametrize("answer", [
    {"access_token": "t", "expires_in": 900, "user": "admin"},  # crashed the console
    {"access_token": "t", "expires_in": 900},
    {"access_token": "t", "expires_in": 900, "user": {"username": ["x"], "role": "admin"}},
    {"access_token": "t", "expires_in": 0, "user": {"username": "a", "role": "admin", "institution_id": "i"}},
    {"access_token": "t", "expires_in": 900, "user": {}},
    {"access_token": "t", "expires_in": 900, "user": {"username": "a", "role": "admin", "institution_id": None}},
    {"access_token": "t", "expires_in": "900", "user": {"username": "a", "role": "admin", "institution_id": "i"}},
    {"access_token": "", "expires_in": 900, "user": {"username": "a", "role": "admin", "institution_id": "i"}},
    {"access_token": 5, "expires_in": 900, "user": {"username": "a", "role": "admin", "institution_id": "i"}},
])
def test_login_answers_of_the_wrong_shape_are_refused_before_a_token_is_kept(odd_server, answer):
    url, answers = odd_server
    answers["/api/v1/auth/login"] = (200, answer)
    client = ApiClient(url)
    with pytest.raises(ApiError) as refused:
        client.login("admin", "pw")
    assert refused.value.code == "bad_response"
    assert client.credentials.access_token == ""


def test_a_login_answer_without_a_user_shows_in_the_banner_and_the_console_lives(qtbot, tmp_path, odd_server):
    """A callback raising on the GUI thread ended the console's process (`Fatal Python error:
    none_dealloc`); the answer is refused in the worker, and the form is usable again."""
    url, answers = odd_server
    answers["/api/v1/auth/login"] = (200, {"access_token": "t", "expires_in": 900, "user": "admin"})
    window = ConsoleWindow(QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.login.set_busy(True)
    window.start_login(url, "", "admin", "pw")
    qtbot.waitUntil(lambda: window.runner.pending == 0, timeout=WAIT_MS)
    assert window.login.button.isEnabled()
    assert "names no user" in window.login.banner.label.text()
    assert window.client is None


def test_a_callback_that_raises_fails_its_task_and_never_reaches_qt(qtbot):
    """An answer of a shape a screen did not expect raised in its callback on the GUI thread, and
    an exception escaping a slot took the console's process down. It is now the task's failure
    (pytest-qt fails a test on any exception that reaches Qt)."""
    runner = TaskRunner()
    errors: list[ApiError] = []
    unhandled: list[str] = []
    runner.unhandled_error.connect(unhandled.append)

    def raise_on(item):
        raise KeyError("name")

    runner.submit(lambda: [{"id": 1}], raise_on, errors.append)
    runner.submit(lambda: [{"id": 1}], raise_on)
    runner.submit(lambda: 1 / 0, lambda _: None, raise_on)  # the error handler itself raises
    qtbot.waitUntil(lambda: runner.pending == 0, timeout=WAIT_MS)
    [error] = errors
    assert error.code == "bad_response" and "KeyError('name')" in error.message
    assert len(unhandled) == 2  # in either order: the tasks run on two threads
    assert any("could not be shown" in m for m in unhandled) and any("ZeroDivisionError" in m for m in unhandled)


def test_a_listed_item_without_what_the_console_reads_fails_its_own_server_only(odd_server):
    """A node registry entry without a URL was a KeyError in the audit screen's worker, and every
    audit source failed with "Unexpected error: KeyError('url')". Such a list is now that server's
    bad answer: its institution offers no nodes, the others theirs."""
    from admin_gui.screens.audit import render_node_sources

    url, answers = odd_server
    answers["/api/v1/nodes"] = (200, {"items": [{"id": "n1", "name": "CT node"}], "total": 1})
    client = ApiClient(url, issues_tokens=False)
    with pytest.raises(ApiError) as refused:
        client.list_all("/api/v1/nodes", text_keys=("id", "name", "url"))
    assert refused.value.code == "bad_response" and "without url" in refused.value.message
    assert render_node_sources(lambda _: client, {"server_url": url, "name": "A"}) == []
    answers["/api/v1/nodes"] = (200, {"items": [{"id": "n1", "name": "CT node", "url": "https://n"}], "total": 1})
    assert render_node_sources(lambda _: client, {"server_url": url, "name": "A"}) == [
        {"id": "n1", "name": "A › CT node", "server_url": "https://n"}]


def test_a_login_of_a_long_lived_token_is_taken(odd_server):
    """A lifetime is the server's setting (`tokens.access_ttl_s` has no maximum): a console that
    refused long ones would lock every administrator out; the renewal is scheduled within range."""
    url, answers = odd_server
    user = {"username": "a", "role": "system_admin", "institution_id": "i", "full_name": ""}
    answers["/api/v1/auth/login"] = (200, {"access_token": "t", "expires_in": 10**10, "user": user})
    client = ApiClient(url)
    assert client.login("a", "pw") == user and client.credentials.expires_in == 10**10


class _Recording(BaseHTTPRequestHandler):
    """A server that answers every call and remembers its headers."""

    seen: list[dict[str, str]] = []

    def do_GET(self):
        self.seen.append(dict(self.headers))
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_a_server_named_by_another_over_plain_http_never_gets_a_token():
    """An institution entry or a node registration naming `http://` had the console exchange a
    token for that URL and send it in the clear. The login form already refused such an address;
    servers named by other servers are now held to the same rule before any token is made or sent."""
    _Recording.seen = []
    with serving(_Recording) as plain:
        toplevel = ApiClient(plain.replace("http://", "https://"), credentials=api_client.Credentials("session"))
        toplevel.base_url = plain  # the toplevel's own address was checked by the login form
        institution = toplevel.for_server(f"{plain}/institution")
        with pytest.raises(ApiError) as refused:
            institution.get("/api/v1/nodes")
        assert refused.value.code == "invalid_url" and "must start with https://" in refused.value.message
        assert _Recording.seen == []  # neither a token exchange at the toplevel nor a call to the server
