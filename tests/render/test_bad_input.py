"""Bad uploads: a 4xx whose code and message name the reason, and nothing stored."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate

from daemons.render.store.local import KEY_CHECK
from daemons.render.store.ownership import MARKER
from tests.render.synthetic import dataset as _dataset
from tests.render.synthetic import to_bytes as _bytes


def _cases(dicom_dir: Path) -> dict[str, tuple[list[tuple[str, bytes]], int, str]]:
    huge = _dataset(pixels=False)
    huge.Rows, huge.Columns = 65535, 65535
    huge.PixelData = b"\x00" * 64
    many_frames = _dataset()
    many_frames.NumberOfFrames = 100000
    short = _bytes(_dataset(rows=64, cols=64))
    eight_bit = _dataset(position=1, pixels=False)  # sizes may differ (one stack each), bits may not
    eight_bit.BitsAllocated, eight_bit.BitsStored, eight_bit.HighBit, eight_bit.PixelRepresentation = 8, 8, 7, 0
    eight_bit.PixelData = b"\x00" * 64
    garbage_rle = _dataset(position=1)
    garbage_rle.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    garbage_rle.PixelData = encapsulate([b"\x07\x00\x00\x00" + b"\xff" * 200])
    return {
        "garbage RLE beside a good slice": ([("a.dcm", _bytes(_dataset())), ("rle.dcm", _bytes(garbage_rle))],
                                            422, "undecodable_pixels"),
        "not DICOM": ([("notes.dcm", b"this is a text file, not an image" * 10)], 400, "not_dicom"),
        "no pixels": ([("report.dcm", _bytes(_dataset(pixels=False)))], 422, "no_pixel_data"),
        "truncated MR": ([("MR_truncated.dcm", (dicom_dir / "pydicom" / "MR_truncated.dcm").read_bytes())],
                         422, "truncated"),
        "cut short": ([("cut.dcm", short[: len(short) - 1000])], 422, "truncated"),
        "huge dimensions": ([("huge.dcm", _bytes(huge))], 413, "over_limits"),
        "too many frames": ([("frames.dcm", _bytes(many_frames))], 413, "over_limits"),
        "empty file": ([("empty.dcm", b"")], 400, "empty_upload"),
        "mixed series": ([("a.dcm", _bytes(_dataset(series="1.2.3.4.1"))),
                          ("b.dcm", _bytes(_dataset(series="1.2.3.4.2", position=1)))], 422, "inconsistent_series"),
        "mixed bits": ([("a.dcm", _bytes(_dataset())), ("b.dcm", _bytes(eight_bit))], 422, "inconsistent_series"),
        "one bad file in a good series": ([("a.dcm", _bytes(_dataset())), ("b.txt", b"%PDF-1.4 not dicom" * 20)],
                                          400, "not_dicom"),
        "an empty file in a good series": ([("a.dcm", _bytes(_dataset())), ("nothing.dcm", b"")], 400, "empty_file"),
    }


CASE_NAMES = ["garbage RLE beside a good slice", "not DICOM", "no pixels", "truncated MR", "cut short",
              "huge dimensions", "too many frames",
              "empty file", "mixed series", "mixed bits",
              "one bad file in a good series", "an empty file in a good series"]


def _nothing_stored(node) -> None:
    assert node.client.get("/api/v1/records", headers=node.headers(role="instadmin")).json["total"] == 0
    assert sorted(p.name for p in (node.root / "store").iterdir()) == [KEY_CHECK, MARKER]  # the store's own files only


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_upload_is_refused_with_its_reason(node, dicom_dir, case):
    files, status, code = _cases(dicom_dir)[case]
    reply = node.upload(files)
    assert reply.status_code == status, reply.json
    error = reply.json["error"]
    assert error["code"] == code and len(error["message"]) > 10
    named = [name for name, data in files if name in error["message"]]
    assert named or code == "inconsistent_series" or code == "empty_upload"
    _nothing_stored(node)


def test_upload_without_files_field(node):
    reply = node.client.post("/api/v1/records", data={}, headers=node.headers(), content_type="multipart/form-data")
    assert reply.status_code == 400 and reply.json["error"]["code"] == "empty_upload"
    _nothing_stored(node)


def test_upload_over_the_size_limit(make_node):
    node = make_node(limits__max_upload_mb=1)
    big = _dataset(rows=1024, cols=1024)
    reply = node.upload([("big.dcm", _bytes(big))])
    assert reply.status_code == 413
    _nothing_stored(node)
    node.registry.shutdown()


@pytest.mark.parametrize("door", ["upload", "STOW-RS"])
def test_a_deflate_bomb_is_refused_before_anything_inflates_it(node, door):
    """A deflated file was inflated whole in the node's own process before the bomb check: reading
    its meta group alone (is it checked here or by a decode worker?) and, over STOW-RS, reading its
    header made pydicom inflate everything (1.5 MB took 3 GB of RAM and 5 to 18 s)."""
    import tracemalloc

    from tests.hostile.corpus import _deflate_bomb

    bomb = _deflate_bomb(192)  # 192 MiB of zeros in about 190 KB
    tracemalloc.start()
    try:
        if door == "upload":
            reply = node.upload([("bomb.dcm", bomb)])
            assert reply.status_code == 413 and reply.json["error"]["code"] == "over_limits", reply.json
            assert "decompression bomb" in reply.json["error"]["message"]
        else:
            reply = node.client.post("/dicomweb/studies", headers={
                **node.headers(), "Accept": "application/dicom+json",
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=B'},
                data=b"--B\r\nContent-Type: application/dicom\r\n\r\n" + bomb + b"\r\n--B--\r\n")
            failed = reply.json["00081198"]["Value"][0]
            assert failed["00081197"]["Value"] == [0xA700], reply.json  # out of resources
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 96 * 2**20, f"{peak / 2**20:.0f} MiB held while refusing it"
    _nothing_stored(node)


@pytest.mark.parametrize("door", ["upload", "STOW-RS"])
def test_a_meta_group_whose_values_cannot_be_read_is_a_4xx(node, door):
    """The meta group is read alone now (a deflated body is not inflated to find the syntax), and
    pydicom converts a value when it is asked for: a Transfer Syntax UID sent as 3 bytes of US was
    read outside the guard, and both doors answered 500."""
    import struct

    from daemons.render.ingest.upload_checks import read_file_meta

    good = _bytes(_dataset())
    _, body_start = read_file_meta(good)

    def element(tag: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH2sH", 2, tag, vr, len(value)) + value

    meta = element(0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0") + element(0x0010, b"US", b"\x01\x02\x03")
    broken = b"\0" * 128 + b"DICM" + meta + good[body_start:]
    if door == "upload":
        reply = node.upload([("broken.dcm", broken)])
        assert 400 <= reply.status_code < 500 and reply.json["error"]["code"], reply.get_data()[:300]
    else:
        reply = node.client.post("/dicomweb/studies", headers={
            **node.headers(), "Accept": "application/dicom+json",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=B'},
            data=b"--B\r\nContent-Type: application/dicom\r\n\r\n" + broken + b"\r\n--B--\r\n")
        assert reply.status_code == 409 and reply.json["00081198"]["Value"], reply.get_data()[:300]
    _nothing_stored(node)


def _out_of_range_numbers(position: float, series: str) -> bytes:
    """A slice whose Series and Instance Numbers are beyond an Integer String's range (PS3.5 6.2:
    32 bits), written as such; they overflowed the catalogue's integer columns (a 500, the series
    left stored without its catalogue rows)."""
    ds = _dataset(series=series, position=position)
    with pydicom.config.disable_value_validation():
        ds.SeriesNumber = "99999999999999999999"
        ds.InstanceNumber = "-99999999999" if position else "2147483648"
    return _bytes(ds)


def test_numbers_beyond_their_vr_are_stored_and_not_indexed(node):
    reply = node.upload([("a.dcm", _out_of_range_numbers(0.0, "1.2.3.77")),
                         ("b.dcm", _out_of_range_numbers(1.0, "1.2.3.77"))])
    assert reply.status_code == 201, reply.json
    cat = node.app.extensions["sivr_node"].models.catalogue
    assert [s.series_number for s in cat.Series.select()] == [None]
    assert [i.instance_number for i in cat.Instance.select()] == [None, None]
    found = node.client.get("/dicomweb/series?SeriesInstanceUID=1.2.3.77", headers=node.headers(role="instadmin"))
    assert found.status_code == 200 and len(found.json) == 1, found.data


def test_a_series_the_catalogue_refuses_leaves_nothing_stored(node, monkeypatch):
    """Whatever makes indexing a new series fail, its files leave the store again with its rows:
    no record listed that no search finds. The next try stores it whole."""
    files = [("a.dcm", _bytes(_dataset(series="1.2.3.78"))), ("b.dcm", _bytes(_dataset(series="1.2.3.78", position=1)))]
    import daemons.render.ingest.service as service

    def refuse(*args, **kwargs):
        raise RuntimeError("the catalogue refused the rows")

    real = service.index_series
    monkeypatch.setattr(service, "index_series", refuse)
    assert node.upload(files).status_code == 500  # a fault of the node itself
    _nothing_stored(node)
    monkeypatch.setattr(service, "index_series", real)
    assert node.upload(files).status_code == 201


@pytest.mark.parametrize("keyword", ["PatientID", "IssuerOfPatientID"])
def test_a_patient_id_longer_than_its_vr_is_refused_not_cut(node, keyword):
    """A Patient ID (or its issuer) of 70 characters was filed under its first 64: a search for the id
    sent found nothing, and two patients sharing those 64 characters would share a record."""
    ds = _dataset(series="1.2.3.79")
    with pydicom.config.disable_value_validation():
        setattr(ds, keyword, "P" * 70)
    reply = node.upload([("long.dcm", _bytes(ds))])
    assert reply.status_code == 422 and reply.json["error"]["code"] == "invalid_attribute", reply.json
    assert f"{keyword} " in reply.json["error"]["message"] and "70 characters" in reply.json["error"]["message"]
    _nothing_stored(node)
    setattr(ds, keyword, "P" * 64)
    assert node.upload([("long.dcm", _bytes(ds))]).status_code == 201
