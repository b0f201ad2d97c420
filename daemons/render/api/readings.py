"""Readings of original values: `GET /api/v1/records/{id}/frames/{index}/value` (the stored and
modality value under a point) and `.../stats` (mean, SD, min, max, count and area of a rectangle
or ellipse), computed by daemons.render.imaging.probe from the frame in RAM, never from a rendered image.
The same two readings on a reformat, `GET /api/v1/records/{id}/mpr/{plane}/{index}/value` and
`.../stats`: the plane (or slab) of the request's `stack` at its time point `phase` is cut from
the voxels the reformat image is cut from (`Render3D.prepared`: a time point whose frames are not
stored one after another is copied once, counted in the record's memory, not at every reading) by
`mpr.cut_plane` with the layout the reformat image is cut with (`mpr.plane_layout` on the stack's
`planes.record_geometry`), so its pixel coordinates are those of the stack's `planes[plane]`
(columns x rows) and an area is in mm² of the plane's own row and column spacing.

They need the record loaded, as frames do (409 otherwise; a reformat needs every frame, as its
image does), and are audited like the images they are read from (`note_view("value", ...)`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from flask import Blueprint, current_app, jsonify

from daemons.render.api import query
from daemons.render.api.frames import check_frame, ready_frame
from daemons.render.api.mpr3d import VolumeRecord, check_plane, loaded_stack, render_state
from daemons.render.imaging.planes import record_geometry
from daemons.render.imaging.probe import Calibration, shape_stats, value_at
from daemons.render.node import node
from daemons.render.records import LoadedRecord
from daemons.render.stacks import frame_stack, stack_manifest
from daemons.render.view_audit import note_view
from daemons.render.volume.mpr import cut_plane, plane_layout
from shared.auth import require_auth
from shared.errors import ApiError
from shared.roles import ROLES
from shared.validation import parse_record_id

bp = Blueprint("render_probe", __name__)

#: Units of modality values by modality: CT's rescaled values are Hounsfield units by definition.
UNITS = {"CT": "HU"}


def calibration(record: VolumeRecord, pixel_spacing: tuple[float, float] | None) -> Calibration:
    """How to read `record`'s values, with areas in mm² of `pixel_spacing` (None: unknown)."""
    meta = record.manifest.meta
    return Calibration(record.modality(), UNITS.get(meta.modality.upper()), pixel_spacing,
                       stored=not record.manifest.render.layout.float_modality)


def _frame(record_id: str, index: int) -> tuple[LoadedRecord, Calibration]:
    record_id = parse_record_id(record_id, "record id")
    the_node = node()
    manifest = the_node.manifest(record_id)
    check_frame(manifest, index)
    record = ready_frame(the_node, the_node.registry.get_loaded(record_id), record_id, index)
    if record.is_color:
        raise ApiError(422, "not_greyscale", "values are read from greyscale images only")
    return record, calibration(record, frame_stack(manifest, index).pixel_spacing)


@bp.get("/api/v1/records/<record_id>/frames/<int(signed=True):index>/value")
@require_auth(*ROLES, token_in_query=True)
def value(record_id: str, index: int):
    record, cal = _frame(record_id, index)
    pixels = record.frame(index)
    rows, cols = pixels.shape[:2]
    x, y = query.coordinate(query.POINT_X, cols), query.coordinate(query.POINT_Y, rows)
    try:
        reading = value_at(pixels, x, y, cal)
    except ValueError as exc:
        raise query.bad(str(exc)) from exc
    note_view("value", record.record_id)
    return jsonify({"frame": index, **reading})


@bp.get("/api/v1/records/<record_id>/frames/<int(signed=True):index>/stats")
@require_auth(*ROLES, token_in_query=True)
def stats(record_id: str, index: int):
    record, cal = _frame(record_id, index)
    pixels = record.frame(index)
    rows, cols = pixels.shape[:2]
    shape = query.shape()
    box = (query.coordinate(query.BOX_X0, cols), query.coordinate(query.BOX_Y0, rows),
           query.coordinate(query.BOX_X1, cols), query.coordinate(query.BOX_Y1, rows))
    note_view("value", record.record_id)
    return jsonify({"frame": index, "box": list(box), **shape_stats(pixels, shape, box, cal)})


def _plane(record_id: str, plane: str, index: int) -> tuple[str, np.ndarray, Calibration]:
    """The record id checked, the stored values of reformat `index` of `plane` of the request's
    stack at its time point (with its slab, as the image is cut: daemons.render.api.mpr3d.plane_image)
    and how to read them."""
    record_id = parse_record_id(record_id, "record id")
    check_plane(plane)
    record, stack = loaded_stack(record_id, query.stack(), query.phase())
    layout = plane_layout(record_geometry(stack_manifest(record.manifest, stack)), plane)
    query.check_index(f"{plane} plane", index, layout.count)
    slab_mm, slab_mode = query.slab()
    volume = render_state(current_app).prepared(record, stack)
    values = cut_plane(volume, layout, index, slab_mm, slab_mode)
    cal = calibration(record, stack.pixel_spacing)
    spacing = (layout.down_mm, layout.right_mm) if cal.spacing is not None else None
    # a slab's average is no stored value
    return record_id, values, replace(cal, spacing=spacing, stored=cal.stored and values.dtype == volume.voxels.dtype)


@bp.get("/api/v1/records/<record_id>/mpr/<plane>/<int(signed=True):index>/value")
@require_auth(*ROLES, token_in_query=True)
def plane_value(record_id: str, plane: str, index: int):
    record_id, values, cal = _plane(record_id, plane, index)
    rows, cols = values.shape
    x, y = query.coordinate(query.POINT_X, cols), query.coordinate(query.POINT_Y, rows)
    try:
        reading = value_at(values, x, y, cal)
    except ValueError as exc:
        raise query.bad(str(exc)) from exc
    note_view("value", record_id)
    return jsonify({"plane": plane, "index": index, **reading})


@bp.get("/api/v1/records/<record_id>/mpr/<plane>/<int(signed=True):index>/stats")
@require_auth(*ROLES, token_in_query=True)
def plane_stats(record_id: str, plane: str, index: int):
    record_id, values, cal = _plane(record_id, plane, index)
    rows, cols = values.shape
    shape = query.shape()
    box = (query.coordinate(query.BOX_X0, cols), query.coordinate(query.BOX_Y0, rows),
           query.coordinate(query.BOX_X1, cols), query.coordinate(query.BOX_Y1, rows))
    note_view("value", record_id)
    return jsonify({"plane": plane, "index": index, "box": list(box), **shape_stats(values, shape, box, cal)})
