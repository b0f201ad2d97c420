"""The render node's HTTP API through the Flask test client, with real tokens, store and loader."""

from __future__ import annotations

import io
import random
import threading
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from daemons.render.imaging.pixels import Window
from daemons.render.records import LoadedRecord, _Loader
from daemons.render.stacks import stack_voxels, stacks_of
from daemons.render.store.local import KEY_CHECK
from daemons.render.store.ownership import MARKER
from shared.config import ConfigError
from shared.receipts import Expected, ReceiptError, parse_public_key, verify_receipt

from .conftest import NODE_AUDIENCE


@pytest.fixture(scope="module")
def ct_files(ct_series) -> list[Path]:
    return sorted(ct_series.glob("*.dcm"))[:12]


def _position(data: bytes) -> float:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    normal = np.cross([float(v) for v in ds.ImageOrientationPatient[:3]],
                      [float(v) for v in ds.ImageOrientationPatient[3:]])
    return float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient]))


def _loaded(node, record_id: str) -> LoadedRecord:
    reply = node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert reply.status_code == 202, reply.json
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(60)
    return record


def test_upload_load_render_delete(node, ct_files):
    shuffled = ct_files[:]
    random.Random(7).shuffle(shuffled)
    reply = node.upload(shuffled)
    assert reply.status_code == 201, reply.json
    meta = reply.json
    record_id = meta["id"]
    assert len(record_id) == 64
    assert (meta["rows"], meta["columns"], meta["frames"], meta["files"]) == (512, 512, 12, 12)
    assert meta["modality"] == "CT" and meta["photometric"] == "MONOCHROME2"
    assert meta["pixel_spacing"] == pytest.approx([0.898438, 0.898438])
    assert meta["slice_spacing"] == pytest.approx(2.5)
    assert meta["default_window"] == {"center": -700.0, "width": 1500.0, "function": "linear"}
    assert meta["study_uid"] and meta["series_uid"] and meta["stored_at"].endswith("Z")

    # same content in another order: same id, 200
    again = node.upload(list(reversed(ct_files)))
    assert again.status_code == 200 and again.json["id"] == record_id

    # files are kept in position order along the slice normal, bit-exact
    positions = []
    for index in range(12):
        original = node.client.get(f"/api/v1/records/{record_id}/original?index={index}", headers=node.headers())
        assert original.status_code == 200 and original.mimetype == "application/dicom"
        positions.append(_position(original.data))
        assert original.data in {p.read_bytes() for p in ct_files}
    assert positions == sorted(positions)

    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json["id"] == record_id
    listed = node.client.get("/api/v1/records", headers=node.headers(role="instadmin")).json
    assert listed["total"] == 1 and listed["items"][0]["id"] == record_id

    not_loaded = node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers())
    assert not_loaded.status_code == 409 and not_loaded.json["error"]["code"] == "not_loaded"
    status = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json
    assert status == {"id": record_id, "state": "unloaded", "frames_total": 12, "frames_ready": 0, "errors": [],
                      "stored_only": 0}

    record = _loaded(node, record_id)
    status = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json
    assert status["state"] == "ready" and status["frames_ready"] == 12 and status["errors"] == []

    # every frame equals the file at the same position, decoded independently
    expected = pydicom.dcmread(io.BytesIO(node.client.get(
        f"/api/v1/records/{record_id}/original?index=5", headers=node.headers()).data)).pixel_array
    np.testing.assert_array_equal(record.pixels[5], expected)

    for fmt, mimetype in (("png", "image/png"), ("webp", "image/webp"), ("jpeg", "image/jpeg")):
        image = node.client.get(f"/api/v1/records/{record_id}/frames/3?format={fmt}", headers=node.headers())
        assert image.status_code == 200 and image.mimetype == mimetype
        assert image.headers["Cache-Control"] == "private, max-age=86400" and image.headers["ETag"]
        assert Image.open(io.BytesIO(image.data)).size == (512, 512)

    deleted = node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers())
    assert deleted.status_code == 204
    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 404
    assert node.registry.get_loaded(record_id) is None
    assert node.client.get("/api/v1/records", headers=node.headers(role="instadmin")).json["total"] == 0
    assert not any(p.name == record_id for p in (node.root / "store").iterdir())


