"""Inconsistent data is refused with the reason (issue 13 item 10): one upload is one patient's
series of one pixel format (sizes and spacings may differ: one stack each), and every file's header
agrees with its own pixel data."""

from __future__ import annotations

import struct

import pytest

from tests.hostile.corpus import base_dataset
from tests.hostile.corpus import to_bytes as corpus_bytes
from tests.render.synthetic import dataset, to_bytes


def _slice(position: float, **attributes) -> bytes:
    ds = dataset(position=position)
    ds.PatientID, ds.PatientName, ds.PixelSpacing = "P-1", "Doe^Jane", [0.7, 0.7]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


@pytest.mark.parametrize(("attributes", "reason"), [
    ({"PatientID": "P-2"}, "patient id"),
    ({"PatientName": "Roe^Richard"}, "patient name"),
    ({"StudyInstanceUID": "1.2.3.9"}, "study"),
    ({"PhotometricInterpretation": "MONOCHROME1"}, "PhotometricInterpretation"),
])
def test_slices_relabelled_into_one_series_are_refused(node, attributes, reason):
    reply = node.upload([("a.dcm", _slice(0)), ("b.dcm", _slice(1)), ("c.dcm", _slice(2, **attributes))])
    assert reply.status_code == 422, reply.json
    error = reply.json["error"]
    assert error["code"] == "inconsistent_series" and "c.dcm" in error["message"] and reason in error["message"]


def test_a_consistent_series_is_accepted(node):
    reply = node.upload([("a.dcm", _slice(0)), ("b.dcm", _slice(1)), ("c.dcm", _slice(2))])
    assert reply.status_code == 201, reply.json


def test_a_slice_of_another_pixel_spacing_is_a_stack_of_its_own(node):
    """Sizes and spacings may differ (tests/render/test_stack_sizes.py): each is a stack, measured with its own."""
    reply = node.upload([("a.dcm", _slice(0)), ("b.dcm", _slice(1)), ("c.dcm", _slice(2, PixelSpacing=[0.9, 0.9]))])
    assert reply.status_code == 201, reply.json
    meta = node.client.get(f"/api/v1/records/{reply.json['id']}", headers=node.headers()).json
    assert [s["pixel_spacing"] for s in meta["stacks"]] == [[0.7, 0.7], [0.9, 0.9]]


def test_pixel_data_longer_than_the_dimensions_is_refused(node):
    ds = base_dataset()
    ds.Columns = 64  # the 128 x 128 pixels stay: the file would be stored with a wrong shape
    reply = node.upload([("wide.dcm", corpus_bytes(ds))])
    assert reply.status_code == 422
    assert "wide.dcm" in reply.json["error"]["message"] and "dimensions" in reply.json["error"]["message"]


@pytest.mark.parametrize("value", [b"-1", b"1e9", b"NaN"])
def test_number_of_frames_must_be_a_whole_positive_number(node, value):
    ds = base_dataset()
    ds.NumberOfFrames = "7" * len(value)
    data = corpus_bytes(ds).replace(b"7" * len(value) + b" " * (len(value) % 2), value + b" " * (len(value) % 2))
    reply = node.upload([("frames.dcm", data)])
    assert reply.status_code == 422, reply.json
    assert "Number of Frames" in reply.json["error"]["message"]


def test_a_duplicated_element_is_refused(node):
    data = corpus_bytes(base_dataset())
    at = data.index(b"\x28\x00\x10\x00US\x02\x00") + 10
    duplicate = b"\x28\x00\x10\x00US\x02\x00" + struct.pack("<H", 64)
    reply = node.upload([("twice.dcm", data[:at] + duplicate + data[at:])])
    assert reply.status_code == 422
    assert "(0028,0010) appears twice" in reply.json["error"]["message"]
