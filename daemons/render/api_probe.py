"""Readings of original values: `GET /api/v1/records/{id}/frames/{index}/value` (the stored and
modality value under a point) and `.../stats` (mean, SD, min, max, count and area of a rectangle
or ellipse), computed by daemons.render.probe from the frame in RAM, never from a rendered image.

They need the record loaded, as frames do (409 otherwise), and are audited like the images they
are read from (`note_view("value", ...)`).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from daemons.render import query
from daemons.render.api_frames import check_frame, ready_frame
from daemons.render.node import node
from daemons.render.probe import Calibration, shape_stats, value_at
from daemons.render.records import LoadedRecord
from daemons.render.view_audit import note_view
from shared.auth import require_auth
from shared.errors import ApiError
from shared.roles import ROLES
from shared.validation import parse_record_id

bp = Blueprint("render_probe", __name__)

#: Units of modality values by modality: CT's rescaled values are Hounsfield units by definition.
UNITS = {"CT": "HU"}


def calibration(record: LoadedRecord) -> Calibration:
    meta = record.manifest.meta
    return Calibration(record.modality(), UNITS.get(meta.modality.upper()), meta.pixel_spacing,
                       stored=not record.layout.float_modality)


def _frame(record_id: str, index: int) -> tuple[LoadedRecord, Calibration]:
    record_id = parse_record_id(record_id, "record id")
    the_node = node()
    manifest = the_node.manifest(record_id)
    check_frame(manifest, index)
    record = ready_frame(the_node, the_node.registry.get_loaded(record_id), record_id, index)
    if record.is_color:
        raise ApiError(422, "not_greyscale", "values are read from greyscale images only")
    return record, calibration(record)


@bp.get("/api/v1/records/<record_id>/frames/<int(signed=True):index>/value")
@require_auth(*ROLES)
def value(record_id: str, index: int):
    record, cal = _frame(record_id, index)
    rows, cols = record.layout.frame_shape[:2]
    x, y = query.coordinate(query.POINT_X, cols), query.coordinate(query.POINT_Y, rows)
    try:
        reading = value_at(record.pixels[index], x, y, cal)
    except ValueError as exc:
        raise query.bad(str(exc)) from exc
    note_view("value", record.record_id)
    return jsonify({"frame": index, **reading})


@bp.get("/api/v1/records/<record_id>/frames/<int(signed=True):index>/stats")
@require_auth(*ROLES)
def stats(record_id: str, index: int):
    record, cal = _frame(record_id, index)
    rows, cols = record.layout.frame_shape[:2]
    shape = query.shape()
    box = (query.coordinate(query.BOX_X0, cols), query.coordinate(query.BOX_Y0, rows),
           query.coordinate(query.BOX_X1, cols), query.coordinate(query.BOX_Y1, rows))
    note_view("value", record.record_id)
    return jsonify({"frame": index, "box": list(box), **shape_stats(record.pixels[index], shape, box, cal)})
