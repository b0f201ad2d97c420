"""An instance sent again in another transfer syntax (`daemons/render/ingest/resend.py`): a client
re-sending what SIVR's WADO-RS gave it decompressed, a router decompressing, a PACS forwarding. It is
the stored instance (a no-op: STOW-RS success, C-STORE 0x0000, the stored copy kept) when its
attributes agree and its pixels decode to the same stored values; any other difference, a lossy
syntax, or values that differ only above Bits Stored are another instance (409 / 0xA900, audited)."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from daemons.render.ingest.resend import Resent, compare_resent, same_pixels
from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import ANY_DICOM, body_of, instance_count, parts_of, stow
from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive
from tests.render.synthetic import dataset, to_bytes

EXPLICIT_LE = str(ExplicitVRLittleEndian)
NATIVE = {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'}


def _retrieve(node, raw: bytes, accept: dict[str, str]) -> bytes:
    study, series, sop = uids(raw)
    reply = node.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                            headers={**node.headers(), **accept})
    [(_, content)] = parts_of(reply)
    return content


def _audit_actions(node) -> list[str]:
    audit = node.app.extensions["sivr_node"].models.AuditEntry
    return [row.action for row in audit.select().order_by(audit.id)]


def _with_pixels(raw: bytes, change) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(raw))
    pixels = np.frombuffer(ds.PixelData, "<u2").copy()
    change(pixels)
    ds.PixelData = pixels.tobytes()
    return to_bytes(ds)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_an_instance_wado_gave_decompressed_and_sent_back_is_the_stored_one(node, syntax):
    """The round trip through SIVR itself: WADO-RS answers an RLE or JPEG-LS instance in Explicit
    VR Little Endian under its own SOP Instance UID; STOW-RS of that answer was 409. Now it is
    stored (a no-op): the node still holds the compressed bytes it was first sent."""
    files = synthetic_series(2, syntax=syntax, rows=32, cols=32)
    assert stow(node, body_of(files)).status_code == 200
    native = [_retrieve(node, raw, NATIVE) for raw in files]
    assert all(pydicom.dcmread(io.BytesIO(raw)).file_meta.TransferSyntaxUID == EXPLICIT_LE for raw in native)
    again = stow(node, body_of(native))
    assert again.status_code == 200, again.get_data(as_text=True)
    assert [item["00081155"]["Value"][0] for item in again.get_json()["00081199"]["Value"]] == [
        uids(raw)[2] for raw in files]
    assert instance_count(node) == 2
    assert [_retrieve(node, raw, ANY_DICOM) for raw in files] == files  # the stored copies are kept
    assert "instance.conflict" not in _audit_actions(node)
    assert "record.upload_again" in _audit_actions(node), _audit_actions(node)


def test_a_decompressed_copy_with_one_value_changed_is_another_instance(node):
    files = synthetic_series(1, syntax=RLELossless, rows=32, cols=32)
    assert stow(node, body_of(files)).status_code == 200
    changed = _with_pixels(_retrieve(node, files[0], NATIVE), lambda pixels: pixels.__setitem__(100, 7))
    refused = stow(node, body_of([changed]))
    assert refused.status_code == 409
    assert refused.get_json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    assert "instance.conflict" in _audit_actions(node)
    assert _retrieve(node, files[0], ANY_DICOM) == files[0]


def test_values_that_differ_only_above_bits_stored_are_another_instance(node):
    """Compared as stored, not as displayed: a native instance of 12 bits stored whose words carry
    other bits above them is not its JPEG-LS copy (which keeps 12 bits). pydicom's pixel_array
    masks those bits, so comparing what it returns would have answered "stored" for words never stored."""
    ds = dataset(rows=16, cols=16, series="1.2.826.0.1.77.1")
    ds.StudyInstanceUID = "1.2.826.0.1.77"
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    values = (np.arange(256, dtype=np.uint16) * 13) % 4096
    ds.PixelData = (values | 0xA000).astype("<u2").tobytes()  # garbage above bit 11
    native = to_bytes(ds)
    ds.PixelData = encapsulate([imagecodecs.jpegls_encode(values.reshape(16, 16))])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    compressed = to_bytes(ds)
    assert compare_resent(native, compressed) is Resent.COMPARE_PIXELS
    assert not same_pixels(native, compressed)
    assert stow(node, body_of([native])).status_code == 200
    assert stow(node, body_of([compressed])).status_code == 409
    assert instance_count(node) == 1


def test_what_the_attributes_settle_is_never_decoded():
    """A lossy syntax on either side, or another attribute value, is another instance without a
    decode; the same syntax is compared value by value as before."""
    native = synthetic_series(1, rows=16, cols=16)[0]
    ds = pydicom.dcmread(io.BytesIO(native))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8 not decoded \xff\xd9"])
    ds["PixelData"].VR = "OB"
    assert compare_resent(native, to_bytes(ds)) is Resent.OTHER
    other = pydicom.dcmread(io.BytesIO(native))
    other.compress(RLELossless, generate_instance_uid=False)
    other.SeriesDescription = "changed"
    assert compare_resent(native, to_bytes(other)) is Resent.OTHER
    same = pydicom.dcmread(io.BytesIO(native))
    same.file_meta.ImplementationVersionName = "ANOTHER_SENDER"
    assert compare_resent(native, to_bytes(same)) is Resent.SAME


def test_a_c_store_of_the_decompressed_copy_answers_success_and_keeps_the_stored_one(make_node):
    harness = open_archive(make_node)
    try:
        files = synthetic_series(1, syntax=RLELossless, rows=32, cols=32)
        ds = pydicom.dcmread(io.BytesIO(files[0]))
        ae = AE(ae_title=CALLER)
        ae.add_requested_context(CTImageStorage, [str(RLELossless)])
        ae.add_requested_context(CTImageStorage, [EXPLICIT_LE])
        assoc = ae.associate("127.0.0.1", harness.dicom_port, ae_title=SCP)
        assert assoc.is_established
        try:
            assert assoc.send_c_store(ds).Status == 0x0000
            ds.decompress(generate_instance_uid=False)
            assert assoc.send_c_store(ds).Status == 0x0000
            changed = pydicom.dcmread(io.BytesIO(_with_pixels(to_bytes(ds), lambda p: p.__setitem__(0, 9))))
            assert assoc.send_c_store(changed).Status == 0xA900
        finally:
            assoc.release()
        assert instance_count(harness) == 1
        kept = pydicom.dcmread(io.BytesIO(_retrieve(harness, files[0], ANY_DICOM)))  # its file meta is the node's
        assert kept.file_meta.TransferSyntaxUID == RLELossless
        assert kept.PixelData == pydicom.dcmread(io.BytesIO(files[0])).PixelData
    finally:
        close_archive(harness)
