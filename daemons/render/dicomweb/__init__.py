"""DICOMweb (PS3.18) on a render node, under one root: `/dicomweb` (`ROOT`).

The services share one blueprint, one way to find a study, series or instance in the
catalogue (`resolve`), the node's bearer tokens, roles and audit, and CORS for the browser
clients named in `dicomweb.cors_origins` (`cors`). Each service lives in a module of its own
(STOW-RS `stow`, QIDO-RS `qido`, WADO-RS `wado`, rendered resources `rendered`), listed in
`services.SERVICE_MODULES`; what they conform to is in docs/conformance.md.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from shared.config import Config

ROOT = "/dicomweb"

bp = Blueprint("dicomweb", __name__, url_prefix=ROOT)


def install(app: Flask, config: Config) -> None:
    """Register the DICOMweb services and their CORS answers on a render node's app."""
    from daemons.render.dicomweb import cors, resolve, services, wado
    from daemons.render.ingest.service import INGEST_EXTENSION
    from shared.audit import OBJECT_NAMER_EXTENSION

    services.load()
    cors.allow_origins(app, list(config["dicomweb"]["cors_origins"]))
    app.extensions[INGEST_EXTENSION].on_complete(
        lambda record_id, datasets: wado.warm_metadata(app, record_id, datasets))
    app.register_blueprint(bp)
    # a refused DICOMweb request is audited against the series or study its path names
    app.extensions[OBJECT_NAMER_EXTENSION] = resolve.audited_object
