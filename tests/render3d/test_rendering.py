"""Geometry and semantics of the 3D ray casting, on the CPU back end (always available)."""

from __future__ import annotations

import numpy as np
import pytest

from daemons.render.imaging.pixels import Window
from daemons.render.volume import PRESETS, ViewSpec, camera_axes, prepare_volume
from daemons.render.volume.cpu import CpuRayCaster
from daemons.render.volume.geometry import make_geometry, ray_grid, view_labels
from daemons.render.volume.raycast import (
    AMBIENT,
    AVG,
    DIFFUSE,
    MAX_SAMPLES,
    MINIP,
    MIP,
    SPECULAR,
    grid_for,
    lut_for,
    rgb_to_uint8,
    traced_size,
    window_values,
)
from tests.render3d.phantom import INTERCEPT, SHAPE, SPACING, SPHERES, blob, sample_phantom

CASTER = CpuRayCaster()
SIZE = 256


def project(volume, code, **view):
    spec = ViewSpec(width=SIZE, height=SIZE, **view)
    grid = grid_for(volume, spec)
    values, hit = CASTER.project(volume, grid, code)
    return values, hit, grid


def expected_pixel(center_mm, azimuth, elevation, roll, pixel_mm):
    right, up, _ = camera_axes(azimuth, elevation, roll)
    center = np.asarray(center_mm)
    return (float(center @ right) / pixel_mm + SIZE / 2 - 0.5,
            SIZE / 2 - 0.5 - float(center @ up) / pixel_mm)


def voxel_extent_along(volume, direction):
    """How far one voxel reaches along a screen direction, in mm (the 'one voxel' tolerance)."""
    axes = volume.geometry.axes
    return max(abs(float(axes[:, a] @ direction)) * volume.geometry.spacing_xyz[a] for a in range(3))


@pytest.mark.parametrize("azimuth,elevation,roll", [
    (0, 0, 0), (90, 0, 0), (180, 0, 0), (-90, 0, 0), (0, 90, 0), (0, -90, 0), (37, 23, 15), (-120, -40, 70),
])
def test_spheres_appear_where_and_as_large_as_they_are(phantom, azimuth, elevation, roll):
    values, _, grid = project(phantom, MIP, azimuth=azimuth, elevation=elevation, roll=roll)
    pixel_mm = phantom.geometry.diagonal_mm / SIZE
    right, up, _ = camera_axes(azimuth, elevation, roll)
    tol_x = voxel_extent_along(phantom, right) + pixel_mm
    tol_y = voxel_extent_along(phantom, up) + pixel_mm
    for sphere in SPHERES:
        cx, cy = expected_pixel(sphere.center, azimuth, elevation, roll, pixel_mm)
        reach = (sphere.radius + 4) / pixel_mm
        rows = slice(max(0, int(cy - reach)), int(cy + reach) + 1)
        cols = slice(max(0, int(cx - reach)), int(cx + reach) + 1)
        half = (sphere.hu - INTERCEPT) / 2
        bx, by, width, height = blob(values[rows, cols] > half)
        assert abs(bx + cols.start - cx) * pixel_mm <= tol_x
        assert abs(by + rows.start - cy) * pixel_mm <= tol_y
        assert abs(width * pixel_mm - 2 * sphere.radius) <= tol_x
        assert abs(height * pixel_mm - 2 * sphere.radius) <= tol_y


def test_anterior_view_shows_the_patient_as_seen_from_the_front():
    """Patient's right on the viewer's left, head up: the right-superior sphere is top-left, the
    left-inferior one bottom-right."""
    centres = []
    for sphere in SPHERES:
        voxels = sample_phantom(SHAPE, SPACING, (1, 0, 0, 0, 1, 0), (sphere,))
        values, _, _ = project(prepare_volume(voxels, SPACING, (1, 0, 0, 0, 1, 0)), MIP)
        centres.append(blob(values > (sphere.hu - INTERCEPT) / 2)[:2])
    (right_x, superior_y), (left_x, inferior_y) = centres
    assert right_x < SIZE / 2 < left_x
    assert superior_y < SIZE / 2 < inferior_y
    assert view_labels(0, 0, 0) == {"top": "S", "right": "L", "bottom": "I", "left": "R"}


