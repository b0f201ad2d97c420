"""The web layer: serves the physicians' viewer (static files) and tells it where the toplevel is.

It holds no data and no models; the browser talks to every other layer directly (DESIGN.md,
vertical independence). What this layer owns is the trust boundary of the page itself, so it sends
a strict Content-Security-Policy: scripts and styles only from here (no inline code, so an
injected string in a patient's name can never run), images only from here or from blob:/data:
URLs the client makes out of fetched renderings, and network calls only to the configured
servers (`web.connect_origins` and the toplevel), so a page cannot send a token anywhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, Response, jsonify, send_from_directory

from shared.config import Config, ConfigError
from shared.health import add_readiness_check, files_check
from shared.origins import server_origin
from shared.webapp import create_base_app

STATIC_DIR = Path(__file__).resolve().parent / "static"

def _origin(url: str, key: str) -> str:
    """`scheme://host[:port]` of a configured URL; a malformed one stops the layer naming its key."""
    try:
        return server_origin(url)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def content_security_policy(config: Config) -> str:
    """The page's policy; `connect-src` lists exactly the servers the viewer talks to."""
    configured = config["web"]["connect_origins"]
    if configured:
        origins = [_origin(config["web"]["toplevel_url"], "web.toplevel_url"),
                   *(_origin(url, "web.connect_origins") for url in configured)]
        connect = " ".join(["'self'", *dict.fromkeys(origins)])
    else:
        logging.getLogger(__name__).warning(
            "%s: web.connect_origins is empty: the viewer may connect to any https origin; list the "
            "institution servers and render nodes there", config.source or "<config>")
        connect = "'self' https:"
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        f"connect-src {connect}",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ))


PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


def create_app(config: Config) -> Flask:
    """The web layer's app: `/` (the viewer), `/static/...`, `/config.json` and the shared probes."""
    app = create_base_app(__name__, config, verifies_tokens=False)
    toplevel_url = config["web"]["toplevel_url"].rstrip("/")
    policy = content_security_policy(config)
    add_readiness_check(app, "viewer_files", files_check([str(STATIC_DIR / "index.html")], "the viewer's files"))

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/config.json")
    def client_config() -> Response:
        return jsonify({"toplevel_url": toplevel_url})

    @app.after_request
    def _page_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Permissions-Policy"] = PERMISSIONS_POLICY
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        # No build step means no content-hashed file names: every file is revalidated (cheap 304s
        # thanks to ETag) so a new release is picked up at once and never mixed with stale modules.
        if response.mimetype != "application/json":
            response.headers["Cache-Control"] = "no-cache"
        return response

    return app
