"""Reformats and 3D views served by a real render node (store, loader, registry) from the real CT."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from daemons.render.app import create_app
from daemons.render.models import upgrade
from daemons.render.settings import KEYS
from shared.config import build_config
from shared.tokens import TokenIssuer, generate_signing_keypair, load_private_key

SLICES = 24  # enough for a volume, quick to upload and load


@pytest.fixture(scope="module")
def node(tmp_path_factory, ct_series: Path):
    root = tmp_path_factory.mktemp("render3d-node")
    generate_signing_keypair(root / "token.pem", root / "token.pub")
    institution = str(uuid.uuid4())
    config = build_config("render", KEYS, {
        "tokens": {"public_key": str(root / "token.pub"), "audience": "https://render.test:5003"},
        "database": {"url": f"sqlite:///{root}/render.db"},
        "node": {"institution_id": institution, "receipt_key": str(root / "receipt.pem")},
        "storage": {"dir": str(root / "store"), "key_file": str(root / "store.key")},
        "render": {"backend_3d": "cpu", "load_threads": 2},
    }, None)
    upgrade(config)
    app = create_app(config)
    issuer = TokenIssuer(load_private_key(root / "token.pem"), "sivr-toplevel", "https://render.test:5003", 60)
    token, _ = issuer.issue(str(uuid.uuid4()), "doc", "physician", institution)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    files = [(path.open("rb"), path.name) for path in sorted(ct_series.glob("*.dcm"))[:SLICES]]
    response = client.post("/api/v1/records", data={"files": files}, content_type="multipart/form-data")
    assert response.status_code in (200, 201), response.get_json()
    yield client, response.get_json(), app
    app.extensions["sivr_records"].shutdown()


def test_views_before_loading_answer_at_once(node):
    client, meta, _ = node
    response = client.get(f"/api/v1/records/{meta['id']}/volume")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] in ("not_loaded", "loading")
    assert client.get(f"/api/v1/records/{'f' * 64}/mpr/axial/0").status_code == 404


def test_loaded_ct_is_reformatted_and_rendered(node):
    client, meta, app = node
    assert client.post(f"/api/v1/records/{meta['id']}/load").status_code == 202
    deadline = time.monotonic() + 120
    while client.get(f"/api/v1/records/{meta['id']}/status").get_json()["state"] != "ready":
        assert time.monotonic() < deadline, "the record did not load"
        time.sleep(0.1)
    coronal = client.get(f"/api/v1/records/{meta['id']}/mpr/coronal/256?window=40,400")
    assert coronal.status_code == 200
    height_mm = SLICES * meta["slice_spacing"]
    width_mm = meta["columns"] * meta["pixel_spacing"][1]
    image = Image.open(io.BytesIO(coronal.data))
    assert image.size[0] == meta["columns"]
    assert abs(image.size[1] - round(meta["columns"] * height_mm / width_mm)) <= 1
    for query in ("mode=mip&window=300,1500", "mode=dvr&preset=ct_bone&azimuth=30&elevation=20",
                  "mode=avg&render=interactive"):
        response = client.get(f"/api/v1/records/{meta['id']}/volume?{query}&size=256x256")
        assert response.status_code == 200, response.get_json()
        assert max(Image.open(io.BytesIO(response.data)).convert("L").getextrema()) > 0
    images = app.extensions["sivr_node"].images
    hits = images.hits
    still = f"/api/v1/records/{meta['id']}/volume?mode=mip&window=300,1500&size=256x256"
    assert client.get(still).data == response_data(client, still)
    assert images.hits == hits + 2  # a still seen before comes from the node's image cache


def response_data(client, url):
    response = client.get(url)
    assert response.status_code == 200
    return response.data
