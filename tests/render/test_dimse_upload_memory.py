"""C-STORE data sets in the process's upload memory (`dimse.limits.MessageLimit`, `limits.upload_memory_mb`)
against peers that do not wait: each data set holds its own room from its arrival until its handler is
done, whether it came in many PDUs or one, was queued behind another, or its connection closed while
it was stored. An attack found all three stored with nothing reserved: the room was one per
association, a data set in one PDU with its command was never counted, and a closing connection
freed the room of a data set still being stored."""

from __future__ import annotations

import threading
import time

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from daemons.render.ingest.service import INGEST_EXTENSION
from daemons.render.ingest.upload_memory import BODY_COPIES, UploadMemory
from tests.render.dimse_peers import close_archive, open_archive
from tests.render.synthetic import dataset
from tests.render.test_dimse_hostile import associate, audit_rows, models, store_request

SERIES = "1.2.826.0.1.31.8"
TIMEOUTS = {"dicom__network_timeout_s": 5, "dicom__acse_timeout_s": 5, "dicom__dimse_timeout_s": 10}


def _instances(count: int, prefix: str) -> list[Dataset]:
    out = []
    for number in range(count):
        ds = dataset(rows=256, cols=256, series=SERIES)  # 128 KiB of pixels
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{prefix}.{number}"
        out.append(ds)
    return out


def _message_pdus(assoc: Association, ds: Dataset, message_id: int, dropped: bool = False) -> list[P_DATA]:
    """The PDUs of a C-STORE of `ds`; `dropped`: without its Affected SOP Instance UID, a request
    pynetdicom drops ("unexpected message") without calling the handler."""
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
    primitive = store_request(ds, implicit=False)
    primitive.MessageID, primitive.Priority, primitive.AffectedSOPClassUID = message_id, 2, CTImageStorage
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    if dropped:
        del message.command_set.AffectedSOPInstanceUID
    return list(message.encode_msg(context.context_id, assoc.acceptor.maximum_length))


def _in_one_pdu(pdus: list[P_DATA]) -> P_DATA:
    merged = P_DATA()
    merged.presentation_data_value_list = [list(pdv) for pdu in pdus for pdv in pdu.presentation_data_value_list]
    return merged


class _Paused:
    """The association's reactor paused (as pynetdicom's own send_c_* do), so the test reads the answers."""

    def __init__(self, assoc: Association):
        self.assoc = assoc

    def __enter__(self) -> Association:
        self.assoc._reactor_checkpoint.clear()
        while not self.assoc._is_paused:
            time.sleep(0.001)
        return self.assoc

    def __exit__(self, *exc) -> None:
        self.assoc._reactor_checkpoint.set()


