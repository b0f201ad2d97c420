"""A hostile server's words in the console's own sentences: error messages, reasons, redirects.

Names in tables, labels and questions went through `admin_gui.server_text.one_line` (row 125),
but the text of a server's errors only had its line breaks folded (row 31): a right-to-left
override in an error message turned the console's own words after it around in the banner, and
terminal controls (ESC, NUL) reached the screen as they came.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from driving import WAIT_MS, wait_idle
from fake_servers import INSTITUTION_ID, FakeSivr, serving
from PySide6.QtCore import Qt
from test_console_untrusted_answers import TopSivr, log_in

from admin_gui.api_client import ApiError
from admin_gui.screens import node_health
from admin_gui.screens.users import UsersScreen
from shared.tls import create_ca, issue_server_cert

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[2]

#: what the server would like read: "Deleted; undo at evil.example" turned around by U+202E
SPOOF = "User deleted\u202e elpmaxe.live ta odnu \x1b[8m\x00hidden\u2066"
NOT_SHOWN = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\x1b\x00\x07\x9b")


def _words(error: ApiError) -> str:
    return error.message + (error.request_id or "")


@pytest.mark.parametrize("answer", [
    (409, {"error": {"code": "conflict", "message": SPOOF}}),
    (500, {"error": {"code": "internal", "message": "failed", "request_id": SPOOF}}),
    (503, b"not json", {"X-Request-Id": "id\x1b]0;evil\x07\x9b2J"}),
    (429, {"error": {"code": "rate_limited", "message": "slow down"}}, {"Retry-After": "5\x1b[2J evil"}),
    (307, b"", {"Location": "https://evil.example/\x1b[8mgnp.exe"}),
])
def test_a_server_s_error_words_keep_the_console_s_sentence_in_its_place(fake_sivr, fake_context, answer):
    fake_sivr.answers["/api/v1/users"] = answer
    with pytest.raises(ApiError) as failed:
        fake_context.client.get("/api/v1/users")
    assert not set(_words(failed.value)) & NOT_SHOWN, ascii(_words(failed.value))


def test_a_server_s_error_in_a_screen_s_banner_shows_no_override(qtbot, fake_sivr, fake_context):
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution()]
    fake_sivr.answers["/api/v1/users"] = (409, {"error": {"code": "conflict", "message": SPOOF}})
    screen = UsersScreen(fake_context)
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: bool(screen.banner.text()), timeout=WAIT_MS)
    shown = screen.banner.text()
    assert shown.startswith("User deleted\ufffd elpmaxe.live ta odnu \ufffd[8m\ufffdhidden\ufffd"), ascii(shown)
    assert INSTITUTION_ID  # the institution list answered; only the users' call failed


# --- the toplevel's address as typed (and remembered) -----------------------------------------------


@pytest.fixture
def sivr(tmp_path) -> Iterator[TopSivr]:
    """Every SIVR layer at once over TLS, its CA at `ca.pem` in tmp_path: it logs anyone in."""
    files = [tmp_path / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")]
    create_ca(files[0], files[1])
    issue_server_cert(files[0], files[1], files[2], files[3], ["127.0.0.1"])
    with serving(TopSivr((files[2], files[3]))) as server:
        yield server


@pytest.mark.parametrize(("url", "problem"), [
    ("https://root:hunter2-hunter2@{host}", "must not contain a user name or password"),
    ("https://{host}/\u202e", "must not contain spaces or control characters"),
    ("https://127.0.0.1\n.evil.example:{port}", "must not contain spaces or control characters"),
    ("https://b\u00fccher.example:5001", "ASCII"),
])
def test_a_toplevel_address_the_servers_refuse_is_refused_at_the_login_form(qtbot, window, sivr, tmp_path, url,
                                                                           problem):
    """A password typed into the address (`https://root:secret@host`) was accepted, the login went
    on, and the address was remembered in the console's settings file and shown in the status bar,
    password and all; a line break (which `urlsplit` drops unseen) or an override was kept as typed.
    The login form now takes the address by the rule of every server's address
    (`shared.origins.split_origin`, which the token exchange applies to other servers)."""
    host = sivr.url.removeprefix("https://")
    page = window.login
    page.url.setText(url.format(host=host, port=host.rpartition(":")[2]))
    page.ca_file.setText(str(tmp_path / "ca.pem"))
    page.username.setText("root")
    page.password.setText("correct horse battery")
    qtbot.mouseClick(page.button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert window.console is None
    assert problem in page.banner.text(), page.banner.text()
    assert "hunter2" not in page.banner.text()
    assert sivr.paths() == []
    assert not [key for key in window.settings.allKeys() if "hunter2" in str(window.settings.value(key))]


@pytest.mark.parametrize("url", ["https://root:hunter2-hunter2@127.0.0.1:5001", "http://127.0.0.1:5001"])
def test_sivr_admin_refuses_a_url_it_would_not_log_in_to_before_remembering_it(tmp_path, url):
    """`sivr admin --url https://root:secret@host` wrote the address to the settings file
    (~/.config/SIVR/sivr-admin.conf) before anything checked it: the password stayed on disk."""
    config = tmp_path / "config"
    config.mkdir(mode=0o700)
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run([sys.executable, "-m", "admin_gui", "--url", url], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:  # the console opened
        done = None
    assert not [path for path in config.rglob("*") if path.is_file() and "127.0.0.1" in path.read_text()]
    assert done is not None and done.returncode == 2, done
    assert done.stderr.startswith("sivr admin: --url must") and "hunter2" not in done.stderr


# --- a registry of more nodes than anyone runs --------------------------------------------------------


def test_a_registry_of_too_many_nodes_is_a_problem_and_none_is_asked(qtbot, window, sivr, tmp_path, monkeypatch):
    """A taken-over institution server listing thousands of render nodes made the system
    administrator's console exchange a token at the toplevel for each (an audit entry each) and
    call each URL, whatever host it named: 3,000 nodes were 3,001 exchanges in 46 s, every round."""
    monkeypatch.setattr(node_health, "MAX_CHECKED_NODES", 20, raising=False)
    log_in(qtbot, window, sivr, tmp_path / "ca.pem")
    sivr.answers["/api/v1/nodes"] = [{**FakeSivr.node(sivr, i), "url": f"https://10.0.{i // 250}.{i % 250 + 1}:5003"}
                                     for i in range(21)]
    before = len(sivr.seen)
    health = window.console.open_screen("Node health")
    qtbot.waitUntil(lambda: not health.busy, timeout=WAIT_MS)
    wait_idle(qtbot, window)
    exchanged = [call["body"] for call in sivr.seen[before:] if call["path"] == "/api/v1/auth/token"]
    assert not [body for body in exchanged if b"10.0." in body], exchanged
    [row] = health.model.rows()
    assert row["status"] == "down" and "lists 21 nodes, more than the 20" in row["problem"]
