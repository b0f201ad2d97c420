"""Frames of an encapsulated multi-frame file without offset tables are found in one pass over its
fragments (`decode.frame_offsets`), not by a walk from the first fragment for every frame.

Before: a 412 KB RLE file of 4,000 8 x 8 frames with an empty Basic Offset Table (one fragment a
frame, as many encoders write) held a decode worker 11 s at upload and was stored; every load of
the record then took 11.8 s of the node's own process (pydicom's frame lookup, quadratic).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder, pixel_array
from pydicom.uid import RLELossless

from daemons.render.imaging.decode import frame_offsets, read_dataset, stored_values
from daemons.render.store.frame_layout import layout_of
from tests.hostile.corpus import base_dataset


def _rle(frames: list[np.ndarray], bot: bool = False) -> bytes:
    """A multi-frame RLE file of 8 x 8 signed 16-bit `frames`, one fragment each."""
    encoder = get_encoder(RLELossless)
    encoded = [encoder.encode(frame, rows=8, columns=8, samples_per_pixel=1, bits_allocated=16, bits_stored=16,
                              pixel_representation=1, photometric_interpretation="MONOCHROME2",
                              number_of_frames=1) for frame in frames]
    ds = base_dataset()
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(encoded, has_bot=bot)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = RLELossless
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _frames(count: int) -> list[np.ndarray]:
    return [np.full((8, 8), index, dtype="<i2") + np.arange(64, dtype="<i2").reshape(8, 8) for index in range(count)]


def test_a_file_of_4000_frames_without_offset_table_is_checked_and_loaded_in_linear_time(node):
    raw = _rle([np.zeros((8, 8), dtype="<i2")] * 4000)
    started = time.monotonic()
    reply = node.upload([("cine.dcm", raw)])
    assert reply.status_code == 201, reply.json
    record_id = reply.json["id"]
    cpu = time.process_time()
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(120)
    assert time.process_time() - cpu < 4.0  # the node's own CPU for the load: 11.8 s before
    assert time.monotonic() - started < 20.0  # the upload's check in a worker and the load: 25 s before
    assert node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json["errors"] == []


def test_each_frame_found_by_the_offsets_is_the_frame_pydicom_finds():
    frames = _frames(40)
    for bot in (False, True):
        ds = read_dataset(_rle(frames, bot=bot))
        layout = layout_of(ds, float_modality=False)
        for index in (0, 1, 17, 39):
            assert np.array_equal(stored_values(ds, index, layout), frames[index])
            assert np.array_equal(pixel_array(read_dataset(_rle(frames, bot=bot)), index=index), frames[index])
        assert (frame_offsets(ds, 40) is None) == bot  # a Basic Offset Table pydicom reads itself


def test_fragments_that_are_not_one_a_frame_are_left_to_pydicom():
    ds = read_dataset(_rle(_frames(3)))
    assert frame_offsets(ds, 4) is None  # 3 fragments for 4 frames
    assert frame_offsets(ds, 1) is None  # a single frame needs none
    assert frame_offsets(ds, 3) is not None
