"""A corpus of malformed and hostile DICOM files, made from one small valid CT slice.

Each case is `(name, bytes)`. None of them may crash a render node, produce a 5xx, or leave
anything stored: truncations at every structural boundary, huge declared dimensions, bad VRs and
values, deep sequence nesting, decompression bombs, and files that are not DICOM at all.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

Case = tuple[str, bytes]


def base_dataset() -> Dataset:
    """pydicom's bundled CT_small (128×128 int16), with fresh UIDs so cases never collide."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()  # a series grows by its UID: each case is its own series
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _mutated(**attributes) -> Callable[[], bytes]:
    def make() -> bytes:
        ds = base_dataset()
        for keyword, value in attributes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return to_bytes(ds)

    return make


def _mutated_raw(keyword: str, raw: bytes) -> Callable[[], bytes]:
    """Write `raw` as the element's value, which pydicom would refuse to write itself.

    A valid placeholder of the same shape (`+7…` per value; `+` never occurs in UIDs) is written
    first, then its bytes are swapped for `raw`.
    """

    def make() -> bytes:
        parts = raw.split(b"\\")
        placeholder = "\\".join("+" + "7" * (len(part) - 1) for part in parts)
        ds = base_dataset()
        setattr(ds, keyword, placeholder)
        data = to_bytes(ds)
        encoded = placeholder.encode()
        assert data.count(encoded) == 1, f"placeholder for {keyword} is not unique"
        return data.replace(encoded, raw)

    return make


