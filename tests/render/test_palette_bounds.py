"""A segmented palette (PS3.3 C.7.9.2) expands to no more entries than its descriptor gives
(`decode.segmented_entries`), counted before pydicom expands it.

Before: a 20 KB PALETTE COLOR file of one 8 x 8 frame whose segmented tables are 800 linear
segments of 65,535 entries each (a 256-entry table) kept a decode worker 5.5 s at upload and was
stored (201); every load of the record then cost the node's own process 4.5 s of CPU and 1 GB of
memory, for each frame (182 KB: 63 s and 12.7 GB).
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement

from daemons.render.imaging.decode import segmented_entries
from tests.dicomweb.test_stow_wado import instance_count
from tests.hostile.corpus import base_dataset
from tests.render.conftest import DICOM


def _palette(words: list[int], entries: int = 256) -> bytes:
    """An 8 x 8 PALETTE COLOR image whose three segmented tables are `words`."""
    ds = base_dataset()
    ds.Rows = ds.Columns = 8
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(64))
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        delattr(ds, keyword)
    for colour in ("Red", "Green", "Blue"):
        descriptor = f"{colour}PaletteColorLookupTableDescriptor"
        ds[descriptor] = DataElement(tag_for_keyword(descriptor), "US", [entries % 65536, 0, 16])
        setattr(ds, f"Segmented{colour}PaletteColorLookupTableData", np.array(words, "<u2").tobytes())
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_a_palette_whose_segments_expand_past_its_entries_is_refused_at_upload(node):
    raw = _palette([0, 1, 0] + [1, 65535, 65535] * 800)  # 20 KB: 52 million entries for 256
    reply = node.upload([("palette.dcm", raw)])
    assert reply.status_code == 422, reply.json
    assert reply.json["error"]["code"] == "undecodable_pixels"
    assert "the segmented palette expands to more than the 256 entries its descriptor gives" in \
        reply.json["error"]["message"]
    assert instance_count(node) == 0


def test_a_palette_of_exactly_its_entries_is_shown(node):
    """256 entries in two segments (one discrete value, a linear ramp of 255): stored and loaded."""
    record_id, meta = node.load([("ramp.dcm", _palette([0, 1, 0, 1, 255, 65535]))])
    assert meta["photometric"] == "PALETTE COLOR"
    assert node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers()).status_code == 200


def test_a_real_segmented_palette_is_accepted(node):
    """GDCM's ALOKA ultrasound file: three segmented tables of 65,536 entries."""
    path = DICOM / "pydicom-data" / "gdcm-US-ALOKA-16.dcm"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    assert node.upload([path]).status_code == 201


def test_indirect_segments_are_counted_as_they_expand_and_may_not_loop():
    discrete = [0, 2, 7, 9]  # two entries
    repeat = [2, 1, 0, 0]  # one segment again, from word 0: two more entries each time
    assert segmented_entries(tuple(discrete + repeat * 3), 8, eight_bit=False) == 8
    with pytest.raises(ValueError, match="more than the 7 entries"):
        segmented_entries(tuple(discrete + repeat * 3), 7, eight_bit=False)
    looping = (0, 1, 5, 2, 1, 3, 0)  # an indirect segment whose segment is itself
    with pytest.raises(ValueError, match="nests indirect segments deeper than"):
        segmented_entries(looping, 65536, eight_bit=False)
