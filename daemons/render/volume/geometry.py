"""Where each output pixel's ray starts and how it steps, in the volume's own index space.

Every back end consumes the same `RayGrid`, so the CPU and OpenGL renderings sample the volume at
exactly the same points; only the arithmetic that follows differs.

Conventions (DICOM patient coordinates, LPS: +x patient Left, +y Posterior, +z Superior):
- Index space is (x = column j, y = row i, z = frame k), voxel centres at integers, the volume
  spanning [-0.5, n - 0.5] on each axis (clamp-to-edge sampling, as a GL texture does).
- ImageOrientationPatient gives the patient direction of increasing column (row cosines) and of
  increasing row (column cosines); frames follow their cross product unless a slice direction is
  given (frames sorted by position along the normal, ascending).
- The camera at azimuth = elevation = roll = 0 looks at the patient's face (anterior view): it
  looks along +y (posterior), screen up is +z (superior), screen right is +x (patient's left), as
  a person facing the patient sees them. Positive azimuth walks the camera towards the patient's
  left (90 = left lateral view, 180 = posterior view), positive elevation raises it towards the
  head (90 = looking down from above), positive roll turns the camera clockwise about its view
  axis, so the image content turns counter-clockwise.
- Orthographic projection; zoom 1 fits the volume's diagonal into the shorter image side, so no
  rotation ever cuts the volume off.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

Vec3 = np.ndarray


@dataclass(frozen=True)
class VolumeGeometry:
    """Shape, spacing and patient orientation of a volume of shape (frames, rows, cols)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # (slice, row, column) spacing in mm
    axes: np.ndarray  # 3x3, columns: patient unit vectors of index x (column), y (row), z (frame)

    @property
    def size_xyz(self) -> np.ndarray:
        frames, rows, cols = self.shape
        return np.array([cols, rows, frames], dtype=np.float64)

    @property
    def spacing_xyz(self) -> np.ndarray:
        slice_mm, row_mm, col_mm = self.spacing
        return np.array([col_mm, row_mm, slice_mm], dtype=np.float64)

    @property
    def index_to_mm(self) -> np.ndarray:
        """Maps an index-space offset to a patient-space offset in mm."""
        return self.axes @ np.diag(self.spacing_xyz)

    @property
    def mm_to_index(self) -> np.ndarray:
        return np.linalg.inv(self.index_to_mm)

    @property
    def extent_mm(self) -> np.ndarray:
        return self.size_xyz * self.spacing_xyz

    @property
    def diagonal_mm(self) -> float:
        return float(np.linalg.norm(self.extent_mm))

    @property
    def center_index(self) -> np.ndarray:
        return (self.size_xyz - 1.0) / 2.0


def patient_axes(orientation: tuple[float, ...] | None,
                 slice_direction: tuple[float, float, float] | None = None) -> np.ndarray:
    """3x3 matrix whose columns are the patient directions of index x, y, z.

    A missing or degenerate orientation falls back to the standard axial one (rows along +x,
    columns along +y), which is what a record without ImageOrientationPatient is assumed to be.
    """
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, 1.0, 0.0])
    if orientation is not None and len(orientation) == 6:
        cand_row = np.asarray(orientation[:3], dtype=np.float64)
        cand_col = np.asarray(orientation[3:], dtype=np.float64)
        if np.linalg.norm(cand_row) > 1e-6 and np.linalg.norm(cand_col) > 1e-6:
            cand_row = cand_row / np.linalg.norm(cand_row)
            cand_col = cand_col - cand_row * float(cand_row @ cand_col)
            if np.linalg.norm(cand_col) > 1e-6:
                row, col = cand_row, cand_col / np.linalg.norm(cand_col)
    normal = np.cross(row, col)
    if slice_direction is not None:
        given = np.asarray(slice_direction, dtype=np.float64)
        if np.linalg.norm(given) > 1e-6 and float(given @ normal) < 0:
            normal = -normal
    return np.stack([row, col, normal], axis=1)


