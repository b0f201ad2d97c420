"""Seeded mutations of real DICOM files for the upload fuzzer (tests/fuzz/test_fuzz_uploads.py).

Every case is built from a `random.Random`, so a seed replays the same cases. Seeds are real
files: slices of the bundled CT (demo_data, JPEG 2000 lossless) and pydicom's test files
(uncompressed, RLE, JPEG baseline, JPEG 2000, greyscale and colour).
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.filereader import data_element_generator
from pydicom.uid import generate_uid

from tests.hostile.corpus import (
    _deep_sequence,
    _deflate_bomb,
    j2k_bomb,
    rle_corrupted_segments,
)

REPO = Path(__file__).resolve().parents[2]
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm", "JPEG2000.dcm",
                 "SC_rgb_jpeg_dcmtk.dcm")
SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201")
EXTREMES = (0, 1, 2, 3, 7, 255, 256, 4095, 32767, 32768, 65535)
DIMENSION_TAGS = ((0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0101), (0x0028, 0x0102),
                  (0x0028, 0x0002), (0x0028, 0x0103))


@dataclass
class Case:
    kind: str
    files: list[tuple[str, bytes]]


def seed_files() -> list[tuple[str, bytes]]:
    """The real files every case starts from (no network: pydicom's bundled files only)."""
    seeds = [(name, Path(get_testdata_file(name, download=False)).read_bytes()) for name in PYDICOM_FILES]
    ct = sorted((REPO / "demo_data" / "ct-chest-100").glob("*.dcm"))
    seeds += [(path.name, path.read_bytes()) for path in ct[40:43]]
    return seeds


def _elements(data: bytes) -> list[tuple[int, int, int, bool]]:
    """(tag, value offset, length, long length field) of the top-level elements of an explicit VR LE file."""
    stream = io.BytesIO(data)
    stream.seek(144 + int.from_bytes(data[140:144], "little"))
    found = []
    try:
        for element in data_element_generator(stream, False, True, defer_size=64):
            long_form = element.VR in ("OB", "OW", "SQ", "UN", "UT", "OF", "OD", "OL", "UC", "UR", "OV")
            found.append((int(element.tag), element.value_tell, element.length, long_form))
    except Exception:
        return found
    return found


def _fresh_uids(data: bytes) -> bytes:
    """The same file with a new SOP Instance UID, so an accepted mutation is a new record."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def byte_flips(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    header = min(len(out), 4096)
    for _ in range(rng.randint(1, 16)):
        at = rng.randrange(132, header) if rng.random() < 0.6 else rng.randrange(len(out))
        out[at] = rng.randrange(256)
    return bytes(out)


def truncation(rng: random.Random, data: bytes) -> bytes:
    return data[:rng.randrange(len(data))]


def extreme_length(rng: random.Random, data: bytes) -> bytes:
    elements = _elements(data)
    if not elements:
        return byte_flips(rng, data)
    _, tell, _, long_form = rng.choice(elements)
    out = bytearray(data)
    if long_form:
        out[tell - 4:tell] = struct.pack("<I", rng.choice((0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF)))
    else:
        out[tell - 2:tell] = struct.pack("<H", rng.choice((0, 1, 3, 0x7FFF, 0xFFFF)))
    return bytes(out)


def extreme_dimension(rng: random.Random, data: bytes) -> bytes:
    targets = [e for e in _elements(data) if (e[0] >> 16, e[0] & 0xFFFF) in DIMENSION_TAGS and e[2] == 2]
    if not targets:
        return byte_flips(rng, data)
    out = bytearray(data)
    for _, tell, _, _ in rng.sample(targets, rng.randint(1, min(2, len(targets)))):
        out[tell:tell + 2] = struct.pack("<H", rng.choice(EXTREMES))
    return bytes(out)


def swapped_syntax(rng: random.Random, data: bytes) -> bytes:
    at = data.find(b"\x02\x00\x10\x00UI")
    if at < 0:
        return byte_flips(rng, data)
    old_length = struct.unpack_from("<H", data, at + 6)[0]
    uid = rng.choice(SYNTAXES).encode()
    uid += b"\0" * (len(uid) % 2)
    out = data[:at + 6] + struct.pack("<H", len(uid)) + uid + data[at + 8 + old_length:]
    group_length = int.from_bytes(out[140:144], "little") + len(uid) - old_length
    return out[:140] + struct.pack("<I", group_length) + out[144:]


def corrupted_pixels(rng: random.Random, data: bytes) -> bytes:
    """Bytes changed inside the pixel data: fragments, offset tables, RLE segment headers."""
    at = data.rfind(b"\xe0\x7f\x10\x00")
    if at < 0:
        return byte_flips(rng, data)
    out = bytearray(data)
    for _ in range(rng.randint(1, 24)):
        position = rng.randrange(at, min(len(out), at + 256)) if rng.random() < 0.5 else rng.randrange(at, len(out))
        out[position] = rng.randrange(256)
    return bytes(out)


def bomb(rng: random.Random, data: bytes) -> bytes:
    return rng.choice((
        lambda: j2k_bomb(rng.choice((1024, 2048, 4096)), rng.randint(1, 2)),
        lambda: _deflate_bomb(rng.choice((40, 96))),
        rle_corrupted_segments,
    ))()


def deep_nesting(rng: random.Random, data: bytes) -> bytes:
    return _deep_sequence(rng.choice((64, 500, 5000, 50_000)))


MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "byte-flips": byte_flips, "truncation": truncation, "extreme-length": extreme_length,
    "extreme-dimension": extreme_dimension, "swapped-syntax": swapped_syntax,
    "corrupted-pixels": corrupted_pixels, "bomb": bomb, "deep-nesting": deep_nesting,
}


def make_case(rng: random.Random, seeds: list[tuple[str, bytes]], number: int) -> Case:
    """One upload: usually one mutated file, sometimes a mixed series of two seeds (one mutated)."""
    name, data = rng.choice(seeds)
    if rng.random() < 0.1:
        other_name, other = rng.choice(seeds)
        return Case("mixed-series", [(f"{number}-{name}", _fresh_uids(data)),
                                     (f"{number}-{other_name}",
                                      byte_flips(rng, other) if rng.random() < 0.5 else other)])
    kind = rng.choice(sorted(MUTATIONS))
    return Case(kind, [(f"{number}-{kind}-{name}", MUTATIONS[kind](rng, _fresh_uids(data)))])
