"""Frames of several fragments in encapsulated pixel data without a Basic Offset Table are found in
one pass over the fragments (`decode.encoded_frame`, pydicom's own grouping), not by a walk from
the first fragment at every frame.

Before: a 385 KB JPEG 2000 file of 2,000 8 x 8 frames of two fragments each (no Basic Offset
Table) held a decode worker 16 s at upload and was stored; every load of the record then took
10.8 s of the node's own process (pydicom looks for each frame's end marker from the first
fragment, at every frame).
"""

from __future__ import annotations

import io
import time

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate_extended, itemize_fragment
from pydicom.pixels import pixel_array
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit

from daemons.render.imaging import decode
from daemons.render.imaging.decode import frame_offsets, read_dataset, stored_values
from daemons.render.store.frame_layout import layout_of
from tests.hostile.corpus import base_dataset

ITEM = b"\xfe\xff\x00\xe0"


def _frames(count: int) -> list[np.ndarray]:
    return [((np.arange(64).reshape(8, 8) * 3 + index) % 256).astype(np.uint8) for index in range(count)]


def _codestream(frame: np.ndarray, syntax: str) -> bytes:
    if syntax == JPEG2000Lossless:
        return imagecodecs.jpeg2k_encode(frame, level=0, codecformat="J2K", reversible=True)
    return imagecodecs.jpeg8_encode(frame, level=95)


def _file(frames: list[np.ndarray], syntax: str = JPEG2000Lossless, parts: int | list[int] = 2,
          table: str = "none") -> bytes:
    """A multi-frame 8-bit file of `frames`, each split into `parts` fragments (one count for all or one
    a frame), with no offset table, a Basic Offset Table ("basic") or an Extended one ("extended")."""
    counts = parts if isinstance(parts, list) else [parts] * len(frames)
    split: list[list[bytes]] = []
    for frame, count in zip(frames, counts, strict=True):
        stream = _codestream(frame, syntax)
        cuts = [len(stream) * k // count for k in range(count + 1)]
        split.append([stream[cuts[k]:cuts[k + 1]] for k in range(count)])
    ds = base_dataset()
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.NumberOfFrames = len(frames)
    if table == "extended":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            [b"".join(fragments) for fragments in split])
    else:
        items = [b"".join(itemize_fragment(fragment) for fragment in fragments) for fragments in split]
        offsets = np.cumsum([0] + [len(item) for item in items[:-1]]).astype("<u4").tobytes() \
            if table == "basic" else b""
        ds.PixelData = ITEM + len(offsets).to_bytes(4, "little") + offsets + b"".join(items)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_2000_frames_of_two_fragments_without_offset_table_are_checked_and_loaded_in_linear_time(node):
    raw = _file(_frames(2000))
    started = time.monotonic()
    reply = node.upload([("cine.dcm", raw)])
    assert reply.status_code == 201, reply.json
    assert time.monotonic() - started < 8.0  # the upload's check of every frame in a worker: 16 s before
    record_id = reply.json["id"]
    cpu = time.process_time()
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    record = node.registry.get_loaded(record_id)
    assert record.wait_complete(120)
    assert time.process_time() - cpu < 4.0  # the node's own CPU for the load: 10.8 s before
    assert node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json["errors"] == []
    expected = _frames(2000)
    for index in (0, 1, 999, 1999):
        assert np.array_equal(record.pixels[index], expected[index])


@pytest.mark.parametrize("table", ["none", "basic", "extended"])
@pytest.mark.parametrize("parts", [1, 2, [1, 3, 2, 1, 4, 2]], ids=["one", "two", "mixed"])
@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit])
def test_each_frame_is_the_frame_pydicom_finds(syntax, parts, table):
    if table == "extended" and parts != 1:
        pytest.skip("an Extended Offset Table allows one fragment a frame (PS3.3 C.7.6.3.1.8)")
    frames = _frames(6)
    raw = _file(frames, syntax, parts, table)
    ds = read_dataset(raw)
    layout = layout_of(ds, float_modality=False)
    for index in range(6):
        reference = pydicom.dcmread(io.BytesIO(raw))
        assert decode.encoded_frame(ds, index, 6) == pydicom.encaps.get_frame(
            reference.PixelData, index, number_of_frames=6,
            extended_offsets=(reference.ExtendedOffsetTable, reference.ExtendedOffsetTableLengths)
            if table == "extended" else None)
        if syntax == JPEG2000Lossless:
            assert np.array_equal(stored_values(ds, index, layout), frames[index])
        elif syntax == JPEGBaseline8Bit:  # lossy: the same values pydicom's own lookup gives
            assert np.array_equal(stored_values(ds, index, layout), pixel_array(reference, index=index))
        else:  # libjpeg, as pydicom has no decoder for JPEG Extended here
            assert np.array_equal(stored_values(ds, index, layout),
                                  imagecodecs.jpeg8_decode(_codestream(frames[index], syntax)))
    one_fragment_each = parts == 1 and table != "basic"
    assert (frame_offsets(ds, 6) is not None) == one_fragment_each


def test_fewer_frames_than_the_header_says_fail_only_the_missing_frames():
    ds = read_dataset(_file(_frames(3)))
    layout = layout_of(ds, float_modality=False)
    assert np.array_equal(stored_values(ds, 2, layout), _frames(3)[2])
    with pytest.raises(ValueError, match="holds 3 frames"):
        decode.encoded_frame(ds, 3, 4)


def test_fewer_fragments_than_frames_is_refused_at_upload(node):
    """pydicom cannot say where such frames lie; found once, the reason fails every frame at once
    (a walk for each frame would take time quadratic in the fragments)."""
    raw = _file(_frames(3), parts=1).replace(b"\x28\x00\x08\x00IS\x02\x003 ", b"\x28\x00\x08\x00IS\x02\x004 ")
    assert read_dataset(raw).NumberOfFrames == 4
    reply = node.upload([("short.dcm", raw)])
    assert reply.status_code == 422, reply.json
    assert reply.json["error"]["code"] == "undecodable_pixels"
    assert "fewer fragments than frames" in reply.json["error"]["message"]
