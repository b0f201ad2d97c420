"""The default windows of 3D projections and the default DVR preset (issue 15, "3D defaults").

A slice window (or the automatic one of the upload) is made for single slices: on a MIP it shows
a white blob, on a MinIP or average of a CT a black square. A projection's default is measured
on the projection itself (raycast.projection_window), and a DVR view starts with its modality's
preset (transfer.default_preset).
"""

from __future__ import annotations

import numpy as np
import pytest

from daemons.render.imaging.pixels import Window
from daemons.render.volume import ViewSpec, prepare_volume
from daemons.render.volume.cpu import CpuRayCaster
from daemons.render.volume.raycast import grid_for, lut_for
from daemons.render.volume.transfer import PRESETS, default_preset, presets_for
from daemons.render.volume.volume import CT_AIR_HU

CASTER = CpuRayCaster()
SIZE = 96
SLICE_WINDOW = Window(40.0, 400.0)  # a soft-tissue slice window, as a CT file would carry


def ct_like_volume(seed: int = 7):
    """A CT-like body: padding (-3024 HU) outside the reconstruction circle, air, soft tissue
    with noise, two lungs, a spine and a contrast-filled aorta; raw = HU + 1024."""
    rng = np.random.default_rng(seed)
    frames, rows, cols = 40, 96, 96
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    cy, cx = rows / 2, cols / 2
    hu = np.full((rows, cols), -1000.0)
    hu[((x - cx) / 38) ** 2 + ((y - cy) / 28) ** 2 <= 1] = 40.0
    for side in (-1, 1):
        hu[((x - cx - side * 17) / 12) ** 2 + ((y - cy + 2) / 16) ** 2 <= 1] = -850.0
    hu[(x - cx) ** 2 + (y - cy - 18) ** 2 <= 25] = 700.0
    hu[(x - cx - 5) ** 2 + (y - cy - 8) ** 2 <= 9] = 300.0
    body = np.repeat(hu[None], frames, axis=0) + rng.normal(0, 15, (frames, rows, cols))
    body[:, (x - cx) ** 2 + (y - cy) ** 2 > 46 ** 2] = -3024.0
    raw = np.rint(body + 1024).astype(np.int16)
    return prepare_volume(raw, (2.5, 1.0, 1.0), (1, 0, 0, 0, 1, 0), 1.0, -1024.0, default_voi=SLICE_WINDOW,
                          lowest=CT_AIR_HU)


@pytest.fixture(scope="module")
def ct():
    return ct_like_volume()


def hit_pixels(volume, view: ViewSpec, image: np.ndarray) -> np.ndarray:
    _, hit = CASTER.projection(volume, view)
    return image[hit]


def mid_grey(pixels: np.ndarray) -> float:
    return float(np.mean((pixels > 40) & (pixels < 215)))


@pytest.mark.parametrize("mode", ["mip", "minip", "avg"])
def test_a_projection_without_a_window_shows_grey_levels_not_a_blob(ct, mode):
    view = ViewSpec(mode=mode, width=SIZE, height=SIZE, azimuth=30, elevation=20)
    pixels = hit_pixels(ct, view, CASTER.render(ct, view))
    assert np.mean(pixels == 255) < 0.05, "saturated"
    assert np.mean(pixels == 0) < 0.6, "black"
    assert mid_grey(pixels) > 0.25


def test_the_slice_window_would_saturate_a_mip_and_blacken_a_minip(ct):
    """Why the default is measured on the projection: the record's slice window on the same views."""
    mip = ViewSpec(mode="mip", width=SIZE, height=SIZE, window=SLICE_WINDOW)
    minip = ViewSpec(mode="minip", width=SIZE, height=SIZE, window=SLICE_WINDOW)
    assert np.mean(hit_pixels(ct, mip, CASTER.render(ct, mip)) == 255) > 0.1
    assert np.mean(hit_pixels(ct, minip, CASTER.render(ct, minip)) == 0) > 0.9