def _store_in_one_pdu(harness, ds: Dataset) -> list[int | None]:
    """The answer to a C-STORE of `ds` whose command and data set travel in one PDU (None: aborted)."""
    assoc = associate(harness.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
    with _Paused(assoc):
        assoc.dul.send_pdu(_in_one_pdu(_message_pdus(assoc, ds, 1)))
        answers = _answers(assoc, 1)
    if assoc.is_established:
        assoc.release()
    return answers


def _answers(assoc: Association, count: int) -> list[int | None]:
    statuses: list[int | None] = []
    for _ in range(count):
        _, answer = assoc.dimse.get_msg(block=True)
        statuses.append(None if answer is None else int(answer.Status))
        if answer is None:
            break
    return statuses


def _spy_on_ingest(harness, monkeypatch, pause_s: float, on_start=None) -> list[int]:
    """The upload memory in use each time the ingest is handed a data set, which it then holds `pause_s`."""
    ingest = harness.app.extensions[INGEST_EXTENSION]
    seen: list[int] = []
    add = ingest.add

    def slow_add(*args, **kwargs):
        seen.append(ingest.memory.used)
        if on_start is not None:
            on_start()
        time.sleep(pause_s)
        return add(*args, **kwargs)

    monkeypatch.setattr(ingest, "add", slow_add)
    return seen


def _settled(harness) -> int:
    """The upload memory in use once the listener has no association left."""
    server = harness.app.extensions["sivr_dimse"].servers[0]
    deadline = time.monotonic() + 10
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    return harness.app.extensions[INGEST_EXTENSION].memory.used


def test_data_sets_sent_without_waiting_for_answers_each_hold_their_room(make_node, monkeypatch):
    harness = open_archive(make_node, limits__upload_memory_mb=64, **TIMEOUTS)
    try:
        seen = _spy_on_ingest(harness, monkeypatch, pause_s=0.3)
        instances = _instances(4, f"{SERIES}.1")
        assoc = associate(harness.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
        with _Paused(assoc):
            pdus = [_message_pdus(assoc, ds, number + 1) for number, ds in enumerate(instances)]
            for pdu in (pdu for message in pdus for pdu in message):
                assoc.dul.send_pdu(pdu)
            statuses = _answers(assoc, len(instances))
        assoc.release()
        assert statuses == [0x0000] * 4
        one = BODY_COPIES * 256 * 256 * 2
        # the first handler ran while the later data sets arrived; each later one holds its own room
        # until its own handler is done (before: the first handler freed the association's only room)
        assert all(used >= one * (len(instances) - number) for number, used in enumerate(seen[1:], 1)), seen
        assert _settled(harness) == 0
        assert models(harness).catalogue.Instance.select().count() == 4
    finally:
        close_archive(harness)


def test_a_data_set_in_one_pdu_with_its_command_is_counted_and_refused_when_there_is_no_room(make_node,
                                                                                              monkeypatch):
    harness = open_archive(make_node, limits__upload_memory_mb=1, **TIMEOUTS)
    try:
        memory = harness.app.extensions[INGEST_EXTENSION].memory
        seen = _spy_on_ingest(harness, monkeypatch, pause_s=0)
        first, second = _instances(2, f"{SERIES}.2")
        assert _store_in_one_pdu(harness, first) == [0x0000]
        assert seen and seen[0] >= BODY_COPIES * 256 * 256 * 2, seen  # before: 0, never counted

        with memory.reservation() as other:
            other.grow_to(memory.budget // 2)  # others hold more than a third of the budget
            assert _store_in_one_pdu(harness, second) == [None]  # aborted: before, stored (0x0000) past the budget
            assert _settled(harness) == other.held
        assert models(harness).catalogue.Instance.select().count() == 1
        refused = audit_rows(harness, "dicom.store_refused")
        assert [detail.split()[0] for _, detail in refused] == [f"sop_instance_uid={second.SOPInstanceUID}"]
        assert "busy:" in refused[0][1]
    finally:
        close_archive(harness)


def test_a_connection_closed_while_its_data_set_is_stored_keeps_the_room_until_it_is_stored(make_node, monkeypatch):
    """Handlers took reservations in arrival order: after a request pynetdicom dropped without a handler
    (one without its SOP Instance UID, which now aborts its association instead: the next test), the
    stored data set took the dropped one's small room, and the closing connection freed its own while
    it was being stored."""
    harness = open_archive(make_node, limits__upload_memory_mb=64, **TIMEOUTS)
    try:
        started = threading.Event()
        seen = _spy_on_ingest(harness, monkeypatch, pause_s=1.0, on_start=started.set)
        memory = harness.app.extensions[INGEST_EXTENSION].memory
        [ds] = _instances(1, f"{SERIES}.3.0")
        assoc = associate(harness.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
        with _Paused(assoc):
            for pdu in _message_pdus(assoc, ds, 2):
                assoc.dul.send_pdu(pdu)
            assert started.wait(10)
            assoc.dul.socket.socket.shutdown(2)  # the peer goes while the node stores its data set
            time.sleep(0.3)
            held_while_storing = memory.used
        assert held_while_storing >= BODY_COPIES * 256 * 256 * 2  # before: 0, freed by the closing connection
        assert _settled(harness) == 0
        deadline = time.monotonic() + 10
        while models(harness).catalogue.Instance.select().count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert models(harness).catalogue.Instance.select().count() == 1 and seen
        assert memory.used == 0
    finally:
        close_archive(harness)


def test_a_store_request_without_its_instance_uid_aborts_and_holds_nothing(make_node, monkeypatch):
    """pynetdicom dropped such a request without a handler, and its data set's room stayed held until
    the connection closed; the peer waited for an answer. Now its association is aborted as its message
    completes (`limits.CommandCheck`): nothing stored, the room freed, the store that followed never read."""
    harness = open_archive(make_node, limits__upload_memory_mb=64, **TIMEOUTS)
    try:
        seen = _spy_on_ingest(harness, monkeypatch, pause_s=0.0, on_start=lambda: None)
        memory = harness.app.extensions[INGEST_EXTENSION].memory
        [ds] = _instances(1, f"{SERIES}.3.1")
        small = dataset(rows=8, cols=8, series=SERIES)
        assoc = associate(harness.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
        with _Paused(assoc):
            for pdu in _message_pdus(assoc, small, 1, dropped=True) + _message_pdus(assoc, ds, 2):
                assoc.dul.send_pdu(pdu)
        deadline = time.monotonic() + 3  # within the network timeout (5 s): the node aborted, not the silence
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted
        assert _settled(harness) == 0 and memory.used == 0
        assert models(harness).catalogue.Instance.select().count() == 0 and not seen
    finally:
        close_archive(harness)


def test_a_released_reservation_holds_nothing_it_grows_to_later():
    """The thread receiving a data set may still grow its room after the connection closed and freed
    it: that growth is not held, or nothing would ever free it (a leak found with a delay injected)."""
    memory = UploadMemory(64 * 1024 * 1024)
    with memory.reservation() as reservation:
        reservation.grow_to(1000)
        reservation.release()
        reservation.grow_to(5000)
        assert memory.used == 0 and reservation.held == 0
    assert memory.used == 0
