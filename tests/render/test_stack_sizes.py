"""A classic series whose files differ in image size or pixel spacing (issue 14 item 4): one stack
per size and spacing, each frame drawn, read and measured at its own size and spacing, each stack
reformatted at its own extent. Through the real node (Flask test client, real store and loader)
on synthetic series (tests/render/synthetic.py `stack`): 3 slices of 512x512 at 0.5 mm and 4 of
256x256 at 1.0 mm over the same anatomy, as one Series Instance UID.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from daemons.render.ingest.series_analysis import parse_upload
from daemons.render.stacks import frame_stack, stack_manifest, stacks_json, stacks_of
from daemons.render.store.manifest import Manifest
from tests.render.conftest import close_node
from tests.render.synthetic import stack as classic_stack
from tests.render.test_dcmtk_compare import LIMITS
from tests.render.test_series_growth import add, catalogue_rows, stored_manifest

AXIAL = (1, 0, 0, 0, 1, 0)
SLICE_MM = 2.0
BIG, SMALL = (3, 512, 0.5), (4, 256, 1.0)  # (slices, rows = columns, pixel spacing mm)


def _series(parts=(BIG, SMALL), series: str | None = None) -> list[tuple[str, bytes]]:
    """One classic series of the given parts, each part (slices, size, spacing) over the same anatomy."""
    series = series or generate_uid()
    files = []
    for number, (count, size, spacing) in enumerate(parts):
        part = classic_stack(AXIAL, count=count, rows=size, cols=size, pixel_spacing=(spacing, spacing),
                             slice_spacing=SLICE_MM, series=series)
        files += [(f"part{number}-{name}", data) for name, data in part]
    return files


def _alone(data: bytes) -> bytes:
    """The same file as a series of its own (a file of an existing series joins that series)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _png(reply) -> np.ndarray:
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return np.asarray(Image.open(io.BytesIO(reply.get_data())))




def _frame(node, record_id: str, index: int, **params) -> np.ndarray:
    return _png(node.client.get(f"/api/v1/records/{record_id}/frames/{index}",
                                query_string={"format": "png", "window": "500,1000", **params},
                                headers=node.headers()))


# --- the analysis -------------------------------------------------------------------------------

def test_sizes_and_spacings_are_stacks_with_their_own_shape_and_spacing():
    stacks = parse_upload(_series(), LIMITS).manifest.render.stacks
    assert [(s["rows"], s["columns"], s["pixel_spacing"], len(s["frames"])) for s in stacks] == [
        (512, 512, [0.5, 0.5], 3), (256, 256, [1.0, 1.0], 4)]
    assert [s["label"] for s in stacks] == ["512×512 0.5 mm", "256×256 1 mm"]
    assert all(s["volume"] is None for s in stacks) and stacks[0]["frames"] == [0, 1, 2]


def test_a_spacing_alone_splits_a_series_of_one_size():
    stacks = parse_upload(_series(((3, 64, 0.5), (4, 64, 0.8))), LIMITS).manifest.render.stacks
    assert [(s["rows"], s["pixel_spacing"], s["label"]) for s in stacks] == [
        (64, [0.5, 0.5], "0.5 mm"), (64, [0.8, 0.8], "0.8 mm")]


def test_a_part_without_pixel_spacing_is_a_stack_of_unknown_spacing():
    files = _series(((3, 64, 0.5), (2, 64, 0.5)))
    for number in (-1, -2):
        ds = pydicom.dcmread(io.BytesIO(files[number][1]))
        del ds.PixelSpacing
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files[number] = (files[number][0], out.getvalue())
    manifest = parse_upload(files, LIMITS).manifest
    stacks = manifest.render.stacks
    assert [(s["pixel_spacing"], s["label"]) for s in stacks] == [([0.5, 0.5], "0.5 mm"), (None, "unknown spacing")]
    assert any("no pixel spacing" in w for w in manifest.meta.warnings), "the unmeasurable stack is said"
    planes = [stacks_json(manifest)[i]["planes"]["slices"]["measurable"] for i in (0, 1)]
    assert planes == [True, False]


def test_stacks_stored_before_sizes_were_kept_have_the_records():
    stored = parse_upload(_series(((3, 64, 0.5),)), LIMITS).manifest.to_json()
    for entry in stored["render"]["stacks"]:
        for key in ("rows", "columns", "pixel_spacing"):
            del entry[key]
    manifest = Manifest.from_json(stored)
    (stack,) = stacks_of(manifest)
    assert (stack.rows, stack.columns, stack.pixel_spacing) == (64, 64, (0.5, 0.5)) == (
        manifest.meta.rows, manifest.meta.columns, manifest.meta.pixel_spacing)
    assert frame_stack(manifest, 2) is stack and stack_manifest(manifest, stack).meta.rows == 64


