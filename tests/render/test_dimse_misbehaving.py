"""DIMSE peers that misbehave at the PDU level, against a real listener: a P-DATA-TF whose PDV item
lengths and PDU length disagree is refused with one A-ABORT (service provider, invalid PDU parameter
value) and audited with why (`limits.pdv_problem`), nothing is stored, and the node serves others."""

from __future__ import annotations

import struct
import time

import pytest
from pynetdicom import evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.render.dimse_peers import close_archive, echo, open_archive
from tests.render.synthetic import dataset
from tests.render.test_dimse_retrieve import association, pdata_fragments

#: A-ABORT of the service provider (source 2), invalid PDU parameter value (reason 6)
ABORT_INVALID_PARAMETER = (2, 6)


@pytest.fixture
def archive(make_node):
    harness = open_archive(make_node)
    yield harness
    close_archive(harness)


def lie(fragment: bytes, how: str) -> bytes:
    """The first P-DATA-TF of a C-STORE with one length changed: its PDV item declaring ten times the
    PDU, or the PDU declaring 20 bytes where its item takes the rest."""
    if how == "item longer than the PDU":
        return fragment[:6] + struct.pack(">I", len(fragment) * 10) + fragment[10:]
    return fragment[:2] + struct.pack(">I", 20) + fragment[6:]


def aborts_received(assoc) -> list[tuple[int, int]]:
    """The A-ABORTs the client's own reader receives until the association ends (3 s at most), as
    (source, reason): read by pynetdicom's reader thread, which owns the socket (a second reader of
    the socket raced it for the bytes)."""
    deadline = time.monotonic() + 3.0
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # any PDU that followed the first
    return [(pdu.source, pdu.reason_diagnostic) for pdu in assoc.received if isinstance(pdu, A_ABORT_RQ)]


@pytest.mark.parametrize("how", ["item longer than the PDU", "PDU shorter than its item"])
def test_a_pdata_whose_lengths_lie_is_aborted_once_with_its_reason(archive, how):
    """Before: pynetdicom's reader failed an `assert` (an ERROR with a traceback in the node's log),
    the abort was audited with no reason; a PDU length shorter than its item had the rest read as a
    next PDU, and the peer got two A-ABORTs."""
    cat = archive.app.extensions["sivr_node"].models.catalogue
    instance = dataset(rows=128, cols=128, series="1.2.826.0.1.77.61")
    with association(archive.dicom_port, caller="MODALITY") as assoc:
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
        assoc.received = []
        assoc.bind(evt.EVT_PDU_RECV, lambda event: assoc.received.append(event.pdu))
        assoc.dul.socket.send(lie(pdata_fragments(instance, context.context_id)[0], how))
        assert aborts_received(assoc) == [ABORT_INVALID_PARAMETER]
    time.sleep(0.3)
    audit = archive.app.extensions["sivr_node"].models.AuditEntry
    [reason] = [row.detail for row in audit.select().where(audit.action == "dicom.abort")]
    assert "PDV item at byte 0 declares" in reason, reason
    assert cat.Instance.select().where(cat.Instance.sop_instance_uid == str(instance.SOPInstanceUID)).count() == 0
    assert echo(archive.dicom_port)
