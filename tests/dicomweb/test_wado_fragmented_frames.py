"""WADO-RS frames as stored, of encapsulated pixel data of several fragments a frame without a Basic
Offset Table, are found by the one-pass frame table rendering uses (`decode.encoded_frame`).

Before: `syntax.frame_bytes` called pydicom's `get_frame` for each frame asked, which walks every
fragment from the first looking for the frame's end marker: asking for the last 1,000 frames of a
file of 2,000 two-fragment frames read about three million fragments (quadratic in the frames).
"""

from __future__ import annotations

import io

import pydicom
import pydicom.encaps
import pytest

from daemons.render.imaging.decode import encoded_frame
from tests.dicomweb.test_stow_wado import parts_of
from tests.render.test_fragmented_frames import _file, _frames

FRAMES = 2000


@pytest.fixture
def fragments_read(monkeypatch) -> list[int]:
    """How many fragments pydicom's own walks (`get_frame`, `generate_fragmented_frames`) read."""
    read = [0]
    walk = pydicom.encaps.generate_fragments

    def counted(*args, **kwargs):
        for fragment in walk(*args, **kwargs):
            read[0] += 1
            yield fragment

    monkeypatch.setattr(pydicom.encaps, "generate_fragments", counted)
    return read


def test_the_last_frames_as_stored_cost_one_pass_over_the_fragments(node, fragments_read):
    raw = _file(_frames(FRAMES))
    assert node.upload([("cine.dcm", raw)]).status_code == 201
    ds = pydicom.dcmread(io.BytesIO(raw))
    instance = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}")
    fragments_read[0] = 0
    wanted = range(FRAMES - 999, FRAMES + 1)  # the most one request may ask for: 1,000
    reply = node.client.get(f"{instance}/frames/{','.join(map(str, wanted))}", headers={
        **node.headers(), "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    parts = parts_of(reply)
    assert len(parts) == 1000
    assert [content for _, content in parts[-2:]] == [encoded_frame(ds, FRAMES - 2, FRAMES),
                                                      encoded_frame(ds, FRAMES - 1, FRAMES)]
    assert fragments_read[0] < 4 * 2 * FRAMES  # one pass over the 4,000 fragments (about 3 million before)