def test_the_default_window_is_one_per_mode_whatever_the_angle(ct):
    """Measured on one frontal view, so rotating keeps the window a viewer's drag started from."""
    window = CASTER.default_window(ct, "mip")
    turned = ViewSpec(mode="mip", width=SIZE, height=SIZE, azimuth=75, elevation=-30)
    np.testing.assert_array_equal(CASTER.render(ct, turned),
                                  CASTER.render(ct, ViewSpec(**{**turned.__dict__, "window": window})))
    assert window.width > 3 * SLICE_WINDOW.width  # air to bone and contrast
    assert CASTER.default_window(ct, "minip").center < -500  # air and lung, padding left out


def test_ct_padding_counts_as_air_in_projections_without_a_copy():
    """Padding (-3024 HU) outside the reconstruction circle is the minimum of every ray crossing it:
    left as it is, a MinIP of a CT is black. Projections count it as air; the voxels stay as stored."""
    padded = ct_like_volume()
    assert padded.to_modality(np.asarray(padded.voxels.min(), dtype=np.float64)) == -3024.0  # not copied
    assert padded.to_modality(np.asarray(padded.floor)) == CT_AIR_HU
    assert padded.relative_range[0] >= CT_AIR_HU
    view = ViewSpec(mode="minip", width=SIZE, height=SIZE, window=Window(-1000.0, 400.0))
    values, hit = CASTER.projection(padded, view)
    assert padded.to_modality(values[hit].astype(np.float64)).min() >= CT_AIR_HU
    plain = prepare_volume(padded.voxels, (2.5, 1.0, 1.0), (1, 0, 0, 0, 1, 0), 1.0, -1024.0)
    assert padded.to_modality(CASTER.projection(plain, view)[0][hit].astype(np.float64)).min() == -3024.0


def test_dvr_preset_follows_the_modality_and_mr_has_its_own():
    assert default_preset("CT") == "ct_bone"
    assert default_preset("mr") == "mr_soft_tissue"
    assert PRESETS[default_preset("PT")].units == "relative"  # no absolute scale: never a HU preset
    mr = presets_for("MR")
    assert len(mr) >= 2 and all(PRESETS[n].modality == "MR" and PRESETS[n].units == "relative" for n in mr)
    assert all(PRESETS[n].modality == "CT" for n in presets_for("CT"))
    assert set(presets_for("")) == set(PRESETS)


def mr_like_volume():
    """An MR-like head: noisy background near 0, tissue 300..600, bright vessels ~1200 (no HU)."""
    rng = np.random.default_rng(5)
    frames, rows, cols = 30, 80, 80
    z, y, x = np.mgrid[0:frames, 0:rows, 0:cols].astype(np.float64)
    values = rng.normal(20, 8, (frames, rows, cols))
    head = ((x - 40) / 34) ** 2 + ((y - 40) / 36) ** 2 + ((z - 15) / 16) ** 2 <= 1
    values[head] = 300 + 300 * rng.random(int(head.sum()))
    values[head & ((x - 40) ** 2 + (y - 52) ** 2 <= 6)] = 1200.0
    return prepare_volume(np.clip(values, 0, 4095).astype(np.uint16), (1.5, 1.0, 1.0), (1, 0, 0, 0, 1, 0))


@pytest.mark.parametrize("preset", ["mr_soft_tissue", "mr_angio"])
def test_mr_presets_show_the_mr(preset):
    volume = mr_like_volume()
    view = ViewSpec(mode="dvr", preset=preset, width=SIZE, height=SIZE)
    image = CASTER.render(volume, view, "MR")
    assert image.max() > 150 and np.mean(image.max(axis=-1) > 30) > 0.05


def test_an_mr_dvr_without_a_preset_uses_the_mr_default():
    volume = mr_like_volume()
    view = ViewSpec(mode="dvr", width=SIZE, height=SIZE)
    grid = grid_for(volume, view)
    np.testing.assert_array_equal(lut_for(volume, view, grid, "MR").table,
                                  lut_for(volume, ViewSpec(mode="dvr", preset="mr_soft_tissue"), grid).table)
