"""A render node's /metrics and /readyz: its own figures, from the same objects as GET /api/v1/node."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.render.synthetic import dataset, to_bytes


def samples(node) -> dict[tuple[str, tuple], float]:
    text = node.client.get("/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(figures, name: str, **labels) -> float:
    return figures[(name, tuple(sorted(labels.items())))]


def loaded_record(node, frames: int = 6) -> str:
    blobs = []
    for k in range(frames):
        ds = dataset(64, 64, series="1.2.3.4.99", position=float(k))
        ds.PixelData = np.full((64, 64), k * 10, dtype=np.int16).tobytes()
        blobs.append((f"s{k}.dcm", to_bytes(ds)))
    reply = node.upload(blobs)
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
    return record_id


def test_render_encode_and_cache_figures_follow_the_requests(node):
    record_id = loaded_record(node)
    headers = node.headers()
    for fmt, index in [("png", 0), ("png", 1), ("png", 0), ("jpeg", 2)]:
        reply = node.client.get(f"/api/v1/records/{record_id}/frames/{index}?format={fmt}", headers=headers)
        assert reply.status_code == 200
    figures = samples(node)
    assert value(figures, "sivr_render_seconds_count", kind="frame", format="png") == 2
    assert value(figures, "sivr_encode_seconds_count", kind="frame", format="png") == 2
    assert value(figures, "sivr_render_seconds_count", kind="frame", format="jpeg") == 1
    assert value(figures, "sivr_image_cache_requests_total", result="hit") >= 1
    assert value(figures, "sivr_http_requests_total", layer="render", method="GET", status="200",
                 route="/api/v1/records/<record_id>/frames/<int:index>") == 4
    node_figures = node.client.get("/api/v1/node", headers=headers).json
    figures = samples(node)  # the node endpoint's own request is counted, nothing else changed
    assert value(figures, "sivr_records_loaded") == node_figures["records_loaded"] == 1
    assert value(figures, "sivr_memory_used_bytes") == node_figures["memory_used_bytes"] == 6 * 64 * 64 * 2
    assert value(figures, "sivr_memory_budget_bytes") == node_figures["memory_budget_bytes"]
    assert value(figures, "sivr_loader_queue_frames") == node_figures["loader_queue_frames"] == 0
    assert value(figures, "sivr_image_cache_requests_total", result="hit") == node_figures["image_cache"]["hits"]
    assert value(figures, "sivr_image_cache_requests_total", result="miss") == node_figures["image_cache"]["misses"]


def test_readyz_names_a_store_or_key_that_went_away(node):
    assert node.client.get("/readyz").json["checks"] == {
        "token_keys": "ok", "database": "ok", "store": "ok", "store_key": "ok"}
    (node.root / "store.key").rename(node.root / "store.key.moved")
    (node.root / "store").rename(node.root / "store.moved")
    reply = node.client.get("/readyz")
    assert reply.status_code == 503
    checks = reply.json["error"]["checks"]
    assert "store.key" in checks["store_key"] and "does not exist" in checks["store"]
    assert checks["database"] == "ok"
    assert node.client.get("/healthz").status_code == 200