@pytest.mark.parametrize("azimuth,elevation,roll,labels", [
    (90, 0, 0, {"top": "S", "right": "P", "bottom": "I", "left": "A"}),  # from the patient's left
    (180, 0, 0, {"top": "S", "right": "R", "bottom": "I", "left": "L"}),  # from behind
    (0, 90, 0, {"top": "P", "right": "L", "bottom": "A", "left": "R"}),  # from above the head
    (0, 0, 90, {"top": "L", "right": "I", "bottom": "R", "left": "S"}),  # content turned left
    (45, 0, 0, {"top": "S", "right": "LP", "bottom": "I", "left": "RA"}),
])
def test_edge_labels_name_where_the_patient_is(phantom, azimuth, elevation, roll, labels):
    """The labels agree with the image: the right-anterior-superior sphere lies towards the
    edges whose labels carry R, A or S."""
    assert view_labels(azimuth, elevation, roll) == labels
    values, _, _ = project(phantom, MIP, azimuth=azimuth, elevation=elevation, roll=roll)
    cx, cy, _, _ = blob(values > (SPHERES[0].hu - INTERCEPT) * 0.9)
    toward = {"left": cx < SIZE / 2 - 2, "right": cx > SIZE / 2 + 2,
              "top": cy < SIZE / 2 - 2, "bottom": cy > SIZE / 2 + 2}
    for edge, label in labels.items():
        if toward[edge]:
            assert set(label) & set("RAS"), (edge, label)


def test_the_whole_volume_is_traversed_with_its_true_extent(phantom):
    """Rays reach the far side (a plate at the back shows at full value) and the footprint has
    the volume's size in mm (a cube instead of the real spacing would not)."""
    voxels = np.zeros(SHAPE, np.int16)
    voxels[:, -2:, :] = 3000  # the two most posterior rows
    volume = prepare_volume(voxels, SPACING, (1, 0, 0, 0, 1, 0))
    values, hit, _ = project(volume, MIP)
    pixel_mm = volume.geometry.diagonal_mm / SIZE
    _, _, width, height = blob(hit)
    frames, _, cols = SHAPE
    assert abs(width * pixel_mm - cols * SPACING[2]) <= pixel_mm
    assert abs(height * pixel_mm - frames * SPACING[0]) <= pixel_mm
    assert np.all(values[hit] == 3000)
    front, front_hit, _ = project(volume, MIP, azimuth=180)
    assert np.array_equal(front_hit, hit[:, ::-1]) and np.all(front[front_hit] == 3000)


def test_same_patient_acquired_differently_renders_the_same(phantom):
    """A sagittal acquisition of the same spheres gives the anterior view of the axial one."""
    sagittal_iop = (0, 1, 0, 0, 0, -1)
    shape, spacing = (64, 40, 72), (1.0, 2.0, 0.8)
    voxels = sample_phantom(shape, spacing, sagittal_iop)
    sagittal = prepare_volume(voxels, spacing, sagittal_iop, 1.0, INTERCEPT)
    axial_values, _, _ = project(phantom, MIP)
    sagittal_values, _, _ = project(sagittal, MIP)
    for sphere in SPHERES:
        level = (sphere.hu - INTERCEPT) / 2
        band = (sphere.hu - INTERCEPT) * 1.1
        a = blob((axial_values > level) & (axial_values < band))
        b = blob((sagittal_values > level) & (sagittal_values < band))
        pixel_mm = phantom.geometry.diagonal_mm / SIZE
        assert abs(a[0] - b[0]) * pixel_mm <= 1.0 + pixel_mm
        assert abs(a[1] - b[1]) * pixel_mm <= 2.0 + pixel_mm


@pytest.mark.parametrize("view", [dict(), dict(azimuth=33, elevation=-21, roll=8), dict(azimuth=200, zoom=2.5)])
def test_mip_above_average_above_minip_everywhere(view):
    rng = np.random.default_rng(7)
    voxels = rng.integers(-1000, 2000, size=(30, 34, 38)).astype(np.int16)
    volume = prepare_volume(voxels, (1.7, 0.6, 0.9), (0.8, 0.6, 0, -0.6, 0.8, 0), 1.0, -1024.0)
    mip, mip_hit, _ = project(volume, MIP, **view)
    avg, avg_hit, _ = project(volume, AVG, **view)
    minip, minip_hit, _ = project(volume, MINIP, **view)
    assert mip_hit.any() and np.array_equal(mip_hit, avg_hit) and np.array_equal(avg_hit, minip_hit)
    assert np.all(mip[mip_hit] >= avg[mip_hit] - 1e-3)
    assert np.all(avg[mip_hit] >= minip[mip_hit] - 1e-3)
    assert (mip[mip_hit] > minip[mip_hit]).mean() > 0.9  # rays clipping a corner may hold one sample
    images = {mode: CASTER.render(volume, ViewSpec(mode=mode, width=SIZE, height=SIZE,
                                                   window=Window(0, 2000), **view))
              for mode in ("mip", "avg", "minip")}
    assert np.all(images["mip"] >= images["avg"]) and np.all(images["avg"] >= images["minip"])