@pytest.fixture
def loaded_ct(node, ct_files):
    record_id = node.upload(ct_files).json["id"]
    return node, record_id, _loaded(node, record_id)


def _png(reply) -> np.ndarray:
    assert reply.status_code == 200, reply.json
    return np.asarray(Image.open(io.BytesIO(reply.data)))


def test_window_preset_and_default_change_the_image_as_the_pipeline_says(loaded_ct):
    node, record_id, record = loaded_ct
    url = f"/api/v1/records/{record_id}/frames/4"
    from daemons.render.imaging.pixels import PRESETS, GrayParams, Modality, Window, render_gray_reference

    stored = record.pixels[4]
    modality = Modality(record.rescale_slope, record.rescale_intercept)
    default = _png(node.client.get(url, headers=node.headers()))
    np.testing.assert_array_equal(default, render_gray_reference(stored, GrayParams(modality, Window(-700, 1500))))
    bone = _png(node.client.get(f"{url}?window=400,1800", headers=node.headers()))
    np.testing.assert_array_equal(bone, render_gray_reference(stored, GrayParams(modality, Window(400, 1800))))
    preset = _png(node.client.get(f"{url}?preset=ct_bone", headers=node.headers()))
    np.testing.assert_array_equal(
        preset, render_gray_reference(stored, GrayParams(modality, Window(*PRESETS["ct_bone"]))))
    sigmoid = _png(node.client.get(f"{url}?window=40,400&voi_function=sigmoid", headers=node.headers()))
    np.testing.assert_array_equal(
        sigmoid, render_gray_reference(stored, GrayParams(modality, Window(40, 400, "sigmoid"))))
    assert not np.array_equal(default, bone)


def test_one_window_renders_every_frame_exactly_whatever_its_value_range(node):
    # the node's tables cover only the stored values seen so far; a frame with values beyond
    # them must widen the table, never show a wrong grey
    from daemons.render.imaging.pixels import GrayParams, Modality, Window, render_gray_reference
    from tests.render.synthetic import dataset, to_bytes

    ranges = [(-10, 10), (-2000, -1500), (500, 3000), (-32768, 32767), (0, 0)]
    rng = np.random.default_rng(5)
    blobs = []
    for k, (low, high) in enumerate(ranges):
        ds = dataset(16, 16, series="1.2.3.4.77", position=float(k))
        ds.PixelData = rng.integers(low, high + 1, (16, 16)).astype(np.int16).tobytes()
        blobs.append((f"s{k}.dcm", to_bytes(ds)))
    reply = node.upload(blobs)
    assert reply.status_code == 201, reply.json
    record = _loaded(node, reply.json["id"])
    params = GrayParams(Modality(record.rescale_slope, record.rescale_intercept), Window(-200, 2400))
    for index in [0, 1, 2, 3, 4, 3, 2, 1, 0]:
        image = _png(node.client.get(f"/api/v1/records/{record.record_id}/frames/{index}?window=-200,2400",
                                     headers=node.headers()))
        np.testing.assert_array_equal(image, render_gray_reference(record.pixels[index], params),
                                      err_msg=f"frame {index}")


def test_size_and_region(loaded_ct):
    node, record_id, _ = loaded_ct
    url = f"/api/v1/records/{record_id}/frames/0"
    assert _png(node.client.get(f"{url}?size=256x128", headers=node.headers())).shape == (128, 128)
    full = _png(node.client.get(url, headers=node.headers()))
    zoomed = _png(node.client.get(f"{url}?region=0.5,0.5,1,1", headers=node.headers()))
    np.testing.assert_array_equal(zoomed, full[256:, 256:])
    wide = _png(node.client.get(f"{url}?region=0,0,1,0.5&size=400x400", headers=node.headers()))
    assert wide.shape == (200, 400)


