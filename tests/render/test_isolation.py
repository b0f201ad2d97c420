"""A real render node daemon survives what uploads throw at its decoders, and a damaged store.

Decoding runs in isolated worker processes (daemons/render/ingest/isolation.py): a codec panic, a
decompression bomb and a file that keeps the decoder busy are each answered 422 naming the file
and the reason, while the node's own gunicorn worker (same pid) keeps serving a record loaded
before. Also: a refused upload leaves the keep-alive connection usable, and a record whose
manifest is damaged is quarantined instead of breaking the listing or the node's start.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import ssl
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.demo import RunningDeployment, start_deployment
from daemons.layers import get_layer
from shared.config import render_config_toml
from tests.hostile.corpus import (
    base_dataset,
    j2k_bomb,
    rle_corrupted_segments,
    to_bytes,
)

pytestmark = pytest.mark.slow

NODE = "render-1-1"
OTHER_NODE = "render-2-1"
DECODE = {"workers": 2, "memory_mb": 160, "cpu_s": 20, "timeout_s": 4.0}


def _small_decode_limits(layout) -> None:
    """Decode limits small enough that a 8192² JPEG 2000 frame is over memory and 100 2048²
    frames over time, so the test needs neither gigabytes nor minutes."""
    for instance in layout.by_layer("render"):
        path = Path(instance.config)
        values = tomllib.loads(path.read_text())
        values["decode"] = dict(DECODE)
        path.write_text(render_config_toml("render", get_layer("render").keys, values))


@pytest.fixture(scope="module")
def iso_deployment(tmp_path_factory) -> Iterator[RunningDeployment]:
    # One gunicorn worker per node: the pid and decode-pool figures GET /api/v1/node reports are the
    # answering worker's, so with two workers a before/after pair could come from different ones.
    running = start_deployment(tmp_path_factory.mktemp("isolation"), before_start=_small_decode_limits,
                               institution_names=["Isolation Hospital", "Other Clinic"], render_workers=1)
    yield running
    running.stop()


def _upload(client, url: str, files: list[tuple[str, bytes]]):
    return client.session.post(f"{url}/api/v1/records", timeout=120,
                               files=[("files", (name, data, "application/dicom")) for name, data in files])


def _node(iso_deployment, url: str) -> dict:
    """The node's health figures, for administrators."""
    return iso_deployment.client("admin").call("GET", f"{url}/api/v1/node").json()


def _load_and_wait(client, url: str, record_id: str) -> None:
    client.call("POST", f"{url}/api/v1/records/{record_id}/load", ok=(202,))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.call("GET", f"{url}/api/v1/records/{record_id}/status").json()
        if status["state"] == "ready":
            return
        assert status["state"] == "loading", status
        time.sleep(0.2)
    raise AssertionError(f"record {record_id} did not finish loading")


def _frames_served(client, url: str, record_id: str, frames: int) -> None:
    for index in range(frames):
        reply = client.session.get(f"{url}/api/v1/records/{record_id}/frames/{index}", timeout=30)
        assert reply.status_code == 200, f"frame {index}: {reply.status_code} {reply.text[:200]}"


def test_panic_bomb_and_hang_cost_a_decode_worker_not_the_node(iso_deployment, ct_series):
    client, url = iso_deployment.client("physician"), iso_deployment.url(NODE)
    slices = sorted(ct_series.glob("*.dcm"))[:4]
    record = _upload(client, url, [(p.name, p.read_bytes()) for p in slices])
    assert record.status_code in (200, 201), record.text
    record_id = record.json()["id"]
    _load_and_wait(client, url, record_id)
    before = _node(iso_deployment, url)

    hostile = [
        ("panic.dcm", rle_corrupted_segments(), "panicked"),
        ("bomb.dcm", j2k_bomb(8192), "allocate"),
        ("hang.dcm", j2k_bomb(2048, 400), "longer than 4 s"),
    ]
    for name, data, reason in hostile:
        started = time.monotonic()
        reply = _upload(client, url, [(name, data)])
        assert reply.status_code == 422, f"{name}: {reply.status_code} {reply.text[:300]}"
        error = reply.json()["error"]
        assert error["code"] == "undecodable_pixels" and name in error["message"] and reason in error["message"], error
        assert time.monotonic() - started < 30

    after = _node(iso_deployment, url)
    assert after["pid"] == before["pid"], "the node's gunicorn worker died"
    assert after["decode_workers"]["replaced"] >= before["decode_workers"]["replaced"] + 1  # the hung one
    assert client.call("GET", f"{url}/api/v1/records/{record_id}/status").json()["state"] == "ready"
    _frames_served(client, url, record_id, len(slices))
    good = _upload(client, url, [("good.dcm", to_bytes(base_dataset()))])
    assert good.status_code in (200, 201), good.text


