"""STOW-RS counts the elements, items and text values of every part from its bytes before any part
is parsed (`upload_checks.check_parts`: the browser upload's `element_budget` bounds, one file's and
one upload's), and a part refused there, or by the node's own check (`check_native`), is never read.

Before: each part was parsed on its own as it came (`_candidate`): a native one counted alone, one of
any other syntax (big endian, deflated, compressed) not at all, and a part `check_native` refused was
read again with pydicom's `dcmread` all the same. One part of 1,000,000 empty items was refused
(409, 0xA700) only after 22.9 s of the node's CPU and +674 MB; parts each under the bound of one
file, each in its own series, were never counted together.
"""

from __future__ import annotations

import time

import pydicom
import pytest

from daemons.render.ingest import upload_checks
from tests.dicomweb.test_stow_wado import body_of, instance_count, stow
from tests.hostile.corpus import base_dataset
from tests.render import test_element_budget as one_file

FAILED, REFERENCED, REASON = "00081198", "00081199", "00081197"
OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def parses(monkeypatch) -> list[int]:
    """The length of every file in memory pydicom was asked to read a data set of, by STOW-RS or the
    ingest (not the test's own reads of pydicom's files on disk)."""
    seen: list[int] = []
    dcmread, read_dataset = pydicom.dcmread, upload_checks.read_dataset

    def counted_dcmread(source, *args, **kwargs):
        if hasattr(source, "getbuffer"):
            seen.append(len(source.getbuffer()))
        return dcmread(source, *args, **kwargs)

    def counted_read_dataset(raw, *args, **kwargs):
        seen.append(len(raw))
        return read_dataset(raw, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted_dcmread)
    monkeypatch.setattr(upload_checks, "read_dataset", counted_read_dataset)
    return seen


@pytest.mark.parametrize("hiding", list(one_file.HIDINGS))
def test_a_part_over_the_bound_of_one_file_is_refused_unread_and_the_others_stored(node, parses, hiding):
    """Before: refused, but read by `dcmread` first (and a big-endian or deflated part never counted)."""
    hostile = one_file._with_items(one_file.ITEMS, **one_file.HIDINGS[hiding])
    good = one_file._written(base_dataset())
    reply = stow(node, body_of([hostile, good]))
    assert reply.status_code == 202, reply.get_data(as_text=True)
    [failed] = reply.get_json()[FAILED]["Value"]
    assert failed[REASON]["Value"] == [OUT_OF_RESOURCES]
    assert "part 1: the file holds more than" in reply.headers["Warning"]
    assert len(reply.get_json()[REFERENCED]["Value"]) == 1 and instance_count(node) == 1
    assert len(hostile) not in parses  # never parsed: refused from its count


def test_a_part_of_a_million_items_costs_the_node_a_count_not_a_parse(node):
    """The measured attack: 22.9 s of the node's CPU before (refused 409 all the same)."""
    started = time.process_time()
    reply = stow(node, body_of([one_file._with_items(1_000_000)]))
    assert reply.status_code == 409, reply.get_data(as_text=True)
    assert reply.get_json()[FAILED]["Value"][0][REASON]["Value"] == [OUT_OF_RESOURCES]
    assert time.process_time() - started < 3.0
    assert instance_count(node) == 0


def test_the_parts_of_one_request_are_counted_together_whatever_their_series(make_node, parses):
    """Three parts of 49,700 items, each under the bound of one file and each its own series, past the
    bound of one upload lowered to 120,000: before, each series was one upload and all three were
    parsed and stored (200); now the request is one upload, every part refused unread."""
    node = make_node(limits__max_upload_header_elements=120_000)
    parts = [one_file._with_items(49_700) for _ in range(3)]
    reply = stow(node, body_of(parts))
    assert reply.status_code == 409, reply.get_data(as_text=True)
    failed = reply.get_json()[FAILED]["Value"]
    assert [item[REASON]["Value"] for item in failed] == [[OUT_OF_RESOURCES]] * 3
    assert "limits.max_upload_header_elements" in reply.headers["Warning"]
    assert instance_count(node) == 0 and parses == []
    assert stow(node, body_of(parts[:2])).status_code == 200
