"""What a 3D rendering is, independent of the back end that computes it.

A back end supplies two primitives over a `RayGrid`: `project` (maximum, minimum or mean of the
trilinearly sampled raw values along each ray) and `composite` (front-to-back emission-absorption
with a transfer-function table and headlight Phong shading). This module turns a `ViewSpec` into
those calls and the raw results into 8-bit images, so windowing, presets and geometry are the
same for every back end.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from daemons.render.imaging.geometry import resample
from daemons.render.imaging.pixels import Voi, Window, display_bytes
from daemons.render.volume.geometry import RayGrid, ray_grid
from daemons.render.volume.transfer import PRESETS, TransferLut, build_lut, default_preset
from daemons.render.volume.volume import PreparedVolume

MODES = ("mip", "minip", "avg", "dvr")
MIP, MINIP, AVG = 0, 1, 2
PROJECTION_CODES = {"mip": MIP, "minip": MINIP, "avg": AVG}

# Headlight Phong shading shared by every back end (light and eye both at the viewer).
AMBIENT = 0.25
DIFFUSE = 0.6
SPECULAR = 0.15
SHININESS = 16.0
# Opacity from which the rest of a ray cannot change the 8-bit colour noticeably.
OPAQUE_STOP = 0.99
# Samples per voxel along the ray, and image scale, for each quality.
QUALITY = {"still": (1.0, 1.0), "interactive": (0.5, 0.5)}
# A preview is never scaled below this many pixels on its longer side (a client that already asks
# for a small preview gets it at the size it asked for).
PREVIEW_MIN_PX = 256
# Rays closer together than an eighth of a voxel on the image plane sample what their neighbours do (the
# volume holds nothing finer): a view is traced with at most this many rays per voxel across, on
# its finest axis, and resampled to the size asked for. So a 2048-pixel view of a zoomed-in corner
# costs what the voxels it shows cost (2048 x 2048 at zoom 20 of a 30-slice CT took 71 s).
MAX_RAYS_PER_VOXEL = 8.0
# Most samples one rendering may take (rays x the longest ray's samples), so that no request holds
# one of the node's 3D slots for minutes: beyond it fewer rays are traced and resampled. 2^29
# leaves a 512 x 512 still of a 512 x 512 x 1000 CT at full resolution.
MAX_SAMPLES = 2**29
# A projection's default window is measured on this view of the record (frontal, still, small):
# it spans the 1st to 99.5th percentile of the projected values, at least MIN_WINDOW_FRACTION of
# the record's own value spread wide (a MinIP of a whole CT is nearly all air).
DEFAULT_WINDOW_VIEW_PX = 128
DEFAULT_WINDOW_PERCENTILES = (1.0, 99.5)
MIN_WINDOW_FRACTION = 0.1


@dataclass(frozen=True)
class ViewSpec:
    """One requested 3D view; `window` (modality units, e.g. HU, or a VOI LUT) applies to MIP,
    MinIP and average (None: the projection's default, RayCaster.default_window)."""

    mode: str = "mip"
    width: int = 512
    height: int = 512
    azimuth: float = 0.0
    elevation: float = 0.0
    roll: float = 0.0
    zoom: float = 1.0
    preset: str | None = None
    window: Voi | None = None
    quality: str = "still"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}")
        if self.quality not in QUALITY:
            raise ValueError(f"unknown quality {self.quality!r}")

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) actually rendered: an interactive preview is half the size asked for,
        but not below PREVIEW_MIN_PX on its longer side."""
        longer = max(self.width, self.height)
        target = max(longer * QUALITY[self.quality][1], min(longer, PREVIEW_MIN_PX))
        scale = target / longer
        return max(1, round(self.width * scale)), max(1, round(self.height * scale))


def traced_size(volume: PreparedVolume, view: ViewSpec) -> tuple[int, int]:
    """(width, height) of the rays traced for `view`: its output size, fewer where more rays would
    be denser than MAX_RAYS_PER_VOXEL or take more than MAX_SAMPLES samples (`render` resamples)."""
    width, height = view.output_size
    geometry = volume.geometry
    pixel_mm = geometry.diagonal_mm / view.zoom / min(width, height)
    dense = MAX_RAYS_PER_VOXEL * pixel_mm / float(min(geometry.spacing_xyz))
    samples_per_ray = float(np.linalg.norm(geometry.size_xyz)) * QUALITY[view.quality][0]
    costly = math.sqrt(MAX_SAMPLES / (width * height * samples_per_ray))
    scale = min(1.0, dense, costly)
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def grid_for(volume: PreparedVolume, view: ViewSpec) -> RayGrid:
    width, height = traced_size(volume, view)
    return ray_grid(volume.geometry, width, height, view.azimuth, view.elevation, view.roll,
                    view.zoom, samples_per_voxel=QUALITY[view.quality][0], view=view.output_size)


def lut_for(volume: PreparedVolume, view: ViewSpec, grid: RayGrid, modality: str = "") -> TransferLut:
    name = view.preset or default_preset(modality)
    return build_lut(PRESETS[name], volume.raw_range, volume.slope, volume.intercept,
                     volume.relative_range, grid.step_mm)


def default_voi(volume: PreparedVolume) -> Voi:
    """The record's default VOI (the same one a 2D frame without its own uses: window with its
    function, or VOI LUT), else for a bare volume one spanning its 1st to 99.5th percentile."""
    if volume.default_voi is not None:
        return volume.default_voi
    low, high = volume.relative_range
    return Window((low + high) / 2.0, max(high - low, 1.0))


def projection_window(values: np.ndarray, volume: PreparedVolume) -> Window:
    """The default window of a projection (MIP, MinIP, average) whose rays gave modality values
    `values`: a window from the record's windowing (made for slices) shows a MIP as a white blob
    and a MinIP or average of a CT as black; this one spans what the projection holds."""
    floor, ceiling = volume.relative_range
    if values.size == 0:
        return Window((floor + ceiling) / 2.0, max(ceiling - floor, 1.0))
    low, high = (float(v) for v in np.percentile(values, DEFAULT_WINDOW_PERCENTILES))
    width = max(high - low, MIN_WINDOW_FRACTION * (ceiling - floor), 1.0)
    return Window(round((low + high) / 2.0, 1), round(width, 1))


def window_values(values: np.ndarray, hit: np.ndarray | None, volume: PreparedVolume,
                  window: Voi | None, invert: bool = False) -> np.ndarray:
    """Raw values to 8-bit through the same modality and VOI stages as 2D frames (PS3.3 C.11,
    `pixels.display_bytes`); rays that missed the volume (`hit` False) stay black; `hit` None: a
    reformat's plane, every value of which is in the volume."""
    out = display_bytes(values, lambda raw: volume.to_modality(raw.astype(np.float64)),
                        window or default_voi(volume), invert)
    if hit is not None:
        out[~hit] = 0
    return out


