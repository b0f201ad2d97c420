"""A deflated (Deflated Explicit VR Little Endian) upload is inflated once in each process that
checks it: the bomb check's inflation is what its elements are counted in and what pydicom parses
(`upload_checks.inflate`, `decode.read_dataset`'s `inflated`).

Before: the node's own process inflated a deflated file twice (the bomb check, then pydicom's read)
and the check that parses it (a decode worker, or the node for trusted files) four times (bomb check
and element count, bomb check again and pydicom's read): a file inflating to 30 MiB took 6 inflations
of 30 MiB in all where 2 do.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from daemons.render.ingest.upload_checks import Limits, UploadError, check_upload
from tests.dicomweb.test_stow_wado import instance_count
from tests.hostile.corpus import base_dataset

LIMITS = Limits(2048 << 20, 4000, 8192, 8192, 4000, 4096 << 20)


def _deflated(private_mib: int = 30) -> bytes:
    """A CT slice, deflated, with a private OB of `private_mib` MiB of one repeated byte (about 30 KB
    deflated: within the 32 MiB any deflated file may inflate to)."""
    ds = base_dataset()
    ds.add_new(0x00090010, "LO", "BIG")
    ds.add_new(0x00091001, "OB", b"\x01" * (private_mib << 20))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def inflations(monkeypatch) -> list[int]:
    """The bytes each inflation in this process turned out (zlib's one-shot and streaming inflaters)."""
    made: list[int] = []
    one_shot, streaming = zlib.decompress, zlib.decompressobj

    def decompress(data, *args, **kwargs):
        out = one_shot(data, *args, **kwargs)
        made.append(len(out))
        return out

    class Counted:
        def __init__(self, *args, **kwargs):
            self._inflater = streaming(*args, **kwargs)

        def decompress(self, data, *args):
            out = self._inflater.decompress(data, *args)
            made.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self._inflater, name)

    monkeypatch.setattr(zlib, "decompress", decompress)
    monkeypatch.setattr(zlib, "decompressobj", Counted)
    return made


def test_the_node_inflates_a_deflated_upload_once(node, inflations):
    raw = _deflated()
    assert len(raw) < 100_000
    reply = node.upload([("deflated.dcm", raw)])
    assert reply.status_code == 201, reply.json
    big = [size for size in inflations if size > 1 << 20]
    assert len(big) == 1, big  # the bomb check's inflation, counted and parsed (two before)
    assert instance_count(node) == 1


def test_a_check_in_one_process_inflates_it_once_for_the_count_and_the_parse(inflations):
    """The check of a decode worker and the node's own parse, run in this process: one each."""
    files = check_upload([("deflated.dcm", _deflated())], LIMITS)
    assert files[0].dataset.get((0x0009, 0x1001)).value[:4] == b"\x01\x01\x01\x01"
    assert len([size for size in inflations if size > 1 << 20]) == 2  # six before


def test_what_the_parse_reads_is_what_pydicom_reads_itself():
    raw = _deflated(1)
    files = check_upload([("deflated.dcm", raw)], LIMITS)
    ours, theirs = files[0].dataset, pydicom.dcmread(io.BytesIO(raw))
    assert ours.file_meta == theirs.file_meta and ours.original_encoding == theirs.original_encoding
    assert [element.tag for element in ours] == [element.tag for element in theirs]
    assert ours == theirs
    assert np.array_equal(ours.pixel_array, theirs.pixel_array)


def test_a_truncated_deflate_stream_is_refused():
    """pydicom's one-shot inflate refused a cut stream; the inflation the parse reads does too."""
    raw = _deflated(1)
    with pytest.raises(UploadError) as refused:
        check_upload([("cut.dcm", raw[:-2000])], LIMITS)
    assert refused.value.status == 400 and "truncated" in refused.value.message
