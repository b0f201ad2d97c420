"""Overlay planes (PS3.3 C.9.2, groups 6000-601E): bitmaps drawn over the image on request.

What dcmtk's dcmj2pnm draws by default: every graphics (G) or ROI (R) overlay plane with its own
Overlay Data, placed at its Overlay Origin, set to the brightest display value (white; for
colour, white too). A plane with Number of Frames in Overlay covers the image frames from its
Image Frame Origin on; a plane without it covers every frame of its file. Overlays embedded in
the high bits of the pixel data (retired since 2004) are not drawn. A plane whose attributes cannot
be read (Overlay Data shorter than its rows and columns say, an origin that is no number) is
skipped and logged, as dcmtk skips it: the image and the other planes are still shown.

Overlays are read from the stored file when first asked for, not at load: most viewers of most
records never turn them on, and the header parse costs a fraction of the pixel decode.
"""

from __future__ import annotations

import logging

import numpy as np
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
OVERLAY_DATA = 0x3000


def has_overlays(ds: Dataset) -> bool:
    """Whether a dataset has at least one overlay plane with its own Overlay Data."""
    return any((group << 16 | OVERLAY_DATA) in ds for group in OVERLAY_GROUPS)


def _plane(ds: Dataset, group: int, frame: int, rows: int, cols: int) -> np.ndarray | None:
    """One overlay plane on the image grid of `frame` (in file), or None if it does not cover it."""
    def value(element: int, default):
        item = ds.get((group << 16) | element)
        return default if item is None or item.value in (None, "") else item.value

    count = int(value(0x0015, 0) or 0)  # Number of Frames in Overlay
    first = int(value(0x0051, 1) or 1) - 1  # Image Frame Origin, 1-based
    if count and not first <= frame < first + count:
        return None
    bitmap = ds.overlay_array(group)
    if bitmap.ndim == 3:
        bitmap = bitmap[frame - first]
    origin = value(0x0050, [1, 1])
    top, left = int(origin[0]) - 1, int(origin[1]) - 1
    mask = np.zeros((rows, cols), dtype=bool)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + bitmap.shape[0], rows), min(left + bitmap.shape[1], cols)
    if r0 < r1 and c0 < c1:
        mask[r0:r1, c0:c1] = bitmap[r0 - top:r1 - top, c0 - left:c1 - left] != 0
    return mask


def _readable_plane(ds: Dataset, group: int, frame: int, rows: int, cols: int) -> np.ndarray | None:
    try:
        return _plane(ds, group, frame, rows, cols)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        log.warning("overlay plane %04X of frame %d skipped: %s", group, frame, exc)
        return None


def overlay_mask(ds: Dataset, frame: int, rows: int, cols: int) -> np.ndarray | None:
    """All overlay planes covering `frame` (in file) as one boolean mask; None when there are none."""
    masks = [m for group in OVERLAY_GROUPS if (group << 16 | OVERLAY_DATA) in ds
             if (m := _readable_plane(ds, group, frame, rows, cols)) is not None]
    if not masks:
        return None
    return np.logical_or.reduce(masks)


def draw(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`image` (8-bit grey or RGB, the mask's shape) with the overlay's pixels set to white."""
    out = image.copy()
    out[mask] = 255
    return out
