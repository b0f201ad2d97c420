"""The DICOM door's encoding check (`upload_checks.check_encoding`, run on every C-STORE data set in
the node's own process) inflates a deflated data set once, and reads its first element from that.

Before: twice, on top of the ingest's own inflation: its bomb check inflated it and threw the result
away, then pydicom's partial read inflated it whole again to read one element (a data set inflating
to 30 MiB: 60 MiB inflated and about 2 x 30 ms of the node's CPU for nothing).
"""

from __future__ import annotations

import io
import zlib

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from daemons.render.ingest.upload_checks import UploadError, check_encoding, inflate
from tests.render.test_deflated_once import _deflated, inflations  # noqa: F401 (the fixture)


def test_a_deflated_data_set_is_inflated_once_by_the_encoding_check(inflations):  # noqa: F811
    check_encoding("1.2.3", _deflated())
    assert len([size for size in inflations if size > 1 << 20]) == 1  # two before


def test_the_check_still_refuses_a_deflated_data_set_written_in_implicit_vr():
    """The same rule on what it inflated: the data set of a deflated syntax is explicit VR."""
    raw = _deflated(1)
    meta_end, _ = inflate(raw, "x")
    implicit = DicomBytesIO()
    implicit.is_implicit_VR, implicit.is_little_endian = True, True
    write_dataset(implicit, pydicom.dcmread(io.BytesIO(raw)))
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    hostile = raw[:meta_end] + deflater.compress(implicit.getvalue()) + deflater.flush()
    with pytest.raises(UploadError, match="encoded in implicit VR"):
        check_encoding("1.2.3", hostile)
    check_encoding("1.2.3", raw)
