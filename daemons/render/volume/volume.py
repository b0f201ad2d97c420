"""A loaded record made ready for 3D rendering: voxels as stored plus what every render reuses.

Voxels stay in their stored integer type (a 512x512x555 int16 CT is 290 MB; as float32 it would
be 580 MB per record), and every value-dependent parameter (window, transfer function) is moved
to raw units instead. Per-brick minima and maxima let the ray casters skip space that cannot
change the result.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np

from daemons.render.imaging.pixels import Voi
from daemons.render.volume.geometry import VolumeGeometry, make_geometry

BRICK_SHIFT = 3  # bricks of 8 voxels per side
BRICK = 1 << BRICK_SHIFT
# Every parallel numba kernel runs under this lock: each already uses all cores, and some of
# numba's threading layers abort the process when two threads launch kernels at once.
PARALLEL_LOCK = threading.Lock()


#: Air in Hounsfield units; lower CT values are padding (see prepare_volume).
CT_AIR_HU = -1024.0
#: `floor` of a volume whose projections take every value as it is.
NO_FLOOR = -1e30


@dataclass(frozen=True)
class PreparedVolume:
    voxels: np.ndarray  # (frames, rows, cols), C-contiguous, stored dtype
    geometry: VolumeGeometry
    slope: float
    intercept: float
    brick_min: np.ndarray  # float64 (bz, by, bx): brick b spans voxels [8b, 8b + 8] (overlap 1)
    brick_max: np.ndarray
    raw_range: tuple[float, float]
    relative_range: tuple[float, float]  # modality values at the 1st and 99.5th percentile
    photometric: str = "MONOCHROME2"
    default_voi: Voi | None = None  # the record's default VOI (daemons.render.imaging.voi)
    floor: float = NO_FLOOR  # raw value below which projections (MIP, MinIP, average) count samples as it

    def to_modality(self, raw: np.ndarray) -> np.ndarray:
        return raw * self.slope + self.intercept


@numba.njit(parallel=True, cache=True)
def _brick_extremes(voxels, out_min, out_max):
    nz, ny, nx = voxels.shape
    bz, by, bx = out_min.shape
    for b in numba.prange(bz * by):
        zb = b // by
        yb = b % by
        z_end = min(zb * BRICK + BRICK, nz - 1)
        y_end = min(yb * BRICK + BRICK, ny - 1)
        for xb in range(bx):
            x_end = min(xb * BRICK + BRICK, nx - 1)
            lo = voxels[zb * BRICK, yb * BRICK, xb * BRICK]
            hi = lo
            for z in range(zb * BRICK, z_end + 1):
                for y in range(yb * BRICK, y_end + 1):
                    for x in range(xb * BRICK, x_end + 1):
                        value = voxels[z, y, x]
                        if value < lo:
                            lo = value
                        elif value > hi:
                            hi = value
            out_min[zb, yb, xb] = lo
            out_max[zb, yb, xb] = hi


def brick_extremes(voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum of every 8^3 brick, each brick including the first voxel layer of its
    upper neighbours, so that all eight corners of a trilinear sample fall in one brick."""
    shape = tuple(((n - 1) >> BRICK_SHIFT) + 1 for n in voxels.shape)
    out_min = np.empty(shape, dtype=np.float64)  # exact for every stored integer type
    out_max = np.empty(shape, dtype=np.float64)
    with PARALLEL_LOCK:
        _brick_extremes(voxels, out_min, out_max)
    return out_min, out_max


def prepare_volume(pixels: np.ndarray, spacing: tuple[float, float, float],
                   orientation: tuple[float, ...] | None = None, slope: float = 1.0,
                   intercept: float = 0.0, photometric: str = "MONOCHROME2",
                   default_voi: Voi | None = None,
                   slice_direction: tuple[float, float, float] | None = None,
                   lowest: float | None = None) -> PreparedVolume:
    """Everything the back ends need, computed once per loaded record. Projections count values
    below `lowest` (a modality value: CT_AIR_HU for a CT) as `lowest`: CT padding outside the
    reconstruction circle (-2000, -3024 HU) is no tissue, and a MinIP or average of a CT would
    otherwise show it instead of the patient. The voxels are not copied (the back ends clamp each
    sample); with a negative slope `lowest` is not applied."""
    if pixels.ndim != 3 or min(pixels.shape) < 1:
        raise ValueError(f"a volume needs shape (frames, rows, cols), got {pixels.shape}")
    if pixels.dtype.kind not in "iuf":
        raise ValueError(f"cannot render voxels of type {pixels.dtype}")
    if slope == 0:
        raise ValueError("rescale slope must not be zero")
    voxels = np.ascontiguousarray(pixels)
    floor = NO_FLOOR
    if lowest is not None and slope > 0:
        floor = (lowest - intercept) / slope
    brick_min, brick_max = brick_extremes(voxels)
    raw_range = (float(brick_min.min()), float(brick_max.max()))
    stride = max(1, round((voxels.size / 2_000_000) ** (1 / 3)))
    sample = np.maximum(voxels[::stride, ::stride, ::stride].astype(np.float64), floor) * slope + intercept
    low, high = np.percentile(sample, [1.0, 99.5])
    return PreparedVolume(
        voxels=voxels,
        geometry=make_geometry(voxels.shape, spacing, orientation, slice_direction),
        slope=float(slope), intercept=float(intercept),
        brick_min=brick_min, brick_max=brick_max,
        raw_range=raw_range, relative_range=(float(low), float(max(high, low + 1e-6))),
        photometric=photometric, default_voi=default_voi, floor=float(floor),
    )
