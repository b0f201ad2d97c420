"""`GET /api/v1/presets?modality=`: a record is offered only its modality's windows and DVR presets,
and the DVR preset its 3D view starts with is the node's (transfer.default_preset), not a second
table in the viewer."""

from __future__ import annotations


def presets(node, query=""):
    return node.client.get(f"/api/v1/presets{query}", headers=node.headers())


def test_an_mr_is_offered_mr_presets_only(node):
    reply = presets(node, "?modality=mr")
    assert reply.status_code == 200, reply.json
    body = reply.json
    assert body["window"] == {}  # MR signal has no absolute scale: no named window fits every MR
    assert {"mr_soft_tissue", "mr_angio"} <= set(body["volume"])
    assert not any(name.startswith("ct_") for name in body["volume"])
    assert body["volume_default"] == "mr_soft_tissue"


def test_a_ct_is_offered_ct_presets_only(node):
    body = presets(node, "?modality=CT").json
    assert body["window"]["ct_lung"] == {"center": -600.0, "width": 1500.0, "modality": "CT"}
    assert body["volume"] and all(name.startswith("ct_") for name in body["volume"])
    assert body["volume_default"] == "ct_bone"


def test_without_a_modality_every_preset_is_listed(node):
    body = presets(node).json
    assert {"ct_bone", "mr_angio"} <= set(body["volume"]) and "ct_lung" in body["window"]


def test_a_bad_modality_is_a_400(node):
    for bad in ("C%20T", "x" * 17, "%C3%A9"):
        reply = presets(node, f"?modality={bad}")
        assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error", bad
