"""The geometry of a record's planes, published with its metadata (`planes` of RecordMeta).

A viewer needs, for each plane it shows, the index range of its slider, the physical size of the
image (its aspect, and millimetres per image fraction for measurements), the patient direction of
each edge and of increasing index. Re-deriving these in the browser went wrong: it assumed an
axial acquisition, so every sagittal or coronal stack had wrong sliders, aspect and distances.
The node publishes them instead, computed by `mpr.plane_layout` (the function the reformats are
cut with) on the geometry the 3D state prepares its volume with (`volume_frame`), so what the
viewer is told and what it is sent cannot disagree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from daemons.render.store.manifest import Manifest, Meta
from daemons.render.volume.geometry import VolumeGeometry, direction_label, make_geometry
from daemons.render.volume.mpr import PLANES, STORED, axis_direction, plane_labels, plane_layout

PUBLISHED = (STORED, *PLANES)
DECIMALS = 6
# The patient axis (LPS index) along which each reformat's position is given, as a PACS does:
# table position (z) for axial, y for coronal, x for sagittal.
_LOCATION_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}

Spacing = tuple[float, float, float]


def usable_spacing(spacing: tuple[float | None, float | None, float | None]) -> Spacing:
    """(slice, row, column) spacing with every missing or non-positive value replaced: a single
    frame or a missing slice spacing has no depth spacing, so the in-plane one stands in."""
    values = [float(s) if s is not None and math.isfinite(float(s)) and float(s) > 0 else 0.0
              for s in spacing]
    fallback = next((v for v in (values[1], values[2]) if v > 0), 1.0)
    return tuple(v if v > 0 else fallback for v in values)  # type: ignore[return-value]


def record_spacing(manifest: Manifest) -> Spacing:
    """(slice, row, column) spacing in mm a record is drawn and reformatted with. The one rule for
    an unknown pixel spacing (2D frames, DICOMweb rendered images and thumbnails, MPR and 3D alike;
    `measurable` tells the viewer that distances are then in pixels): the pixels have the shape of
    the file's Pixel Aspect Ratio (vertical, horizontal), their narrower side 1 mm, or are 1 mm
    squares where it gives none. A known pixel spacing wins over the ratio (PS3.3 C.7.6.3.1.7 makes
    the ratio Type 1C, required only where no spacing is given)."""
    meta = manifest.meta
    row_mm, col_mm = meta.pixel_spacing or _aspect_spacing(meta.pixel_aspect_ratio)
    return usable_spacing((meta.slice_spacing, row_mm, col_mm))


def _aspect_spacing(aspect: tuple[float, float] | None) -> tuple[float, float]:
    """(row, column) spacing of pixels of `aspect` (vertical, horizontal), the narrower side 1."""
    if aspect is None:
        return 1.0, 1.0
    narrower = min(aspect)
    return aspect[0] / narrower, aspect[1] / narrower


def _first_last_positions(meta: Meta) -> tuple[np.ndarray, np.ndarray] | None:
    slices = meta.slices or ()
    if not slices or slices[0].get("position") is None or slices[-1].get("position") is None:
        return None
    first, last = np.asarray(slices[0]["position"], float), np.asarray(slices[-1]["position"], float)
    return (first, last) if np.isfinite(first).all() and np.isfinite(last).all() else None


def volume_frame(manifest: Manifest) -> tuple[Spacing, tuple[float, ...], tuple[float, float, float] | None]:
    """(spacing, orientation, slice direction) of a record's volume, from its manifest.

    Spacing as `record_spacing`. The slice direction is the
    step from the first frame's position to the last one's, so an enhanced file whose frames run
    against the normal is not turned upside down; None where positions are unknown (then frames
    follow the normal, the order they were sorted in)."""
    ends = _first_last_positions(manifest.meta)
    step = None if ends is None else tuple(float(v) for v in ends[1] - ends[0])
    return record_spacing(manifest), manifest.render.orientation, step  # type: ignore[return-value]


def record_geometry(manifest: Manifest) -> VolumeGeometry:
    """The record's volume geometry, without loading a pixel (the same as its PreparedVolume's)."""
    meta = manifest.meta
    return make_geometry((meta.frames, meta.rows, meta.columns),
                         *volume_frame(manifest))


def _round(value: float) -> float:
    return round(float(value), DECIMALS)


def plane_table(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """PlaneGeometry (docs/API.md) of the stored plane and of each reformat.

    `edges`, `index_direction` and `location_mm` are None where the record does not say them
    (no ImageOrientationPatient; for the frame axis, no frame positions): a wrong label is worse
    than none. `measurable` is False when the pixel size is unknown (distances are then in pixels).
    """
    meta = manifest.meta
    geometry = record_geometry(manifest)
    oriented = manifest.render.known_orientation is not None
    ends = _first_last_positions(meta)
    positions_known = ends is not None and (geometry.shape[0] == 1 or float(np.linalg.norm(ends[1] - ends[0])) > 1e-6)
    pixel_spacing = meta.pixel_spacing or ()
    measurable = len(pixel_spacing) == 2 and all(math.isfinite(float(v)) and float(v) > 0 for v in pixel_spacing)
    table = {}
    for plane in PUBLISHED:
        layout = plane_layout(geometry, plane)
        rows, columns = geometry.shape[layout.down_axis], geometry.shape[layout.right_axis]
        along = axis_direction(geometry, layout.axis)
        directed = oriented and (layout.axis != 0 or positions_known)
        location = None
        if directed and ends is not None:
            axis = int(np.argmax(np.abs(along))) if plane == STORED else _LOCATION_AXIS[plane]
            location = {"first": _round(ends[0][axis]), "step": _round(layout.thickness_mm * along[axis])}
        table[plane] = {
            "count": int(layout.count),
            "columns": int(columns),
            "rows": int(rows),
            "column_mm": _round(layout.right_mm),
            "row_mm": _round(layout.down_mm),
            "width_mm": _round(columns * layout.right_mm),
            "height_mm": _round(rows * layout.down_mm),
            "spacing_mm": _round(layout.thickness_mm),
            "measurable": measurable,
            "edges": plane_labels(geometry, layout) if oriented else None,
            "index_direction": direction_label(along) if directed else None,
            "location_mm": location,
        }
    return table