def test_a_series_of_one_size_and_spacing_stays_one_stack():
    stacks = parse_upload(_series(((3, 64, 0.5), (4, 64, 0.5))), LIMITS).manifest.render.stacks
    assert len(stacks) == 1 and stacks[0]["label"] == "stack 1" and len(stacks[0]["frames"]) == 7


def test_files_of_other_bits_are_still_refused(node):
    files = _series(((2, 64, 0.5),))
    odd = pydicom.dcmread(io.BytesIO(files[0][1]))
    odd.BitsAllocated = odd.BitsStored = 8
    odd.HighBit = 7
    odd.PixelRepresentation = 0
    odd.PixelData = np.zeros((64, 64), np.uint8).tobytes()
    out = io.BytesIO()
    odd.save_as(out, enforce_file_format=True)
    reply = node.upload([files[1], ("odd.dcm", out.getvalue())])
    assert reply.status_code == 422 and reply.json["error"]["code"] == "inconsistent_series"
    assert "BitsAllocated" in reply.json["error"]["message"]


# --- through the node ---------------------------------------------------------------------------

@pytest.fixture()
def mixed(node):
    files = _series()
    record_id, meta = node.load(files)
    return node, files, record_id, meta


def test_every_frame_renders_at_its_own_size_as_its_file_alone_does(mixed):
    node, files, record_id, meta = mixed
    big, small = meta["stacks"]
    assert (big["rows"], big["columns"], big["pixel_spacing"]) == (512, 512, [0.5, 0.5])
    assert (small["rows"], small["columns"], small["pixel_spacing"]) == (256, 256, [1.0, 1.0])
    schema = node.client.get("/api/v1/openapi.json").json["components"]["schemas"]["Stack"]
    assert set(big) == set(schema["properties"]), "the OpenAPI document says what is served"
    record = node.registry.get_loaded(record_id)
    assert record.nbytes == 7 * 512 * 512 * 2 == record.manifest.render.decoded_bytes, "padded, and counted so"
    for stack in (big, small):
        slices = stack["planes"]["slices"]
        assert (slices["columns"], slices["rows"]) == (stack["columns"], stack["rows"])
        assert slices["width_mm"] == pytest.approx(256.0) and slices["measurable"]
    for index in (big["frames"][1], small["frames"][0], small["frames"][3]):
        image = _frame(node, record_id, index)
        size = 512 if index in big["frames"] else 256
        assert image.shape[:2] == (size, size)
        instance = meta["slices"][index]["instance"]
        part = "part0" if size == 512 else "part1"
        alone = next(f for f in files if f[0].startswith(part) and f[0].endswith(f"{instance - 1:03d}.dcm"))
        single_id, _ = node.load([(alone[0], _alone(alone[1]))])
        np.testing.assert_array_equal(image, _frame(node, single_id, 0), err_msg=f"frame {index}")


def test_each_stack_reformats_at_its_own_extent(mixed):
    node, _, record_id, meta = mixed
    for stack, (count, size, spacing) in zip(meta["stacks"], (BIG, SMALL), strict=True):
        planes = stack["planes"]
        assert planes["axial"]["count"] == count
        assert (planes["axial"]["width_mm"], planes["axial"]["height_mm"]) == pytest.approx((size * spacing,) * 2)
        assert planes["coronal"]["height_mm"] == pytest.approx(count * SLICE_MM)
        assert planes["coronal"]["columns"] == size
        image = _png(node.client.get(f"/api/v1/records/{record_id}/mpr/axial/1",
                                     query_string={"format": "png", "stack": stack["id"]}, headers=node.headers()))
        assert image.shape[:2] == (size, size)
        coronal = node.client.get(f"/api/v1/records/{record_id}/mpr/coronal/{size - 1}?stack={stack['id']}",
                                  headers=node.headers())
        assert coronal.status_code == 200, coronal.json
        volume = node.client.get(f"/api/v1/records/{record_id}/volume",
                                 query_string={"mode": "mip", "render": "still", "stack": stack["id"]},
                                 headers=node.headers())
        assert volume.status_code == 200, volume.json