def make_geometry(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                  orientation: tuple[float, ...] | None = None,
                  slice_direction: tuple[float, float, float] | None = None) -> VolumeGeometry:
    if any(float(s) <= 0 or not math.isfinite(float(s)) for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return VolumeGeometry(tuple(int(n) for n in shape),  # type: ignore[arg-type]
                          tuple(float(s) for s in spacing),  # type: ignore[arg-type]
                          patient_axes(orientation, slice_direction))


def camera_axes(azimuth: float, elevation: float, roll: float) -> tuple[Vec3, Vec3, Vec3]:
    """(right, up, forward) unit vectors of the camera in patient coordinates (see module doc)."""
    el = math.radians(elevation)
    right = np.array([1.0, 0.0, 0.0])
    up = np.array([0.0, math.sin(el), math.cos(el)])
    forward = np.array([0.0, math.cos(el), -math.sin(el)])
    az = math.radians(azimuth)
    rz = np.array([[math.cos(az), -math.sin(az), 0.0],
                   [math.sin(az), math.cos(az), 0.0],
                   [0.0, 0.0, 1.0]])
    right, up, forward = rz @ right, rz @ up, rz @ forward
    ro = math.radians(roll)
    right, up = math.cos(ro) * right - math.sin(ro) * up, math.sin(ro) * right + math.cos(ro) * up
    return right, up, forward


@dataclass(frozen=True)
class RayGrid:
    """Rays of a width x height orthographic image, all in index space.

    The ray of pixel (u, v) (column u, row v from the top) samples the points
    `origin + u * du + v * dv + k * step` for the integers k with t_near <= k < t_far, where
    [t_near, t_far] is where the ray is in the volume box; k = 0 is the plane through the volume
    centre, so samples lie on planes shared by every ray.
    """

    width: int
    height: int
    origin: np.ndarray
    du: np.ndarray
    dv: np.ndarray
    step: np.ndarray
    step_mm: float
    box_hi: np.ndarray  # the box is [-0.5, box_hi] on each axis
    light_index: np.ndarray  # mm_to_index @ (towards the viewer): gradient . this = n . L (unnormalised)
    gradient_to_mm: np.ndarray  # maps an index-space gradient to a patient-space gradient


def ray_grid(geometry: VolumeGeometry, width: int, height: int, azimuth: float = 0.0,
             elevation: float = 0.0, roll: float = 0.0, zoom: float = 1.0,
             samples_per_voxel: float = 1.0, view: tuple[int, int] | None = None) -> RayGrid:
    """The rays for one view; `samples_per_voxel` is per index-space unit along the ray. `view`:
    the (width, height) of the image the rays cover when they are fewer (default: width x height);
    the width x height rays then spread over exactly that view, so that resampling them to its
    size shows what a ray per pixel would, in place."""
    if width < 1 or height < 1:
        raise ValueError("image size must be positive")
    if zoom <= 0 or samples_per_voxel <= 0:
        raise ValueError("zoom and samples_per_voxel must be positive")
    view_width, view_height = view or (width, height)
    right, up, forward = camera_axes(azimuth, elevation, roll)
    to_index = geometry.mm_to_index
    view_pixel_mm = geometry.diagonal_mm / zoom / min(view_width, view_height)
    pixel_w, pixel_h = view_pixel_mm * view_width / width, view_pixel_mm * view_height / height
    du = to_index @ (right * pixel_w)
    dv = to_index @ (-up * pixel_h)
    first = (0.5 - width / 2.0) * pixel_w * right + (height / 2.0 - 0.5) * pixel_h * up
    origin = geometry.center_index + to_index @ first
    voxels_per_mm = float(np.linalg.norm(to_index @ forward))
    step_mm = 1.0 / (voxels_per_mm * samples_per_voxel)
    return RayGrid(
        width=int(width), height=int(height), origin=origin, du=du, dv=dv,
        step=to_index @ (forward * step_mm), step_mm=step_mm,
        box_hi=geometry.size_xyz - 0.5,
        light_index=to_index @ (-forward), gradient_to_mm=to_index.T,
    )


_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # negative and positive x, y, z in LPS
LABEL_THRESHOLD = 0.25  # components smaller than this do not name a direction


def direction_label(direction: Vec3) -> str:
    """Patient direction letters of a vector, strongest first (e.g. "L", "LA", "SLP").

    This is how viewers label the edges of an image: an oblique direction gets every axis it
    leans along noticeably."""
    direction = np.asarray(direction, dtype=np.float64)
    order = np.argsort(-np.abs(direction), kind="stable")
    return "".join(_LETTERS[a][int(direction[a] > 0)] for a in order
                   if abs(direction[a]) >= LABEL_THRESHOLD)


def edge_labels(right: Vec3, down: Vec3) -> dict[str, str]:
    """Labels of the four image edges from the patient directions of screen right and down."""
    right, down = np.asarray(right, dtype=np.float64), np.asarray(down, dtype=np.float64)
    return {"top": direction_label(-down), "right": direction_label(right),
            "bottom": direction_label(down), "left": direction_label(-right)}


def view_labels(azimuth: float, elevation: float, roll: float) -> dict[str, str]:
    """Edge labels of a 3D view (the anterior view reads top S, right L, bottom I, left R)."""
    right, up, _ = camera_axes(azimuth, elevation, roll)
    return edge_labels(right, -up)


def image_labels(orientation: tuple[float, ...] | list[float] | None) -> dict[str, str] | None:
    """Edge labels of a stored image from its ImageOrientationPatient (columns run along the row
    cosines, rows along the column cosines); None when it is missing or degenerate, so nothing
    is labelled that is not known.

    Every 2D image answer carries them, and a series has one orientation: they are computed once
    per orientation (the NumPy steps cost a third of a cached image's whole request otherwise)."""
    if orientation is None or len(orientation) != 6:
        return None
    labels = _orientation_labels(tuple(float(v) for v in orientation))
    return None if labels is None else dict(labels)


@functools.lru_cache(maxsize=1024)
def _orientation_labels(orientation: tuple[float, ...]) -> dict[str, str] | None:
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    if min(np.linalg.norm(row), np.linalg.norm(col), np.linalg.norm(np.cross(row, col))) < 1e-6:
        return None
    axes = patient_axes(tuple(float(v) for v in orientation))
    return edge_labels(axes[:, 0], axes[:, 1])
