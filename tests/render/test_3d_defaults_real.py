"""3D defaults on the bundled real data, through the node's API (issue 15, "3D defaults"): the demo
CT (demo_data/ct-chest-100, its middle 40 slices) and the demo MR (demo_data/mr-head-24).

With no window, MIP, MinIP and average are drawn with the window measured on the projection and
named in X-Window: no white blob, no black square. A DVR view without a preset takes its
modality's (an MR opens with an MR preset, not a CT one)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DEMO = Path(__file__).resolve().parents[2] / "demo_data"
VIEW = "size=192x192&azimuth=30&elevation=20"


def loaded(node, files) -> str:
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(120)
    return record_id


@pytest.fixture()
def records(node):
    ct = sorted((DEMO / "ct-chest-100").glob("*.dcm"))[30:70]
    return node, {"CT": loaded(node, ct), "MR": loaded(node, sorted((DEMO / "mr-head-24").glob("*.dcm")))}


def image(node, record_id, query):
    reply = node.client.get(f"/api/v1/records/{record_id}/volume?{query}", headers=node.headers())
    assert reply.status_code == 200, reply.data[:300]
    return np.asarray(Image.open(io.BytesIO(reply.data))), reply.headers


def test_real_projections_are_neither_blobs_nor_black_and_an_mr_dvr_opens_with_an_mr_preset(records):
    node, ids = records
    for modality in ("CT", "MR"):
        for mode in ("mip", "minip", "avg"):
            grey, headers = image(node, ids[modality], f"mode={mode}&{VIEW}")
            inside = grey[grey > 0]   # rays that met the volume (a missed ray is black)
            assert inside.size > 0.1 * grey.size, (modality, mode, "black")
            assert np.mean(inside == 255) < 0.12, (modality, mode, "saturated")
            assert np.mean((inside > 40) & (inside < 215)) > 0.3, (modality, mode)
            center, width = (float(v) for v in headers["X-Window"].split(","))
            again, _ = image(node, ids[modality], f"mode={mode}&{VIEW}&window={center:g},{width:g}")
            np.testing.assert_array_equal(grey, again)   # X-Window is the window the image was drawn with

    default, _ = image(node, ids["MR"], f"mode=dvr&{VIEW}")
    named, _ = image(node, ids["MR"], f"mode=dvr&preset=mr_soft_tissue&{VIEW}")
    np.testing.assert_array_equal(default, named)
    assert np.mean(default.max(axis=-1) > 60) > 0.05
    ct_default, _ = image(node, ids["CT"], f"mode=dvr&{VIEW}")
    np.testing.assert_array_equal(ct_default, image(node, ids["CT"], f"mode=dvr&preset=ct_bone&{VIEW}")[0])