def test_readings_take_each_frame_its_own_size_and_spacing(mixed):
    node, _, record_id, meta = mixed
    big, small = meta["stacks"]
    for stack, size, spacing in ((big, 512, 0.5), (small, 256, 1.0)):
        index = stack["frames"][1]
        base = f"/api/v1/records/{record_id}/frames/{index}"
        x, y = size - 1, size - 2
        reading = node.client.get(f"{base}/value?x={x}&y={y}", headers=node.headers())
        assert reading.status_code == 200, reading.json
        assert reading.json["stored"] == y * 16 + x * 8 + 100  # the synthetic ramp of slice 1
        beyond = node.client.get(f"{base}/value?x={size}&y=0", headers=node.headers())
        assert beyond.status_code == 400, "a point past the frame's own width is refused"
        stats = node.client.get(f"{base}/stats?shape=rect&x0=0&y0=0&x1=10&y1=10", headers=node.headers())
        assert stats.status_code == 200 and stats.json["area_mm2"] == pytest.approx(100 * spacing ** 2)
        plane = node.client.get(f"/api/v1/records/{record_id}/mpr/axial/1/value?x={x}&y={y}&stack={stack['id']}",
                                headers=node.headers())
        assert plane.status_code == 200 and plane.json["stored"] == reading.json["stored"]


def test_dicomweb_renders_the_small_instance_at_its_size(mixed):
    node, files, record_id, meta = mixed
    small = meta["stacks"][1]
    index = small["frames"][0]
    instance = meta["slices"][index]["instance"]
    name, data = next(f for f in files if f[0] == f"part1-slice{instance - 1:03d}.dcm")
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    base = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    headers = {**node.headers(), "Accept": "image/png"}
    rendered = _png(node.client.get(f"{base}/frames/1/rendered", headers=headers))
    assert rendered.shape[:2] == (256, 256), name
    annotated = _png(node.client.get(f"{base}/frames/1/rendered?annotation=patient,technique", headers=headers))
    assert annotated.shape[:2] == (256, 256) and not np.array_equal(annotated, rendered), "text burnt in"
    thumbnail = _png(node.client.get(f"{base}/thumbnail", headers=headers))
    assert thumbnail.shape[0] == thumbnail.shape[1]
    found = node.client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances",
                            query_string={"SOPInstanceUID": ds.SOPInstanceUID}, headers=node.headers())
    assert found.status_code == 200
    assert found.json[0]["00280010"]["Value"] == [256] and found.json[0]["00280011"]["Value"] == [256]


def test_a_series_that_grows_by_another_size_is_split_as_one_upload_would_be(node, make_node):
    """A later C-STORE/STOW part of another size: the series is re-analysed into stacks, exactly as
    one upload of all its files (here through the ingest service both doors call)."""
    series = generate_uid()
    small, big = _series((SMALL,), series=series), _series((BIG,), series=series)
    record_id = add(node, small).record_id
    assert len(stored_manifest(node, record_id)["render"]["stacks"]) == 1
    assert add(node, big).record_id == record_id
    grown = stored_manifest(node, record_id)
    assert [(s["rows"], s["pixel_spacing"], len(s["frames"])) for s in grown["render"]["stacks"]] == [
        (512, [0.5, 0.5], 3), (256, [1.0, 1.0], 4)]
    assert catalogue_rows(node, record_id)["stored_record"][3:] == (512, 512)
    other = make_node()
    once = stored_manifest(other, add(other, small + big).record_id)["render"]
    close_node(other)
    # the automatic window is kept from the last analysis until the series is complete (Provisional)
    assert {**once, "auto_window": None} == {**grown["render"], "auto_window": None}
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
    assert _frame(node, record_id, 5).shape[:2] == (256, 256) and _frame(node, record_id, 0).shape[:2] == (512, 512)


def test_an_overlay_of_a_small_frame_is_drawn_at_its_size(node):
    files = _series(((2, 64, 0.5), (2, 32, 1.0)))
    name, data = files[-1]
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.add_new(0x60000010, "US", 32)
    ds.add_new(0x60000011, "US", 32)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    bitmap = np.zeros((32, 32), dtype=np.uint8)
    bitmap[30, :] = 1  # a line near the bottom edge: beyond a crop of the small frame's own size
    ds.add_new(0x60003000, "OW", pydicom.pixels.pack_bits(bitmap.ravel()))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    files[-1] = (name, out.getvalue())
    record_id, meta = node.load(files)
    index = next(i for i, s in enumerate(meta["slices"]) if s["instance"] == ds.InstanceNumber
                 and i in meta["stacks"][1]["frames"])
    drawn = _frame(node, record_id, index, overlays="true")
    assert drawn.shape == (32, 32) and (drawn[30] == 255).all()
    assert not (_frame(node, record_id, index)[30] == 255).all(), "drawn only when asked"
    single_id, _ = node.load([(name, _alone(files[-1][1]))])
    np.testing.assert_array_equal(drawn, _frame(node, single_id, 0, overlays="true"))
