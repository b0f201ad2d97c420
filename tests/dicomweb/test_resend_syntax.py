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
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from daemons.render.ingest.isolation import IsolatedFailure
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


def _in_syntax(ds: pydicom.Dataset, syntax: str) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    return to_bytes(ds)


def _pair(change, rows: int = 8, cols: int = 8) -> tuple[bytes, bytes]:
    """One instance stored in Explicit VR Little Endian and, under its SOP Instance UID, a file in
    Implicit VR Little Endian that `change(ds)` made."""
    ds = dataset(rows, cols, series=generate_uid())
    ds.StudyInstanceUID = generate_uid()
    stored = _in_syntax(ds, EXPLICIT_LE)
    change(ds)
    return stored, _in_syntax(ds, ImplicitVRLittleEndian)


def _bit_packed(pixels: bytes):
    def change(ds):
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
        ds.PixelData = pixels
    return change


def _ybr_422(pixels: bytes):
    def change(ds):
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pixels
    return change


def _both(first_change, second_change) -> tuple[bytes, bytes]:
    ds = dataset(8, 8, series=generate_uid())
    ds.StudyInstanceUID = generate_uid()
    first_change(ds)
    stored = _in_syntax(ds, EXPLICIT_LE)
    second_change(ds)
    return stored, _in_syntax(ds, ImplicitVRLittleEndian)


@pytest.mark.parametrize("layout", [
    lambda: _both(_bit_packed(bytes(8)), _bit_packed(b"\xff" * 8)),
    lambda: _both(_ybr_422(bytes(range(128))), _ybr_422(bytes([255] * 128))),
], ids=["bit-packed", "YBR_FULL_422"])
def test_a_layout_whose_values_are_not_compared_is_another_instance(node, layout):
    """Bit-packed and YBR_FULL_422 pixels are not compared word by word: a file in another syntax
    is another instance whatever its pixels. The comparison of stored values yielded no frame for
    them, and no frame compared counted as "the same": different pixels were answered stored."""
    stored, again = layout()
    assert compare_resent(stored, again) is Resent.OTHER
    assert not same_pixels(stored, again) and not same_pixels(stored, stored)
    assert stow(node, body_of([stored])).status_code == 200
    refused = stow(node, body_of([again]))
    assert refused.status_code == 409, refused.get_data(as_text=True)
    assert "instance.conflict" in _audit_actions(node)
    assert instance_count(node) == 1


def test_big_endian_unknown_syntaxes_and_pixel_data_on_one_side_are_other_instances(node):
    """Explicit VR Big Endian swaps 8-bit values in OW pairs (pixels 1,0,3,2 for the same bytes),
    a syntax pydicom does not know raised (a 500), and Pixel Data that only one file holds was left
    out with the pixel encoding's elements (the new pixels dropped, "stored" answered)."""
    ds = dataset(8, 8, series=generate_uid())
    ds.StudyInstanceUID = generate_uid()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(64))
    ds["PixelData"].VR = "OW"
    little = to_bytes(ds)
    assert compare_resent(_in_syntax(ds, ExplicitVRBigEndian), little) is Resent.OTHER
    unknown = little.replace(EXPLICIT_LE.encode() + b"\x00", b"1.2.826.0.1.3680.9.9", 1)  # a private syntax
    assert unknown != little and compare_resent(little, unknown) is Resent.OTHER

    without, with_pixels = _pair(lambda ds: None)
    without_ds = pydicom.dcmread(io.BytesIO(without))
    del without_ds.PixelData
    without = to_bytes(without_ds)
    assert compare_resent(without, with_pixels) is Resent.OTHER
    assert compare_resent(with_pixels, without) is Resent.OTHER
    assert stow(node, body_of([little])).status_code == 200
    refused = stow(node, body_of([unknown]))
    assert refused.status_code == 409, refused.get_data(as_text=True)
    assert instance_count(node) == 1


def test_a_comparison_the_decode_worker_could_not_finish_refuses_the_file_without_calling_it_a_conflict(
        node, monkeypatch):
    """Decoding both files at once may run past a worker's time or memory: the file is refused
    (422, nothing stored), as a check the worker could not finish refuses it, but it is not
    reported or audited as another instance under the UID."""
    files = synthetic_series(1, syntax=RLELossless, rows=32, cols=32)
    assert stow(node, body_of(files)).status_code == 200
    native = _retrieve(node, files[0], NATIVE)
    decoder = node.app.extensions["sivr_node"].decoder

    def out_of_time(function, *args):
        raise IsolatedFailure("decoding took longer than 30 s")
    monkeypatch.setattr(decoder, "call", out_of_time)
    refused = stow(node, body_of([native]))
    assert refused.status_code == 409, refused.get_data(as_text=True)  # STOW-RS: every instance failed
    assert refused.get_json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]  # not 0xA900
    assert "instance.conflict" not in _audit_actions(node)
    assert instance_count(node) == 1
    assert _retrieve(node, files[0], ANY_DICOM) == files[0]


def test_a_codestream_wider_than_bits_allocated_is_never_narrowed_to_match():
    """A JPEG 2000 codestream of 12 bits in a data set of 8 bits allocated decodes to 16-bit words:
    cut to 8 bits, 256 + x matched the stored x and the file was answered "stored"."""
    ds = dataset(16, 16, series=generate_uid())
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    values = (np.arange(256, dtype=np.uint16) % 200).reshape(16, 16)
    ds.PixelData = values.astype(np.uint8).tobytes()
    stored = to_bytes(ds)
    ds.PixelData = encapsulate([imagecodecs.jpeg2k_encode(values + 256, level=0, bitspersample=12, reversible=True)])
    ds["PixelData"].VR = "OB"
    wider = _in_syntax(ds, JPEG2000Lossless)
    assert compare_resent(stored, wider) is Resent.COMPARE_PIXELS
    assert not same_pixels(stored, wider)