def test_etag_revalidation_answers_304(loaded_ct):
    node, record_id, _ = loaded_ct
    url = f"/api/v1/records/{record_id}/frames/2?format=webp&window=40,400"
    first = node.client.get(url, headers=node.headers())
    etag = first.headers["ETag"]
    again = node.client.get(url, headers={**node.headers(), "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    other = node.client.get(url.replace("40,400", "40,401"), headers=node.headers())
    assert other.headers["ETag"] != etag
    # WebP bytes depend on the effort the node's load allowed: a weak validator; PNG's are strong
    assert etag.startswith('W/"')
    png = node.client.get(url.replace("webp", "png"), headers=node.headers())
    assert png.headers["ETag"].startswith('"')
    png_again = node.client.get(url.replace("webp", "png"),
                                headers={**node.headers(), "If-None-Match": png.headers["ETag"]})
    assert png_again.status_code == 304


def test_a_busy_node_encodes_webp_faster_and_says_how_often(make_node, ct_files):
    from daemons.render.imaging.webp_effort import FAST_METHOD

    node = make_node(render__webp_busy_encodes=1)
    try:
        record_id = node.upload(ct_files[:3]).json["id"]
        _loaded(node, record_id)
        effort = node.app.extensions["sivr_node"].webp_effort
        url = f"/api/v1/records/{record_id}/frames/1?format=webp&window=40,400"
        calm = node.client.get(url, headers=node.headers())
        with effort.slot() as method:  # another image is being encoded: the node is now busy
            assert method == 2
            busy = node.client.get(url.replace("40,400", "41,400"), headers=node.headers())
        assert calm.status_code == busy.status_code == 200
        assert len(busy.data) > len(calm.data) * 1.2, "method 0 images are larger"
        health = node.client.get("/api/v1/node", headers=node.headers(role="instadmin")).json
        assert health["webp_fast_encodes"] == effort.fast_encodes == 1 and FAST_METHOD == 0
    finally:
        node.registry.shutdown()


def test_an_image_asked_for_again_comes_from_the_cache_until_its_record_is_deleted(loaded_ct):
    node, record_id, _ = loaded_ct
    images = node.app.extensions["sivr_node"].images
    url = f"/api/v1/records/{record_id}/frames/7?format=png&window=40,400"
    first = node.client.get(url, headers=node.headers())
    hits = images.hits
    second = node.client.get(url, headers=node.headers())
    assert images.hits == hits + 1 and second.data == first.data and second.mimetype == "image/png"
    assert images.used_bytes >= len(first.data)
    node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers())
    assert images.used_bytes == 0


@pytest.mark.parametrize("query, field", [
    ("window=40", "window"), ("window=a,b", "window"), ("window=40,0", "window"), ("preset=nope", "preset"),
    ("format=bmp", "format"), ("quality=0", "quality"), ("size=10", "size"), ("size=0x10", "size"),
    ("size=99999x10", "size"), ("region=0.5,0,0.2,1", "region"), ("voi_function=cubic", "voi_function"),
])
def test_bad_render_parameters_are_400_naming_the_field(loaded_ct, query, field):
    node, record_id, _ = loaded_ct
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/0?{query}", headers=node.headers())
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error"
    assert field in reply.json["error"]["message"]


def test_ids_and_indexes_are_checked(loaded_ct):
    node, record_id, _ = loaded_ct
    assert node.client.get("/api/v1/records/xyz", headers=node.headers()).json["error"]["code"] == "invalid_id"
    # a trailing newline is no part of an id: refused before any look-up, not a 404 naming "<id>\n"
    newline = node.client.get(f"/api/v1/records/{record_id}%0A", headers=node.headers())
    assert newline.status_code == 400 and newline.json["error"]["code"] == "invalid_id"
    assert node.client.get(f"/api/v1/records/{'0' * 64}", headers=node.headers()).status_code == 404
    assert node.client.get(f"/api/v1/records/{record_id}/frames/12", headers=node.headers()).status_code == 404
    assert node.client.get(f"/api/v1/records/{record_id}/original?index=99", headers=node.headers()).status_code == 400
    assert node.client.post(f"/api/v1/records/{'0' * 64}/load", headers=node.headers()).status_code == 404


def test_who_may_do_what(node, ct_files):
    other_inst = node.headers(institution_id=str(uuid.uuid4()))
    refused = node.upload(ct_files[:2], headers=other_inst)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert node.upload(ct_files[:2], headers=node.headers(role="instadmin")).status_code == 403
    assert node.client.post("/api/v1/records").status_code == 401
    record_id = node.upload(ct_files[:2]).json["id"]
    assert node.client.get(f"/api/v1/records/{record_id}/frames/0").status_code == 401
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=other_inst).status_code == 403
    other_instadmin = node.headers(role="instadmin", institution_id=str(uuid.uuid4()))
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=other_instadmin).status_code == 403
    colleague = node.headers(user_id=str(uuid.uuid4()))  # another physician of the node's institution
    refused = node.client.delete(f"/api/v1/records/{record_id}", headers=colleague)
    assert refused.status_code == 403 and "stored this series" in refused.json["error"]["message"]
    admin_original = node.client.get(f"/api/v1/records/{record_id}/original", headers=node.headers(role="instadmin"))
    assert admin_original.status_code == 403
    assert node.client.get("/api/v1/openapi.json").json["openapi"].startswith("3.1")
    assert node.client.get("/api/v1/node").status_code == 401
    # the node's health figures (store, quarantine, processes) are for its institution's administrators
    for caller in (node.headers(), other_inst, other_instadmin):
        assert node.client.get("/api/v1/node", headers=caller).status_code == 403
    sysadmin_elsewhere = node.headers(role="sysadmin", institution_id=str(uuid.uuid4()))  # administers every one
    for caller in (node.headers(role="instadmin"), node.headers(role="sysadmin"), sysadmin_elsewhere):
        health = node.client.get("/api/v1/node", headers=caller).json
        assert health["institution_id"] == node.institution_id and health["records_stored"] == 1
    # an administrator of the node's institution may delete what a physician stored
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers(role="instadmin")).status_code == 204


