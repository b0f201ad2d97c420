"""Two render nodes sharing one bucket of a real SeaweedFS: the physician workflow, tampering,
key rotation, and the faults (store restarted, node killed mid-upload, node killed)."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
import requests
from pydicom.uid import generate_uid

from daemons.demo import DEMO_CT, DEMO_PATIENT, find_or_create_patient, register_record, upload_record
from daemons.render.store.s3 import MANIFESTS, OBJECTS
from tests.ops.helpers import demo_slices, upload_and_load, wait_ready
from tests.s3.conftest import render_instances, restart, set_config_values
from tests.s3.gate import Gate
from tests.webviewer.browser import DESKTOP, launch_chromium, server_cert_of
from tests.webviewer.helpers import login

FILES = demo_slices(12)


_SERIES_DIR = Path(tempfile.mkdtemp(prefix="sivr-s3-series-"))


def ct(start: int, stop: int) -> list[Path]:
    """Slices of the demo CT (100 slices) by position, as a series of their own for each range.

    A node keeps one record per series (an upload of more slices grows it), so each range gets a
    SeriesInstanceUID of its own: the same range is the same record, tests do not share records.
    Its slices get SOP Instance UIDs of their own too (a UID names one instance: the node refuses
    one it holds in another series, and ranges overlap).
    """
    folder = _SERIES_DIR / f"{start}-{stop}"
    if not folder.exists():
        partial = folder.with_name(folder.name + ".partial")
        partial.mkdir()
        series_uid = generate_uid(entropy_srcs=["sivr-s3-test", str(start), str(stop)])
        for source in sorted(DEMO_CT.glob("*.dcm"))[start:stop]:
            ds = pydicom.dcmread(source)
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
                entropy_srcs=[series_uid, str(ds.SOPInstanceUID)])
            ds.save_as(partial / source.name)
        partial.rename(folder)
    return sorted(folder.glob("*.dcm"))


def _keys(seaweed, bucket: str, prefix: str) -> list[str]:
    client, keys, token = seaweed.client(), [], None
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix,
                                      **({"ContinuationToken": token} if token else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def _bucket(shared) -> str:
    return shared.layout.institutions[0]["nodes"][0]["store"].rsplit("/", 2)[1]


def _prefix(shared) -> str:
    return "institution-1/"


def _get(client, url: str) -> requests.Response:
    return client.session.get(url, timeout=30)


def test_physician_workflow_two_nodes_share_a_bucket(shared, seaweed):
    doctor = shared.client()
    node_a, node_b = (i.url for i in render_instances(shared))
    meta = upload_and_load(doctor, node_a, FILES)
    assert wait_ready(doctor, node_a, meta["id"])["state"] == "ready"
    # node B never saw the upload: it finds the record in the bucket on the first request
    assert doctor.call("GET", f"{node_b}/api/v1/records/{meta['id']}").json()["frames"] == len(FILES)
    doctor.call("POST", f"{node_b}/api/v1/records/{meta['id']}/load", ok=(200, 202))
    status = wait_ready(doctor, node_b, meta["id"])
    assert status["state"] == "ready" and status["errors"] == []
    frame = doctor.call("GET", f"{node_b}/api/v1/records/{meta['id']}/frames/5", params={"format": "png"})
    assert frame.headers["Content-Type"] == "image/png" and len(frame.content) > 1000
    original = doctor.call("GET", f"{node_b}/api/v1/records/{meta['id']}/original", params={"index": 3})
    assert original.content in {f.read_bytes() for f in FILES}
    listed = shared.client("admin").call("GET", f"{node_b}/api/v1/records").json()["items"]
    assert meta["id"] in {r["id"] for r in listed}
    # nothing readable leaves the node: no DICOM preamble, no patient name in any object
    client, bucket = seaweed.client(), _bucket(shared)
    name = meta["patient_name"].encode()
    for key in _keys(seaweed, bucket, _prefix(shared)):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert b"DICM" not in body and (not name or name not in body)
    # the institution registry names both nodes as able to serve it, the uploading node first
    inst = shared.layout.institutions[0]
    patient = find_or_create_patient(doctor, shared.url("toplevel"), DEMO_PATIENT)
    nodes = {n["url"]: n for n in doctor.call("GET", f"{inst['server_url']}/api/v1/nodes").json()["items"]}
    assert nodes[node_a]["store"] == nodes[node_b]["store"] != ""
    record = register_record(doctor, inst["server_url"], meta, nodes[node_a]["id"], patient["id"], "CT", "shared",
                             confirm_mismatch=True)
    assert record["node_ids"] == [nodes[node_a]["id"], nodes[node_b]["id"]]


def test_tampered_object_is_refused_never_rendered(shared, seaweed):
    doctor = shared.client()
    node_a, node_b = (i.url for i in render_instances(shared))
    meta = upload_record(doctor, node_a, ct(0, 6))
    client, bucket = seaweed.client(), _bucket(shared)
    target = sorted(k for k in _keys(seaweed, bucket, f"{_prefix(shared)}{OBJECTS}{meta['id']}/"))[2]
    body = bytearray(client.get_object(Bucket=bucket, Key=target)["Body"].read())
    body[-40] ^= 0xFF
    client.put_object(Bucket=bucket, Key=target, Body=bytes(body))
    original = _get(doctor, f"{node_b}/api/v1/records/{meta['id']}/original?index=2")
    assert original.status_code == 422 and original.json()["error"]["code"] == "store_corrupt"
    doctor.call("POST", f"{node_b}/api/v1/records/{meta['id']}/load", ok=(200, 202))
    status = wait_ready(doctor, node_b, meta["id"])
    assert [e["frame"] for e in status["errors"]] == [2]
    assert "authentication failed" in status["errors"][0]["message"]
    frame = _get(doctor, f"{node_b}/api/v1/records/{meta['id']}/frames/2")
    assert frame.status_code == 422 and frame.json()["error"]["code"] == "frame_error"
    assert _get(doctor, f"{node_b}/api/v1/records/{meta['id']}/frames/1").status_code == 200


def test_key_rotation_keeps_old_records_readable(shared, seaweed):
    """The documented procedure: new KEK on every node with the old one still accepted, rewrap, retire."""
    doctor = shared.client()
    instances = render_instances(shared)
    instance_a, instance_b = instances
    slices = ct(6, 9) + ct(9, 12)  # two series: one stored before the rotation, one after
    before = upload_record(doctor, instance_a.url, slices[:3])
    keys = shared.root / "keys"
    old_kek = keys / "institution-1.store-kek.key"
    new_kek = keys / "institution-1.store-kek-2.key"
    new_kek.write_bytes(secrets.token_bytes(32))
    new_kek.chmod(0o600)
    for instance in instances:
        set_config_values(instance, key_file=f'"{new_kek}"', old_key_files=f'["{old_kek}"]')
    restart(shared, *instances)
    after = upload_record(doctor, instance_b.url, slices[3:])
    for meta in (before, after):  # each node opens records wrapped under either key
        for instance in instances:
            doctor.call("POST", f"{instance.url}/api/v1/records/{meta['id']}/load", ok=(200, 202))
            assert wait_ready(doctor, instance.url, meta["id"])["errors"] == []
    rewrap = subprocess.run([sys.executable, "-m", "daemons.cli", "store", "rewrap", "--config", instance_b.config],
                            capture_output=True, text=True, timeout=120)
    assert rewrap.returncode == 0, rewrap.stderr
    assert int(rewrap.stdout.split()[0]) >= 1
    for instance in instances:  # the old KEK retired: every record still opens
        set_config_values(instance, old_key_files="[]")
    restart(shared, *instances)
    for instance in instances:
        original = doctor.call("GET", f"{instance.url}/api/v1/records/{before['id']}/original", params={"index": 1})
        assert original.content in {f.read_bytes() for f in slices[:3]}
    # image objects were not rewritten: only the manifests changed
    assert len(_keys(seaweed, _bucket(shared), f"{_prefix(shared)}{OBJECTS}{before['id']}/")) == 3


def test_store_restarted_under_running_nodes(shared, seaweed):
    doctor = shared.client()
    node_a, node_b = (i.url for i in render_instances(shared))
    loaded = upload_and_load(doctor, node_a, ct(12, 15))
    wait_ready(doctor, node_a, loaded["id"])
    seaweed.stop()
    try:
        unknown = _get(doctor, f"{node_b}/api/v1/records/{'ab' * 32}")
        assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "store_unavailable"
        handles = [("files", (f.name, f.read_bytes(), "application/dicom")) for f in ct(15, 17)]
        upload = doctor.session.post(f"{node_a}/api/v1/records", files=handles, timeout=60)
        assert upload.status_code == 503 and upload.json()["error"]["code"] == "store_unavailable"
        listed = _get(shared.client("admin"), f"{node_a}/api/v1/records")
        assert listed.status_code in (200, 503)
        # a record already in RAM is still shown
        assert _get(doctor, f"{node_a}/api/v1/records/{loaded['id']}/frames/1").status_code == 200
        ready = doctor.session.get(f"{node_b}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["error"]["checks"]["store"] != "ok"
        # anyone may read it: no endpoint URL or bucket of the client library's text
        assert "http" not in ready.json()["error"]["checks"]["store"], ready.json()
        assert doctor.session.get(f"{node_b}/healthz", timeout=30).status_code == 200
    finally:
        seaweed.start()
    assert doctor.session.get(f"{node_b}/readyz", timeout=30).json()["checks"]["store"] == "ok"
    meta = upload_record(doctor, node_a, ct(15, 17))
    assert doctor.call("GET", f"{node_b}/api/v1/records/{meta['id']}").json()["files"] == 2


def test_node_killed_mid_upload_leaves_nothing_visible(shared, seaweed):
    """Node A reaches the bucket through a relay the test cuts once the upload's first object is
    stored, then A is killed: its objects are in the bucket, its manifest never is."""
    doctor = shared.client()
    instance_a, instance_b = render_instances(shared)
    bucket, prefix = _bucket(shared), _prefix(shared)
    gate = Gate("127.0.0.1", int(seaweed.endpoint_url.rsplit(":", 1)[1]))
    set_config_values(instance_a, threads="1", endpoint_url=f'"{gate.url}"')
    restart(shared, instance_a)
    try:
        files = ct(0, 100)
        record_id = _kill_during_upload(shared, seaweed, doctor, instance_a, files, gate)
        assert f"{prefix}{MANIFESTS}{record_id}" not in _keys(seaweed, bucket, f"{prefix}{MANIFESTS}")
        assert _keys(seaweed, bucket, f"{prefix}{OBJECTS}{record_id}/")  # objects were written, no manifest
        assert _get(doctor, f"{instance_b.url}/api/v1/records/{record_id}").status_code == 404
        # the interrupted upload's objects are removed when a node starts and finds them stale
        gate.stop()
        set_config_values(instance_a, stale_upload_s="0.0", endpoint_url=f'"{seaweed.endpoint_url}"')
        shared.start_instance(instance_a)
        shared.wait_healthy(instance_a)
        assert not _keys(seaweed, bucket, f"{prefix}{OBJECTS}{record_id}/")
        meta = upload_record(doctor, instance_a.url, files)  # and the upload succeeds when tried again
        assert meta["id"] == record_id and meta["frames"] == len(files)
    finally:
        gate.stop()
        set_config_values(instance_a, threads="8", stale_upload_s="3600.0", endpoint_url=f'"{seaweed.endpoint_url}"')
        restart(shared, instance_a)


def _kill_during_upload(shared, seaweed, doctor, instance, files, gate: Gate) -> str:
    """Cut the node's link to the bucket as soon as the upload's first object is in it, then
    SIGKILL the node; the record id."""
    bucket, prefix = _bucket(shared), _prefix(shared)
    before = set(_keys(seaweed, bucket, f"{prefix}{OBJECTS}"))
    thread = threading.Thread(target=lambda: _get_upload(doctor, instance.url, files), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    fresh: set[str] = set()
    while not fresh and time.monotonic() < deadline:
        fresh = set(_keys(seaweed, bucket, f"{prefix}{OBJECTS}")) - before
        time.sleep(0.005)
    gate.close()
    shared.stop_instance(instance.name, signal.SIGKILL)
    thread.join(timeout=60)
    assert fresh, "the upload wrote no object within 120 s"
    return next(iter(fresh)).removeprefix(f"{prefix}{OBJECTS}").split("/")[0]


def _get_upload(doctor, node_url, files):
    with contextlib.suppress(requests.RequestException, RuntimeError):  # the node is killed under it
        upload_record(doctor, node_url, files)


def test_node_killed_its_records_served_by_the_other_within_10_s(shared):
    doctor = shared.client()
    instance_a, instance_b = render_instances(shared)
    files = ct(20, 30)
    meta = upload_and_load(doctor, instance_a.url, files)
    wait_ready(doctor, instance_a.url, meta["id"])
    inst = shared.layout.institutions[0]
    patient = find_or_create_patient(doctor, shared.url("toplevel"), DEMO_PATIENT)
    nodes = {n["id"]: n["url"] for n in doctor.call("GET", f"{inst['server_url']}/api/v1/nodes").json()["items"]}
    by_url = {url: node_id for node_id, url in nodes.items()}
    record = register_record(doctor, inst["server_url"], meta, by_url[instance_a.url], patient["id"], "CT", "failover",
                             confirm_mismatch=True)
    shared.stop_instance(instance_a.name, signal.SIGKILL)
    killed = time.monotonic()
    frame = _first_frame_from_any(doctor, [nodes[n] for n in record["node_ids"]], meta["id"])
    elapsed = time.monotonic() - killed
    print(f"\nrecord served by the second node {elapsed:.2f} s after the first node's death")
    assert frame.status_code == 200 and elapsed < 10
    served = {doctor.call("GET", f"{instance_b.url}/api/v1/records/{meta['id']}/original",
                          params={"index": index}).content for index in range(len(files))}
    assert served == {f.read_bytes() for f in files}  # nothing lost: every file bit-exact from node B
    shared.start_instance(instance_a)
    shared.wait_healthy(instance_a)


def _first_frame_from_any(doctor, urls: list[str], record_id: str) -> requests.Response:
    """What the viewer does: the record's nodes in the registry's order, the next when one is down."""
    for url in urls:
        try:
            doctor.session.post(f"{url}/api/v1/records/{record_id}/load", timeout=5).raise_for_status()
        except requests.RequestException:
            continue
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            reply = doctor.session.get(f"{url}/api/v1/records/{record_id}/frames/0", timeout=5)
            if reply.status_code != 409:
                return reply
            time.sleep(0.05)
    raise AssertionError("no node served the record")


def test_viewer_moves_to_the_node_sharing_the_store(shared, playwright_instance):
    """The browser opens a record whose node is dead on the other node of the same store."""
    doctor = shared.client()
    instance_a, instance_b = render_instances(shared)
    meta = upload_record(doctor, instance_a.url, ct(30, 36))
    inst = shared.layout.institutions[0]
    patient = find_or_create_patient(doctor, shared.url("toplevel"), DEMO_PATIENT)
    by_url = {n["url"]: n["id"] for n in doctor.call("GET", f"{inst['server_url']}/api/v1/nodes").json()["items"]}
    register_record(doctor, inst["server_url"], meta, by_url[instance_a.url], patient["id"], "CT", "viewer failover",
                    confirm_mismatch=True)
    shared.stop_instance(instance_a.name, signal.SIGKILL)
    frames_from: set[str] = set()
    try:
        browser = launch_chromium(playwright_instance, server_cert_of(shared))
        try:
            page = browser.new_context(viewport=DESKTOP, base_url=shared.url("web")).new_page()
            page.set_default_timeout(30000)
            page.on("request", lambda r: "/frames/" in r.url and frames_from.add(r.url.split("/api/")[0]))
            login(page, shared)
            page.goto(f"/#/view/{inst['id']}/{by_url[instance_a.url]}/{meta['id']}")
            page.locator("#viewport[data-load-state=ready]").wait_for(timeout=60000)
        finally:
            browser.close()
        assert frames_from == {instance_b.url}
    finally:
        shared.start_instance(instance_a)
        shared.wait_healthy(instance_a)


def test_series_sent_in_two_parts_to_two_nodes_grows_one_record_in_the_bucket(shared, seaweed):
    """The second part, sent to the other node, is appended (S3 `append_files`): one record, every
    file bit-exact, the manifest the only commit point. The node that had the series open sees it
    grow within `storage.manifest_refresh_s`, and a third part sent to it joins the other node's
    files instead of committing a manifest without them."""
    files = ct(40, 48)
    doctor = shared.client()
    node_a, node_b = (i.url for i in render_instances(shared))
    first = upload_record(doctor, node_a, files[:3])
    assert doctor.call("GET", f"{node_a}/api/v1/records/{first['id']}").json()["files"] == 3  # A caches it
    second = upload_record(doctor, node_b, files[3:6])
    assert second["id"] == first["id"] and second["files"] == 6
    assert doctor.call("GET", f"{node_b}/api/v1/records/{first['id']}").json()["files"] == 6
    deadline = time.monotonic() + 10
    while doctor.call("GET", f"{node_a}/api/v1/records/{first['id']}").json()["files"] != 6:
        assert time.monotonic() < deadline, "node A never saw the series grow on node B"
        time.sleep(0.5)
    third = upload_record(doctor, node_a, files[6:])  # A's parsed copy of the series is stale: re-read
    assert third["id"] == first["id"] and third["files"] == 8
    deadline = time.monotonic() + 10  # and B, which cached six files, sees eight within manifest_refresh_s
    while doctor.call("GET", f"{node_b}/api/v1/records/{first['id']}").json()["files"] != 8:
        assert time.monotonic() < deadline, "node B never saw the series grow on node A"
        time.sleep(0.5)
    manifests = [k for k in _keys(seaweed, _bucket(shared), _prefix(shared)) if f"{MANIFESTS}{first['id']}" in k]
    assert len(manifests) == 1
    originals = {f.read_bytes() for f in files}
    got = {doctor.call("GET", f"{node_b}/api/v1/records/{first['id']}/original", params={"index": i}).content
           for i in range(8)}
    assert got == originals
    doctor.call("POST", f"{node_b}/api/v1/records/{first['id']}/load", ok=(200, 202))
    status = wait_ready(doctor, node_b, first["id"])
    assert status["state"] == "ready" and status["errors"] == []


def worklist_ids(client, node_url: str) -> list[str]:
    return [i["id"] for i in client.call("GET", f"{node_url}/api/v1/worklist", params={"limit": 500}).json()["items"]]


def test_a_series_filed_through_one_node_is_off_the_other_nodes_work_list(shared, seaweed):
    """The filed mark lives in the bucket: node B, which learns of the series from the store and
    never saw it filed, neither lists it nor hands out a receipt to file it a second time."""
    files = ct(50, 53)
    doctor = shared.client()
    node_a, node_b = (i.url for i in render_instances(shared))
    record = upload_record(doctor, node_a, files)
    doctor.call("GET", f"{node_b}/api/v1/records/{record['id']}")  # B takes it over from the bucket
    listed_on_b = worklist_ids(doctor, node_b)
    assert record["id"] in listed_on_b  # not filed yet
    doctor.call("POST", f"{node_a}/api/v1/records/{record['id']}/filed")
    assert f"{_prefix(shared)}filed/{record['id']}" in _keys(seaweed, _bucket(shared), f"{_prefix(shared)}filed/")
    listed_on_b = worklist_ids(doctor, node_b)
    assert record["id"] not in listed_on_b
    again = doctor.call("POST", f"{node_b}/api/v1/records/{record['id']}/receipt", ok=(409,))
    assert again.json()["error"]["code"] == "already_filed"
    doctor.call("DELETE", f"{node_a}/api/v1/records/{record['id']}")  # the mark goes with the record
    assert f"{_prefix(shared)}filed/{record['id']}" not in _keys(seaweed, _bucket(shared), f"{_prefix(shared)}filed/")
