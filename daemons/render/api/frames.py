"""2D frames: `GET /api/v1/records/{id}/frames/{index}` with window, preset, format, size, region
(parsed by daemons.render.api.query, as for reformats and 3D views).

Each image says which patient direction each edge faces and which window it was rendered with
(`X-Orientation`, `X-Window`, see `image_headers`); a crop keeps the edges' directions.

The ETag names the record's frames by their content and every parameter that shapes the image
(`image_headers.image_etag`), so it is known before rendering: a browser revalidating a slice it
has costs no rendering, and a slice of a series that grew since is sent anew.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Blueprint, Response

from daemons.render.api import query
from daemons.render.api.image_headers import image_etag, image_response, mirrored_labels, not_modified
from daemons.render.imaging.annotate import Annotation, burn_in
from daemons.render.imaging.geometry import Region, inverted, mirror
from daemons.render.imaging.pixels import Window
from daemons.render.imaging.render2d import render_frame
from daemons.render.imaging.voi import KeyedVoi, frame_voi, keyed
from daemons.render.imaging.webp_effort import weak_etag
from daemons.render.metrics import register_timings, timed
from daemons.render.node import node
from daemons.render.records import LoadedRecord
from daemons.render.store.manifest import Manifest
from daemons.render.stored_only import require_renderable
from daemons.render.view_audit import note_view
from daemons.render.volume.geometry import image_labels
from shared.auth import require_auth
from shared.errors import ApiError
from shared.roles import ROLES
from shared.validation import parse_record_id

bp = Blueprint("render_frames", __name__)
bp.record_once(register_timings)

CACHE_CONTROL = "private, max-age=86400"


@dataclass(frozen=True)
class FrameImage:
    """What shapes one rendered frame, however it was asked for (this API's parameters or
    DICOMweb's rendered resources): one rendering path, one cache, one ETag rule for both."""

    fmt: str
    quality: int
    box: tuple[int, int] | None
    region: Region
    window: Window | None = None  # None: the frame's own default VOI (with `voi_function`, if any)
    voi_function: str | None = None
    overlays: bool = False
    flip: tuple[bool, bool] = (False, False)  # mirrored left-right, top-bottom (DICOMweb viewport)
    annotation: Annotation = Annotation()  # text burnt in (DICOMweb annotation)
    invert: bool = False  # display values turned over (the viewer's Invert tool)


def choose_voi(manifest: Manifest, index: int, spec: FrameImage) -> KeyedVoi:
    """The VOI of one frame: the request's window (or preset) > frame `index`'s own default
    (daemons.render.imaging.voi)."""
    if spec.window is not None:
        return keyed(spec.window)
    return frame_voi(manifest, index, spec.voi_function)


@bp.get("/api/v1/records/<record_id>/frames/<int(signed=True):index>")
@require_auth(*ROLES, token_in_query=True)
def frame(record_id: str, index: int):
    started = time.perf_counter()
    record_id = parse_record_id(record_id, "record id")
    max_px = node().config["limits"]["max_output_px"]
    fmt = query.image_format()
    spec = FrameImage(fmt=fmt, quality=query.quality(fmt), box=query.size(max_px), region=query.region(),
                      window=query.window(), voi_function=query.voi_function(), overlays=query.overlays(),
                      invert=query.invert())
    return frame_image(record_id, index, spec, started)


def check_frame(manifest: Manifest, index: int) -> None:
    """404 for an index outside the record, 422 for a frame found unreadable at upload, 415 for a
    series of stored-only instances (`daemons.render.stored_only`)."""
    require_renderable(manifest)
    query.check_index("frame", index, manifest.meta.frames)
    bad = manifest.bad_frame(index)
    if bad is not None:
        raise ApiError(422, "frame_error", f"frame {index} cannot be shown: {bad.message}")


def ready_frame(the_node, record: LoadedRecord | None, record_id: str, index: int) -> LoadedRecord:
    """`record` once frame `index` is decoded (asked for next, waited for a while): 409 while the
    record is not loaded or the frame still decoding, 422 when it cannot be decoded."""
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
    return record


def frame_image(record_id: str, index: int, spec: FrameImage, started: float,
                conditional: bool = True) -> Response:
    """Frame `index` of a record rendered as `spec` says (cached; 304 on a matching If-None-Match
    when `conditional`: not for a part of a multipart answer); 409 when the record is not loaded
    or the frame not decoded in time."""
    the_node = node()
    manifest = the_node.manifest(record_id)
    check_frame(manifest, index)
    max_px = the_node.config["limits"]["max_output_px"]
    fmt, quality, box, region, overlays = spec.fmt, spec.quality, spec.box, spec.region, spec.overlays
    record = the_node.registry.get_loaded(record_id)
    color = manifest.render.layout.is_color
    chosen = keyed(None) if color else choose_voi(manifest, index, spec)
    voi, voi_key = chosen.voi, "color" if color else chosen.key
    parts = [str(index), voi_key, fmt, str(quality), repr(box), repr(region), "overlays" if overlays else ""]
    if any(spec.flip):
        parts.append(f"flip={spec.flip}")
    if spec.annotation:
        parts.append(repr(spec.annotation))
    if spec.invert:
        parts.append("invert")
    etag = image_etag(record_id, manifest, *parts)
    weak = weak_etag(fmt)
    unchanged = not_modified(etag, CACHE_CONTROL, weak) if conditional else None
    if unchanged is not None:
        note_view("frame", record_id)
        return unchanged
    record = ready_frame(the_node, record, record_id, index)

    def make() -> tuple[bytes, str]:
        params = lut = None
        if not color:
            params = record.gray_params(voi)
            lut = record.lut_for((voi_key,), params, index)
        overlay = the_node.registry.overlay(record_id, index) if overlays else None
        with timed("render", "frame", fmt):
            image = mirror(inverted(render_frame(record.frame(index), params, lut, region, box,
                                                 record.frame_spacing(index), max_px, overlay),
                                    spec.invert), spec.flip)
            image = burn_in(image, spec.annotation)
        with timed("encode", "frame", fmt):
            return the_node.webp_effort.encode(image, fmt, quality)

    body, mimetype = the_node.images.get_or_make(record_id, etag, make)
    note_view("frame", record_id)
    labels = image_labels(manifest.render.known_orientation)
    if labels and any(spec.flip):
        labels = mirrored_labels(labels, spec.flip)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    the_node.note_latency(elapsed_ms)
    return image_response(body, mimetype, CACHE_CONTROL, elapsed_ms, etag, weak, labels, voi)
