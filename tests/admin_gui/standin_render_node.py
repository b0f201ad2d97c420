"""A STAND-IN for a render node, used only while `daemons/render/app.py` does not exist yet.

It serves the one call the console makes to render nodes, `GET /api/v1/node` (docs/API.md), with
fixed figures, over TLS with a certificate from the deployment's own CA, and checks tokens with
the deployment's public key through `shared.webapp` exactly like a real layer. Once the real
render layer is available the tests use the deployment's render nodes instead.
"""

from __future__ import annotations

import threading
from pathlib import Path

from flask import jsonify
from werkzeug.serving import make_server

from shared.auth import require_auth
from shared.config import build_config
from shared.tls import issue_server_cert

FIGURES = {
    "records_stored": 12,
    "records_loaded": 3,
    "memory_used_bytes": 3 * 1024**3,
    "memory_budget_bytes": 8 * 1024**3,
    "storage_used_bytes": 5 * 1024**3 + 300 * 1024**2,
    "render_latency_ms": {"p50": 38.0, "p95": 121.0},
    "backend_3d": "cpu",
}


class StandInRenderNode:
    """`GET /api/v1/node` of a render node, on a loopback port, until stopped."""

    def __init__(self, deployment_root: Path, institution_id: str):
        from shared.webapp import create_base_app

        tls = deployment_root / "tls"
        cert, key = tls / "standin-render.pem", tls / "standin-render.key"
        issue_server_cert(tls / "ca.pem", tls / "ca.key", cert, key, ["127.0.0.1"])
        config = build_config("render", (), {
            "tokens": {"public_key": str(deployment_root / "keys" / "token_ed25519.pub")},
        })
        app = create_base_app(__name__, config)

        @app.get("/api/v1/node")
        @require_auth()
        def node():
            return jsonify({"institution_id": institution_id, **FIGURES})

        self._server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=(str(cert), str(key)))
        self.url = f"https://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
