"""Every element of an upload converted, each distinct raw element once per process
(daemons/render/ingest/element_check.py): the files of a series repeat most of their header, and
converting it again for each instance was a third of its check. What is remembered must never let
a bad value through, nor read a value out of another file's context."""

from __future__ import annotations

import struct

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from daemons.render.imaging.decode import read_dataset
from daemons.render.ingest import element_check
from daemons.render.ingest.element_check import convert_every_element
from daemons.render.ingest.upload_checks import Limits, UploadError, check_files_here, check_upload
from tests.render.synthetic import dataset, to_bytes

LIMITS = Limits(max_upload_bytes=1 << 30, max_files=100, max_rows=4096, max_columns=4096, max_frames=1000,
                max_decoded_bytes=1 << 30)
NUMBER_OF_SLICES = (0x0054, 0x0081)  # US, after every element the synthetic dataset has


@pytest.fixture(autouse=True)
def nothing_remembered(monkeypatch):
    monkeypatch.setattr(element_check, "_converted", set())


def _instance(series: str, position: float, **attributes) -> bytes:
    ds = dataset(8, 8, series=series, position=position)
    ds.PatientName, ds.PatientID, ds.StudyDescription = "Doe^Jane", "P-1", "CT CHEST"
    ds.ReferencedImageSequence = [pydicom.Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = ds.SOPClassUID
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def _counting(monkeypatch) -> list[int]:
    """The tags pydicom converts from raw from now on."""
    converted: list[int] = []
    real = pydicom.dataset.convert_raw_data_element

    def counting(raw, *args, **kwargs):
        converted.append(raw.tag)
        return real(raw, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset, "convert_raw_data_element", counting)
    return converted


def test_a_second_instance_converts_only_what_differs_and_reads_the_same(monkeypatch):
    series = generate_uid()
    first, second = _instance(series, 0.0), _instance(series, 1.0)
    convert_every_element(read_dataset(first))
    ds = read_dataset(second)
    converted = _counting(monkeypatch)
    convert_every_element(ds)
    differing = {0x00080018, 0x00200032, 0x7FE00010}  # its SOP Instance UID, its position, its pixels
    # the sequence is converted as a whole, and pydicom reads Pixel Representation for its items
    assert set(converted) <= differing | {0x00081140, 0x00280103}, [hex(t) for t in converted]
    assert differing & {0x00080018, 0x00200032} <= set(converted)
    fresh = pydicom.dcmread(pydicom.filebase.DicomBytesIO(second))
    assert [(e.tag, e.VR, e.value) for e in ds.iterall()] == [(e.tag, e.VR, e.value) for e in fresh.iterall()]


def _with_number_of_slices(raw: bytes, value: bytes) -> bytes:
    """`raw` with (0054,0081) US appended, its value written as given (3 bytes: not a US)."""
    return raw + struct.pack("<HH2sH", *NUMBER_OF_SLICES, b"US", len(value)) + value


def test_a_bad_value_is_refused_every_time_also_after_a_good_one_of_the_same_tag():
    series = generate_uid()

    def without_pixels(position: float) -> bytes:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_instance(series, position)))
        del ds.PixelData
        return to_bytes(ds)

    good = _with_number_of_slices(without_pixels(0.0), struct.pack("<H", 40))
    convert_every_element(read_dataset(good))
    bad = _with_number_of_slices(without_pixels(1.0), b"\x28\x00\x00")
    for _ in range(2):
        with pytest.raises(Exception, match="(?i)length"):
            convert_every_element(read_dataset(bad))


def _odd_number_of_slices(raw: bytes) -> bytes:
    """`raw` with its (0054,0081) Number of Slices (US) made three bytes long: no US value
    (pydicom refuses it under its default settings, as the node runs)."""
    good = struct.pack("<HH2sHH", *NUMBER_OF_SLICES, b"US", 2, 40)
    assert raw.count(good) == 1
    return raw.replace(good, struct.pack("<HH2sH", *NUMBER_OF_SLICES, b"US", 3) + b"\x28\x00\x00")


