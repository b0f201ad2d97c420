"""2D frames: `GET /api/v1/records/{id}/frames/{index}` with window, preset, format, size, region.

Each image says which patient direction each edge faces and which window it was rendered with
(`X-Orientation`, `X-Window`, see `image_headers`); a crop keeps the edges' directions.

The ETag is a hash of the record id (itself a content hash) and every parameter that shapes the
image, so it is known before rendering: a browser revalidating a slice it has costs no rendering.
"""

from __future__ import annotations

import hashlib
import time

from flask import Blueprint, Response, request

from daemons.render.encode import DEFAULT_QUALITY, FORMATS, encode_image
from daemons.render.geometry import FULL, Region
from daemons.render.image_headers import describe_image, record_orientation
from daemons.render.metrics import register_timings, timed
from daemons.render.node import node
from daemons.render.pixels import PRESETS, WINDOW_FUNCTIONS, LutTable, Window
from daemons.render.records import default_voi
from daemons.render.render2d import render_frame
from daemons.render.view_audit import note_view
from daemons.render.volume.geometry import image_labels
from shared.auth import require_auth
from shared.errors import ApiError, not_found
from shared.roles import ROLES
from shared.validation import parse_record_id, query_int

bp = Blueprint("render_frames", __name__)
bp.record_once(register_timings)

CACHE_CONTROL = "private, max-age=86400"


def _bad(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


def _floats(name: str, count: int) -> list[float] | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError as exc:
        raise _bad(f"query parameter {name} must be {count} comma-separated numbers") from exc
    if len(values) != count or not all(abs(v) < 1e9 for v in values):
        raise _bad(f"query parameter {name} must be {count} comma-separated finite numbers")
    return values


def parse_size(max_px: int) -> tuple[int, int] | None:
    raw = request.args.get("size")
    if not raw:
        return None
    width, sep, height = raw.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise _bad("query parameter size must be WIDTHxHEIGHT, e.g. 512x512")
    box = int(width), int(height)
    if not (1 <= box[0] <= max_px and 1 <= box[1] <= max_px):
        raise _bad(f"query parameter size must be between 1x1 and {max_px}x{max_px}")
    return box


def parse_region() -> Region:
    values = _floats("region", 4)
    if values is None:
        return FULL
    try:
        return Region(*values)
    except ValueError as exc:
        raise _bad(f"query parameter {exc}") from exc


def parse_format() -> tuple[str, int]:
    fmt = request.args.get("format", "png").lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in FORMATS:
        raise _bad(f"query parameter format must be one of {', '.join(FORMATS)}")
    return fmt, query_int("quality", DEFAULT_QUALITY[fmt], 1, 100)


def choose_voi(manifest: dict) -> tuple[Window | LutTable | None, str]:
    """The VOI for this request and a stable text key of it: window > preset > the record's default."""
    function = request.args.get("voi_function")
    if function is not None and function not in WINDOW_FUNCTIONS:
        raise _bad(f"query parameter voi_function must be one of {', '.join(WINDOW_FUNCTIONS)}")
    window = _floats("window", 2)
    preset = request.args.get("preset")
    if window is None and preset:
        if preset not in PRESETS:
            raise _bad(f"unknown preset {preset[:40]!r}; GET /api/v1/presets lists them")
        window = list(PRESETS[preset])
    if window is None:
        return default_voi(manifest, function)
    function = function or "linear"
    try:
        voi = Window(window[0], window[1], function)
    except ValueError as exc:
        raise _bad(f"window: {exc}") from exc
    return voi, f"{function}:{voi.center!r},{voi.width!r}"


def etag_for(record_id: str, parts: list[str]) -> str:
    return hashlib.sha256("|".join([record_id, *parts]).encode()).hexdigest()[:32]


@bp.get("/api/v1/records/<record_id>/frames/<int:index>")
@require_auth(*ROLES)
def frame(record_id: str, index: int):
    started = time.perf_counter()
    record_id = parse_record_id(record_id, "record id")
    the_node = node()
    manifest = the_node.manifest(record_id)
    meta, render = manifest["meta"], manifest["render"]
    if not 0 <= index < meta["frames"]:
        raise not_found("frame", f"{index} (the record has {meta['frames']} frames, 0..{meta['frames'] - 1})")
    max_px = the_node.config["limits"]["max_output_px"]
    fmt, quality = parse_format()
    box = parse_size(max_px)
    region = parse_region()
    record = the_node.registry.get_loaded(record_id)
    color = render["layout"]["samples"] == 3 or render["layout"]["photometric"] == "PALETTE COLOR"
    voi, voi_key = (None, "color") if color else choose_voi(manifest)
    etag = etag_for(record_id, [str(index), voi_key, fmt, str(quality), repr(box), repr(region)])
    weak = fmt == "webp"  # the bytes depend on the effort the node's load allowed (webp_effort)
    if request.if_none_match.contains_weak(etag):
        not_modified = Response(status=304, headers={"Cache-Control": CACHE_CONTROL})
        not_modified.set_etag(etag, weak=weak)
        note_view("frame", record_id)
        return not_modified
    if record is None:
        raise ApiError(409, "not_loaded",
                       f"record {record_id} is not loaded; POST /api/v1/records/{record_id}/load first")
    if not record.is_ready(index):
        the_node.registry.decode_now(record_id, index)
        if not record.wait_frame(index, the_node.config["render"]["frame_wait_s"]):
            if index in record.errors:
                raise ApiError(422, "frame_error", f"frame {index} cannot be shown: {record.errors[index]}")
            raise ApiError(409, "frame_not_ready", f"frame {index} is still being decoded; retry shortly",
                           headers={"Retry-After": "1"})

    def make() -> tuple[bytes, str]:
        params = lut = None
        if not color:
            params = record.gray_params(voi)
            lut = record.lut_for((voi_key,), params, index)
        with timed("render", "frame", fmt):
            image = render_frame(record.pixels[index], params, lut, region, box,
                                 (record.spacing[1], record.spacing[2]), max_px)
        if fmt != "webp":
            with timed("encode", "frame", fmt):
                return encode_image(image, fmt, quality)
        with the_node.webp_effort.slot() as method, timed("encode", "frame", fmt):
            return encode_image(image, fmt, quality, webp_method=method)

    body, mimetype = the_node.images.get_or_make(record_id, etag, make)
    note_view("frame", record_id)
    response = _image_response(body, mimetype, etag, weak, started, the_node)
    return describe_image(response, image_labels(record_orientation(manifest)), voi)


def _image_response(body: bytes, mimetype: str, etag: str, weak: bool, started: float, the_node) -> Response:
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    the_node.note_latency(elapsed_ms)
    response = Response(body, mimetype=mimetype)
    response.set_etag(etag, weak=weak)
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["X-Render-Ms"] = f"{elapsed_ms:.1f}"
    return response
