"""Application factory of a render node (run by `sivr serve render` under gunicorn, one app per worker).

A node may run several workers (`server.workers`), each with many threads: the decoded records
are the node's, mapped by every worker from the runtime folder `sivr serve` makes for them
(`daemons.render.runtime`), so a series is decoded once and held once whichever worker a viewer's
request reaches. Exactly one worker serves DICOM (the first to hold the runtime folder's lock; a
worker gunicorn starts in place of a dead one takes it over).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from daemons.render import dicomweb
from daemons.render.api import frames as api_frames
from daemons.render.api import image_headers, openapi
from daemons.render.api import key_images as api_keyimages
from daemons.render.api import mpr3d as api_3d
from daemons.render.api import node_info as api_node
from daemons.render.api import readings as api_probe
from daemons.render.api import records as api_records
from daemons.render.api import worklist as api_worklist
from daemons.render.catalogue.record_index import RecordIndex
from daemons.render.dimse.listener import DIMSE_EXTENSION, start_listener
from daemons.render.dimse.listener import check_config as check_dicom_config
from daemons.render.imaging.image_cache import ImageCache
from daemons.render.imaging.webp_effort import WebpEffort
from daemons.render.ingest.isolation import DecodePool, IsolationLimits
from daemons.render.ingest.service import INGEST_EXTENSION, Ingest
from daemons.render.ingest.upload_checks import MIB, Limits
from daemons.render.ingest.upload_memory import SpoolingRequest, UploadMemory, UploadsPerUser
from daemons.render.metrics import install_node_metrics
from daemons.render.models import MIGRATIONS, make_models
from daemons.render.node import NODE_EXTENSION, RECORDS_EXTENSION, Node
from daemons.render.records import RecordRegistry
from daemons.render.runtime import NodeRuntime
from daemons.render.store.interface import install_error_handler, open_store, readiness_check
from daemons.render.token_cache import CachingVerifier
from daemons.render.view_audit import ViewAudit
from daemons.render.view_audit import install as install_view_audit
from shared.audit import audit_blueprint
from shared.audit_export import EXPORT_EXTENSION
from shared.auth import VERIFIER_EXTENSION, install_verifier
from shared.config import Config, ConfigError
from shared.db import bind_per_request, database_from_config, protect_database_file, schema_target, upgrade_schema
from shared.errors import ApiError
from shared.health import (
    add_readiness_check,
    database_check,
    files_check,
)
from shared.receipts import load_or_create_node_key
from shared.validation import parse_uuid
from shared.webapp import create_base_app, layer_audience

DICOM_LOCK = "dicom-listener"


def _check_config(config: Config) -> None:
    where = config.source or "<config>"
    check_dicom_config(config)
    try:
        config["node"]["institution_id"] = parse_uuid(config["node"]["institution_id"], "node.institution_id")
    except ApiError as exc:
        raise ConfigError(f"{where}: {exc.message}") from exc
    if not config["storage"]["key_file"]:
        raise ConfigError(f"{where}: storage.key_file must name the store's 32-byte key file")
    if not config["node"]["receipt_key"]:
        raise ConfigError(f"{where}: node.receipt_key must name the node's Ed25519 receipt key file (created "
                          "when missing; `sivr init` writes keys/<node>.receipt.pem)")


def create_app(config: Config) -> Flask:
    _check_config(config)
    app = create_base_app(__name__, config, expose_headers=image_headers.EXPOSED)
    app.request_class = SpoolingRequest
    limits = Limits.from_config(config)
    app.config["MAX_CONTENT_LENGTH"] = max(config["server"]["max_request_mb"] * MIB, limits.max_upload_bytes)
    app.config["MAX_FORM_PARTS"] = limits.max_files + 16
    database = database_from_config(config)
    models = make_models(database)
    upgrade_schema(database, "render", models.all, MIGRATIONS)
    with database.connection_context():
        store = open_store(config, records_expected=models.StoredRecord.select().exists())
    holder: dict[str, Node] = {}
    # a damaged record the index meets is quarantined by the node's one rule (moved aside, audited)
    record_index = RecordIndex(store, models, float(config["storage"]["catalogue_refresh_s"]),
                               quarantine=lambda record_id, reason: holder["node"].quarantine(record_id, reason))
    try:
        receipt_key = load_or_create_node_key(Path(config["node"]["receipt_key"]))
    except (ValueError, OSError) as exc:  # not a key, readable by others, or not creatable (read-only keys folder)
        raise ConfigError(f"node.receipt_key: {exc}") from exc
    threads = config["render"]["load_threads"] or os.cpu_count() or 2
    runtime = NodeRuntime.from_environment()
    registry = RecordRegistry(store, config["memory"]["budget_mb"] * MIB, runtime, threads,
                              manifest_reader=lambda record_id: holder["node"].manifest(record_id))
    images = ImageCache(config["render"]["image_cache_mb"] * MIB)
    render = config["render"]
    busy_above = (os.cpu_count() or 2) if render["webp_busy_encodes"] < 0 else render["webp_busy_encodes"]
    effort = WebpEffort(render["webp_method"], busy_above)
    decoder = DecodePool(IsolationLimits.from_config(config))
    holder["node"] = Node(config, store, models, registry, limits, images, effort, record_index, decoder,
                          receipt_key, layer_audience(config))
    app.extensions[NODE_EXTENSION] = holder["node"]
    # once the node exists, in the app: a damaged record the scan quarantines is audited (and exported)
    with app.app_context(), database.connection_context():
        record_index.sync_at_start()
    app.extensions[INGEST_EXTENSION] = ingest = Ingest(
        holder["node"], UploadMemory(config["limits"]["upload_memory_mb"] * MIB),
        UploadsPerUser(config["limits"]["uploads_per_user"] or config["server"]["threads"] // 2),
        float(config["dicom"]["series_complete_s"]))
    protect_database_file(database)
    if runtime.try_hold(DICOM_LOCK):  # one worker serves DICOM for the node
        app.extensions[DIMSE_EXTENSION] = start_listener(config, app, holder["node"], ingest)
    app.extensions[RECORDS_EXTENSION] = registry
    install_node_metrics(app, holder["node"])
    install_verifier(app, CachingVerifier(app.extensions[VERIFIER_EXTENSION]))
    exporter = app.extensions.get(EXPORT_EXTENSION)  # the central syslog, when audit.syslog names one
    install_view_audit(app, ViewAudit(models.AuditEntry, float(config["audit"]["flush_s"]),
                                      exporter.send if exporter is not None else None))
    bind_per_request(app, database)  # image requests, the bulk of the traffic, never open one
    install_error_handler(app)
    add_readiness_check(app, "database", database_check(database, "render", schema_target(MIGRATIONS)))
    add_readiness_check(app, "store", readiness_check(store))
    store_keys = [config["storage"]["key_file"], *config["storage"]["old_key_files"]]
    add_readiness_check(app, "store_key", files_check(store_keys, "the store key"))
    for blueprint in (api_records.bp, api_keyimages.bp, api_worklist.bp, api_frames.bp, api_probe.bp, api_node.bp,
                      openapi.bp, api_3d.bp,
                      audit_blueprint(models.AuditEntry, institution_id=config["node"]["institution_id"])):
        app.register_blueprint(blueprint)
    dicomweb.install(app, config)
    api_3d.install_render_state(app)  # the OpenGL probe and the kernels' warm-up, before the first request
    return app
