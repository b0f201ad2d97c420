"""Output geometry of a 2D image: zoom/pan crop, true aspect from pixel spacing, fitting, resampling.

Pure functions on arrays. Pixels of many modalities are not square (pixel spacing differs between
rows and columns), so an image drawn one screen pixel per stored pixel is distorted; every output
size here is computed in millimetres first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Region:
    """A crop given as fractions of the image: left, top, right, bottom in 0..1, left < right."""

    x0: float = 0.0
    y0: float = 0.0
    x1: float = 1.0
    y1: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.x0 < self.x1 <= 1.0 and 0.0 <= self.y0 < self.y1 <= 1.0):
            raise ValueError("region must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")

    @property
    def is_full(self) -> bool:
        return (self.x0, self.y0, self.x1, self.y1) == (0.0, 0.0, 1.0, 1.0)


FULL = Region()


EDGE_TOLERANCE = 1e-9  # of a pixel: 57/100 * 100 is 56.99999999999999 in floating point


def crop_bounds(rows: int, cols: int, region: Region) -> tuple[slice, slice]:
    """Row and column slices of `region`, at least one pixel each way. An edge within float noise
    of a pixel boundary is that boundary, so a region made from pixel coordinates (DICOMweb's
    viewport) crops exactly those pixels."""
    r0 = min(int(np.floor(region.y0 * rows + EDGE_TOLERANCE)), rows - 1)
    c0 = min(int(np.floor(region.x0 * cols + EDGE_TOLERANCE)), cols - 1)
    r1 = max(int(np.ceil(region.y1 * rows - EDGE_TOLERANCE)), r0 + 1)
    c1 = max(int(np.ceil(region.x1 * cols - EDGE_TOLERANCE)), c0 + 1)
    return slice(r0, r1), slice(c0, c1)


def crop(frame: np.ndarray, region: Region) -> np.ndarray:
    """A view of the region of a (rows, cols[, 3]) frame."""
    if region.is_full:
        return frame
    rows, cols = frame.shape[:2]
    r, c = crop_bounds(rows, cols, region)
    return frame[r, c]


def output_size(
    rows: int,
    cols: int,
    row_spacing: float,
    col_spacing: float,
    box: tuple[int, int] | None,
    max_px: int,
) -> tuple[int, int]:
    """`(width, height)` of the image with true physical aspect.

    Without `box`, the finer spacing sets the pixel size (no stored detail is lost); with a box
    `(W, H)` the image is as large as fits inside it. Either way no side exceeds `max_px`.
    """
    row_spacing = row_spacing if row_spacing > 0 else 1.0
    col_spacing = col_spacing if col_spacing > 0 else 1.0
    width_mm, height_mm = cols * col_spacing, rows * row_spacing
    if box is None:
        pixel = min(row_spacing, col_spacing)
        width, height = width_mm / pixel, height_mm / pixel
        scale = min(1.0, max_px / max(width, height))
    else:
        box_w, box_h = min(box[0], max_px), min(box[1], max_px)
        scale = min(box_w / width_mm, box_h / height_mm)
        width, height = width_mm, height_mm
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def resample(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an 8-bit grey or RGB image; bilinear (Pillow's, which also filters when shrinking)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    mode = "L" if image.ndim == 2 else "RGB"
    resized = Image.fromarray(np.ascontiguousarray(image), mode).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def inverted(image: np.ndarray, invert: bool) -> np.ndarray:
    """The 8-bit display image turned over (255 - value, colour channels alike) when `invert`:
    the viewer's Invert tool, rendered here so the browser never touches a pixel."""
    return np.subtract(255, image, dtype=np.uint8) if invert else image


def mirror(image: np.ndarray, flip: tuple[bool, bool]) -> np.ndarray:
    """The image mirrored left-right and/or top-bottom (`flip`), as DICOMweb's negative viewport
    widths and heights ask; the same array when neither."""
    if flip[0]:
        image = image[:, ::-1]
    if flip[1]:
        image = image[::-1]
    return image
