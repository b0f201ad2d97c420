"""The render node as deployed: gunicorn (one worker, many threads) over TLS, tokens from the toplevel."""

from __future__ import annotations

import hashlib
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.render.synthetic import as_new_series

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(deployment):
    if not any(i.layer == "render" for i in deployment.instances):
        pytest.skip("the render layer is not available in this build")
    return deployment.client("physician"), deployment.url("render-1-1")


def _wait_ready(client, url: str, record_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.call("GET", f"{url}/api/v1/records/{record_id}/status").json()
        if status["state"] in ("ready", "error"):
            return status
        time.sleep(0.1)
    raise AssertionError("the record never finished loading")


def test_upload_load_render_delete_over_tls(node, deployment, ct_series: Path, tmp_path):
    client, url = node
    files = as_new_series(sorted(ct_series.glob("*.dcm"))[40:60], tmp_path)  # a record of exactly these 20
    handles = [("files", (f.name, f.read_bytes(), "application/dicom")) for f in reversed(files)]
    created = client.call("POST", f"{url}/api/v1/records", files=handles, ok=(200, 201))
    meta = created.json()
    record_id = meta["id"]
    assert meta["frames"] == 20 and meta["rows"] == 512

    loading = client.call("POST", f"{url}/api/v1/records/{record_id}/load", ok=(202,)).json()
    assert loading["frames_total"] == 20 and loading["state"] in ("loading", "ready")
    assert _wait_ready(client, url, record_id) == {
        "id": record_id, "state": "ready", "frames_total": 20, "frames_ready": 20, "errors": [], "stored_only": 0}

    frame = client.call("GET", f"{url}/api/v1/records/{record_id}/frames/10",
                        params={"format": "webp", "window": "40,400", "size": "256x256"})
    assert frame.headers["Content-Type"] == "image/webp"
    assert frame.headers["Cache-Control"] == "private, max-age=86400"
    assert Image.open(io.BytesIO(frame.content)).size == (256, 256)
    again = client.session.get(f"{url}/api/v1/records/{record_id}/frames/10",
                               params={"format": "webp", "window": "40,400", "size": "256x256"},
                               headers={"If-None-Match": frame.headers["ETag"]}, timeout=30)
    assert again.status_code == 304

    wanted = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    original = client.call("GET", f"{url}/api/v1/records/{record_id}/original", params={"index": 19})
    assert hashlib.sha256(original.content).hexdigest() in wanted

    health = deployment.client("admin").call("GET", f"{url}/api/v1/node").json()
    assert health["records_loaded"] >= 1 and health["memory_used_bytes"] >= 20 * 512 * 512 * 2

    client.call("DELETE", f"{url}/api/v1/records/{record_id}", ok=(204,))
    assert client.session.get(f"{url}/api/v1/records/{record_id}", timeout=30).status_code == 404


def test_sixteen_viewers_scroll_one_record_without_errors(node, ct_series: Path):
    client, url = node
    files = sorted(ct_series.glob("*.dcm"))[:30]
    handles = [("files", (f.name, f.read_bytes(), "application/dicom")) for f in files]
    record_id = client.call("POST", f"{url}/api/v1/records", files=handles, ok=(200, 201)).json()["id"]
    client.call("POST", f"{url}/api/v1/records/{record_id}/load", ok=(202,))

    refusals: list[str] = []

    def scroll(viewer: int) -> list[int]:
        codes = []
        for step in range(15):
            reply = client.session.get(f"{url}/api/v1/records/{record_id}/frames/{(viewer + step) % 30}",
                                       params={"format": "webp", "window": f"{viewer * 10},400"}, timeout=60)
            codes.append(reply.status_code)
            if reply.status_code != 200:
                refusals.append(reply.text[:300])
            if reply.status_code == 200:
                assert Image.open(io.BytesIO(reply.content)).size == (512, 512)
        return codes

    with ThreadPoolExecutor(16) as pool:
        codes = [c for result in pool.map(scroll, range(16)) for c in result]
    assert codes.count(200) == len(codes), refusals[:3]
    client.call("DELETE", f"{url}/api/v1/records/{record_id}", ok=(204,))
