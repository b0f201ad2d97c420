"""A reformat's slab (`slab=`, `slab_mode=`): which planes it holds and how it counts them, read back
through the value probe and ROI statistics of the reformat (they cut the slab the image shows,
daemons.render.volume.mpr.cut_plane)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from tests.render.synthetic import dataset, stack, to_bytes

PLANES = 12


def _value(node, record_id: str, index: int, slab_mm: float, mode: str, plane: str = "axial") -> float:
    reply = node.client.get(f"/api/v1/records/{record_id}/mpr/{plane}/{index}/value?x=1&y=1&slab={slab_mm}"
                            f"&slab_mode={mode}", headers=node.headers())
    assert reply.status_code == 200, reply.json
    return reply.json["value"]


@pytest.fixture
def rising(node) -> str:
    """12 axial planes 1 mm apart whose every value is 10 x the plane's height (z, mm): 300 at plane
    0, 310 at plane 1... so a slab's maximum and minimum name the planes it holds."""
    files = stack((1, 0, 0, 0, 1, 0), count=PLANES, rows=8, cols=8, pixel_spacing=(1.0, 1.0), slice_spacing=1.0,
                  values=lambda x, y, z: z * 10)
    record_id, _ = node.load(files)
    return record_id


def test_a_slab_near_the_first_plane_holds_only_the_planes_within_its_half_thickness(node, rising):
    """A 5 mm slab is planes index-2..index+2, cut off where the volume ends. At planes 0, 1 and 2
    it was moved inwards to planes 0..4: one image for the three, its MIP the plane 4 mm away, while
    at the last plane it was cut off."""
    plane = {i: 300 + 10 * i for i in range(PLANES)}
    for index in (0, 1, 2, PLANES - 2, PLANES - 1):
        held = [plane[i] for i in range(max(0, index - 2), min(PLANES, index + 3))]
        assert _value(node, rising, index, 5, "mip") == max(held), index
        assert _value(node, rising, index, 5, "minip") == min(held), index
        assert _value(node, rising, index, 5, "avg") == pytest.approx(sum(held) / len(held)), index


def test_slabs_are_symmetric_at_both_ends_of_the_volume(node, rising):
    """The slab at plane i from the first holds as many planes as the slab at plane i from the last."""
    for index in range(3):
        low = _value(node, rising, index, 5, "mip") - _value(node, rising, index, 5, "minip")
        high = _value(node, rising, PLANES - 1 - index, 5, "mip") - _value(node, rising, PLANES - 1 - index, 5, "minip")
        assert low == high, index


PADDING_RAW = -2000  # -3024 HU: what scanners store outside the reconstruction circle
TISSUE_RAW = 1064  # 40 HU


@pytest.fixture
def padded_ct(node) -> str:
    """A CT of 6 axial 8x8 slices (RescaleIntercept -1024) whose left half is padding in its first two
    slices and tissue elsewhere."""
    series, files = generate_uid(), []
    for k in range(6):
        ds = dataset(8, 8, series=series)
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.PixelSpacing, ds.SliceThickness, ds.InstanceNumber = [1.0, 1.0], 1.0, k + 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        pixels = np.full((8, 8), TISSUE_RAW, dtype=np.int16)
        if k < 2:
            pixels[:, :4] = PADDING_RAW
        ds.PixelData = pixels.tobytes()
        files.append((f"{k}.dcm", to_bytes(ds)))
    record_id, _ = node.load(files)
    return record_id


def test_a_ct_slab_counts_padding_as_air_as_the_3d_projections_do(node, padded_ct):
    """A CT slab through padding: the 3D projections (MIP, MinIP, average) count values below air as
    air (`PreparedVolume.floor`), and a slab of a reformat is the same projection. It took the padding
    as it is: an average of -987 HU and a MinIP of -3024 HU, values no tissue and not even air has."""
    air, tissue = -1024.0, 40.0
    # the axial slab at plane 2 holds all six slices; x=1 is in the padded half
    assert _value(node, padded_ct, 2, 500, "minip") == air
    assert _value(node, padded_ct, 2, 500, "avg") == pytest.approx((2 * air + 4 * tissue) / 6)
    stats = node.client.get(f"/api/v1/records/{padded_ct}/mpr/axial/2/stats?shape=rect&x0=0&y0=0&x1=8&y1=8"
                            "&slab=500&slab_mode=avg", headers=node.headers())
    assert stats.status_code == 200, stats.json
    assert stats.json["min"] == pytest.approx((2 * air + 4 * tissue) / 6)
    # one plane is no projection: it reads the stored padding as it is
    assert _value(node, padded_ct, 0, 0, "avg") == PADDING_RAW - 1024


def test_a_slab_of_an_even_number_of_planes_reaches_alike_on_either_side(node, rising):
    """A 4 mm slab at 1 mm spacing took 4 planes, index-1..index+2: one side reached further than the
    other, and at the ends it held 3 planes at the first and 2 at the last. Now the planes within
    2 mm on either side, cut off alike at either end."""
    plane = {i: 300 + 10 * i for i in range(PLANES)}
    for index in (0, 1, 5, PLANES - 2, PLANES - 1):
        held = [plane[i] for i in range(max(0, index - 2), min(PLANES, index + 3))]
        assert _value(node, rising, index, 4, "mip") == max(held), index
        assert _value(node, rising, index, 4, "minip") == min(held), index
