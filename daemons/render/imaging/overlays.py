"""Overlay planes (PS3.3 C.9.2, groups 6000-601E): bitmaps drawn over the image on request.

What dcmtk's dcmj2pnm draws by default: every graphics (G) or ROI (R) overlay plane with its own
Overlay Data, placed at its Overlay Origin, set to the brightest display value (white; for
colour, white too). A plane with Number of Frames in Overlay covers the image frames from its
Image Frame Origin on; a plane without it covers every frame of its file. Overlays embedded in
the high bits of the pixel data (retired since 2004) are not drawn. A plane whose attributes cannot
be read (Overlay Data shorter than its rows and columns say, an origin that is no number) is
skipped and logged, as dcmtk skips it: the image and the other planes are still shown.

An overlay plane larger than any image this node accepts (Overlay Rows over `limits.max_rows`,
Overlay Columns over `limits.max_columns`) or of more frames than its image has (Number of Frames
in Overlay) could never be shown whole, and each overlay request reads its file: a 64x64 CT
declaring a 32768 x 32768 plane (128 MB) cost a 128 MB read at every frame's first overlay request.
`unshowable_plane` names such a plane at upload, and none of that file's overlays is shown (its
manifest entry says it has none, so no request reads it for them); the file itself is kept and its
image shown, as dcmtk and cornerstone keep and show such files (they clip the plane to the image):
an archive does not refuse a CT for an annotation layer it cannot draw. The record's warnings say
which plane and attribute.

Overlays are read from the stored file when first asked for, not at load: most viewers of most
records never turn them on, and the header parse costs a fraction of the pixel decode. Only the
bits of the asked frame that fall on the image are unpacked, a row at a time: an overlay's size is
its own (up to 65535 x 65535 bits a frame, for as many frames), and unpacking it whole (pydicom's
`overlay_array`, a byte a bit) made one 64x64 frame's request hold 1 GB for a 128 MB overlay.
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


def unshowable_plane(ds: Dataset, max_rows: int, max_columns: int, frames: int) -> str | None:
    """Why the file's overlays are not shown (module doc), naming the first plane whose Overlay Rows
    is over `max_rows`, Overlay Columns over `max_columns` or Number of Frames in Overlay over the
    file's `frames`; None when every plane is within them. A value that is no number is left to
    `overlay_mask`, which skips that plane when it is drawn."""
    bounds = ((0x0010, "Overlay Rows", max_rows, "this node's largest image"),
              (0x0011, "Overlay Columns", max_columns, "this node's largest image"),
              (0x0015, "Number of Frames in Overlay", frames, "the image's frames"))
    for group in OVERLAY_GROUPS:
        if (group << 16 | OVERLAY_DATA) not in ds:
            continue
        for element, name, limit, what in bounds:
            item = ds.get((group << 16) | element)
            try:
                value = 0 if item is None or item.value in (None, "") else int(item.value)
            except (TypeError, ValueError):
                continue
            if value > limit:
                return f"overlay plane {group:04X}: {name} {value} is over {what} ({limit})"
    return None


def _plane(ds: Dataset, group: int, frame: int, rows: int, cols: int) -> np.ndarray | None:
    """One overlay plane on the image grid of `frame` (in file), or None if it does not cover it."""
    def value(element: int, default):
        item = ds.get((group << 16) | element)
        return default if item is None or item.value in (None, "") else item.value

    count = int(value(0x0015, 0) or 0)  # Number of Frames in Overlay
    first = int(value(0x0051, 1) or 1) - 1  # Image Frame Origin, 1-based
    if count and not first <= frame < first + count:
        return None
    for element, name in ((0x0010, "Overlay Rows"), (0x0011, "Overlay Columns"), (0x0100, "Overlay Bits Allocated")):
        if ds.get((group << 16) | element) is None:
            raise AttributeError(f"{name} is missing")
    plane_rows, plane_cols = int(value(0x0010, 0)), int(value(0x0011, 0))
    data = np.frombuffer(ds[(group << 16) | OVERLAY_DATA].value, dtype=np.uint8)
    if data.size * 8 < plane_rows * plane_cols * max(count, 1):
        raise ValueError(f"Overlay Data holds {data.size} bytes, fewer than {plane_rows} rows x {plane_cols} "
                         f"columns x {max(count, 1)} frames of bits")
    origin = value(0x0050, [1, 1])
    top, left = int(origin[0]) - 1, int(origin[1]) - 1
    mask = np.zeros((rows, cols), dtype=bool)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + plane_rows, rows), min(left + plane_cols, cols)
    start = (frame - first if count else 0) * plane_rows * plane_cols  # frames follow bit after bit
    for row in range(r0, r1):
        mask[row, c0:c1] = _bits(data, start + (row - top) * plane_cols + c0 - left, c1 - c0) != 0
    return mask


def _bits(data: np.ndarray, first: int, count: int) -> np.ndarray:
    """`count` bits of packed Overlay Data from bit `first` on (PS3.5 8.1.2: little-endian bit order)."""
    if count <= 0:
        return np.zeros(0, dtype=np.uint8)
    span = data[first >> 3:((first + count - 1) >> 3) + 1]
    return np.unpackbits(span, bitorder="little")[first & 7:(first & 7) + count]


def _readable_plane(ds: Dataset, group: int, frame: int, rows: int, cols: int) -> np.ndarray | None:
    try:
        return _plane(ds, group, frame, rows, cols)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        log.warning("overlay plane %04X of frame %d skipped: %s", group, frame, exc)
        return None


def overlay_planes(ds: Dataset) -> Dataset | None:
    """The overlay groups (60xx) of `ds` alone, what `overlay_mask` reads; None when it has none.
    A file's other elements (which may be large, private ones included) need not be kept to draw its
    frames' overlays."""
    kept = Dataset()
    for element in ds:
        if element.tag.group in OVERLAY_GROUPS:
            kept.add(element)
    return kept if any((group << 16 | OVERLAY_DATA) in kept for group in OVERLAY_GROUPS) else None


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