def test_one_byte_vr_corruption_is_a_422(iso_deployment):
    client, url = iso_deployment.client("physician"), iso_deployment.url(NODE)
    data = to_bytes(base_dataset())
    at = data.index(b"\x28\x00\x10\x00US")
    reply = _upload(client, url, [("vr.dcm", data[:at + 4] + b"Us" + data[at + 6:])])
    assert reply.status_code == 422, reply.text
    assert "vr.dcm" in reply.json()["error"]["message"] and "'Us'" in reply.json()["error"]["message"]


def _raw_connection(iso_deployment, url: str) -> http.client.HTTPSConnection:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=iso_deployment.ca_cert)
    return http.client.HTTPSConnection(host, int(port), context=context, timeout=30)


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: application/dicom\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_refused_upload_keeps_the_connection_usable(iso_deployment):
    """403 before the body is read: the next request on the SAME connection must still work."""
    client = iso_deployment.client("physician")  # of the first institution: refused on the second's node
    token = f"Bearer {client.token_for(iso_deployment.url(OTHER_NODE))}"  # that node's own audience
    body, content_type = _multipart("big.dcm", to_bytes(base_dataset()) * 40)  # ~1.6 MiB, over gunicorn's drain
    connection = _raw_connection(iso_deployment, iso_deployment.url(OTHER_NODE))
    connection.request("POST", "/api/v1/records", body=body,
                       headers={"Authorization": token, "Content-Type": content_type})
    refused = connection.getresponse()
    assert refused.status == 403 and json.loads(refused.read())["error"]["code"] == "forbidden"
    local = connection.sock.getsockname()
    connection.request("GET", "/api/v1/presets", headers={"Authorization": token})
    reply = connection.getresponse()
    assert reply.status == 200, reply.read()[:200]
    reply.read()
    assert connection.sock.getsockname() == local
    connection.close()

    session = iso_deployment.client("physician").session  # a requests.Session, as the console uses
    url = iso_deployment.url(OTHER_NODE)
    for _ in range(3):
        assert session.post(f"{url}/api/v1/records", timeout=60, files=[
            ("files", ("big.dcm", to_bytes(base_dataset()) * 40, "application/dicom"))]).status_code == 403
        assert session.get(f"{url}/api/v1/presets", timeout=30).status_code == 200


def _store_and_db(iso_deployment, name: str) -> tuple[Path, Path]:
    config = get_layer("render").load_config(next(i.config for i in iso_deployment.instances if i.name == name))
    return Path(config["storage"]["dir"]), Path(iso_deployment.root) / "data" / name / "render.db"


def _fresh_record(client, url: str) -> str:
    reply = _upload(client, url, [("fresh.dcm", to_bytes(base_dataset()))])
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def test_a_damaged_manifest_is_quarantined_and_the_node_keeps_working(iso_deployment):
    """Damage found on start (a record the catalogue lacks) or on first read (the listing): the
    record is moved aside and reported, everything else keeps working."""
    client, url = iso_deployment.client("physician"), iso_deployment.url(NODE)
    store, database = _store_and_db(iso_deployment, NODE)
    healthy, damaged, uncatalogued = (_fresh_record(client, url) for _ in range(3))
    iso_deployment.stop_instance(NODE)
    manifest = store / damaged / "manifest.bin"
    manifest.write_bytes(manifest.read_bytes()[:-5] + b"XXXXX")
    (store / uncatalogued / "manifest.bin").write_bytes(b"not a store blob")
    with sqlite3.connect(database) as db:
        db.execute("DELETE FROM stored_record WHERE id = ?", (uncatalogued,))
    instance = next(i for i in iso_deployment.instances if i.name == NODE)
    iso_deployment.start_instance(instance)
    iso_deployment.wait_healthy(instance)

    admin = iso_deployment.client("admin")  # lists every record of its institution's node
    listing = admin.session.get(f"{url}/api/v1/records", timeout=30)
    assert listing.status_code == 200, listing.text
    ids = {item["id"] for item in listing.json()["items"]}
    assert healthy in ids and damaged not in ids and uncatalogued not in ids
    quarantined = _node(iso_deployment, url)["quarantined_records"]
    for record_id in (damaged, uncatalogued):
        assert any(name.startswith(record_id) for name in quarantined), quarantined
        assert client.session.get(f"{url}/api/v1/records/{record_id}", timeout=30).status_code == 404
    assert admin.call("GET", f"{url}/api/v1/records").status_code == 200
    _load_and_wait(client, url, healthy)
    _frames_served(client, url, healthy, 1)
