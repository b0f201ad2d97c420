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
                 route="/api/v1/records/<record_id>/frames/<int(signed=True):index>") == 4
    node_figures = node.client.get("/api/v1/node", headers=node.headers(role="instadmin")).json
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
    assert "store.key" in checks["store_key"] and str(node.root / "store") in checks["store"]
    assert checks["database"] == "ok"
    assert node.client.get("/healthz").status_code == 200


def test_image_views_reach_the_central_syslog_after_each_flush(make_node):
    """The node's `record.view` entries (written by its background flush) are exported too."""
    from tests.shared.test_observability import RFC5424, Listener, sd_params, wait_for

    listener = Listener("udp")
    node = make_node(audit__syslog=listener.url)
    try:
        record_id = loaded_record(node, frames=2)
        headers = node.headers()
        for index in (0, 1, 0):
            assert node.client.get(f"/api/v1/records/{record_id}/frames/{index}", headers=headers).status_code == 200
        node.app.extensions["sivr_view_audit"].flush()
        node.app.extensions["sivr_audit_export"].flush(10)
        wait_for(lambda: any(b" record.view " in m for m in listener.received))
        views = [sd_params(RFC5424.match(m)["sd"]) for m in listener.received if b" record.view " in m]
        assert views[-1]["object_id"] == record_id and views[-1]["event_id"] == "110110"
        last_view = [m for m in listener.received if b" record.view " in m][-1]
        assert '"frame": 3' in RFC5424.match(last_view)["msg"].decode()
        actions = {sd_params(RFC5424.match(m)["sd"])["action"] for m in listener.received}
        assert {"record.upload", "record.load", "record.view"} <= actions
    finally:
        node.registry.shutdown()
        listener.close()