def _truncations(valid: bytes) -> Iterator[Case]:
    """The valid file cut at structural boundaries and at fractions of its length."""
    cuts = {0, 1, 127, 128, 131, 132, 140, 200, 300, len(valid) - 1, len(valid) - 2}
    cuts |= {len(valid) * k // 20 for k in range(1, 20)}
    for cut in sorted(c for c in cuts if 0 <= c < len(valid)):
        yield f"truncated-at-{cut}", valid[:cut]


def _raw_element(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    """An explicit-VR little-endian element written by hand, for VRs pydicom would refuse."""
    group, elem = tag
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _with_raw_elements(*elements: bytes) -> bytes:
    """A minimal Part-10 file whose dataset is the given raw elements."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue() + b"".join(elements)


def _deep_sequence(depth: int) -> bytes:
    """`depth` sequences nested inside each other with undefined lengths, written by hand."""
    sequence_open = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    item_open = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_close = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = (sequence_open + item_open) * depth + (item_close + sequence_close) * depth
    rows = _raw_element((0x0028, 0x0010), b"US", struct.pack("<H", 16))
    return _with_raw_elements(nested + rows)


def _deflate_bomb(inflated_mb: int) -> bytes:
    """Deflated transfer syntax whose body inflates to `inflated_mb` MiB of zeros."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * (1 << 20)
    body = b"".join(compressor.compress(chunk) for _ in range(inflated_mb)) + compressor.flush()
    return buffer.getvalue() + body


def _encapsulated(syntax: str, frames: list[bytes], rows: int, cols: int, n_frames: int = 1) -> bytes:
    ds = base_dataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = rows, cols
    if n_frames != 1:
        ds.NumberOfFrames = n_frames
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def _rle_bomb() -> bytes:
    """An RLE frame that declares a 30000×30000 image and expands a few bytes to gigabytes."""
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    run = bytes([0x81, 0]) * 1000  # each pair says "repeat 0 128 times"
    return _encapsulated(RLELossless, [header + run], 30000, 30000)


def _j2k_header_bomb() -> bytes:
    """A JPEG 2000 codestream whose SIZ marker claims a 60000×60000 image."""
    siz = struct.pack(">HHHIIIIIIIIH", 0xFF51, 41, 0, 60000, 60000, 0, 0, 60000, 60000, 0, 0, 1)
    siz += bytes([15, 1, 1])
    codestream = b"\xff\x4f" + siz + b"\xff\xd9"
    return _encapsulated(JPEG2000Lossless, [codestream], 60000, 60000)


def rle_corrupted_segments() -> bytes:
    """A 16×16 16-bit RLE frame whose two segments each expand past the image: pylibjpeg-rle 2.2
    panics (pyo3 PanicException, a BaseException) with "index out of bounds"."""
    segment = bytes([0x81, 0]) * 3  # three runs of 128 zeros: 384 bytes where 256 fit
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    return _encapsulated(RLELossless, [header + segment + segment], 16, 16)


@functools.lru_cache(maxsize=4)
def _zero_j2k(size: int) -> bytes:
    """A lossless JPEG 2000 codestream of a size×size 16-bit image of zeros (a few hundred bytes)."""
    from pydicom.pixels import get_encoder

    image = np.zeros((size, size), dtype=np.uint16)
    return get_encoder(JPEG2000Lossless).encode(
        image, rows=size, columns=size, samples_per_pixel=1, bits_allocated=16, bits_stored=16,
        pixel_representation=0, photometric_interpretation="MONOCHROME2", number_of_frames=1)


def j2k_bomb(size: int = 8192, frames: int = 1) -> bytes:
    """A valid JPEG 2000 file of `frames` size×size frames from a ~400-byte codestream each: a
    decompression bomb (8192² decodes to 128 MiB plus the codec's own buffers) and, with many
    frames, a file that keeps a decoder busy for as long as one likes."""
    ds = base_dataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    if frames != 1:
        ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([_zero_j2k(size)] * frames)
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def _duplicated(keyword: str, value: bytes) -> Callable[[], bytes]:
    """CT_small with a second copy of an element written right after the first (pydicom keeps the last)."""

    def make() -> bytes:
        data = to_bytes(base_dataset())
        element = base_dataset()[keyword]
        tag = struct.pack("<HH", element.tag.group, element.tag.element)
        at = data.index(tag + element.VR.encode())
        long_form = element.VR in ("OB", "OW", "SQ", "UN", "UT", "OF")
        header = 12 if long_form else 8
        length = struct.unpack_from("<I" if long_form else "<H", data, at + (8 if long_form else 6))[0]
        end = at + header + length
        copy = _raw_element((element.tag.group, element.tag.element), element.VR.encode(), value)
        return data[:end] + copy + data[end:]

    return make


def _vr_case_changed() -> bytes:
    """CT_small with one byte changed: Rows's VR `US` written `Us` (pydicom: NotImplementedError)."""
    data = to_bytes(base_dataset())
    at = data.index(b"\x28\x00\x10\x00US")
    return data[:at + 4] + b"Us" + data[at + 6:]


def _not_dicom() -> Iterator[Case]:
    yield "empty-file", b""
    yield "one-byte", b"\0"
    yield "preamble-only", b"\0" * 128
    yield "preamble-and-magic-only", b"\0" * 128 + b"DICM"
    yield "magic-then-garbage", b"\0" * 128 + b"DICM" + bytes(range(256)) * 8
    yield "random-bytes", np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    yield "png-file", b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    yield "zip-file", b"PK\x03\x04" + b"\0" * 100
    yield "text-file", b"Patient name: Jane Doe\nThis is not DICOM.\n" * 20
    yield "html-file", b"<html><script>alert(1)</script></html>"
    yield "json-file", b'{"Rows": 512}'
    yield "utf16-text", "not dicom at all".encode("utf-16")
    yield "all-ff", b"\xff" * 5000


def _bad_headers() -> Iterator[tuple[str, Callable[[], bytes]]]:
    yield "huge-rows-cols", _mutated(Rows=65535, Columns=65535)
    yield "huge-frames", _mutated(NumberOfFrames=2**31 - 1)
    yield "frames-negative", _mutated_raw("NumberOfFrames", b"-917")
    yield "frames-not-a-number", _mutated_raw("NumberOfFrames", b"abc")
    yield "frames-minus-one", _mutated_raw("NumberOfFrames", b"-1")
    yield "frames-1e9", _mutated_raw("NumberOfFrames", b"1e9")
    yield "frames-nan", _mutated_raw("NumberOfFrames", b"NaN")
    yield "columns-disagree-with-pixel-length", _mutated(Columns=64)
    yield "rows-disagree-with-pixel-length", _mutated(Rows=127)
    yield "duplicated-rows", _duplicated("Rows", struct.pack("<H", 64))
    yield "duplicated-columns", _duplicated("Columns", struct.pack("<H", 128))
    yield "duplicated-pixel-data", _duplicated("PixelData", b"\0" * 128 * 128 * 2)
    yield "vr-us-written-Us", _vr_case_changed
    yield "rows-zero", _mutated(Rows=0)
    yield "columns-zero", _mutated(Columns=0)
    yield "bits-allocated-zero", _mutated(BitsAllocated=0)
    yield "bits-allocated-7", _mutated(BitsAllocated=7)
    yield "bits-allocated-64", _mutated(BitsAllocated=64)
    yield "bits-stored-over-allocated", _mutated(BitsStored=32)
    yield "high-bit-out-of-range", _mutated(HighBit=40)
    yield "samples-per-pixel-7", _mutated(SamplesPerPixel=7)
    yield "samples-per-pixel-0", _mutated(SamplesPerPixel=0)
    yield "photometric-unknown", _mutated(PhotometricInterpretation="NOT_A_COLOUR")
    yield "photometric-rgb-on-grey-data", _mutated(PhotometricInterpretation="RGB")
    yield "pixel-representation-2", _mutated(PixelRepresentation=2)
    yield "no-pixel-data", _mutated(PixelData=None)
    yield "no-rows", _mutated(Rows=None)
    yield "no-columns", _mutated(Columns=None)
    yield "no-bits-allocated", _mutated(BitsAllocated=None)
    yield "no-photometric", _mutated(PhotometricInterpretation=None)
    yield "pixel-data-short", _mutated(PixelData=b"\0\0" * 100)
    yield "pixel-data-empty", _mutated(PixelData=b"")
    yield "pixel-data-odd-length-short", _odd_length_pixel_data
    yield "rescale-slope-nan", _mutated_raw("RescaleSlope", b"NaN")
    yield "rescale-slope-text", _mutated_raw("RescaleSlope", b"steep")
    yield "rescale-slope-huge", _mutated(RescaleSlope="1e308")
    yield "window-width-zero", _mutated(WindowCenter="40", WindowWidth="0")
    yield "window-width-negative", _mutated(WindowCenter="40", WindowWidth="-400")
    yield "window-text", _mutated_raw("WindowWidth", b"wide")
    # Pixel Spacing 0\0 is not hostile: it is unknown spacing, shown with a warning (issue 14 item 3,
    # tests/render/test_refusals.py); a negative spacing is still refused.
    yield "pixel-spacing-negative", _mutated(PixelSpacing=[-1, -1])
    yield "pixel-spacing-text", _mutated_raw("PixelSpacing", b"ab\\cd")
    yield "orientation-degenerate", _mutated(ImageOrientationPatient=[0, 0, 0, 0, 0, 0])
    yield "orientation-short", _mutated(ImageOrientationPatient=[1, 0])
    yield "position-text", _mutated_raw("ImagePositionPatient", b"xx\\yy\\zz")
    # an unknown but valid syntax UID is no longer refused: it is stored only (tests/render/test_stored_only.py)
    yield "transfer-syntax-retired-jpeg", lambda: _with_syntax("1.2.840.10008.1.2.4.53")
    yield "transfer-syntax-missing", lambda: _with_syntax(None)
    yield "transfer-syntax-garbage", lambda: _with_syntax("not a uid at all")


def _odd_length_pixel_data() -> bytes:
    """Pixel Data declaring (and holding) one byte less than the image needs: an odd length,
    which pydicom never writes itself, so the element's length field is patched by hand."""
    ds = base_dataset()
    if "DataSetTrailingPadding" in ds:
        del ds.DataSetTrailingPadding
    data = to_bytes(ds)
    header = struct.pack("<HH2sH", 0x7FE0, 0x0010, b"OW", 0)
    at = data.rindex(header) + len(header)
    (length,) = struct.unpack_from("<I", data, at)
    assert at + 4 + length == len(data), "Pixel Data is expected to end the file"
    return data[:at] + struct.pack("<I", length - 1) + data[at + 4:-1]


def _with_syntax(syntax: str | None) -> bytes:
    ds = base_dataset()
    if syntax is None:
        del ds.file_meta.TransferSyntaxUID
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def _bad_vrs() -> Iterator[Case]:
    rows = _raw_element((0x0028, 0x0010), b"US", struct.pack("<H", 16))
    yield "vr-not-letters", _with_raw_elements(_raw_element((0x0010, 0x0010), b"\x01\x02", b"AB"))
    yield "vr-lowercase", _with_raw_elements(_raw_element((0x0010, 0x0010), b"pn", b"AB"))
    yield "us-with-3-bytes", _with_raw_elements(_raw_element((0x0028, 0x0010), b"US", b"\x01\x02\x03") + b"\0")
    yield "length-past-end", _with_raw_elements(struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 60000) + b"AB")
    yield "undefined-length-non-sequence", _with_raw_elements(
        struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 0xFFFFFFFF) + b"\0" * 64)
    yield "sequence-never-closed", _with_raw_elements(
        rows + struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
    yield "item-length-huge", _with_raw_elements(
        struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0x7FFFFFF0))
    yield "tags-out-of-order", _with_raw_elements(
        _raw_element((0x0028, 0x0011), b"US", struct.pack("<H", 8)) + rows)
    yield "is-value-garbage", _with_raw_elements(_raw_element((0x0020, 0x0013), b"IS", b"12ab"))
    yield "ds-value-garbage", _with_raw_elements(_raw_element((0x0028, 0x1053), b"DS", b"1.2.3.4."))
    yield "ui-value-huge", _with_raw_elements(_raw_element((0x0008, 0x0018), b"UI", b"1." * 30000))
    yield "group-length-lies", _with_raw_elements(_raw_element((0x0008, 0x0000), b"UL", struct.pack("<I", 10**9)))


