"""Reformats: which plane is cut, its orientation on screen, its aspect, and slabs."""

from __future__ import annotations

import numpy as np
import pytest

from daemons.render.imaging.pixels import LutTable, Window
from daemons.render.volume import prepare_volume
from daemons.render.volume.mpr import plane_labels, plane_layout, reformat, reformat_image
from tests.render3d.phantom import INTERCEPT, SHAPE, SPHERES, blob, sample_phantom

BIG = SPHERES[0]  # patient's right (-x), anterior (-y), superior (+z)
WINDOW = Window(0, 100)


def index_through(volume, plane, center_mm):
    """The stored index of `plane` through a patient point (relative to the volume centre)."""
    layout = plane_layout(volume.geometry, plane)
    index_xyz = volume.geometry.center_index + volume.geometry.mm_to_index @ np.asarray(center_mm)
    return int(round(index_xyz[2 - layout.axis]))


def test_axial_index_is_the_frame_index(phantom):
    raw, layout = reformat(phantom, "axial", 7)
    assert layout.axis == 0 and layout.count == SHAPE[0]
    assert np.array_equal(raw, phantom.voxels[7].astype(np.float32))


@pytest.mark.parametrize("plane,expected_shape", [
    ("axial", (72, 80)),  # 72 rows x 0.8 mm by 64 cols x 1.0 mm, in 0.8 mm pixels
    ("coronal", (80, 64)),  # 40 slices x 2.0 mm by 64 cols x 1.0 mm, in 1.0 mm pixels
    ("sagittal", (100, 72)),  # 40 slices x 2.0 mm by 72 rows x 0.8 mm
])
def test_true_aspect_with_square_display_pixels(phantom, plane, expected_shape):
    image = reformat_image(phantom, plane, index_through(phantom, plane, BIG.center), WINDOW)
    assert image.shape == expected_shape
    _, _, width, height = blob(image > 127)
    assert abs(width - height) <= 2.0 / 0.8  # a sphere stays round, within one 2 mm voxel


def test_fitting_into_a_box_keeps_the_aspect(phantom):
    image = reformat_image(phantom, "coronal", 20, WINDOW, box=(300, 300))
    assert image.shape == (300, 240)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_radiological_orientation(phantom, plane):
    """Axial: patient's right on the left, anterior up. Coronal: right on the left, head up.
    Sagittal: anterior on the left, head up."""
    image = reformat_image(phantom, plane, index_through(phantom, plane, BIG.center), WINDOW)
    cx, cy, _, _ = blob(image > 127)
    rows, cols = image.shape
    assert cy < rows / 2  # the sphere is anterior (axial) / superior (coronal, sagittal)
    assert cx < cols / 2  # the sphere is on the patient's right (axial, coronal) / anterior (sagittal)


@pytest.mark.parametrize("plane,labels", [
    ("axial", {"top": "A", "right": "L", "bottom": "P", "left": "R"}),
    ("coronal", {"top": "S", "right": "L", "bottom": "I", "left": "R"}),
    ("sagittal", {"top": "S", "right": "P", "bottom": "I", "left": "A"}),
])
def test_edge_labels_of_planes(phantom, plane, labels):
    assert plane_labels(phantom.geometry, plane_layout(phantom.geometry, plane)) == labels


def test_orientation_follows_the_acquisition():
    """A sagittal acquisition still gives an axial plane with anterior up and the right on the left."""
    iop = (0, 1, 0, 0, 0, -1)
    shape, spacing = (64, 40, 72), (1.0, 2.0, 0.8)
    volume = prepare_volume(sample_phantom(shape, spacing, iop), spacing, iop, 1.0, INTERCEPT)
    layout = plane_layout(volume.geometry, "axial")
    assert layout.axis == 1  # rows run along -z in this acquisition
    image = reformat_image(volume, "axial", index_through(volume, "axial", BIG.center), WINDOW)
    cx, cy, _, _ = blob(image > 127)
    assert cy < image.shape[0] / 2 and cx < image.shape[1] / 2
    assert plane_labels(volume.geometry, layout) == {"top": "A", "right": "L", "bottom": "P", "left": "R"}


def test_slab_modes_are_ordered_and_thicker_than_a_plane(phantom):
    index = index_through(phantom, "coronal", BIG.center)
    single, _ = reformat(phantom, "coronal", index)
    mip, _ = reformat(phantom, "coronal", index, slab_mm=10.0, slab_mode="mip")
    avg, _ = reformat(phantom, "coronal", index, slab_mm=10.0, slab_mode="avg")
    minip, _ = reformat(phantom, "coronal", index, slab_mm=10.0, slab_mode="minip")
    assert np.all(mip >= avg) and np.all(avg >= minip)
    assert np.all(mip >= single) and np.all(minip <= single)
    assert (mip > minip).any()


def test_index_out_of_range_is_refused(phantom):
    with pytest.raises(IndexError):
        reformat(phantom, "sagittal", SHAPE[2])


def test_a_voi_lut_default_shapes_a_reformat_like_a_2d_frame(phantom):
    """A record's default VOI may be a VOI LUT Sequence item: a reformat goes through the table.
    A two-entry table is a threshold, the same as a LINEAR window of width 1 centred past it."""
    index = index_through(phantom, "axial", BIG.center)
    lut = LutTable(first_mapped=-1, bits=8, data=np.array([0, 255]))
    image = reformat_image(phantom, "axial", index, lut)
    assert np.array_equal(image, reformat_image(phantom, "axial", index, Window(0, 1)))
    assert image.min() == 0 and image.max() == 255