def test_brick_skipping_changes_nothing(phantom):
    """Empty-space skipping is exact: with no brick information the MIP is the same."""
    values, _, grid = project(phantom, MIP, azimuth=21, elevation=12)
    blind = phantom.__class__(**{**phantom.__dict__,
                                 "brick_max": np.full_like(phantom.brick_max, np.inf),
                                 "brick_min": np.full_like(phantom.brick_min, -np.inf)})
    unskipped, _ = CASTER.project(blind, grid, MIP)
    assert np.array_equal(values, unskipped)


def test_dvr_shows_the_nearest_object_first():
    """Two spheres on one line of sight: the anterior one hides the posterior one, and vice versa."""
    from tests.render3d.phantom import Sphere

    spheres = (Sphere((0.0, -14.0, 0.0), 8.0, 1500.0), Sphere((0.0, 14.0, 0.0), 8.0, 330.0))
    voxels = sample_phantom(SHAPE, SPACING, (1, 0, 0, 0, 1, 0), spheres)
    volume = prepare_volume(voxels, SPACING, (1, 0, 0, 0, 1, 0), 1.0, INTERCEPT)

    def blue_to_red(azimuth):
        image = CASTER.render(volume, ViewSpec(mode="dvr", preset="ct_bone", width=SIZE, height=SIZE,
                                               azimuth=azimuth)).astype(np.float64)
        seen = image[..., 0] > 30
        return float(np.mean(image[..., 2][seen] / image[..., 0][seen]))

    front, back = blue_to_red(0), blue_to_red(180)
    assert front > 0.85  # the dense, white sphere in front
    assert back < front - 0.1  # from behind, the less dense, warmer one


def test_opacity_correction_keeps_density_across_sampling_rates():
    """A 6.4 mm layer of soft tissue looks the same in a preview (half the samples) and a still."""
    voxels = np.full((40, 8, 64), 1044, np.int16)  # 20 HU
    volume = prepare_volume(voxels, (2.0, 0.8, 1.0), (1, 0, 0, 0, 1, 0), 1.0, -1024.0)
    still = CASTER.render(volume, ViewSpec(mode="dvr", preset="ct_soft_tissue", width=128, height=128))
    preview = CASTER.render(volume, ViewSpec(mode="dvr", preset="ct_soft_tissue", width=128, height=128,
                                             quality="interactive"))
    opacity = 1 - (1 - 0.08) ** 6.4
    expected = (0.80 * (AMBIENT + DIFFUSE) + SPECULAR) * opacity * 255  # 20 HU, lit head-on
    assert abs(int(still[64, 64, 0]) - expected) <= 0.05 * expected
    centre = preview.shape[0] // 2
    assert abs(int(preview[centre, centre, 0]) - int(still[64, 64, 0])) <= 3


def test_quality_still_is_deterministic_and_interactive_is_smaller(phantom):
    view = dict(mode="dvr", preset="ct_bone", width=800, height=480, azimuth=15, elevation=10)
    first = CASTER.render(phantom, ViewSpec(**view))
    assert first.shape == (480, 800, 3)
    assert np.array_equal(first, CASTER.render(phantom, ViewSpec(**view)))
    assert CASTER.render(phantom, ViewSpec(quality="interactive", **view)).shape == (240, 400, 3)


@pytest.mark.parametrize("preset", ["ct_bone", "ct_soft_tissue", "ct_lung", "ct_angio", "mr_soft_tissue", "mr_angio"])
def test_every_required_preset_renders_something(phantom, preset):
    assert preset in PRESETS
    image = CASTER.render(phantom, ViewSpec(mode="dvr", preset=preset, width=96, height=96))
    if preset != "ct_lung":  # the phantom has no lung-density tissue, only its edges
        assert image.max() > 50


def test_window_applies_to_projections(phantom):
    narrow = CASTER.render(phantom, ViewSpec(width=96, height=96, window=Window(0, 100)))
    wide = CASTER.render(phantom, ViewSpec(width=96, height=96, window=Window(1000, 4000)))
    assert narrow.max() == 255 and wide.max() < 200


def test_view_spec_refuses_unknown_names():
    with pytest.raises(ValueError):
        ViewSpec(mode="xray")
    with pytest.raises(ValueError):
        ViewSpec(mode="dvr", preset="ct_everything")


def test_default_transfer_function_follows_the_modality(phantom):
    from daemons.render.volume.raycast import lut_for

    view = ViewSpec(mode="dvr")
    grid = grid_for(phantom, view)
    mr = lut_for(phantom, view, grid, "MR")
    assert np.array_equal(mr.table, lut_for(phantom, ViewSpec(mode="dvr", preset="mr_soft_tissue"), grid).table)
    assert np.array_equal(lut_for(phantom, view, grid, "CT").table,
                          lut_for(phantom, ViewSpec(mode="dvr", preset="ct_bone"), grid).table)