def _bombs() -> Iterator[tuple[str, Callable[[], bytes]]]:
    yield "deflate-bomb-64mb", lambda: _deflate_bomb(64)
    yield "deflate-bomb-512mb", lambda: _deflate_bomb(512)
    yield "rle-bomb-30000px", _rle_bomb
    yield "j2k-declares-60000px", _j2k_header_bomb
    yield "encapsulated-garbage-j2k", lambda: _encapsulated(JPEG2000Lossless, [b"\0" * 500], 128, 128)
    yield "encapsulated-garbage-rle", lambda: _encapsulated(RLELossless, [b"\xff" * 64], 128, 128)
    yield "rle-corrupted-segments-panic", rle_corrupted_segments
    yield "encapsulated-frames-mismatch", lambda: _encapsulated(RLELossless, [b"\0" * 64], 128, 128, 500)
    yield "encapsulated-zero-fragments", lambda: _encapsulated_empty()
    yield "deep-sequence-200", lambda: _deep_sequence(200)
    yield "deep-sequence-2000", lambda: _deep_sequence(2000)
    yield "deep-sequence-100000", lambda: _deep_sequence(100_000)


def _encapsulated_empty() -> bytes:
    ds = base_dataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def hostile_corpus() -> list[Case]:
    """Every case, built fresh (≥100)."""
    cases: list[Case] = []
    cases += list(_truncations(to_bytes(base_dataset())))
    cases += list(_not_dicom())
    cases += [(name, make()) for name, make in _bad_headers()]
    cases += list(_bad_vrs())
    cases += [(name, make()) for name, make in _bombs()]
    return cases
