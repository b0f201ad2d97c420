"""The distinct VOI LUTs of a record's frames hold at most 16 x 65,536 values together
(`upload_checks.MAX_VOI_LUT_VALUES`, 1,048,576): each is kept in the manifest every load reads.

Before: a 25 MB file of 200 frames of 8 x 8 pixels, each frame with a VOI LUT of its own in its
per-frame functional groups, was stored (201) after 6.7 s of the node's CPU and 1.7 GB of its memory,
with a 33 MB manifest; 4,000 such frames (500 MB, under the upload limit) would take tens of GB.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.dicomweb.test_stow_wado import instance_count
from tests.hostile.corpus import base_dataset

LUT_VALUES = 65536  # the most one LUT Descriptor can give (its first value 0)


def _written(ds: Dataset) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _lut(seed: int) -> Dataset:
    """A VOI LUT of 65,536 values, different for each seed."""
    item = Dataset()
    item.LUTDescriptor = [0, 0, 16]
    item.add_new(0x00283006, "OW", np.random.default_rng(seed).integers(0, 65535, LUT_VALUES, dtype="<u2").tobytes())
    return item


def _per_frame_luts(frames: int) -> bytes:
    """One file of `frames` 8 x 8 frames, each with its own VOI LUT (per-frame functional groups)."""
    ds = base_dataset()
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = frames
    ds.PixelData = b"\0" * (8 * 8 * 2 * frames)
    groups = []
    for frame in range(frames):
        voi = Dataset()
        voi.VOILUTSequence = Sequence([_lut(frame)])
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([voi])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    return _written(ds)


def _slices_with_luts(count: int) -> list[tuple[str, bytes]]:
    """`count` slices of one series, each with a VOI LUT of its own (CT_small has no window)."""
    series = pydicom.uid.generate_uid()
    files = []
    for index in range(count):
        ds = base_dataset()
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.VOILUTSequence = Sequence([_lut(index)])
        files.append((f"slice{index + 1}.dcm", _written(ds)))
    return files


def test_a_file_whose_frames_carry_more_lut_values_than_a_record_keeps_is_refused(node):
    reply = node.upload([("luts.dcm", _per_frame_luts(200))])
    assert reply.status_code == 413, reply.json
    assert reply.json["error"]["code"] == "over_limits"
    assert reply.json["error"]["message"].startswith(
        "luts.dcm: the frames' own VOI LUTs hold more than 1,048,576 values together")
    assert instance_count(node) == 0


def test_sixteen_distinct_luts_are_kept_and_a_seventeenth_refuses_the_record(node):
    """The bound holds over a record's files: 16 slices with LUTs of their own are stored, each frame
    keeping its LUT; 17 are refused naming the file that crosses it."""
    reply = node.upload(_slices_with_luts(17))
    assert reply.status_code == 413, reply.json
    assert reply.json["error"]["message"].startswith("slice17.dcm: the frames' own VOI LUTs hold more than")
    assert instance_count(node) == 0
    reply = node.upload(_slices_with_luts(16))
    assert reply.status_code == 201, reply.json
    manifest = node.app.extensions["sivr_node"].store.read_manifest(reply.json["id"])
    assert len(manifest.render.frame_vois["choices"]) == 16
