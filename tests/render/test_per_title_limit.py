"""`dicom.max_associations_per_title`: how many associations one calling AE title may hold at once
(`dimse.admission`), a key of its own. It was `dicom.max_associations_per_address`, so a site whose
modality opens several associations at once from addresses of its own (a CT sending series in
parallel) and a site that wants a tight per-address limit against strangers could not both be
served. 0 (the default) follows the per-address limit, so existing configs keep their behaviour. The
peers are real pynetdicom associations, bound to loopback addresses of their own."""

from __future__ import annotations

import pytest

from daemons.render.dimse import admission
from daemons.render.settings import KEYS
from shared.config import ConfigError, build_config
from tests.render.dimse_peers import CALLER, close_archive, echo, open_archive
from tests.render.test_dimse_admission import FLOOD, MANY, audit_rows, idle_association


def _rejected_transient(assoc) -> bool:
    """A-ASSOCIATE-RJ, rejected-transient, service provider (presentation), local limit exceeded."""
    answer = assoc.acceptor.primitive
    return assoc.is_rejected and (answer.result, answer.result_source, answer.diagnostic) == (0x02, 0x03, 0x02)


def _release(associations) -> None:
    for assoc in associations:
        if assoc.is_established:
            assoc.release()


def test_a_title_may_hold_more_than_one_address_may(make_node):
    """Two associations per address against strangers, four per title: the modality calling from two
    addresses of its own opens four at once (it was refused its third), and its fifth is refused."""
    harness = open_archive(make_node, [CALLER, FLOOD], dicom__max_associations=6,
                           dicom__max_associations_per_address=2, dicom__max_associations_per_title=4,
                           dicom__request_timeout_s=10.0)
    port = harness.dicom_port
    held = []
    try:
        held = [idle_association(port, source) for source in (MANY[0], MANY[0], MANY[1], MANY[1])]
        assert [assoc.is_established for assoc in held] == [True] * 4, "the title was refused below its limit"
        fifth = idle_association(port, MANY[2])
        held.append(fifth)
        assert _rejected_transient(fifth)
        assert echo(port), "the other modality was refused"
    finally:
        _release(held)
        close_archive(harness)
    assert any("calling AE title 'FLOOD' already holds 4 associations" in detail
               and "dicom.max_associations_per_title (4)" in detail for detail in audit_rows(harness, "dicom.reject"))


def test_a_title_may_hold_fewer_than_one_address_may(make_node):
    """Four per address (a PACS prefetching), one per title: a second association of the same title
    from the same address is refused, another title's is not."""
    harness = open_archive(make_node, [CALLER, FLOOD], dicom__max_associations=4,
                           dicom__max_associations_per_address=4, dicom__max_associations_per_title=1,
                           dicom__request_timeout_s=10.0)
    port = harness.dicom_port
    held = []
    try:
        held = [idle_association(port, MANY[0]), idle_association(port, MANY[0])]
        assert held[0].is_established and _rejected_transient(held[1])
        other = idle_association(port, MANY[0], title=CALLER)
        held.append(other)
        assert other.is_established
    finally:
        _release(held)
        close_archive(harness)
    assert any("dicom.max_associations_per_title (1)" in detail for detail in audit_rows(harness, "dicom.reject"))


def test_by_default_a_title_follows_the_per_address_limit_and_both_are_checked_at_start(make_node):
    for dicom in ({}, {"max_associations": 3}, {"max_associations_per_address": 4}):
        section = build_config("render", KEYS, {"dicom": dicom})["dicom"]
        assert admission.per_title_limit(section) == admission.per_address_limit(section)
    configured = build_config("render", KEYS, {"dicom": {"max_associations_per_title": 7}})["dicom"]
    assert admission.per_title_limit(configured) == 7
    admission.check_config(build_config("render", KEYS, {"dicom": {"max_associations": 4,
                                                                   "max_associations_per_title": 4}}))
    with pytest.raises(ConfigError, match=r"max_associations_per_title \(5\) must not exceed dicom.max_associations"):
        make_node(dicom__port=1, dicom__allowed_callers=[CALLER], dicom__max_associations=4,
                  dicom__max_associations_per_title=5)