def test_image_gets_take_the_token_in_the_query_and_no_other_endpoint_does(loaded_ct, caplog):
    """A viewer's image and probe GETs may carry the token as `access_token` (no Authorization
    header, so no CORS preflight per slice or point); the same checks apply to it, one method per
    request, and every other endpoint refuses it rather than ignoring it. The access line never
    holds it."""
    node, record_id, _ = loaded_ct
    token = node.headers()["Authorization"].removeprefix("Bearer ")
    base = f"/api/v1/records/{record_id}"
    caplog.set_level("INFO", logger="sivr.access")
    for path in (f"{base}/frames/0?format=jpeg", f"{base}/mpr/coronal/10?format=jpeg",
                 f"{base}/volume?mode=mip&size=64x64&format=jpeg", f"{base}/frames/0/value?x=1&y=1",
                 f"{base}/frames/0/stats?shape=rect&x0=0&y0=0&x1=4&y1=4", f"{base}/mpr/coronal/10/value?x=1&y=1",
                 f"{base}/mpr/coronal/10/stats?shape=ellipse&x0=0&y0=0&x1=4&y1=4"):
        by_query = node.client.get(f"{path}&access_token={token}")
        assert by_query.status_code == 200, (path, by_query.json)
        assert by_query.data == node.client.get(path, headers=node.headers()).data
    frame = f"{base}/frames/0?format=jpeg"
    assert node.client.head(f"{frame}&access_token={token}").status_code == 200
    for other in (node.headers(), {"Authorization": "Basic Zm9vOmJhcg=="}):
        both = node.client.get(f"{frame}&access_token={token}", headers=other)
        assert both.status_code == 400 and both.json["error"]["code"] == "invalid_request"
    twice = node.client.get(f"{frame}&access_token={token}&access_token={token}")
    assert twice.status_code == 400 and twice.json["error"]["code"] == "invalid_request"
    for blank in ("", "%20%20"):
        assert node.client.get(f"{frame}&access_token={blank}").status_code == 401
    assert node.client.get(f"{frame}&access_token={token[:-4]}AAAA").status_code == 401
    foreign = node.headers(institution_id=str(uuid.uuid4()))["Authorization"].removeprefix("Bearer ")
    assert (node.client.get(f"{frame}&access_token={foreign}").status_code
            == node.client.get(frame, headers={"Authorization": f"Bearer {foreign}"}).status_code)
    for method, path in (("get", base), ("get", f"{base}/original"), ("get", f"{base}/key-images"),
                         ("post", f"{base}/load"), ("delete", base), ("get", "/api/v1/node")):
        refused = getattr(node.client, method)(f"{path}{'&' if '?' in path else '?'}access_token={token}")
        assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_request", (method, path)
        assert "Authorization header only" in refused.json["error"]["message"]
    assert node.client.get(base, headers=node.headers()).status_code == 200  # nothing was deleted
    assert "/frames/" in caplog.text and token not in caplog.text and "access_token" not in caplog.text


