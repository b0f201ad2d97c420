"""Multiplanar reformats: axial, coronal and sagittal planes of a volume at their true aspect.

A plane is cut along the volume axis closest to its patient normal and laid out in the usual
radiological orientation whatever the acquisition (axial: patient's right on the left, anterior
up; coronal: right on the left, head up; sagittal: anterior on the left, head up). Cutting along
stored axes is exact (no in-plane resampling); the image is then scaled to square display
pixels from the row, column and slice spacings. A slab combines the planes within a thickness in
millimetres centred on the plane (cut off where the volume ends) by maximum, minimum or mean, with
the rule of the 3D projections (MIP, MinIP, average): values below the volume's floor count as it
(`PreparedVolume.floor`: a CT's padding outside the reconstruction circle is air, not -3024 HU), so
a slab and the 3D projection through the same voxels agree. Windowing, cropping and scaling are the
2D pipeline's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daemons.render.imaging.geometry import FULL, Region, crop, output_size, resample
from daemons.render.imaging.pixels import Voi
from daemons.render.volume.geometry import VolumeGeometry, edge_labels
from daemons.render.volume.raycast import window_values
from daemons.render.volume.volume import NO_FLOOR, PreparedVolume

PLANES = ("axial", "coronal", "sagittal")
STORED = "slices"  # the acquisition's own plane: frames as stored, rows down, columns right
SLAB_MODES = ("mip", "minip", "avg")
#: Planes of a slab average summed at once: the floor is applied to a copy of this many planes, not of the slab.
AVERAGE_CHUNK = 16

# Patient directions (LPS) of each plane's normal, screen right and screen down.
_PLANE_DIRECTIONS = {
    "axial": ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass(frozen=True)
class PlaneLayout:
    """How a plane maps onto the array (axes 0 = frames, 1 = rows, 2 = columns)."""

    axis: int  # the axis cut across; `index` counts along it as stored
    count: int
    down_axis: int
    down_flip: bool
    right_axis: int
    right_flip: bool
    down_mm: float
    right_mm: float
    thickness_mm: float


def plane_layout(geometry: VolumeGeometry, plane: str) -> PlaneLayout:
    """How `plane` (one of PLANES, or STORED) is cut from the volume and laid out on screen."""
    spacing = geometry.spacing
    if plane == STORED:
        return PlaneLayout(0, geometry.shape[0], 1, False, 2, False, spacing[1], spacing[2], spacing[0])
    if plane not in _PLANE_DIRECTIONS:
        raise ValueError(f"unknown plane {plane!r}")
    # geometry.axes columns are index x, y, z = array axes 2, 1, 0.
    directions = {2 - c: geometry.axes[:, c] for c in range(3)}
    free = [0, 1, 2]
    chosen = []
    for target in _PLANE_DIRECTIONS[plane]:
        best = max(free, key=lambda a: abs(float(directions[a] @ np.asarray(target))))
        free.remove(best)
        chosen.append((best, float(directions[best] @ np.asarray(target)) < 0))
    (axis, _), (right, right_flip), (down, down_flip) = chosen
    return PlaneLayout(axis, geometry.shape[axis], down, down_flip, right, right_flip,
                       spacing[down], spacing[right], spacing[axis])


def axis_direction(geometry: VolumeGeometry, axis: int, flip: bool = False) -> np.ndarray:
    """Patient direction (unit vector, LPS) in which array axis `axis` increases (reversed if `flip`)."""
    vector = geometry.axes[:, 2 - axis]
    return -vector if flip else vector


def plane_labels(geometry: VolumeGeometry, layout: PlaneLayout) -> dict[str, str]:
    """Edge labels of a reformat, from the true patient directions of its rows and columns."""
    return edge_labels(axis_direction(geometry, layout.right_axis, layout.right_flip),
                       axis_direction(geometry, layout.down_axis, layout.down_flip))


def slab_planes(layout: PlaneLayout, index: int, slab_mm: float) -> range:
    """The stored planes within `slab_mm`/2 of plane `index` (at least the plane itself), cut off where
    the volume ends: alike on either side and at either end (it was moved inwards near the first
    plane, so the slabs at planes 0, 1 and 2 were one image, and a slab of an even number of planes
    reached one plane further on one side)."""
    reach = int(slab_mm / 2 / layout.thickness_mm + 1e-6) if slab_mm > 0 else 0
    return range(max(0, index - reach), min(layout.count, index + reach + 1))


def floored(values: np.ndarray, floor: float) -> np.ndarray:
    """`values` with those below `floor` (a raw value, PreparedVolume.floor) raised to it: the
    projections' rule. Integer values keep their type where the floor is a value of it."""
    if floor <= NO_FLOOR:
        return values
    if values.dtype.kind in "iu":
        info = np.iinfo(values.dtype)
        if floor <= info.min:
            return values
        if float(floor).is_integer() and floor <= info.max:
            return np.maximum(values, values.dtype.type(floor))
    return np.maximum(values, floor)