@pytest.mark.parametrize("mode", ["mip", "minip", "avg", "dvr"])
def test_negative_rescale_slope_means_the_same_tissue(mode):
    """Stored v with slope -1 is the same image as stored -v with slope 1."""
    rng = np.random.default_rng(3)
    voxels = rng.integers(-1500, 1500, size=(12, 14, 16)).astype(np.int16)
    negative = prepare_volume(voxels, (2.0, 1.0, 1.0), slope=-1.0)
    positive = prepare_volume(-voxels, (2.0, 1.0, 1.0), slope=1.0)
    view = ViewSpec(mode=mode, width=48, height=48, azimuth=20, window=Window(0, 2000), preset="ct_bone"
                    if mode == "dvr" else None)
    a, b = CASTER.render(negative, view), CASTER.render(positive, view)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("mode, azimuth", [("mip", 0), ("mip", 37), ("dvr", 0), ("dvr", 37)])
def test_a_zoomed_in_view_traces_no_more_rays_than_the_voxels_hold(phantom, mode, azimuth):
    """Every pixel was a ray: 2048 x 2048 at zoom 20 of a 30-slice CT held a 3D slot for 71 s,
    though its rays were 50 to a voxel. Traced at 8 per voxel and resampled, the image is the one
    the full trace gives (within a grey level or two at edges)."""
    view = ViewSpec(mode=mode, width=512, height=512, zoom=6, azimuth=azimuth, elevation=10,
                    window=None if mode == "dvr" else Window(0, 2000))
    assert traced_size(phantom, view) == (195, 195)
    image = CASTER.render(phantom, view, "CT")
    assert image.shape[:2] == (512, 512)
    grid = ray_grid(phantom.geometry, 512, 512, azimuth, 10, 0, 6)
    if mode == "dvr":
        full = rgb_to_uint8(CASTER.composite(phantom, grid, lut_for(phantom, view, grid, "CT")))
    else:
        full = window_values(*CASTER.project(phantom, grid, MIP), phantom, view.window)
    difference = np.abs(image.astype(int) - full.astype(int))
    assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 3


def test_fewer_rays_cover_a_wide_view_in_place(phantom):
    """Each side of the traced image was floored on its own and the rays spaced by the shorter one,
    so a wide view came back shifted by up to 3 pixels; the rays now spread over the view asked for."""
    view = ViewSpec(width=701, height=253, zoom=6, azimuth=37, elevation=10, window=Window(0, 2000))
    assert traced_size(phantom, view) == (542, 195)
    image = CASTER.render(phantom, view, "CT")
    full = window_values(*CASTER.project(phantom, ray_grid(phantom.geometry, 701, 253, 37, 10, 0, 6), MIP),
                         phantom, view.window)
    difference = np.abs(image.astype(int) - full.astype(int))
    assert difference.mean() < 0.1 and np.percentile(difference, 99) <= 1


def test_views_the_voxels_can_fill_are_traced_whole(phantom):
    for view in (ViewSpec(width=256, height=256), ViewSpec(width=300, height=200, azimuth=37, zoom=2),
                 ViewSpec(mode="dvr", width=512, height=512, quality="interactive")):
        assert traced_size(phantom, view) == view.output_size


class _Shape:
    """What traced_size reads of a prepared volume: its geometry."""

    def __init__(self, shape, spacing):
        self.geometry = make_geometry(shape, spacing)


@pytest.mark.parametrize("shape, size", [((1000, 512, 512), 2048), ((2000, 1024, 1024), 512)])
def test_no_rendering_takes_more_samples_than_the_bound(shape, size):
    """A 2048 x 2048 still of a 1000-slice CT would take 5 G samples (minutes on a CPU): fewer rays
    are traced, so one request cannot hold a 3D slot that long."""
    volume = _Shape(shape, (1.0, 0.7, 0.7))
    width, height = traced_size(volume, ViewSpec(width=size, height=size))
    samples_per_ray = float(np.linalg.norm(volume.geometry.size_xyz))
    assert width * height * samples_per_ray <= MAX_SAMPLES
    assert width == height and width >= 256


def test_a_usual_still_is_traced_whole():
    """512 x 512 of a 512 x 512 x 1000 CT at 0.7 mm: no ray is dropped."""
    view = ViewSpec(width=512, height=512)
    assert traced_size(_Shape((1000, 512, 512), (1.0, 0.7, 0.7)), view) == (512, 512)