def test_every_load_is_audited_with_user_record_time_and_address(node, ct_files):
    record_id = node.upload(ct_files[:3]).json["id"]
    user = str(uuid.uuid4())
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers(user_id=user),
                     environ_base={"REMOTE_ADDR": "10.1.2.3"})
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers(user_id=user),
                     environ_base={"REMOTE_ADDR": "10.1.2.4"})
    entries = node.client.get("/api/v1/audit?action=record.load", headers=node.headers(role="instadmin")).json["items"]
    assert len(entries) == 2
    assert {e["client_ip"] for e in entries} == {"10.1.2.3", "10.1.2.4"}
    assert all(e["user_id"] == user and e["object_id"] == record_id and e["at"].endswith("Z") for e in entries)
    assert node.client.get("/api/v1/audit", headers=node.headers()).status_code == 403
    other_admin = node.headers(role="instadmin", institution_id=str(uuid.uuid4()))
    assert node.client.get("/api/v1/audit", headers=other_admin).status_code == 403
    system_admin_elsewhere = node.headers(role="sysadmin", institution_id=str(uuid.uuid4()))
    assert node.client.get("/api/v1/audit", headers=system_admin_elsewhere).status_code == 200


def test_tampered_store_gives_an_error_never_an_image(node, ct_files):
    record_id = node.upload(ct_files[:3]).json["id"]
    blob = node.root / "store" / record_id / "000001.bin"
    data = bytearray(blob.read_bytes())
    data[-40] ^= 0xFF
    blob.write_bytes(bytes(data))
    original = node.client.get(f"/api/v1/records/{record_id}/original?index=1", headers=node.headers())
    assert original.status_code == 422 and original.json["error"]["code"] == "store_corrupt"
    record = _loaded(node, record_id)
    status = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json
    assert status["state"] == "ready" and status["frames_ready"] == 2
    assert status["errors"][0]["frame"] == 1 and "authentication failed" in status["errors"][0]["message"]
    frame = node.client.get(f"/api/v1/records/{record_id}/frames/1", headers=node.headers())
    assert frame.status_code == 422 and frame.json["error"]["code"] == "frame_error"
    assert record.complete
    assert node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers()).status_code == 200


def test_loaded_record_interface_for_the_3d_engine(loaded_ct):
    node, record_id, _ = loaded_ct
    record = node.app.extensions["sivr_records"].get_loaded(record_id)
    assert record.pixels.shape == (12, 512, 512) and record.pixels.dtype == np.int16
    assert (record.rescale_slope, record.rescale_intercept) == (1.0, -1024.0)
    assert record.frame_spacing(0) == pytest.approx((0.898438, 0.898438))
    voxels = stack_voxels(record.pixels, stacks_of(record.manifest)[0])
    assert np.shares_memory(voxels, record.pixels), "one stack of every frame: uncopied"
    assert len(record.orientation) == 6
    assert record.frames_total == record.frames_ready == 12 and record.complete
    assert record.default_voi == Window(-700.0, 1500.0) and record.photometric == "MONOCHROME2"
    assert node.app.extensions["sivr_records"].get_loaded("0" * 64) is None


