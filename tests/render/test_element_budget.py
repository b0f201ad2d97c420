"""A file's header may hold only so many data elements and sequence items (`ingest.element_budget`).

pydicom spends about 20 µs and over a kilobyte on every element and item it reads, and an
uncompressed file is parsed in the node's own process: a CT slice whose private sequence held a
million empty items (8 MB) cost the node 21 s of CPU and 1.5 GB at upload, and was stored. Such
files are refused from a count of their bytes, before any parse, at every door, however the items
are hidden (undefined or defined length, VR UN, implicit VR, a deflated data set, big endian).
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from daemons.render.ingest import element_budget
from daemons.render.ingest.upload_checks import (
    DEFLATED,
    Limits,
    check_upload,
    read_file_meta,
)
from tests.dicomweb.test_stow_wado import body_of, instance_count, stow
from tests.hostile.corpus import base_dataset

LIMITS = Limits(2048 << 20, 4000, 8192, 8192, 4000, 4096 << 20)
#: more items than any file may hold (50,150 for a single frame): 1.6 MB of empty items
ITEMS = 200_000
PLACEHOLDER = "PLACEHOLDER!"


def _written(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _with_items(items: int, vr: bytes = b"SQ", syntax: str = ExplicitVRLittleEndian, undefined: bool = True,
                frames: int = 1) -> bytes:
    """A CT slice (or `frames` copies of it in one file) whose private element (0009,1001) is a
    sequence of `items` empty items, written as `vr` (or without one, in implicit VR)."""
    ds = base_dataset()
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.PixelData = ds.PixelData * frames
    ds.add_new(0x00090010, "LO", "HOSTILE")
    ds.add_new(0x00091001, "LO", PLACEHOLDER)
    little = syntax != ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    order = "<" if little else ">"
    inner = "<" if vr == b"UN" else order  # PS3.5 6.2.2: a UN value is in Implicit VR Little Endian
    body = struct.pack(inner + "HHI", 0xFFFE, 0xE000, 0) * items
    length = 0xFFFFFFFF if undefined else len(body)
    header = struct.pack(order + "HH", 0x0009, 0x1001)
    header += struct.pack(order + "I", length) if implicit else vr + b"\0\0" + struct.pack(order + "I", length)
    sequence = header + body + (struct.pack(inner + "HHI", 0xFFFE, 0xE0DD, 0) if undefined else b"")
    if implicit:
        placeholder = struct.pack("<HHI", 0x0009, 0x1001, len(PLACEHOLDER)) + PLACEHOLDER.encode()
    else:
        placeholder = (struct.pack(order + "HH", 0x0009, 0x1001) + b"LO" + struct.pack(order + "H", len(PLACEHOLDER))
                       + PLACEHOLDER.encode())
    if syntax == DeflatedExplicitVRLittleEndian:  # the items inside the deflated stream
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        meta = _written(ds)[:read_file_meta(_written(ds))[1]]
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        plain = _written(ds)
        dataset = plain[read_file_meta(plain)[1]:]
        assert dataset.count(placeholder) == 1
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return meta + deflater.compress(dataset.replace(placeholder, sequence)) + deflater.flush()
    ds.file_meta.TransferSyntaxUID = syntax
    raw = _written(ds)
    assert raw.count(placeholder) == 1
    return raw.replace(placeholder, sequence)


HIDINGS = {
    "explicit SQ, undefined length": {},
    "explicit SQ, defined length": {"undefined": False},
    "VR UN": {"vr": b"UN"},
    "implicit VR": {"syntax": ImplicitVRLittleEndian},
    "big endian": {"syntax": ExplicitVRBigEndian},
    "deflated (28 KB inflating to 1.6 MB)": {"syntax": DeflatedExplicitVRLittleEndian},
}


@pytest.mark.parametrize("hiding", list(HIDINGS))
def test_a_header_of_more_items_than_its_frames_allow_is_refused_before_it_is_parsed(node, hiding):
    """Before: 201 and stored, after 3.5 to 4.2 s of the node's (or a decode worker's) CPU for each
    (the deflated one also parsed again in the node for its analysis); now 413 in a fraction of it."""
    raw = _with_items(ITEMS, **HIDINGS[hiding])
    started = time.process_time()
    reply = node.upload([("hostile.dcm", raw)])
    assert reply.status_code == 413, reply.json
    assert reply.json["error"]["code"] == "over_limits"
    message = reply.json["error"]["message"]
    assert message.startswith("hostile.dcm: the file holds more than 50,150 data elements and sequence items")
    assert "send it without the private or repeated data" in message
    assert time.process_time() - started < 2.0  # the node's own CPU: the count, no parse
    assert instance_count(node) == 0
    assert node.upload([("good.dcm", _written(base_dataset()))]).status_code == 201


def test_stow_rs_refuses_such_an_instance_and_stores_the_others(node):
    """Before: both stored (200)."""
    reply = stow(node, body_of([_with_items(ITEMS), _written(base_dataset())]))
    assert reply.status_code == 202, reply.get_data(as_text=True)
    failed = reply.get_json()["00081198"]["Value"]
    assert len(failed) == 1 and len(reply.get_json()["00081199"]["Value"]) == 1
    assert instance_count(node) == 1


def test_the_bound_grows_with_the_frames_and_is_exact():
    """A file of 3 frames may hold 50,000 + 3 x 150 elements and items: exactly that is checked as
    any file is, one more is refused."""
    base = _with_items(0, frames=3)
    syntax, start = read_file_meta(base)
    walk = element_budget._Walk(base, True, 10**9)
    walk.run(start, False)
    room = element_budget.allowed_elements(3) - walk.count
    fits = _with_items(room, frames=3)
    assert check_upload([("fits.dcm", fits)], LIMITS)[0].frames == 3
    with pytest.raises(Exception) as refused:
        check_upload([("over.dcm", _with_items(room + 1, frames=3))], LIMITS)
    assert refused.value.status == 413 and "50,450 for its 3 frames" in refused.value.message


def _pydicom_count(ds: pydicom.Dataset) -> int:
    count = 0
    for element in ds:
        count += 1
        if element.VR == "SQ":
            count += sum(1 + _pydicom_count(item) for item in element.value)
    return count


def test_the_count_is_never_less_than_what_pydicom_reads_in_real_files():
    """pydicom's own test files (every syntax, enhanced multi-frame, structured reports, sequences
    in implicit VR and UN): the walk counts at least what pydicom builds, and no file is near the bound."""
    checked = 0
    for path in get_testdata_files("*"):
        if not os.path.isfile(path):
            continue
        raw = open(path, "rb").read()  # noqa: SIM115 (a test file read whole)
        try:
            syntax, start = read_file_meta(raw)
            read = _pydicom_count(pydicom.dcmread(path))
        except Exception:  # files pydicom itself cannot read are no reference
            continue
        data = raw
        if syntax == DEFLATED:
            data, start = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw[start:]), 0  # a trusted file
        walk = element_budget._Walk(data, syntax != ExplicitVRBigEndian, 10**9)
        walk.run(start, syntax == ImplicitVRLittleEndian)
        assert walk.count >= read or read == 0, path
        assert walk.count < element_budget.MAX_ELEMENTS // 10, path
        checked += 1
    assert checked > 60


def _with_values(values: int, syntax: str) -> bytes:
    """A CT slice whose Referenced Frame Number (IS) holds `values` values: in implicit VR, or in
    explicit VR as UN (whose 4-byte length IS lacks; pydicom reads it as IS by its tag)."""
    ds = base_dataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.add_new(0x00091001, "LO", PLACEHOLDER)
    raw = _written(ds)
    text = b"\\".join([b"1"] * values) + (b" " if values % 2 == 0 else b"")
    if syntax == ImplicitVRLittleEndian:
        placeholder = struct.pack("<HHI", 0x0009, 0x1001, len(PLACEHOLDER)) + PLACEHOLDER.encode()
        element = struct.pack("<HHI", 0x0008, 0x1160, len(text)) + text
    else:
        placeholder = (struct.pack("<HH", 0x0009, 0x1001) + b"LO" + struct.pack("<H", len(PLACEHOLDER))
                       + PLACEHOLDER.encode())
        element = struct.pack("<HH", 0x0008, 0x1160) + b"UN\0\0" + struct.pack("<I", len(text)) + text
    assert raw.count(placeholder) == 1
    return raw.replace(placeholder, element)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_a_text_element_of_more_values_than_a_file_may_hold_is_refused_before_it_is_parsed(node, syntax):
    """Before: 201 after 9.9 s of the node's CPU and 530 MB (2 million IS values, 3.9 MB), and every
    WADO-RS metadata answer of the series took 10.6 s."""
    reply = node.upload([("values.dcm", _with_values(1_000_001, syntax))])
    assert reply.status_code == 413, reply.json
    assert reply.json["error"]["message"].startswith(
        "values.dcm: the file holds more than 1,000,000 values in its text elements")
    assert instance_count(node) == 0
    assert node.upload([("few.dcm", _with_values(1_000, syntax))]).status_code == 201


def test_a_site_that_keeps_large_structure_sets_raises_the_bounds_in_its_config(make_node):
    """The bounds are the node's limits (`limits.max_header_values`, `limits.max_header_elements`): a
    radiotherapy structure set of millions of contour points is refused by default, and stored where
    the site raised the bound for it, as it costs the node what the key's description says."""
    node = make_node(limits__max_header_values=3_000_000, limits__max_header_elements=2_000)
    assert node.upload([("values.dcm", _with_values(1_000_001, ExplicitVRLittleEndian))]).status_code == 201
    reply = node.upload([("items.dcm", _with_items(3_000))])
    assert reply.status_code == 413 and "limits.max_header_elements" in reply.json["error"]["message"]


