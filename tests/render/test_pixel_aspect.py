"""Pixel Aspect Ratio (0028,0034; PS3.3 C.7.6.3.1.7: vertical \\ horizontal pixel size) where the file
gives no pixel spacing: the image is drawn with its pixels' shape, as dcmtk, OHIF and Slicer draw it,
on every path that draws one (2D frames, DICOMweb rendered and thumbnails, the reformats), while
distances stay uncalibrated. A pixel spacing, where given, wins (the ratio is then Type 1C absent)."""

from __future__ import annotations

import io

from PIL import Image

from daemons.render.store.manifest import Meta
from tests.render.synthetic import dataset, to_bytes

ROWS = COLS = 100


def _file(aspect=None, spacing=None, position: float = 0.0, series: str = "1.2.3.4.5") -> tuple[str, bytes]:
    ds = dataset(ROWS, COLS, series=series, position=position)
    ds.Modality = "US"
    if aspect is not None:
        ds.PixelAspectRatio = list(aspect)
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    return f"{position}.dcm", to_bytes(ds)


def _size(reply) -> tuple[int, int]:
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    return Image.open(io.BytesIO(reply.data)).size


def _frame_size(node, record_id: str, query: str = "") -> tuple[int, int]:
    return _size(node.client.get(f"/api/v1/records/{record_id}/frames/0?format=png{query}", headers=node.headers()))


def _instance_path(meta: dict, node) -> str:
    sop = node.client.get(f"/api/v1/records/{meta['id']}", headers=node.headers()).json["slices"][0]["sop_instance_uid"]
    return f"/dicomweb/studies/{meta['study_uid']}/series/{meta['series_uid']}/instances/{sop}"


def test_a_2_to_1_ratio_draws_rows_twice_as_tall_on_every_path(node):
    """100 x 100 pixels twice as tall as wide: 100 wide, 200 tall, in the 2D frame, the DICOMweb
    rendered instance and frame, and the thumbnail (64 x 128 in its 128 x 128 box); before, 100 x 100."""
    record_id, meta = node.load([_file(aspect=(2, 1))])
    assert meta["pixel_spacing"] is None and meta["pixel_aspect_ratio"] == [2, 1]
    assert _frame_size(node, record_id) == (100, 200)
    assert _frame_size(node, record_id, "&size=300x300") == (150, 300)
    path = _instance_path(meta, node)
    accept = {**node.headers(), "Accept": "image/png"}
    assert _size(node.client.get(f"{path}/rendered", headers=accept)) == (100, 200)
    assert _size(node.client.get(f"{path}/frames/1/rendered", headers=accept)) == (100, 200)
    assert _size(node.client.get(f"{path}/thumbnail", headers=accept)) == (64, 128)
    plane = meta["planes"]["slices"]
    assert plane["measurable"] is False  # no spacing: distances stay in pixels, uncalibrated
    assert plane["height_mm"] == 2 * plane["width_mm"]


def test_the_ratio_is_vertical_over_horizontal(node):
    record_id, _ = node.load([_file(aspect=(3, 4))])  # pixels 3 tall, 4 wide: wider than tall
    assert _frame_size(node, record_id) == (133, 100)


def test_a_pixel_spacing_wins_over_the_ratio(node):
    record_id, meta = node.load([_file(aspect=(2, 1), spacing=(0.5, 0.5))])
    assert meta["pixel_spacing"] == [0.5, 0.5] and meta["pixel_aspect_ratio"] == [2, 1]
    assert _frame_size(node, record_id) == (100, 100)
    assert meta["planes"]["slices"]["measurable"] is True


def test_a_square_or_unusable_ratio_draws_square_pixels_and_says_why(node):
    """A ratio that is no pixel shape (zero, negative, 1 to 1000) is ignored with a warning, as dcmtk ignores it."""
    for number, aspect in enumerate(((1, 1), (0, 1), (-2, 1), (1, 1000))):
        record_id, meta = node.load([_file(aspect=aspect, series=f"1.2.3.9.{number}")])
        assert meta.get("pixel_aspect_ratio") is None, aspect
        assert _frame_size(node, record_id) == (100, 100), aspect
        assert any("PixelAspectRatio" in w for w in meta["warnings"]) == (aspect != (1, 1)), meta["warnings"]


def test_the_reformats_of_a_stack_keep_the_ratio(node):
    """Three frames of pixels 2 tall, 1 wide: the coronal reformat's columns are the frames' columns."""
    files = [_file(aspect=(2, 1), position=float(z), series="1.2.3.4.7") for z in range(3)]
    _, meta = node.load(files)
    axial = meta["planes"]["axial"]
    assert axial["row_mm"] == 2 * axial["column_mm"]


def test_a_manifest_stored_before_the_ratio_was_kept_draws_square_pixels():
    meta = Meta.from_json({"id": "r", "files": 1, "rows": 4, "columns": 4, "frames": 1, "pixel_spacing": None})
    assert meta.pixel_aspect_ratio is None
    assert "pixel_aspect_ratio" not in meta.to_json()
