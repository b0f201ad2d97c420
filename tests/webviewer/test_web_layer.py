"""The web layer itself: the page, its assets, /config.json and the headers that protect the page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.config import build_config
from shared.tokens import generate_signing_keypair
from webviewer import settings
from webviewer.app import STATIC_DIR, create_app


@pytest.fixture()
def client(tmp_path: Path):
    generate_signing_keypair(tmp_path / "signing.key", tmp_path / "signing.pub")
    config = build_config("web", settings.KEYS, {
        "tokens": {"public_key": str(tmp_path / "signing.pub")},
        "web": {"toplevel_url": "https://toplevel.example:5001/"},
    })
    return create_app(config).test_client()


def test_config_json_names_the_toplevel(client):
    response = client.get("/config.json")
    assert response.status_code == 200
    assert response.get_json() == {"toplevel_url": "https://toplevel.example:5001"}
    assert response.headers["Cache-Control"] == "no-store"


def test_index_is_the_viewer_and_is_revalidated(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert b'<script type="module" src="/static/js/main.js">' in response.data
    assert response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    again = client.get("/", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_content_security_policy_forbids_inline_code_and_frames(client):
    policy = client.get("/").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' blob: data:"
    assert directives["connect-src"] == "'self' https:"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    headers = client.get("/").headers
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_connect_src_lists_only_the_configured_servers(tmp_path: Path):
    config = build_config("web", settings.KEYS, {
        "web": {"toplevel_url": "https://toplevel.example:5001/",
                "connect_origins": ["https://inst-a.example:5002/", "https://node-1.example:5003",
                                    "https://inst-a.example:5002"]},
    })
    policy = create_app(config).test_client().get("/").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["connect-src"] == ("'self' https://toplevel.example:5001 https://inst-a.example:5002 "
                                         "https://node-1.example:5003")
    from shared.config import ConfigError

    bad = build_config("web", settings.KEYS, {"web": {"connect_origins": ["javascript:alert(1)"]}})
    with pytest.raises(ConfigError, match="web.connect_origins"):
        create_app(bad)


def test_every_asset_the_page_names_is_served(client):
    """No build step: the modules the browser imports are exactly the files in static/."""
    html = client.get("/").data.decode()
    names = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
    for module in (STATIC_DIR / "js").glob("*.js"):
        text = module.read_text(encoding="utf-8")
        names |= {f"/static/js/{m}" for m in re.findall(r'from "\./([\w.]+\.js)"', text)}
    assert "/static/js/viewer.js" in names
    for name in sorted(names):
        response = client.get(name)
        assert response.status_code == 200, name
        assert response.headers["Cache-Control"] == "no-cache"
    assert client.get("/static/js/main.js").mimetype in ("text/javascript", "application/javascript")


def test_static_files_hold_no_inline_script_or_style():
    """The CSP would block them; this finds them before a browser does."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+=", html)
    assert " style=" not in html
    for module in (STATIC_DIR / "js").glob("*.js"):
        text = module.read_text(encoding="utf-8")
        assert ".innerHTML" not in text, module.name
        assert "eval(" not in text, module.name


def test_unknown_paths_and_traversal_are_refused(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404


def test_healthz_names_the_layer(client):
    assert client.get("/healthz").get_json()["layer"] == "web"