def _with_character_sets(count: int) -> bytes:
    """A CT slice whose Specific Character Set names `count` terms pydicom does not know."""
    ds = base_dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    raw = _written(ds)
    value = "\\".join(f"X{n}" for n in range(count)).encode()
    value += b" " * (len(value) % 2)
    old = struct.pack("<HH", 0x0008, 0x0005) + b"CS" + struct.pack("<H", 10) + b"ISO_IR 100"
    assert raw.count(old) == 1
    return raw.replace(old, struct.pack("<HH", 0x0008, 0x0005) + b"UT\0\0" + struct.pack("<I", len(value)) + value)


def test_a_file_naming_thousands_of_character_sets_is_refused_before_pydicom_reads_them(node, caplog):
    """A browser upload or STOW-RS part (one ingest with C-STORE) whose Specific Character Set named
    20,000 unknown terms: 201 and stored, after 1.9 s and 40,000 warnings of pydicom's in the log.
    The rule of the DICOM identifiers (`element_budget.CHARACTER_SETS_MAX`), counted from the bytes."""
    import logging

    with caplog.at_level(logging.WARNING, logger="pydicom"):
        reply = node.upload([("charsets.dcm", _with_character_sets(20_000))])
        assert reply.status_code == 413, reply.json
        assert reply.json["error"]["message"].startswith(
            "charsets.dcm: the file's Specific Character Set holds 20,000 values: name at most 16")
        stowed = stow(node, body_of([_with_character_sets(20_000), _written(base_dataset())]))
    assert not [record for record in caplog.records if record.name == "pydicom"]
    assert stowed.status_code == 202 and len(stowed.get_json()["00081198"]["Value"]) == 1
    assert instance_count(node) == 1
    assert node.upload([("sixteen.dcm", _with_character_sets(element_budget.CHARACTER_SETS_MAX))]).status_code != 413