def rgb_to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


class RayCaster(ABC):
    """A 3D back end. `render` is thread-safe; back ends serialise their own hardware use."""

    name: str = "abstract"

    @abstractmethod
    def project(self, volume: PreparedVolume, grid: RayGrid, code: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw-value projection image (float32, H x W) and the mask of rays that met the volume."""

    @abstractmethod
    def composite(self, volume: PreparedVolume, grid: RayGrid, lut: TransferLut) -> np.ndarray:
        """Composited colour (float32, H x W x 3, 0..1) on a black background."""

    def projection(self, volume: PreparedVolume, view: ViewSpec) -> tuple[np.ndarray, np.ndarray]:
        """Raw values of a projection view and its hit mask (a negative rescale slope swaps the
        raw maximum and minimum, so MIP means the highest modality value either way)."""
        code = PROJECTION_CODES[view.mode]
        if volume.slope < 0 and code != AVG:
            code = MINIP if code == MIP else MIP
        return self.project(volume, grid_for(volume, view), code)

    def default_window(self, volume: PreparedVolume, mode: str) -> Window:
        """The window a projection `mode` is shown with when the request names none: measured
        on a small frontal view of the same projection (projection_window)."""
        size = DEFAULT_WINDOW_VIEW_PX
        values, hit = self.projection(volume, ViewSpec(mode=mode, width=size, height=size))
        return projection_window(volume.to_modality(values[hit].astype(np.float64)), volume)

    def render(self, volume: PreparedVolume, view: ViewSpec, modality: str = "") -> np.ndarray:
        """An (H, W) grey or (H, W, 3) RGB uint8 image of `view`."""
        if view.mode == "dvr":
            grid = grid_for(volume, view)
            image = rgb_to_uint8(self.composite(volume, grid, lut_for(volume, view, grid, modality)))
        else:
            window = view.window or self.default_window(volume, view.mode)
            values, hit = self.projection(volume, view)
            image = window_values(values, hit, volume, window, invert=volume.photometric == "MONOCHROME1")
        return resample(image, *view.output_size)
