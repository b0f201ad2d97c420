"""What the upload analysis makes of valid input: slice order, spacing, rescale per file and frame."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from tests.render.synthetic import dataset as _dataset
from tests.render.synthetic import to_bytes as _bytes


def test_a_good_synthetic_series_is_accepted_and_sorted_by_position(node):
    files = [(f"{i}.dcm", _bytes(_dataset(position=z))) for i, z in enumerate([5.0, -2.5, 0.0, 2.5])]
    reply = node.upload(files)
    assert reply.status_code == 201 and reply.json["frames"] == 4 and reply.json["slice_spacing"] == 2.5
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(30)
    assert [int(record.pixels[i][0, 0]) for i in range(4)] == [-2, 0, 2, 5]


def test_frames_with_their_own_rescale_become_float_modality_values(node):
    ds = _dataset(rows=4, cols=4, pixels=False)
    ds.NumberOfFrames = 2
    ds.PixelData = np.array([10] * 16 + [10] * 16, dtype=np.int16).tobytes()
    frames = []
    for slope, intercept in ((1.0, -5.0), (2.0, 100.0)):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = slope, intercept
        item = Dataset()
        item.PixelValueTransformationSequence = [transform]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    reply = node.upload([("enhanced.dcm", _bytes(ds))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(30)
    assert record.pixels.dtype == np.float32 and (record.rescale_slope, record.rescale_intercept) == (1.0, 0.0)
    assert record.pixels[0, 0, 0] == 5.0 and record.pixels[1, 0, 0] == 120.0
    image = node.client.get(f"/api/v1/records/{record_id}/frames/1?window=120,10", headers=node.headers())
    assert image.status_code == 200


def test_a_series_whose_files_disagree_on_rescale_keeps_float_modality_values(node):
    first, second = _dataset(rows=4, cols=4, position=0.0), _dataset(rows=4, cols=4, position=1.0)
    first.RescaleSlope, first.RescaleIntercept = 1, -1024
    second.RescaleSlope, second.RescaleIntercept = 0.5, 0
    reply = node.upload([("a.dcm", _bytes(first)), ("b.dcm", _bytes(second))])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(30) and record.pixels.dtype == np.float32
    np.testing.assert_array_equal(record.pixels[0].ravel(), np.arange(16) - 1024.0)
    np.testing.assert_array_equal(record.pixels[1].ravel(), (np.arange(16) + 1) * 0.5)
