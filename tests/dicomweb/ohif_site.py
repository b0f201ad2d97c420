"""An OHIF v3 viewer served on loopback as a separate site, pointed at a SIVR render node's DICOMweb root.

The viewer is the built `dist/` of the npm package `@ohif/app` that installers/install-ohif.sh puts
in build/ohif/. It is served over HTTPS with the deployment's own server certificate (so Chromium's
SPKI allow-list of the other browser tests covers it too and the page is a secure context), from
its own origin: every DICOMweb call crosses origins and needs the node's `dicomweb.cors_origins`,
as it would for a hospital's OHIF. `app-config.js` is generated from ohif_app_config.js with the
node's URLs; OHIF is a single-page app, so unknown paths (its /viewer route) answer index.html.
"""

from __future__ import annotations

import io
import json
import ssl
import threading
import tomllib
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from daemons.deployment import Layout
from daemons.layers import LAYERS
from shared.config import render_config_toml

REPO = Path(__file__).resolve().parents[2]
OHIF_DIST = REPO / "build" / "ohif" / "dist"
CONFIG_TEMPLATE = Path(__file__).with_name("ohif_app_config.js")
APP_CONFIG_PATH = "/app-config.js"


#: headless Chromium has no GPU here: WebGL (cornerstone3D's renderer) on SwiftShader through ANGLE
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]


def configure_for_ohif(origin: str, token_ttl_s: int | None = None,
                       leeway_s: int | None = None) -> Callable[[Layout], None]:
    """A deployment's `before_start`: the OHIF site at `origin` may call each render node's DICOMweb
    root and the toplevel (where OHIF exchanges the SIVR session for node tokens); optionally node
    tokens that live `token_ttl_s` with `leeway_s` of leeway (a test that outlives several)."""

    def configure(layout: Layout) -> None:
        for instance in layout.instances:
            if instance.layer not in ("render", "toplevel"):
                continue
            path = Path(instance.config)
            values = tomllib.loads(path.read_text())
            if instance.layer == "render":
                values.setdefault("dicomweb", {})["cors_origins"] = [origin]
                if leeway_s is not None:
                    values["tokens"]["leeway_s"] = leeway_s
            else:
                values["cors"]["origins"] = [*values["cors"]["origins"], origin]
                if token_ttl_s is not None:
                    values["tokens"]["exchanged_ttl_s"] = token_ttl_s
            path.write_text(render_config_toml(instance.layer, LAYERS[instance.layer].keys, values))

    return configure


#: grey-level standard deviation above which a viewport shows an image (a CT slice: about 40)
MIN_SPREAD = 10.0


def painted_spread(png: bytes) -> float:
    """The spread of grey levels in a screenshot: a blank or uniform viewport is near 0."""
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32).std())


def app_config_js(node_url: str, toplevel_url: str, dicomweb_root: str = "/dicomweb") -> str:
    """OHIF's `app-config.js` for one render node: its DICOMweb data source and the SIVR token hook."""
    sivr = {"nodeUrl": node_url.rstrip("/"), "toplevelUrl": toplevel_url.rstrip("/"),
            "dicomwebRoot": node_url.rstrip("/") + dicomweb_root}
    return f"const SIVR = {json.dumps(sivr)};\n" + CONFIG_TEMPLATE.read_text()


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}

    def __init__(self, *args, app_config: bytes, **kwargs):
        self.app_config = app_config
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == APP_CONFIG_PATH:
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(self.app_config)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(self.app_config)
            return
        if not Path(self.translate_path(path)).is_file():
            self.path = "/index.html"  # the single-page app's routes (/viewer, /?mrn=...)
        super().do_GET()

    def log_message(self, format: str, *args) -> None:
        """Quiet: the test records the browser's requests itself."""


class OhifSite:
    """The OHIF dist on an HTTPS loopback port; the port (and so the origin) is known before it serves.

    Bind first (`origin` goes into the node's `dicomweb.cors_origins` before the deployment starts),
    then `start` with the deployment's certificate and the generated config.
    """

    def __init__(self, dist: Path = OHIF_DIST):
        self.dist = dist
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler, bind_and_activate=False)
        self._httpd.daemon_threads = True
        self._httpd.server_bind()
        self.origin = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self, cert: Path, key: Path, app_config: str) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        # the handshake happens in the request's thread, not in the accept loop
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self._httpd.RequestHandlerClass = partial(_Handler, directory=str(self.dist),
                                                  app_config=app_config.encode())
        self._httpd.server_activate()
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ohif-site", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
        self._httpd.server_close()