def test_a_bad_value_inside_a_sequence_is_refused_every_time():
    """pydicom writes sequences and items of undefined length: a value one byte longer keeps the
    file readable, and only its conversion fails."""
    series = generate_uid()
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = pydicom.uid.CTImageStorage
    item.add_new(NUMBER_OF_SLICES, "US", 40)
    convert_every_element(read_dataset(_instance(series, 0.0, ReferencedImageSequence=[item])))
    bad = _odd_number_of_slices(_instance(series, 1.0, ReferencedImageSequence=[item]))
    for _ in range(2):
        with pytest.raises(Exception, match="(?i)length"):
            convert_every_element(read_dataset(bad))


def _implicit(ds: pydicom.Dataset) -> bytes:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return to_bytes(ds)


def _plain(series: str) -> pydicom.Dataset:
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(_instance(series, 0.0)))


def test_an_ambiguous_vr_is_decided_in_its_own_file():
    """Smallest Image Pixel Value is US or SS, decided by the file's own Pixel Representation: the
    same bytes read in a file that has one say nothing of a file that has none (pydicom cannot
    decide, and the file is refused), nor make a signed value unsigned."""
    unsigned = _plain(generate_uid())
    unsigned.PixelRepresentation = 0
    unsigned.add_new(0x00280106, "US", 65535)
    signed = _plain(generate_uid())
    signed.add_new(0x00280106, "SS", -1)
    undecided = _plain(generate_uid())
    undecided.add_new(0x00280106, "US", 65535)
    del undecided.PixelRepresentation
    first, second = read_dataset(_implicit(unsigned)), read_dataset(_implicit(signed))
    convert_every_element(first)
    convert_every_element(second)
    assert first.SmallestImagePixelValue == 65535 and second.SmallestImagePixelValue == -1
    with pytest.raises(AttributeError):
        convert_every_element(read_dataset(_implicit(undecided)))


def test_a_private_element_is_read_with_its_own_private_creator():
    """Read without its VR (implicit), a private element takes the VR its private creator's
    dictionary gives: two bytes are any value of an unknown creator's element (UN), but no value of
    GE's (0019,xx02), an SL."""
    def private(creator: str) -> bytes:
        ds = _plain(generate_uid())
        ds.add_new(0x00190010, "LO", creator)
        ds.add_new(0x00191002, "UN", b"\x01\x02")
        return _implicit(ds)

    convert_every_element(read_dataset(private("SOMEONE ELSE")))
    with pytest.raises(Exception, match="(?i)length"):
        convert_every_element(read_dataset(private("GEMS_ACQU_01")))


def test_a_value_read_leniently_is_checked_again_when_reading_is_strict(monkeypatch):
    """pydicom's reading settings are process-wide: a value it let through under its default
    (warnings) is not taken as checked once the process reads strictly."""
    def with_bad_integer_string() -> bytes:
        raw = _instance(generate_uid(), 0.0, NumberOfFrames=1)
        at = raw.index(struct.pack("<HH", 0x0028, 0x0008) + b"IS")  # Number of Frames, IS "1 "
        return raw[:at + 8] + b"1X" + raw[at + 10:]  # the value after tag, VR and length: not an integer

    with pytest.warns(UserWarning, match="Invalid value for VR IS"):
        convert_every_element(read_dataset(with_bad_integer_string()))
    monkeypatch.setattr(pydicom.config.settings, "_reading_validation_mode", pydicom.config.RAISE)
    with pytest.raises(ValueError):
        convert_every_element(read_dataset(with_bad_integer_string()))


def test_the_upload_checks_refuse_a_bad_file_after_good_ones_of_its_series():
    """Through the checks the three front doors run: a series' good files, then one whose value is
    not of its VR, refused with the file's name."""
    series = generate_uid()

    def instance(position: float) -> bytes:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_instance(series, position)))
        ds.add_new(NUMBER_OF_SLICES, "US", 40)
        return to_bytes(ds)

    check_upload([(f"{i}.dcm", instance(float(i))) for i in range(3)], LIMITS, check_files_here)
    with pytest.raises(UploadError) as refused:
        check_upload([("bad.dcm", _odd_number_of_slices(instance(3.0)))], LIMITS, check_files_here)
    assert refused.value.status == 422 and "bad.dcm" in refused.value.message, refused.value.message