def _slab_mean(taken: np.ndarray, axis: int, floor: float) -> np.ndarray:
    """Mean (float32) of `taken` along `axis` with the floor applied, AVERAGE_CHUNK planes at a time."""
    shape = tuple(n for a, n in enumerate(taken.shape) if a != axis)
    total = np.zeros(shape, dtype=np.float32)
    for start in range(0, taken.shape[axis], AVERAGE_CHUNK):
        chunk = taken[(slice(None),) * axis + (slice(start, start + AVERAGE_CHUNK),)]
        total += floored(chunk, floor).sum(axis=axis, dtype=np.float32)
    return total / np.float32(taken.shape[axis])


def cut_plane(volume: PreparedVolume, layout: PlaneLayout, index: int, slab_mm: float = 0.0,
              slab_mode: str = "avg") -> np.ndarray:
    """Values of plane `index` of `layout` (or of the slab around it) from the volume's voxels
    (frames, rows, columns), in display orientation: a single plane keeps the voxels' own type, so
    the readings of original values (daemons.render.api.readings) are cut exactly as the image is.
    A slab is a projection, under the 3D projections' floor (module doc)."""
    if not 0 <= index < layout.count:
        raise IndexError(f"plane index must be between 0 and {layout.count - 1}")
    if slab_mode not in SLAB_MODES:
        raise ValueError(f"unknown slab mode {slab_mode!r}")
    planes = slab_planes(layout, index, slab_mm)
    if volume.slope < 0 and slab_mode != "avg":
        slab_mode = "minip" if slab_mode == "mip" else "mip"
    taken = volume.voxels[(slice(None),) * layout.axis + (slice(planes.start, planes.stop),)]
    if len(planes) == 1:
        cut = np.take(taken, 0, axis=layout.axis)
    elif slab_mode == "mip":
        cut = floored(taken.max(axis=layout.axis), volume.floor)
    elif slab_mode == "minip":
        cut = floored(taken.min(axis=layout.axis), volume.floor)
    else:
        cut = _slab_mean(taken, layout.axis, volume.floor)
    remaining = [a for a in (0, 1, 2) if a != layout.axis]
    image = cut if remaining.index(layout.down_axis) == 0 else cut.T
    if layout.down_flip:
        image = image[::-1]
    if layout.right_flip:
        image = image[:, ::-1]
    return image


def reformat(volume: PreparedVolume, plane: str, index: int, slab_mm: float = 0.0,
             slab_mode: str = "avg") -> tuple[np.ndarray, PlaneLayout]:
    """Raw values of one plane (float32, display orientation) and its layout."""
    layout = plane_layout(volume.geometry, plane)
    if not 0 <= index < layout.count:
        raise IndexError(f"{plane} index must be between 0 and {layout.count - 1}")
    image = cut_plane(volume, layout, index, slab_mm, slab_mode)
    return np.ascontiguousarray(image, dtype=np.float32), layout


def reformat_image(volume: PreparedVolume, plane: str, index: int, window: Voi | None = None,
                   box: tuple[int, int] | None = None, max_px: int = 2048, slab_mm: float = 0.0,
                   slab_mode: str = "avg", region: Region = FULL) -> np.ndarray:
    """An 8-bit reformat (optionally a region of it) with square display pixels, through `window`
    (a window or a VOI LUT; None: the volume's default VOI) like a 2D frame."""
    layout = plane_layout(volume.geometry, plane)
    if not 0 <= index < layout.count:
        raise IndexError(f"{plane} index must be between 0 and {layout.count - 1}")
    # the plane's own values, cropped, windowed in chunks: a float32 copy of the whole plane first
    # (`reformat`) took 4 more bytes a pixel of every reformat, 256 MB of an 8192 x 8192 one
    raw = crop(cut_plane(volume, layout, index, slab_mm, slab_mode), region)
    grey = window_values(raw, None, volume, window,
                         invert=volume.photometric == "MONOCHROME1")
    width, height = output_size(grey.shape[0], grey.shape[1], layout.down_mm, layout.right_mm, box, max_px)
    return resample(grey, width, height)
