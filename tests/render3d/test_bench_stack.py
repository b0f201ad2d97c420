"""The 3D benchmark's source slices survive the file that carries them to a GPU machine
(`bench/gpu_machine.sh`): the volume derived there is the one derived here."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_3d import SLICES, SourceSlices, derived_volume


def test_saved_source_slices_derive_the_same_volume(tmp_path):
    rng = np.random.default_rng(3)
    source = SourceSlices(rng.integers(-1024, 3000, (4, 8, 6)).astype(np.int16), [0.0, 2.5, 5.0, 7.5],
                          (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (0.7, 0.8))
    source.save(tmp_path / "stack.xz")
    loaded = SourceSlices.load(tmp_path / "stack.xz")

    assert loaded.pixels.dtype == np.int16
    np.testing.assert_array_equal(loaded.pixels, source.pixels)
    assert (loaded.positions, loaded.orientation, loaded.pixel_spacing) == (
        source.positions, source.orientation, source.pixel_spacing)
    here, there = derived_volume(source), derived_volume(loaded)
    np.testing.assert_array_equal(here[0], there[0])
    assert here[1:] == there[1:]
    assert here[0].shape == (SLICES, 8, 6)
    assert here[1] == pytest.approx((7.5 / (SLICES - 1), 0.7, 0.8))
