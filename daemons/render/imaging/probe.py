"""Values under a point and statistics inside a shape, from a frame's original values.

Pure: arrays in, numbers out. A viewer's canvas shows 8-bit display values after windowing, so a
reading taken there is wrong by up to a window width / 256; these readings come from the stored
values through the Modality LUT stage only (rescale slope/intercept or a Modality LUT Sequence,
daemons.render.imaging.pixels.Modality). MONOCHROME1 inverts the display, never the values.

Coordinates are image coordinates of the stored frame: x along a row (0..columns), y down the
columns (0..rows); pixel (i, j) covers [i, i+1) x [j, j+1). A shape holds the pixels whose centres
(i + 0.5, j + 0.5) lie inside it: a rectangle x0..x1, y0..y1, or the ellipse inscribed in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from daemons.render.imaging.pixels import Modality

SHAPES = ("rect", "ellipse")
#: Pixels read into float values at once by `shape_stats`: the whole shape's float64 values and
#: their deviations were 16 bytes a pixel, 1 GB for an ROI over an 8192 x 8192 image, per request.
STATS_CHUNK = 1 << 18


@dataclass(frozen=True)
class Calibration:
    """How a frame's pixels become measurements: the Modality LUT stage, the unit of its output
    ("HU" for CT, None where the values have no unit), the pixel spacing (row, column) in mm or
    None when the file gives none, and whether the frame holds stored values at all (False where
    the node keeps modality values because the files disagree on rescale)."""

    modality: Modality
    unit: str | None
    spacing: tuple[float, float] | None
    stored: bool = True


def _number(value: float) -> int | float:
    """Whole numbers as int (stored values are integers), others as float."""
    value = float(value)
    return int(value) if value.is_integer() else value


def value_at(frame: np.ndarray, x: float, y: float, calibration: Calibration) -> dict:
    """The stored and modality value of the pixel that holds point (x, y)."""
    rows, cols = frame.shape[:2]
    if not (0 <= x < cols and 0 <= y < rows):
        raise ValueError(f"point ({x:g}, {y:g}) is outside the {cols}x{rows} frame")
    column, row = int(math.floor(x)), int(math.floor(y))
    stored = frame[row, column]
    value = float(calibration.modality.apply(np.asarray([stored]))[0])
    return {"x": column, "y": row, "stored": _number(stored) if calibration.stored else None,
            "value": _number(value), "unit": calibration.unit}


def shape_mask(shape: str, box: tuple[float, float, float, float], rows: int, cols: int
               ) -> tuple[tuple[slice, slice], np.ndarray]:
    """The pixels of `shape` (rect or ellipse) in `box` (x0, y0, x1, y1; any corner order): the
    bounding slices of the frame and a boolean mask over them."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
    x0, x1 = sorted((box[0], box[2]))
    y0, y1 = sorted((box[1], box[3]))
    if not (x0 >= 0 and x1 <= cols and y0 >= 0 and y1 <= rows):
        raise ValueError(f"the box ({x0:g}, {y0:g})-({x1:g}, {y1:g}) is outside the {cols}x{rows} frame")
    # pixel i's centre i + 0.5 lies in [lo, hi] for i in ceil(lo - 0.5)..floor(hi - 0.5)
    c0, c1 = math.ceil(x0 - 0.5), math.floor(x1 - 0.5) + 1
    r0, r1 = math.ceil(y0 - 0.5), math.floor(y1 - 0.5) + 1
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(max(c1, c0), cols), min(max(r1, r0), rows)
    window = (slice(r0, r1), slice(c0, c1))
    mask = np.ones((r1 - r0, c1 - c0), dtype=bool)
    if shape == "ellipse" and mask.size:
        cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        if a <= 0 or b <= 0:
            mask[:] = False
        else:
            px = np.square((np.arange(c0, c1) + 0.5 - cx) / a)
            py = np.square((np.arange(r0, r1) + 0.5 - cy) / b)
            step = max(1, STATS_CHUNK // max(1, px.size))  # rows at a time: no float temporaries of the whole box
            for start in range(0, py.size, step):
                np.less_equal(py[start:start + step, None] + px[None, :], 1.0, out=mask[start:start + step])
    return window, mask


def shape_stats(frame: np.ndarray, shape: str, box: tuple[float, float, float, float],
                calibration: Calibration) -> dict:
    """Mean, SD (population: of the pixels measured, not an estimate), min and max in modality
    units of the pixels inside the shape; their count, and the area they cover in mm² (None
    without pixel spacing). An empty shape has count 0 and no statistics."""
    rows, cols = frame.shape[:2]
    window, mask = shape_mask(shape, box, rows, cols)
    pixels = frame[window]
    step = max(1, STATS_CHUNK // max(1, pixels.shape[1]))
    chunks = [slice(start, start + step) for start in range(0, pixels.shape[0], step)]

    def values(rows_of: slice) -> np.ndarray:
        return calibration.modality.apply(pixels[rows_of][mask[rows_of]])

    count = int(np.count_nonzero(mask))
    spacing = calibration.spacing
    area = count * spacing[0] * spacing[1] if spacing is not None else None
    stats: dict = {"shape": shape, "count": count, "area_mm2": area, "unit": calibration.unit,
                   "mean": None, "sd": None, "min": None, "max": None}
    if count:
        total, low, high = 0.0, math.inf, -math.inf
        for rows_of in chunks:
            part = values(rows_of)
            if part.size:
                total += float(part.sum())
                low, high = min(low, float(part.min())), max(high, float(part.max()))
        mean = total / count
        spread = sum(float(np.square(part - mean).sum()) for part in map(values, chunks))
        stats.update(mean=mean, sd=math.sqrt(spread / count), min=_number(low), max=_number(high))
    return stats
