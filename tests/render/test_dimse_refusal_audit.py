"""Refused connections of one address reach the audit log at a bounded rate (dimse.refusal_audit)."""

from __future__ import annotations

import time

from daemons.render.dimse.refusal_audit import RefusalAudit
from tests.render.dimse_peers import CALLER, close_archive, echo, open_archive


def test_one_address_writes_a_bounded_number_of_entries_per_window():
    now = [0.0]
    audit = RefusalAudit(per_window=3, window_s=60.0, clock=lambda: now[0])
    written = [audit.detail("192.0.2.7", f"refusal {n}") for n in range(10)]
    assert written == ["refusal 0", "refusal 1", "refusal 2", *[None] * 7]
    assert audit.detail("192.0.2.8", "another address") == "another address"  # its own window
    now[0] = 61.0
    assert audit.detail("192.0.2.7", "later") == (
        "later (7 more refusals of 192.0.2.7 in the window before were not audited one by one)")
    assert audit.detail("192.0.2.7", "next") == "next"


def test_a_stranger_repeating_its_association_request_writes_ten_entries_not_one_per_try(make_node):
    """Each refusal was a row of the audit table: a peer repeating a refused A-ASSOCIATE-RQ as fast
    as the network carries it filled the table (and the disk) at that rate."""
    harness = open_archive(make_node, [CALLER])
    try:
        for _ in range(15):
            assert not echo(harness.dicom_port, "STRANGER")
        assert echo(harness.dicom_port, CALLER)  # the listed peer is still served
        audit = harness.app.extensions["sivr_node"].models.AuditEntry
        deadline = time.monotonic() + 10
        while audit.select().where(audit.action == "dicom.reject").count() < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the last refusals' handlers have run
        assert audit.select().where(audit.action == "dicom.reject").count() == 10
    finally:
        close_archive(harness)