def test_many_viewers_share_one_copy_concurrently(loaded_ct):
    node, record_id, record = loaded_ct
    failures: list[str] = []

    def viewer(seed: int) -> None:
        client = node.app.test_client()
        headers = node.headers()
        for step in range(12):
            index = (seed + step) % 12
            reply = client.get(f"/api/v1/records/{record_id}/frames/{index}?format=webp&window={seed},400",
                               headers=headers)
            if reply.status_code != 200:
                failures.append(f"{seed}/{index}: {reply.status_code}")

    threads = [threading.Thread(target=viewer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert node.registry.loaded_count() == 1 and node.registry.get_loaded(record_id) is record
    again = node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert again.status_code == 202 and node.registry.get_loaded(record_id) is record


def _as_new_series(paths: list[Path]) -> list[tuple[str, bytes]]:
    """The files relabelled as a series of their own (a series grows by its UID, so parts of one
    series uploaded apart would join it)."""
    series, files = pydicom.uid.generate_uid(), []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append((path.name, out.getvalue()))
    return files


def test_memory_budget_evicts_the_least_recently_used(make_node, ct_files):
    node = make_node(memory__budget_mb=10)  # 0.5 MiB per slice: 3 + 3 MiB fit, adding 5 MiB does not
    first = node.upload(_as_new_series(ct_files[:6])).json["id"]   # 3 MiB
    second = node.upload(_as_new_series(ct_files[6:12])).json["id"]  # 3 MiB
    third = node.upload(_as_new_series(ct_files[:10])).json["id"]   # 5 MiB
    for record_id in (first, second):
        _loaded(node, record_id)
    node.client.get(f"/api/v1/records/{first}/frames/0", headers=node.headers())  # first is now most recent
    _loaded(node, third)
    assert node.registry.get_loaded(second) is None
    assert node.registry.get_loaded(first) is not None and node.registry.get_loaded(third) is not None
    assert node.registry.memory_used() <= 10 * 2**20
    too_big = make_node(memory__budget_mb=1)
    record_id = too_big.upload(ct_files[:3]).json["id"]
    reply = too_big.client.post(f"/api/v1/records/{record_id}/load", headers=too_big.headers())
    assert reply.status_code == 507 and reply.json["error"]["code"] == "insufficient_memory"
    for harness in (node, too_big):
        harness.registry.shutdown()


class _NoPool:
    """An executor that runs nothing, so the loader's queue can be inspected step by step."""

    def submit(self, fn):
        return None

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


def test_demanded_frames_are_decoded_first_latest_first(node, ct_files):
    record_id = node.upload(ct_files).json["id"]
    record = LoadedRecord(record_id, node.app.extensions["sivr_node"].manifest(record_id))
    loader = _Loader(record, node.app.extensions["sivr_node"].store, _NoPool(), 1)
    loader.demand(9)
    loader.demand(4)
    assert [loader._next(), loader._next(), loader._next(), loader._next()] == [4, 9, 0, 1]
    loader.demand(1)  # already taken: not queued twice
    assert loader._next() == 2


def test_frame_requested_while_loading_is_served(node, ct_series):
    files = sorted(ct_series.glob("*.dcm"))
    record_id = node.upload(files).json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/99?format=webp", headers=node.headers())
    assert reply.status_code == 200 and reply.mimetype == "image/webp"
    assert node.registry.get_loaded(record_id).wait_complete(60)


def test_openapi_documents_every_api_route(node):
    import re

    document = node.client.get("/api/v1/openapi.json").json
    documented = {re.sub(r"\{[^}]+\}", "{}", path) for path in document["paths"]}
    routes = {re.sub(r"<[^>]+>", "{}", rule.rule) for rule in node.app.url_map.iter_rules()
              if rule.rule.startswith("/api/v1/")}
    assert routes - documented == set()
    # and every method of each (DELETE …/filed was served, not documented)
    methods = {(re.sub(r"<[^>]+>", "{}", rule.rule), method.lower()) for rule in node.app.url_map.iter_rules()
               if rule.rule.startswith("/api/v1/") for method in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(re.sub(r"\{[^}]+\}", "{}", path), method) for path, item in document["paths"].items()
                 for method in item if method != "parameters"}
    assert methods - described == set()
    # the image and probe GETs, and only they, take `access_token` (shared.auth), and say so
    in_query = {re.sub(r"<[^>]+>", "{}", rule.rule) for rule in node.app.url_map.iter_rules()
                if getattr(node.app.view_functions[rule.endpoint], "token_in_query", False)}
    said = {re.sub(r"\{[^}]+\}", "{}", path) for path, item in document["paths"].items()
            if {"query_token": []} in item.get("get", {}).get("security", [])}
    record = "/api/v1/records/{}"
    assert in_query == said == {f"{record}/frames/{{}}", f"{record}/frames/{{}}/value", f"{record}/frames/{{}}/stats",
                                f"{record}/mpr/{{}}/{{}}", f"{record}/mpr/{{}}/{{}}/value",
                                f"{record}/mpr/{{}}/{{}}/stats", f"{record}/volume"}
    assert document["components"]["schemas"]["RecordMeta"]["properties"].keys() >= {
        "id", "rows", "columns", "frames", "pixel_spacing", "slice_spacing", "default_window"}


def test_the_same_record_uploaded_twice_at_once_is_stored_once(node, ct_files):
    codes: list[int] = []
    ids: set[str] = set()

    def send() -> None:
        reply = node.app.test_client().post(
            "/api/v1/records", headers=node.headers(), content_type="multipart/form-data",
            data={"files": [(io.BytesIO(p.read_bytes()), p.name) for p in ct_files[:4]]})
        codes.append(reply.status_code)
        ids.add(reply.json["id"])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes.count(201) == 1 and codes.count(200) == 3 and len(ids) == 1, codes
    assert node.client.get("/api/v1/records", headers=node.headers(role="instadmin")).json["total"] == 1
    assert len([p for p in (node.root / "store").iterdir() if p.name not in (MARKER, KEY_CHECK)]) == 1


@pytest.mark.parametrize("name", ["pydicom/examples_ybr_color.dcm", "pydicom-data/OBXXXX1A_rle.dcm",
                                  "pydicom-data/emri_small.dcm"])
def test_multi_frame_and_colour_files_load_and_render_like_pydicom(node, dicom_dir, name):
    from pydicom.pixels import apply_color_lut

    from daemons.render.imaging.pixels import color_to_uint8

    path = dicom_dir / name
    reply = node.upload([path])
    assert reply.status_code == 201, reply.json
    record = _loaded(node, reply.json["id"])
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        expected = color_to_uint8(apply_color_lut(expected, ds), 16)  # 16-bit palette entries shown in 8 bits
    expected = expected if expected.ndim == record.pixels.ndim else expected[np.newaxis]
    assert record.frames_ready == record.frames_total == expected.shape[0]
    np.testing.assert_array_equal(record.pixels, expected)
    last = record.frames_total - 1
    image = _png(node.client.get(f"/api/v1/records/{reply.json['id']}/frames/{last}", headers=node.headers()))
    if record.is_color:
        np.testing.assert_array_equal(image, expected[last])
    else:
        assert image.shape == expected.shape[1:]


def test_a_viewer_gets_its_slice_even_when_no_loader_thread_is_free(node, ct_files):
    record_id = node.upload(ct_files).json["id"]
    node.registry._pool = _NoPool()  # every loader thread busy elsewhere: nothing runs in the background
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    reply = node.client.get(f"/api/v1/records/{record_id}/frames/7?format=jpeg", headers=node.headers())
    assert reply.status_code == 200 and reply.mimetype == "image/jpeg"
    status = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json
    assert status["state"] == "loading" and status["frames_ready"] == 1
    assert node.registry.get_loaded(record_id).is_ready(7)


def test_a_restarted_node_cleans_half_writes_and_indexes_what_the_store_holds(make_node, ct_files, tmp_path):
    first = make_node(root=tmp_path)
    record_id = first.upload(ct_files[:2]).json["id"]
    catalogue = first.app.extensions["sivr_node"].models.StoredRecord
    catalogue.delete_by_id(record_id)  # as if killed between the store's rename and the catalogue insert
    half = tmp_path / "store" / ".tmp-killed-mid-upload"
    half.mkdir()
    (half / "000000.bin").write_bytes(b"partial")
    first.registry.shutdown()

    second = make_node(root=tmp_path, institution_id=first.institution_id)
    listed = second.client.get("/api/v1/records", headers=second.headers(role="instadmin")).json
    assert [m["id"] for m in listed["items"]] == [record_id]
    assert not half.exists()
    second.registry.shutdown()


def test_an_upload_is_answered_with_a_receipt_the_nodes_published_key_verifies(node, ct_files):
    """Issue 13, item 11: the receipt the institution registers the record with (shared.receipts)."""
    user_id = str(uuid.uuid4())
    meta = node.upload(ct_files[:2], headers=node.headers(user_id=user_id)).json
    published = node.client.get("/api/v1/node", headers=node.headers(role="instadmin")).json["receipt_key"]
    assert published["url"] == NODE_AUDIENCE and len(published["key_id"]) == 16
    key = parse_public_key(published["public_key"])
    expected = Expected(NODE_AUDIENCE, meta["id"], node.institution_id, user_id)
    stated = verify_receipt(meta["receipt"], key, expected).dicom
    # it states the DICOM patient the files name, for the institution's identity check (issue 11)
    assert stated is not None
    assert (stated["name"], stated["patient_id"]) == (meta["patient_name"], meta["patient_id_dicom"]) != ("", "")
    with pytest.raises(ReceiptError):
        verify_receipt(meta["receipt"], key, Expected(NODE_AUDIENCE, meta["id"], node.institution_id, "someone"))
    again = node.upload(ct_files[:2], headers=node.headers(user_id=user_id))
    assert again.status_code == 200 and again.json["receipt"]  # a re-upload gets a fresh receipt


def test_the_receipt_key_is_kept_across_restarts_and_must_be_private(make_node, tmp_path):
    first = make_node(root=tmp_path)
    shown = first.client.get("/api/v1/node", headers=first.headers(role="instadmin")).json["receipt_key"]
    first.registry.shutdown()
    key_file = tmp_path / "receipt.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    second = make_node(root=tmp_path, institution_id=first.institution_id)
    assert second.client.get("/api/v1/node", headers=second.headers(role="instadmin")).json["receipt_key"] == shown
    second.registry.shutdown()
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="owner only"):
        make_node(root=tmp_path, institution_id=first.institution_id)
    with pytest.raises(ConfigError, match="node.receipt_key"):
        make_node(node__receipt_key="")


def test_record_meta_names_the_dicom_patient_with_birth_date(node, ct_files, tmp_path):
    """The viewer compares the images' patient with the SIVR patient (issue 15 item 2): name, id, birth date."""
    from pydicom.uid import generate_uid

    series, frame = generate_uid(), generate_uid()
    files = []
    for number, source in enumerate(ct_files[:2]):
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "P-BIRTH", "19700305"
        ds.FrameOfReferenceUID = frame
        files.append(tmp_path / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    meta = node.client.get(f"/api/v1/records/{reply.json['id']}", headers=node.headers()).json
    assert (meta["patient_name"], meta["patient_id_dicom"], meta["patient_birth_date"]) == \
        ("DOE^JANE", "P-BIRTH", "19700305")
    # the viewer links two records' positions only within one frame of reference (docs/viewer.md)
    assert meta["frame_of_reference_uid"] == frame


def test_record_meta_names_the_study_and_series_the_patient_page_groups_by(node, ct_files, tmp_path):
    """The patient page groups series by study and labels each card (issue 15, study browser): the
    study's description and time and the series' number and description come from the catalogue,
    in the record itself and in the node's list alike."""
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    files = []
    for number, source in enumerate(ct_files[:2]):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDescription, ds.StudyTime, ds.SeriesDescription, ds.SeriesNumber = \
            "CT THORAX", "101500", "Lung 1.0 B70f", 7
        ds.PatientID = "P-STUDIES"
        files.append(tmp_path / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    meta = node.client.get(f"/api/v1/records/{reply.json['id']}", headers=node.headers()).json
    expected = {"study_uid": study, "series_uid": series, "study_description": "CT THORAX", "study_time": "101500",
                "series_number": 7, "series_description": "Lung 1.0 B70f", "files": 2}
    assert {key: meta[key] for key in expected} == expected
    assert meta["slices"] and meta["planes"]
    [listed] = node.client.get("/api/v1/records", query_string={"patient_id_dicom": "P-STUDIES"},
                               headers=node.headers()).json["items"]
    summary = node.client.get(f"/api/v1/records/{reply.json['id']}", query_string={"detail": "summary"},
                              headers=node.headers()).json
    for short in (listed, summary):
        assert {key: short[key] for key in expected} == expected
        assert "slices" not in short and "planes" not in short
    refused = node.client.get(f"/api/v1/records/{reply.json['id']}", query_string={"detail": "everything"},
                              headers=node.headers())
    assert refused.status_code == 400 and refused.json["error"]["code"] == "validation_error"
    assert "detail" in refused.json["error"]["message"]
