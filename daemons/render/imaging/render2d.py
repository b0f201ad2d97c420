"""One 2D image from one stored frame: crop, grey pipeline (or colour as is), true-aspect resize.

Pure: arrays in, array out. The crop comes first so windowing touches only the pixels shown;
resampling comes last, on 8-bit values, where it is cheapest.
"""

from __future__ import annotations

import numpy as np

from daemons.render.imaging.geometry import Region, crop, output_size, resample
from daemons.render.imaging.overlays import draw
from daemons.render.imaging.pixels import GrayParams, render_gray


def render_frame(
    frame: np.ndarray,
    params: GrayParams | None,
    lut: np.ndarray | None,
    region: Region,
    box: tuple[int, int] | None,
    pixel_spacing: tuple[float, float],
    max_px: int,
    overlay: np.ndarray | None = None,
) -> np.ndarray:
    """`params` is None for colour frames (RGB shown as stored); `lut` from `gray_lut` or None;
    `overlay` a mask of the frame's shape drawn in white (daemons.render.imaging.overlays)."""
    part = crop(frame, region)
    image = part if params is None else render_gray(part, params, lut)
    if overlay is not None:
        image = draw(image, crop(overlay, region))
    rows, cols = part.shape[:2]
    width, height = output_size(rows, cols, pixel_spacing[0], pixel_spacing[1], box, max_px)
    return resample(image, width, height)
