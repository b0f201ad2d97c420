"""Fixtures of the 3D rendering tests."""

from __future__ import annotations

import pytest

from daemons.render.volume import prepare_volume
from tests.render3d.phantom import INTERCEPT, SHAPE, SPACING, sample_phantom


@pytest.fixture(scope="session")
def phantom():
    voxels = sample_phantom(SHAPE, SPACING, (1, 0, 0, 0, 1, 0))
    return prepare_volume(voxels, SPACING, (1, 0, 0, 0, 1, 0), 1.0, INTERCEPT)
