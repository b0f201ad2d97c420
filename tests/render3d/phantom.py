"""A synthetic phantom with known spheres, anisotropic spacing and a patient orientation.

Spheres are defined in patient coordinates (LPS, mm) and sampled into a voxel grid, so a test can
say where each must appear in any view, and the same object can be "acquired" with different
orientations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daemons.render.volume.geometry import make_geometry

SHAPE = (40, 72, 64)  # frames, rows, cols
SPACING = (2.0, 0.8, 1.0)  # slice, row, column mm: deliberately anisotropic
INTERCEPT = -1000.0


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]  # patient mm, relative to the volume centre
    radius: float
    hu: float


SPHERES = (
    Sphere((-10.0, -8.0, 14.0), 9.0, 1000.0),  # patient's right, anterior, superior
    Sphere((9.0, 10.0, -16.0), 6.0, 400.0),  # left, posterior, inferior
)


def sample_phantom(shape, spacing, orientation, spheres=SPHERES) -> np.ndarray:
    """Raw int16 voxels (HU + 1000) of `spheres` for one acquisition geometry."""
    geometry = make_geometry(shape, spacing, orientation)
    k, i, j = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    index = np.stack([j, i, k], axis=-1) - geometry.center_index
    patient = index @ geometry.index_to_mm.T
    raw = np.zeros(shape, dtype=np.int16)
    for sphere in spheres:
        inside = np.linalg.norm(patient - np.asarray(sphere.center), axis=-1) <= sphere.radius
        raw[inside] = int(sphere.hu - INTERCEPT)
    return raw


def image_mm_per_pixel(volume, width: int, height: int, zoom: float = 1.0) -> float:
    return volume.geometry.diagonal_mm / zoom / min(width, height)


def blob(mask: np.ndarray) -> tuple[float, float, int, int]:
    """(centre column, centre row, width, height) in pixels of the True pixels of `mask`."""
    rows, cols = np.nonzero(mask)
    assert rows.size, "the object is not in the image"
    return (float(cols.min() + cols.max()) / 2, float(rows.min() + rows.max()) / 2,
            int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1))
