"""The files of one upload together may hold only so many data elements, items and text values
(`element_budget.UploadBudget`: `limits.max_upload_header_elements`, `limits.max_upload_header_values`),
counted from their bytes before any of them is parsed.

Before: the bounds of one file (`limits.max_header_elements`, `limits.max_header_values`) multiplied by
the files of an upload (`limits.max_files`, 4,000): 20 CT slices each just under the element bound
(49,700 empty private items, 8.3 MB in all) cost the node 22.9 s of its own CPU and 1.3 GB, and were
stored; five files of 999,000 text values each (under the 1,000,000 of one file) cost it 25.7 s and
1.2 GB. The 4,000 files an upload may hold would have cost it over an hour and hundreds of GB.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from daemons.render.ingest import element_budget
from daemons.render.ingest.upload_checks import read_file_meta
from tests.dicomweb.test_stow_wado import body_of, instance_count, stow
from tests.hostile.corpus import base_dataset
from tests.render import test_element_budget as one_file
from tests.render.dimse_peers import close_archive, open_archive
from tests.render.test_dimse_archive import _store

#: values in one file: under the bound of one file (1,000,000), five of them over that of an upload
VALUES = 999_000


def _series(monkeypatch, count: int, make) -> list[bytes]:
    """`count` files of one series made by `make` (a `test_element_budget` maker), each its own slice."""
    series, numbers = generate_uid(), iter(range(count))

    def slice_of() -> pydicom.Dataset:
        ds, number = base_dataset(), next(numbers)
        ds.SeriesInstanceUID, ds.InstanceNumber = series, number + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(number)]
        return ds

    monkeypatch.setattr(one_file, "base_dataset", slice_of)
    made = [make() for _ in range(count)]
    monkeypatch.undo()
    return made


def test_files_each_under_the_bound_of_one_file_are_refused_together_before_any_is_parsed(node, monkeypatch):
    """Five files of 999,000 text values each in implicit VR (under the 1,000,000 of one file, 2 MB
    each): before, 201 after 25.7 s of the node's CPU and +1.2 GB (101 s to answer); now 413 naming
    the key, from the count."""
    files = _series(monkeypatch, 5, lambda: one_file._with_values(VALUES, ImplicitVRLittleEndian))
    started = time.process_time()
    reply = node.upload([(f"{number}.dcm", raw) for number, raw in enumerate(files)])
    assert reply.status_code == 413, reply.json
    assert reply.json["error"]["code"] == "over_limits"
    message = reply.json["error"]["message"]
    assert message.startswith("the upload's files hold more than 4,000,000 values in their text elements")
    assert "limits.max_upload_header_values" in message and "several uploads" in message
    assert time.process_time() - started < 3.0  # the node's own CPU: a count, no parse (25.7 s before)
    assert instance_count(node) == 0
    assert node.upload([("few.dcm", one_file._with_values(1_000, ImplicitVRLittleEndian))]).status_code == 201


def test_elements_of_many_files_are_bounded_together(make_node, monkeypatch):
    """The same for elements and items, with the node's bound lowered (`limits.max_upload_header_elements`):
    three files of 49,700 items each, each under the 50,150 of one file."""
    node = make_node(limits__max_upload_header_elements=120_000)
    files = _series(monkeypatch, 3, lambda: one_file._with_items(49_700))
    started = time.process_time()
    reply = node.upload([(f"{number}.dcm", raw) for number, raw in enumerate(files)])
    assert reply.status_code == 413, reply.json
    assert reply.json["error"]["message"].startswith(
        "the upload's files hold more than 120,000 data elements and sequence items together")
    assert "limits.max_upload_header_elements" in reply.json["error"]["message"]
    assert time.process_time() - started < 1.5  # no file parsed (3.4 s of the node's CPU before)
    assert instance_count(node) == 0
    assert node.upload([(f"{number}.dcm", raw) for number, raw in enumerate(files[:2])]).status_code == 201


def test_a_stow_rs_request_of_such_files_stores_none_of_them(node, monkeypatch):
    """One STOW-RS request is one upload for each series it holds: every instance of the series is
    refused with the reason (not tried again in halves until some fit). Before: all five stored (200)."""
    files = _series(monkeypatch, 5, lambda: one_file._with_values(VALUES, ExplicitVRLittleEndian))
    reply = stow(node, body_of(files))
    assert reply.status_code == 409, reply.get_data(as_text=True)
    failed = reply.get_json()["00081198"]["Value"]
    assert len(failed) == 5
    assert instance_count(node) == 0


def test_a_c_store_data_set_is_one_upload_refused_out_of_resources(make_node):
    """A C-STORE's data set is one upload (an association's instances are sent and stored one by
    one, as separate uploads would be): past the bound of one upload it is refused 0xA700."""
    archive = open_archive(make_node, callers=("BADPEER",), limits__max_upload_header_values=1_000)
    try:
        ds = pydicom.dcmread(io.BytesIO(one_file._with_values(2_000, ExplicitVRLittleEndian)))
        assert _store(archive.dicom_port, ds) == 0xA700
        assert instance_count(archive) == 0
        ds = pydicom.dcmread(io.BytesIO(one_file._with_values(500, ExplicitVRLittleEndian)))
        assert _store(archive.dicom_port, ds) == 0x0000
    finally:
        close_archive(archive)


def test_a_2000_slice_ct_fits_the_default_bounds_of_one_upload():
    """The headers of real CT slices, 2,000 of them in one upload, are well within the defaults."""
    slices = sorted(Path(one_file.__file__).resolve().parents[2].parent.joinpath(
        "shared", "data", "dicom", "tcia-cmb-crc-ct-100").rglob("*.dcm"))
    if not slices:
        pytest.skip("real CT data absent")
    upload = element_budget.UploadBudget()
    for index in range(2000):
        raw = slices[index % len(slices)].read_bytes()
        syntax, start = read_file_meta(raw)
        assert element_budget.excess(raw, start, implicit=syntax == "1.2.840.10008.1.2", little=True,
                                     max_frames=4000, upload=upload) is None
    assert upload.elements < element_budget.MAX_UPLOAD_ELEMENTS // 2
    assert upload.values < element_budget.MAX_UPLOAD_TEXT_VALUES // 2


def test_a_raised_bound_of_one_file_still_bounds_items_after_number_of_frames(make_node):
    """Before: once the walk passed (0028,0008), it stopped at the default bound (50,150) whatever
    `limits.max_header_elements` said, and a count stopped there passed a raised bound: a node with
    the key at 60,000 stored a file of 200,000 items in (0029,1001) (201)."""
    node = make_node(limits__max_header_elements=60_000)
    ds = base_dataset()
    ds.add_new(0x00290010, "LO", "HOSTILE")
    ds.add_new(0x00291001, "LO", one_file.PLACEHOLDER)
    raw = one_file._written(ds)
    text = one_file.PLACEHOLDER.encode()
    placeholder = b"\x29\x00\x01\x10LO" + len(text).to_bytes(2, "little") + text
    items = (b"\x29\x00\x01\x10SQ\0\0\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\0\0\0\0" * 200_000
             + b"\xfe\xff\xdd\xe0\0\0\0\0")
    assert raw.count(placeholder) == 1
    reply = node.upload([("late.dcm", raw.replace(placeholder, items))])
    assert reply.status_code == 413, reply.json
    assert "limits.max_header_elements" in reply.json["error"]["message"]
    assert instance_count(node) == 0
