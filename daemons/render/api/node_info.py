"""Node health figures (`GET /api/v1/node`) and the rendering presets (`GET /api/v1/presets`).

The figures come from the same objects the node's `/metrics` reads (daemons/render/metrics.py).
They are for the administrators of the node's institution (and system administrators), whom the
console shows them: where the store is, which records are quarantined, the node's processes and
load are operations' business, and no physician's client asks for them.
"""

from __future__ import annotations

import os

from flask import Blueprint, current_app, jsonify

from daemons.render.api import query
from daemons.render.api.mpr3d import render_state
from daemons.render.imaging.pixels import PRESETS, preset_modality
from daemons.render.node import node
from daemons.render.volume.transfer import default_preset, presets_for
from shared.auth import current_identity, require_admin_of, require_auth
from shared.receipts import public_key_text
from shared.roles import ADMIN_ROLES
from shared.tokens import key_id

bp = Blueprint("render_node", __name__)


@bp.get("/api/v1/node")
@require_auth(*ADMIN_ROLES)
def node_health():
    the_node = node()
    require_admin_of(current_identity(), the_node.institution_id, "this render node")
    return jsonify({
        "institution_id": the_node.institution_id,
        "name": the_node.config["node"]["name"],
        "records_stored": the_node.models.StoredRecord.select().count(),
        "records_loaded": the_node.registry.loaded_count(),
        "memory_used_bytes": the_node.registry.memory_used(),
        "memory_budget_bytes": the_node.registry.budget_bytes,
        "loader_queue_frames": the_node.registry.queued_frames(),
        "storage_used_bytes": the_node.store.used_bytes(),
        "store": the_node.store.location,
        "render_latency_ms": the_node.latency_percentiles(),
        "image_cache": {"used_bytes": the_node.images.used_bytes, "hits": the_node.images.hits,
                        "misses": the_node.images.misses},
        "webp_fast_encodes": the_node.webp_effort.fast_encodes,
        "backend_3d": render_state(current_app).caster.name,
        "warm_up": render_state(current_app).warm_up.as_json(),
        "pid": os.getpid(),
        "decode_workers": the_node.decoder.stats(),
        "quarantined_records": the_node.store.quarantined(),
        # what the institution's node registry stores to verify this node's upload receipts
        "receipt_key": {"public_key": public_key_text(the_node.receipt_key.public_key()),
                        "key_id": key_id(the_node.receipt_key.public_key()), "url": the_node.url},
    })


@bp.get("/api/v1/presets")
@require_auth()
def presets():
    """Named windows and DVR transfer functions; with `modality` only those for that modality
    (a CT window or transfer function means nothing on an MR) and `volume_default`, the preset a
    DVR view of such a record starts with (the node's own default, transfer.default_preset)."""
    modality = (query.MODALITY.raw() or "").upper()
    if modality and not (modality.isascii() and modality.isalnum() and len(modality) <= 16):
        raise query.bad("query parameter modality must be a DICOM modality code such as CT or MR")
    return jsonify({
        "window": {name: {"center": c, "width": w, "modality": preset_modality(name)}
                   for name, (c, w) in PRESETS.items() if not modality or preset_modality(name) == modality},
        "volume": presets_for(modality),
        "volume_default": default_preset(modality),
    })
