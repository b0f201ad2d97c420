"""Hostile DIMSE peers against a render node's listener (robustness): requests whose command and
data set disagree, data sets not in their context's transfer syntax, malformed identifiers sent
as raw bytes, retrievals to destinations that never answer and callers that leave half-way.
Each gets its DIMSE status (or A-ABORT), nothing half-stored, its audit row, and the listener
keeps serving (C-ECHO, C-FIND, HTTP) from the same process.

The misbehaving requests are built with pynetdicom's DIMSE layer directly (`exchange`), so that
they carry exactly what a broken or malicious peer would send."""

from __future__ import annotations

import copy
import io
import logging
import os
import queue
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    MPEG2MPML,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_FIND_RQ, C_GET_RQ, C_MOVE_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE, N_CREATE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    EnhancedCTImageStorage,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from daemons.deployment import free_ports
from daemons.render.catalogue import matching
from daemons.render.dimse.limits import (
    CANCELS_KEPT_APART,
    MAX_WAITING_REQUESTS,
    MAX_WAITING_STORES,
    MAXIMUM_PDU_SIZE,
    MINIMUM_PEER_PDU_SIZE,
    OTHER_MESSAGE_MAX,
)
from daemons.render.ingest.element_budget import CHARACTER_SETS_MAX
from daemons.render.ingest.service import INGEST_EXTENSION
from daemons.render.ingest.upload_checks import MIB, read_file_meta
from tests.render.dimse_peers import CALLER, SCP, close_archive, echo, open_archive
from tests.render.synthetic import big_endian_copy, dataset, to_bytes

FINAL_WITHIN_S = 10.0  # a generous bound: an answer later than this means the listener hung


@pytest.fixture
def hostile(make_node):
    """A node with short timeouts, 4 associations at most, and two C-MOVE destinations: STALL (a
    test peer that accepts C-STOREs and never answers them) and DOWN (nothing listens)."""
    stall, down = free_ports(2)
    harness = open_archive(make_node, dicom__destinations=[f"STALL=127.0.0.1:{stall}", f"DOWN=127.0.0.1:{down}"],
                           dicom__max_associations=4, dicom__max_associations_per_address=4,
                           dicom__network_timeout_s=1.5, dicom__acse_timeout_s=2.0,
                           dicom__dimse_timeout_s=3.0)
    harness.stall_port = stall
    harness.pid = os.getpid()  # the node runs in this process: still_serving checks it is the same one
    yield harness
    close_archive(harness)


def models(harness):
    return harness.app.extensions["sivr_node"].models


def audit_rows(harness, prefix: str) -> list[tuple[str, str]]:
    audit = models(harness).AuditEntry
    return [(row.action, row.detail) for row in audit.select().where(audit.action.startswith(prefix))]


def still_serving(harness) -> None:
    """The listener answers a C-ECHO and a C-FIND promptly, from this process, and HTTP answers too."""
    listener = harness.app.extensions["sivr_dimse"]
    assert all(server.socket.fileno() != -1 for server in listener.servers)
    assert any(thread.name.startswith("AcceptorServer") for thread in threading.enumerate())
    started = time.monotonic()
    assert echo(harness.dicom_port)
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ""
    assert find(harness.dicom_port, query)[-1] == 0x0000
    assert time.monotonic() - started < FINAL_WITHIN_S
    assert harness.client.get("/healthz").status_code == 200
    assert os.getpid() == harness.pid


def find(port: int, query: Dataset) -> list[int]:
    """The statuses of a study root C-FIND."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    statuses = [status.Status for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                if status]
    assoc.release()
    return statuses


def associate(port: int, *contexts: tuple[str, list[str]]) -> Association:
    ae = AE(ae_title=CALLER)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    return assoc


def exchange(assoc: Association, primitive: Any, abstract: str, sop_class: str | None = None) -> list[int]:
    """Send a DIMSE request as built, on the accepted context of `abstract`, naming `sop_class` (default:
    that one) as its Affected SOP Class; the statuses answered up to the final one. The association's
    reactor is paused meanwhile (as pynetdicom's own send_c_* do), or it would take the answers for itself."""
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == abstract)
    primitive.MessageID, primitive.Priority = 7, 2
    primitive.AffectedSOPClassUID = sop_class or abstract
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    statuses = []
    try:
        assoc.dimse.send_msg(primitive, context.context_id)
        deadline = time.monotonic() + FINAL_WITHIN_S
        while time.monotonic() < deadline:
            _, answer = assoc.dimse.get_msg(block=True)
            if answer is None:
                break
            statuses.append(int(answer.Status))
            if answer.Status not in (0xFF00, 0xFF01):
                break
    finally:
        assoc._reactor_checkpoint.set()
    return statuses


def store_request(ds: Dataset, implicit: bool, sop_instance_uid: str | None = None) -> C_STORE:
    """A C-STORE request of `ds` encoded as asked, naming `sop_instance_uid` (default: its own)."""
    primitive = C_STORE()
    primitive.AffectedSOPInstanceUID = sop_instance_uid or ds.SOPInstanceUID
    primitive.DataSet = io.BytesIO(encode(ds, implicit, True))
    return primitive


# --- C-STORE ------------------------------------------------------------------------------------------


def test_a_store_whose_data_set_is_another_instance_than_its_command_names_is_refused(hostile):
    """PS3.4 B.2.3 / PS3.7 9.1.1: the data set is the instance the command's Affected SOP Instance
    UID names. One that is another instance is refused as not matching (0xA900, as dcmtk's
    storescp does), audited, and nothing is stored: the peer would believe it had stored the one
    it named."""
    ds = dataset(series="1.2.826.0.1.31.1")
    assoc = associate(hostile.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
    try:
        named = generate_uid()
        assert exchange(assoc, store_request(ds, implicit=False, sop_instance_uid=named), CTImageStorage) == [0xA900]
        assert models(hostile).catalogue.Instance.select().count() == 0
        refused = audit_rows(hostile, "dicom.store_refused")
        assert len(refused) == 1 and refused[0][1].startswith(f"sop_instance_uid={named} sop_instance_mismatch")
        # the same data set under its own UID is stored
        assert exchange(assoc, store_request(ds, implicit=False), CTImageStorage) == [0x0000]
    finally:
        assoc.release()
    assert [row.sop_instance_uid for row in models(hostile).catalogue.Instance.select()] == [ds.SOPInstanceUID]
    still_serving(hostile)


def test_a_request_whose_sop_class_is_not_its_contexts_is_refused(hostile):
    """PS3.7 9.1.1.1: a request travels on a context of its Affected SOP Class. An Enhanced CT instance
    sent on a CT Image Storage context was stored (0x0000); a C-STORE-RQ naming the Verification SOP
    Class was handed to pynetdicom's C-ECHO service and answered with a C-ECHO-RSP of success,
    nothing stored. Now 0x0122 (SOP Class not supported), and such a peer's association aborted."""
    ds = dataset(series="1.2.826.0.1.31.9")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    assoc = associate(hostile.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]),
                      (Verification, [ExplicitVRLittleEndian]))
    try:
        assert exchange(assoc, store_request(ds, implicit=False), CTImageStorage,
                        sop_class=EnhancedCTImageStorage) == [0x0122]
        [(_, detail)] = audit_rows(hostile, "dicom.store_refused")
        assert f"naming {EnhancedCTImageStorage} on a presentation context of {CTImageStorage}" in detail
        assert exchange(assoc, store_request(ds, implicit=False), CTImageStorage, sop_class=Verification) != [0]
    finally:
        wait_aborted(hostile, assoc)
    assert audit_rows(hostile, "dicom.abort") == [("dicom.abort", "a C_STORE naming the Verification SOP Class")]
    assert models(hostile).catalogue.Instance.select().count() == 0
    still_serving(hostile)


def test_a_query_naming_another_model_than_its_context_and_a_create_naming_a_storage_class_are_refused(hostile):
    """A Study Root C-FIND sent on a Patient Root context, at the PATIENT level only the latter has,
    was answered with every patient: refused as C-STORE refuses the same, 0x0122 (PS3.7 9.1.2.1).
    An N-CREATE-RQ naming CT Image Storage reached the C-STORE handler and was answered with a
    C-STORE-RSP after a traceback; its association is aborted, as for one naming Verification."""
    assert hostile.upload([("a.dcm", to_bytes(dataset(series="1.2.826.0.1.35.1")))]).status_code == 201
    assoc = associate(hostile.dicom_port, (PatientRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]),
                      (StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]))
    try:
        request = C_FIND()
        request.Identifier = io.BytesIO(encode(query(QueryRetrieveLevel="PATIENT", PatientID=""), False, True))
        assert exchange(assoc, request, PatientRootQueryRetrieveInformationModelFind,
                        sop_class=StudyRootQueryRetrieveInformationModelFind) == [0x0122]
        request.Identifier = io.BytesIO(encode(query(QueryRetrieveLevel="PATIENT", PatientID=""), False, True))
        assert exchange(assoc, request, PatientRootQueryRetrieveInformationModelFind) == [0xFF00, 0x0000]
    finally:
        assoc.release()
    refused = audit_rows(hostile, "dicom.find_refused")
    assert len(refused) == 1 and "on a presentation context of" in refused[0][1]
    assoc = associate(hostile.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
    try:
        create = N_CREATE()
        create.MessageID, create.AffectedSOPClassUID = 8, CTImageStorage
        create.AffectedSOPInstanceUID = "1.2.826.0.1.35.2"
        create.AttributeList = io.BytesIO(encode(query(PatientID="x"), False, True))
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
        assoc.dimse.send_msg(create, context.context_id)
    finally:
        wait_aborted(hostile, assoc)
    assert audit_rows(hostile, "dicom.abort") == [("dicom.abort", "a N_CREATE naming a storage SOP Class")]
    assert models(hostile).catalogue.Instance.select().count() == 1
    still_serving(hostile)


def _wrong_request(kind: str, named: str) -> Any:
    """A well-formed request of `kind` naming `named` as its SOP class."""
    identifier = io.BytesIO(encode(query(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.826.0.1.35.3"), False, True))
    request = {"C_FIND": C_FIND, "C_MOVE": C_MOVE, "C_ECHO": C_ECHO, "N_CREATE": N_CREATE}[kind]()
    request.MessageID, request.AffectedSOPClassUID = 9, named
    if kind in ("C_FIND", "C_MOVE"):
        request.Priority, request.Identifier = 2, identifier
    if kind == "C_MOVE":
        request.MoveDestination = "STALL"
    if kind == "N_CREATE":
        request.AttributeList = identifier
    return request


@pytest.mark.parametrize("kind, named, context", [
    ("C_FIND", StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet),
    ("C_MOVE", StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet),
    ("C_FIND", StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet),
    ("C_ECHO", StudyRootQueryRetrieveInformationModelFind, Verification),
    ("N_CREATE", StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet),
    ("C_FIND", ModalityWorklistInformationFind, StudyRootQueryRetrieveInformationModelFind),
])
def test_a_request_its_query_retrieve_context_does_not_serve_aborts_with_its_reason(hostile, caplog, kind, named,
                                                                                      context):
    """A C-FIND naming the Study Root GET model on its GET context (or a C-MOVE there, a C-ECHO or
    N-CREATE naming a Q/R model) made pynetdicom's Query/Retrieve service raise: an ERROR with its
    traceback, the association aborted, audited with an empty reason. Now it is aborted as one naming
    Verification or a storage class is: a warning, the reason audited, no traceback."""
    assoc = associate(hostile.dicom_port, (context, [ExplicitVRLittleEndian]))
    accepted = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == context)
    try:
        assoc.dimse.send_msg(_wrong_request(kind, named), accepted.context_id)
    finally:
        wait_aborted(hostile, assoc)
    reason = (f"a {kind} naming {UID(named).name} on a presentation context of {UID(context).name}: no service of "
              "the node serves it")
    assert audit_rows(hostile, "dicom.abort") == [("dicom.abort", reason)]
    assert reason in [record.getMessage().split("aborted, ", 1)[-1] for record in caplog.records
                      if record.levelno == logging.WARNING]
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"
    still_serving(hostile)


@pytest.mark.parametrize(("context_syntax", "implicit"), [(ExplicitVRLittleEndian, True),
                                                         (ImplicitVRLittleEndian, False)])
def test_a_store_not_encoded_in_its_context_syntax_is_refused(hostile, context_syntax, implicit):
    """PS3.5 / PS3.8: a data set travels encoded in its presentation context's transfer syntax, and
    the node files it under that syntax (its retrievals send the bytes as stored, under that
    syntax). One encoded otherwise (pydicom would read it all the same, guessing) is refused as
    not understood (0xC000): stored, it would reach every later receiver mislabelled."""
    ds = dataset(series="1.2.826.0.1.31.2")
    assoc = associate(hostile.dicom_port, (CTImageStorage, [context_syntax]))
    try:
        assert exchange(assoc, store_request(ds, implicit=implicit), CTImageStorage) == [0xC000]
        # the same data set in the context's own encoding is stored
        assert exchange(assoc, store_request(ds, implicit=not implicit), CTImageStorage) == [0x0000]
    finally:
        assoc.release()
    assert models(hostile).catalogue.Instance.select().count() == 1
    assert [detail.split(" ")[1] for _, detail in audit_rows(hostile, "dicom.store_refused")] == ["not_dicom:"]
    still_serving(hostile)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian])
def test_a_store_whose_data_set_carries_file_meta_is_refused_and_stored_files_name_their_context_syntax(
        hostile, syntax):
    """PS3.10 7.1 / PS3.7 6.3.1: a DIMSE data set holds no group 0002. The node wrote its own file meta
    followed by the peer's bytes, so a (0002,0010) naming MPEG-2 ahead of a native CT joined the
    file meta, pydicom kept the last Transfer Syntax UID, and the CT was answered 0x0000 and filed as
    stored-only MPEG-2, its pixel data never checked. Now 0xC000, audited, nothing stored; the same
    data set without it is stored under the presentation context's syntax."""
    ds = dataset(series="1.2.826.0.1.31.10")
    if syntax == ExplicitVRBigEndian:
        _, ds = big_endian_copy(to_bytes(ds))
    implicit, little, deflated = syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
    smuggled = copy.deepcopy(ds)
    smuggled.TransferSyntaxUID = MPEG2MPML
    assoc = associate(hostile.dicom_port, (CTImageStorage, [syntax]))
    try:
        request = C_STORE()
        request.AffectedSOPInstanceUID = ds.SOPInstanceUID
        request.DataSet = io.BytesIO(encode(smuggled, implicit, little, deflated))
        assert exchange(assoc, request, CTImageStorage) == [0xC000]
        assert models(hostile).catalogue.Instance.select().count() == 0
        [(_, detail)] = audit_rows(hostile, "dicom.store_refused")
        assert detail.startswith(f"sop_instance_uid={ds.SOPInstanceUID} not_dicom:") and "(0002,0010)" in detail
        request.DataSet = io.BytesIO(encode(ds, implicit, little, deflated))
        assert exchange(assoc, request, CTImageStorage) == [0x0000]
    finally:
        assoc.release()
    row = models(hostile).catalogue.Instance.get()
    stored = hostile.app.extensions["sivr_node"].store.read_file(row.series_id, row.blob, row.sha256)
    assert read_file_meta(stored)[0] == syntax
    still_serving(hostile)


def test_an_upload_whose_data_set_is_not_in_its_file_meta_syntax_is_kept_as_sent(hostile):
    """Only the DICOM door refuses the mismatch (its file meta is the node's, written from the
    presentation context). A file uploaded over HTTP is the sender's own: it is read as dcmtk and
    Orthanc read such files (pydicom's SC_rgb_jpeg.dcm is one), stored bit-exact and shown."""
    ds = dataset(series="1.2.826.0.1.31.3")
    raw = to_bytes(ds)
    header_end = raw.index(b"\x08\x00\x16\x00")  # the data set's first element, SOPClassUID (0008,0016)
    mislabelled = raw[:header_end] + encode(ds, True, True)
    record_id, meta = hostile.load([("mislabelled.dcm", mislabelled)])
    assert meta["frames"] == 1
    frame = hostile.client.get(f"/api/v1/records/{record_id}/frames/0?format=png", headers=hostile.headers())
    assert frame.status_code == 200 and frame.mimetype == "image/png"
    assert models(hostile).catalogue.Instance.select().count() == 1


def pdu(context_id: int, header: int, payload: bytes) -> bytes:
    """A P-DATA-TF PDU of one PDV (PS3.8 9.3.5), written by hand as a hostile peer would: `header` is
    the PDV's message control header (0x03: a whole command set, 0x00: a data set fragment, not the
    last, 0x02: the last one)."""
    pdv = bytes([context_id, header]) + payload
    return struct.pack(">BBL", 4, 0, 4 + len(pdv)) + struct.pack(">L", len(pdv)) + pdv


def store_command(assoc: Association, ds: Dataset) -> tuple[int, bytes]:
    """The accepted CT context's ID and the encoded command set of a C-STORE-RQ of `ds` on it."""
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
    request = store_request(ds, implicit=False)
    request.MessageID, request.Priority, request.AffectedSOPClassUID = 7, 2, CTImageStorage
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return int(context.context_id), encode(message.command_set, True, True)


def send_raw(assoc: Association, data: bytes) -> bool:
    """Write `data` on the association's connection, past pynetdicom; False once the connection is gone."""
    try:
        assoc.dul.socket.socket.sendall(data)
    except (OSError, AttributeError):  # the node closed the connection, or pynetdicom already let it go
        return False
    return True


def wait_aborted(harness, assoc: Association) -> None:
    """The peer's association ends aborted, and the node's association thread is gone."""
    deadline = time.monotonic() + FINAL_WITHIN_S
    server = harness.app.extensions["sivr_dimse"].servers[0]
    while (not assoc.is_aborted or server.active_associations) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted and not server.active_associations


def send_store(port: int, ds: Dataset) -> int:
    """The status of a C-STORE of `ds` as pynetdicom sends it (in PDUs of the size the node advertises)."""
    assoc = associate(port, (CTImageStorage, [ExplicitVRLittleEndian]))
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


@pytest.fixture
def limited(make_node):
    """A node whose upload limit is 1 MiB, with the short timeouts of `hostile`."""
    harness = open_archive(make_node, limits__max_upload_mb=1, dicom__network_timeout_s=1.5,
                           dicom__acse_timeout_s=2.0, dicom__dimse_timeout_s=3.0)
    harness.pid = os.getpid()
    yield harness
    close_archive(harness)


def test_a_store_whose_data_set_outgrows_the_upload_limit_is_aborted_as_it_arrives(limited):
    """A peer that streams an endless data set (fragments, none the last) made the node hold all it
    sent: pynetdicom keeps a message's fragments until its last one, and `limits.max_upload_mb` was
    checked only then. Now the association is aborted once the data set passes the limit (1 MiB
    here), long before the peer is done, audited as a refused store; nothing is stored, and the
    listener serves the next peer."""
    ds = dataset(series="1.2.826.0.1.31.4")
    assoc = associate(limited.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
    context_id, command = store_command(assoc, ds)
    fragment = bytes(128 * 1024)
    sent = 0
    assert send_raw(assoc, pdu(context_id, 0x03, command))
    while sent < 16 * MIB and not assoc.is_aborted and send_raw(assoc, pdu(context_id, 0x00, fragment)):
        sent += len(fragment)
        time.sleep(0.02)  # a peer's pace: the node's answer has time to arrive
    wait_aborted(limited, assoc)
    assert sent < 8 * MIB, f"the node took {sent // MIB} MiB of a data set over its limit of 1 MiB"
    assert models(limited).catalogue.Instance.select().count() == 0
    refused = audit_rows(limited, "dicom.store_refused")
    assert len(refused) == 1 and refused[0][1].startswith(f"sop_instance_uid={ds.SOPInstanceUID} over_limits")
    assert audit_rows(limited, "dicom.abort") == [("dicom.abort", "a DIMSE message over the upload limit of 1 MiB")]
    assert send_store(limited.dicom_port, ds) == 0x0000
    assert models(limited).catalogue.Instance.select().count() == 1
    still_serving(limited)


@pytest.mark.parametrize("request_class, model", [
    (C_FIND_RQ, StudyRootQueryRetrieveInformationModelFind),
    (C_GET_RQ, StudyRootQueryRetrieveInformationModelGet),
    (C_MOVE_RQ, StudyRootQueryRetrieveInformationModelMove),
])
def test_an_identifier_that_outgrows_its_bound_is_aborted_as_it_arrives(hostile, request_class, model):
    """A C-FIND, C-GET or C-MOVE identifier could be as large as a C-STORE data set (the upload limit,
    2 GiB), held whole outside the upload memory and then copied: a 300 MiB one took the node from
    255 MB to 869 MB. Now the association is aborted once the message holds more than
    OTHER_MESSAGE_MAX, long before the peer is done, audited with the reason; the longest UID list
    the matching takes still fits."""
    longest = query(QueryRetrieveLevel="SERIES", StudyInstanceUID="1." * 31 + "1",
                    SeriesInstanceUID=["1." * 31 + "1"] * matching.UID_LIST_MAX)
    assert len(encode(longest, True, True)) < OTHER_MESSAGE_MAX  # implicit VR: explicit VR holds 64 KiB a value
    assoc = associate(hostile.dicom_port, (model, [ExplicitVRLittleEndian]))
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == model)
    request = {C_FIND_RQ: C_FIND, C_GET_RQ: C_GET, C_MOVE_RQ: C_MOVE}[request_class]()
    request.MessageID, request.Priority, request.AffectedSOPClassUID = 7, 2, model
    request.Identifier = io.BytesIO(encode(query(QueryRetrieveLevel="STUDY"), False, True))  # one follows
    if isinstance(request, C_MOVE):
        request.MoveDestination = "STALL"
    message = request_class()
    message.primitive_to_message(request)
    fragment = bytes(128 * 1024)
    sent = 0
    assert send_raw(assoc, pdu(context.context_id, 0x03, encode(message.command_set, True, True)))
    while sent < 64 * MIB and not assoc.is_aborted and send_raw(assoc, pdu(context.context_id, 0x00, fragment)):
        sent += len(fragment)
        time.sleep(0.01)  # a peer's pace: the node's answer has time to arrive
    wait_aborted(hostile, assoc)
    assert sent < OTHER_MESSAGE_MAX + 4 * MIB, f"the node took {sent // MIB} MiB of an identifier"
    reason = (f"a {request_class.__name__} (command set and identifier) of over {OTHER_MESSAGE_MAX // MIB} MiB: "
              "only a C-STORE data set may be larger")
    assert audit_rows(hostile, "dicom.abort") == [("dicom.abort", reason)]
    still_serving(hostile)


@pytest.mark.parametrize("kind", ["C-ECHO", "C-FIND", "C-STORE"])
def test_requests_sent_without_waiting_for_their_answers_abort_the_association(hostile, kind):
    """pynetdicom queued every whole request a peer sent, unbounded, while the node answered one at a
    time: 39 C-FIND identifiers of 2.4 MB sent at once grew the node by 500 MB, a stream of C-ECHOs by
    2 MB a second, for as long as the peer went on. The node negotiates one operation at a time; a
    request that finds MAX_WAITING_REQUESTS others (a C-STORE: MAX_WAITING_STORES C-STOREs) still
    waiting aborts the association, audited with the reason, and the rest of what was sent is never
    served."""
    model = {"C-ECHO": Verification, "C-FIND": StudyRootQueryRetrieveInformationModelFind,
             "C-STORE": CTImageStorage}[kind]
    assoc = associate(hostile.dicom_port, (model, [ImplicitVRLittleEndian]))
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == model).context_id
    identifier = encode(query(QueryRetrieveLevel="STUDY", PatientName="*"), True, True)
    requests = []
    for number in range(1, 201):
        if kind == "C-STORE":
            small = dataset(4, 4)
            requests.append(pdu(context, 0x03, _command(AffectedSOPClassUID=model, CommandField=0x0001,
                                                        MessageID=number, Priority=0, CommandDataSetType=0x0001,
                                                        AffectedSOPInstanceUID=small.SOPInstanceUID))
                            + pdu(context, 0x02, encode(small, True, True)))
        elif kind == "C-ECHO":
            requests.append(pdu(context, 0x03, _command(AffectedSOPClassUID=model, CommandField=0x0030,
                                                        MessageID=number, CommandDataSetType=0x0101)))
        else:
            requests.append(pdu(context, 0x03, _command(AffectedSOPClassUID=model, CommandField=0x0020,
                                                        MessageID=number, Priority=0, CommandDataSetType=0x0001))
                            + pdu(context, 0x02, identifier))
    assoc._reactor_checkpoint.clear()  # the peer reads no answer meanwhile
    send_raw(assoc, b"".join(requests))
    assoc._reactor_checkpoint.set()
    wait_aborted(hostile, assoc)
    [(_, detail)] = audit_rows(hostile, "dicom.abort")
    waited = (f"{MAX_WAITING_STORES} C-STORE requests" if kind == "C-STORE"
              else f"{MAX_WAITING_REQUESTS} other request(s)")
    assert f"sent while {waited} of the association still waited" in detail, detail
    if kind == "C-STORE":  # those queued ahead are stored, the one cut is refused, the rest never read
        [(_, refused)] = audit_rows(hostile, "dicom.store_refused")
        assert "busy: sent before the answers to earlier requests" in refused
        stored = models(hostile).catalogue.Instance.select().count()
        assert MAX_WAITING_STORES <= stored <= MAX_WAITING_STORES + 2, stored
    still_serving(hostile)


def test_a_cancel_never_counts_as_a_request_waiting_nor_is_cut():
    """The rule alone, with a C-FIND waiting in the queue (end to end, whether the C-FIND is still
    queued when its C-CANCEL arrives depends on timing)."""
    from pynetdicom.dimse_messages import C_CANCEL_RQ, C_ECHO_RQ

    from daemons.render.dimse.limits import too_many_waiting

    class Queued:  # what `too_many_waiting` reads of an association: pynetdicom's message queue
        def __init__(self) -> None:
            self.dimse = type("DIMSE", (), {"msg_queue": queue.Queue()})()

    assoc = Queued()
    assoc.dimse.msg_queue.put((1, C_FIND()))
    assert too_many_waiting(assoc, C_CANCEL_RQ()) is None
    assert "sent while 1 other request(s)" in too_many_waiting(assoc, C_ECHO_RQ())


def test_a_cancel_sent_without_waiting_cancels_and_aborts_nothing(hostile):
    """A C-CANCEL is the one request a peer sends without waiting for an answer (pynetdicom keeps it
    apart from the queue): it was counted as waiting, the association marked to be cut, and then
    never cut (pynetdicom never queues it), so it hung until the network timeout."""
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(hostile.dicom_port, (model, [ImplicitVRLittleEndian]))
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == model).context_id
    find = (pdu(context, 0x03, _command(AffectedSOPClassUID=model, CommandField=0x0020, MessageID=1, Priority=0,
                                        CommandDataSetType=0x0001))
            + pdu(context, 0x02, encode(query(QueryRetrieveLevel="STUDY", PatientName="*"), True, True)))
    cancel = pdu(context, 0x03, _command(CommandField=0x0FFF, MessageIDBeingRespondedTo=1,
                                         CommandDataSetType=0x0101))
    assoc._reactor_checkpoint.clear()
    send_raw(assoc, find + cancel)
    assoc._reactor_checkpoint.set()
    time.sleep(0.5)
    assert assoc.is_established and not audit_rows(hostile, "dicom.abort")
    assoc.release()
    still_serving(hostile)


def test_a_pdu_longer_than_the_node_advertises_is_refused_before_it_is_read(hostile):
    """pynetdicom reads a PDU whole, whatever length its header claims (up to 4 GiB), and does not
    hold peers to the maximum the node advertised. The node advertises MAXIMUM_PDU_SIZE (1 MiB),
    and a PDU over it is refused from its header (A-ABORT), even one carrying a whole valid data set
    well within the upload limit: nothing is stored. The same data set sent in PDUs of the
    advertised size is stored."""
    ds = dataset(rows=1024, cols=1024, series="1.2.826.0.1.31.5")  # 2 MiB of pixels
    assoc = associate(hostile.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
    assert assoc.acceptor.maximum_length == MAXIMUM_PDU_SIZE
    context_id, command = store_command(assoc, ds)
    assert send_raw(assoc, pdu(context_id, 0x03, command))
    data = encode(ds, False, True)
    send_raw(assoc, pdu(context_id, 0x02, data))
    wait_aborted(hostile, assoc)
    assert models(hostile).catalogue.Instance.select().count() == 0
    pdu_length = len(data) + 6  # the PDV's length field, context and control header
    assert audit_rows(hostile, "dicom.abort") == [
        ("dicom.abort", f"a PDU of {pdu_length} bytes, over the maximum of {MAXIMUM_PDU_SIZE}")]
    assert send_store(hostile.dicom_port, ds) == 0x0000
    assert models(hostile).catalogue.Instance.select().count() == 1
    still_serving(hostile)


def test_a_requestor_announcing_pdus_under_the_minimum_is_rejected_and_audited(hostile, caplog):
    """Nothing checked the requestor's Maximum Length Received: at 1 to 6 bytes pynetdicom raised in
    the node (an ERROR with its traceback, an unexplained abort); at 7 a C-GET of one 527 KB instance
    took 46 s and 9.6 s of the node's CPU. Under the node's floor, MINIMUM_PEER_PDU_SIZE, it is now
    rejected (A-ASSOCIATE-RJ, rejected-permanent, service provider (ACSE)) and audited with why;
    0 (no limit) and the floor itself associate."""
    for announced in (1, 7, MINIMUM_PEER_PDU_SIZE - 1):
        ae = AE(ae_title=CALLER)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", hostile.dicom_port, ae_title=SCP, max_pdu=announced)
        assert assoc.is_rejected, announced
        answer = assoc.acceptor.primitive
        assert (answer.result, answer.result_source, answer.diagnostic) == (0x01, 0x02, 0x01)
    expected = [f"a Maximum Length Received of {announced} bytes, under the minimum of {MINIMUM_PEER_PDU_SIZE} "
                "(0 for no limit)" for announced in (1, 7, MINIMUM_PEER_PDU_SIZE - 1)]
    deadline = time.monotonic() + FINAL_WITHIN_S  # the last rejection is audited once its answer went out
    while len(audit_rows(hostile, "dicom.reject")) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [detail for _, detail in audit_rows(hostile, "dicom.reject")] == expected
    for announced in (0, MINIMUM_PEER_PDU_SIZE):
        ae = AE(ae_title=CALLER)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", hostile.dicom_port, ae_title=SCP, max_pdu=announced)
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000, announced
        assoc.release()
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"
    still_serving(hostile)


# --- C-FIND, C-GET, C-MOVE identifiers ------------------------------------------------------------


def query(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_a_refused_find_tells_the_peer_why_and_which_key(hostile):
    """PS3.4 Table C.4-1 relates Error Comment (0000,0902) and Offending Element (0000,0901) to 0xA900:
    the peer got the bare status (dcmtk: "DataSetDoesNotMatchSOPClass") while the reason, with its
    advice, went only to the node's log. The comment is LO (64 characters of ASCII, no backslash)."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", hostile.dicom_port, ae_title=SCP)
    assert assoc.is_established
    try:
        for identifier, tag, said in ((query(QueryRetrieveLevel="STUDY", StudyTime="2300-0100"), 0x00080030,
                                       "StudyTime: the range '2300-0100' ends before it starts"),
                                      (query(QueryRetrieveLevel="STUDY", SOPInstanceUID=""), 0x00080018,
                                       "SOPInstanceUID is a IMAGE key, below the STUDY level asked for"),
                                      (query(QueryRetrieveLevel="FOO"), None, "Query/Retrieve Level 'FOO'")):
            [(status, _)] = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
            assert status.Status == 0xA900
            comment = status.ErrorComment
            assert comment.startswith(said[:61]) and len(comment) <= 64 and comment.isascii(), comment
            assert "\\" not in comment
            assert (status.get("OffendingElement") == tag) if tag else "OffendingElement" not in status
    finally:
        assoc.release()


def test_hostile_find_identifiers_get_their_statuses(hostile):
    """Levels that are missing, unknown or multi-valued, keys below the level, malformed date ranges:
    0xA900. Huge but valid keys (40,000 UIDs, a 70,000-character name, wildcard soup): answered.
    Identifiers that are not whole data sets, sent as raw bytes: 0xC000 ("Unable to process"), never
    matches (`dimse.identifiers`). Each refusal is audited `dicom.find_refused` with its reason."""
    assert hostile.upload([("a.dcm", to_bytes(dataset(series="1.2.826.0.1.32.1")))]).status_code == 201
    port = hostile.dicom_port
    refused = [query(StudyInstanceUID=""), query(QueryRetrieveLevel="FOO"),
               query(QueryRetrieveLevel=["STUDY", "SERIES"]), query(QueryRetrieveLevel="STUDY", SOPInstanceUID=""),
               query(QueryRetrieveLevel="PATIENT", PatientID="x")]  # study root has no PATIENT level
    refused += [query(QueryRetrieveLevel="STUDY", StudyDate=value) for value in ("2020-", "-", "20201340", "2020-2019",
                                                                               "20201231-20200101")]
    for identifier in refused:
        assert find(port, identifier) == [0xA900], identifier
    for keyword, vr, value in (("StudyInstanceUID", "US", 0), ("StudyInstanceUID", "SQ", []),
                               ("PatientName", "SQ", [query(PatientID="x")]), ("SeriesNumber", "US", 5)):
        # read as an empty key, a UID sent as US 0 was a universal match: every study
        identifier = query(QueryRetrieveLevel="SERIES" if keyword == "SeriesNumber" else "STUDY")
        identifier.add_new(keyword, vr, value)
        request = C_FIND()  # explicit VR: in implicit VR an element's VR is the dictionary's
        request.Identifier = io.BytesIO(encode(identifier, False, True))
        assoc = associate(port, (StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]))
        try:
            assert exchange(assoc, request, StudyRootQueryRetrieveInformationModelFind) == [0xA900], (keyword, vr)
        finally:
            assoc.release()
    refused += [identifier] * 4
    started = time.monotonic()
    assert find(port, query(QueryRetrieveLevel="SERIES",
                            SeriesInstanceUID=[f"1.2.826.0.1.{n}" for n in range(40_000)])) == [0x0000]
    assert find(port, query(QueryRetrieveLevel="STUDY", PatientName="x" * 70_000)) == [0x0000]
    assert find(port, query(QueryRetrieveLevel="STUDY", PatientName="*?*?**")) == [0x0000]
    assert find(port, query(QueryRetrieveLevel="SERIES", SeriesInstanceUID="1.2.826.0.1.32.1")) == [0xFF00, 0x0000]
    assert time.monotonic() - started < 3 * FINAL_WITHIN_S
    narrowing = encode(query(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.826.0.1.99"), False, True)
    raw = {b"\xff" * 37: 0xC000,  # no data set
           b"\x08\x00\x52\x00ZZ\x06\x00STUDY ": 0xC000,  # an unknown VR
           # the Study Instance UID's length runs past the end: read leniently, it matched every study
           narrowing[:-16] + struct.pack("<H", 64) + narrowing[-14:]: 0xC000,
           narrowing + b"\x20\x00\x0d": 0xC000}  # a stub of an element after the last
    for identifier, status in raw.items():
        for request, model in ((C_FIND(), StudyRootQueryRetrieveInformationModelFind),
                               (C_GET(), StudyRootQueryRetrieveInformationModelGet)):
            request.Identifier = io.BytesIO(identifier)
            assoc = associate(port, (model, [ExplicitVRLittleEndian]))
            try:
                assert exchange(assoc, request, model) == [status], (identifier, model)
            finally:
                assoc.release()
    find_refused = audit_rows(hostile, "dicom.find_refused")  # with the reason, as C-GET and C-MOVE
    assert len(find_refused) == len(refused) + len(raw) and all(detail for _, detail in find_refused)
    assert any("Query/Retrieve Level" in detail for _, detail in find_refused)
    still_serving(hostile)


def test_find_keys_beyond_what_the_node_matches_are_out_of_resources_not_its_failure(hostile, caplog):
    """ModalitiesInStudy was matched as a chain of ORs one level deep per value: about 100 values
    overflowed Python's stack while building the statement, and a wildcard value over SQLite's
    pattern limit (50,000 bytes) failed in the database: 0xC000, audited "processing failure" and
    logged as the node's own error with its trace, each time a peer asked. Now a list of modalities
    is matched flat (up to `matching.MODALITIES_MAX` values) and wildcards up to `matching.WILDCARD_MAX`
    characters; more is 0xA700 (out of resources), audited with the reason, logged as information."""
    assert hostile.upload([("a.dcm", to_bytes(dataset(series="1.2.826.0.1.32.1")))]).status_code == 201
    port = hostile.dicom_port
    many = [f"M{n}" for n in range(matching.MODALITIES_MAX - 1)] + ["CT"]
    assert find(port, query(QueryRetrieveLevel="STUDY", ModalitiesInStudy=many)) == [0xFF00, 0x0000]
    too_many = [*many, "MR"]
    long_wildcard = "*" + "x" * matching.WILDCARD_MAX
    for identifier in (query(QueryRetrieveLevel="STUDY", ModalitiesInStudy=too_many),
                       query(QueryRetrieveLevel="STUDY", ModalitiesInStudy=["CT", "x" * (matching.WILDCARD_MAX + 1)]),
                       query(QueryRetrieveLevel="STUDY", PatientName=long_wildcard),
                       query(QueryRetrieveLevel="STUDY", StudyDescription="*x" * 30_000)):
        assert find(port, identifier) == [0xA700], identifier.dir()
    refused = [detail for _, detail in audit_rows(hostile, "dicom.find_refused")]
    assert len(refused) == 4 and "processing failure" not in refused, refused
    assert not [record for record in caplog.records if record.levelname == "ERROR"
                and record.name.startswith("daemons")]
    assert find(port, query(QueryRetrieveLevel="STUDY", PatientName="*" + "x" * 1000)) == [0x0000]
    still_serving(hostile)


def test_a_find_matching_more_than_the_node_answers_at_once_is_out_of_resources_through_the_listener(make_node):
    """The bound `dicom.max_find_matches` was tested on the matching alone: the listener must read it
    from the node's configuration at every C-FIND, answer at the bound and refuse past it (0xA700),
    audited with the key to narrow by."""
    harness = open_archive(make_node, dicom__max_find_matches=2)
    try:
        files = [(f"{n}.dcm", to_bytes(dataset(series="1.2.826.0.1.33.1", position=float(n)))) for n in range(3)]
        assert harness.upload(files).status_code == 201
        series = query(QueryRetrieveLevel="IMAGE", SeriesInstanceUID="1.2.826.0.1.33.1", SOPInstanceUID="")
        series.StudyInstanceUID = "1.2.3"
        assert find(harness.dicom_port, series) == [0xA700]
        refused = [detail for _, detail in audit_rows(harness, "dicom.find_refused")]
        assert len(refused) == 1 and "dicom.max_find_matches" in refused[0], refused
        assert find(harness.dicom_port, query(QueryRetrieveLevel="SERIES", SeriesInstanceUID="")) == [0xFF00, 0x0000]
    finally:
        close_archive(harness)


def move(port: int, destination: str, identifier: Dataset) -> tuple[list[int], Association]:
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    statuses = [status.Status for status, _ in assoc.send_c_move(identifier, destination,
                                                                  StudyRootQueryRetrieveInformationModelMove)
                if status]
    return statuses, assoc


def test_a_refused_move_is_audited_when_its_destination_cannot_be_reached(hostile):
    """An identifier that cannot be matched, to a destination that is down: pynetdicom can answer
    only 0xA801 then (it sends a failure only over an open destination association), but the
    refusal itself is audited, as every refused retrieval is."""
    statuses, assoc = move(hostile.dicom_port, "DOWN", query(QueryRetrieveLevel="STUDY", PatientName="*"))
    assoc.release()
    assert statuses == [0xA801]
    refused = audit_rows(hostile, "dicom.move_refused")
    assert len(refused) == 1 and "StudyInstanceUID" in refused[0][1]
    still_serving(hostile)



def test_a_refused_move_is_answered_by_a_destination_that_supports_no_verification(hostile):
    """pynetdicom sends a C-MOVE's failure only over an association with its destination; the node
    proposed Verification alone there, which a storage SCP need not support, and its rejection made
    the answer 0xA801 (unknown destination) for a known destination that was up."""
    receiver = AE(ae_title="STALL")
    receiver.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = receiver.start_server(("127.0.0.1", hostile.stall_port), block=False)
    try:
        statuses, assoc = move(hostile.dicom_port, "STALL", query(QueryRetrieveLevel="FOO"))
        assoc.release()
    finally:
        server.shutdown()
    assert statuses == [0xA900]
    assert len(audit_rows(hostile, "dicom.move_refused")) == 1
    still_serving(hostile)


def test_uid_lists_over_what_the_node_matches_at_once_are_out_of_resources_and_empty_ones_retrieve_nothing(
        hostile, monkeypatch):
    """A list of 260,001 UIDs (PS3.4 C.2.2.2.2 sets no bound) went into one SQL list, over SQLite's
    250,000 parameters: a processing failure logged with its trace. A list over `UID_LIST_MAX` is now
    refused Out of Resources (the peer may send it in parts): 0xA700 for C-FIND, 0xA701 for C-GET (its
    own code, "unable to calculate number of matches", PS3.4 Table C.4-3);
    the bound is lowered here so the test sends a short list. A unique key that is a list of
    empty UIDs (`\\`) named nothing and retrieved nothing with success: 0xA900 now."""
    # PostgreSQL's parameters per statement, with room for the other keys
    assert matching.UID_LIST_MAX + matching.FUZZY_NAMES_MAX < 65_535 - 100
    monkeypatch.setattr(matching, "UID_LIST_MAX", 50)
    assert hostile.upload([("a.dcm", to_bytes(dataset(series="1.2.826.0.1.36.1")))]).status_code == 201
    port = hostile.dicom_port
    listed = [f"1.2.826.0.1.36.{n}" for n in range(1, 51)]
    assert find(port, query(QueryRetrieveLevel="SERIES", SeriesInstanceUID=listed)) == [0xFF00, 0x0000]
    too_many = [*listed, "1.2.826.0.1.36.99"]
    assert find(port, query(QueryRetrieveLevel="SERIES", SeriesInstanceUID=too_many)) == [0xA700]
    # the bound is the statement's: two lists of 30 are as many parameters as one of 60
    assert find(port, query(QueryRetrieveLevel="SERIES", StudyInstanceUID=listed[:30],
                            SeriesInstanceUID=listed[20:])) == [0xA700]
    for identifier, status in ((query(QueryRetrieveLevel="SERIES", SeriesInstanceUID=too_many), 0xA701),
                               (query(QueryRetrieveLevel="SERIES", SeriesInstanceUID="\\"), 0xA900)):
        request = C_GET()
        request.Identifier = io.BytesIO(encode(identifier, False, True))
        assoc = associate(port, (StudyRootQueryRetrieveInformationModelGet, [ExplicitVRLittleEndian]))
        try:
            assert exchange(assoc, request, StudyRootQueryRetrieveInformationModelGet)[-1] == status
        finally:
            assoc.release()
    refused = [detail for _, detail in audit_rows(hostile, "dicom.") if "UIDs in all are more than" in detail]
    assert len(refused) == 3  # the C-FINDs and the C-GET, audited as the peer's request
    still_serving(hostile)


def test_a_move_to_a_destination_that_never_answers_its_stores_fails_them_in_bounded_time(hostile):
    """STALL accepts the association and the first C-STORE, and never answers: after
    dicom.dimse_timeout_s (3 s) the node gives up that destination, fails every sub-operation
    (0xA702), audits it, and the originator's association stays open (it was silent, rightly)."""
    files = [(f"{n}.dcm", to_bytes(dataset(series="1.2.826.0.1.33.1", position=float(n)))) for n in range(3)]
    assert hostile.upload(files).status_code == 201
    released = threading.Event()
    stall = AE(ae_title="STALL")
    stall.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = stall.start_server(("127.0.0.1", hostile.stall_port), block=False,
                                evt_handlers=[(evt.EVT_C_STORE, lambda event: released.wait(15) and 0x0000)])
    try:
        started = time.monotonic()
        statuses, assoc = move(hostile.dicom_port, "STALL",
                               query(QueryRetrieveLevel="SERIES", SeriesInstanceUID="1.2.826.0.1.33.1"))
        assert time.monotonic() - started < FINAL_WITHIN_S
        assert statuses[-1] == 0xA702 and assoc.is_established
        assoc.release()
    finally:
        released.set()
        server.shutdown()
    assert audit_rows(hostile, "dicom.move") == [
        ("dicom.move", "level=SERIES destination=STALL instances=3 completed=0 warning=0 failed=3")]
    still_serving(hostile)


def test_a_get_caller_that_aborts_half_way_is_audited_and_frees_its_thread(hostile):
    """A C-GET of 40 instances whose caller aborts after receiving 5: the retrieval stops, its audit
    row counts what was sent, and the association's thread is gone."""
    files = [(f"{n}.dcm", to_bytes(dataset(series="1.2.826.0.1.34.1", position=float(n)))) for n in range(40)]
    assert hostile.upload(files).status_code == 201
    ae = AE(ae_title=CALLER)
    ae.dimse_timeout = 2  # pynetdicom's send_c_get waits this long for answers on an association it aborted
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    received: list[str] = []
    holder: dict[str, Association] = {}

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 5:
            threading.Thread(target=holder["assoc"].abort).start()
        return 0x0000

    assoc = ae.associate("127.0.0.1", hostile.dicom_port, ae_title=SCP,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    holder["assoc"] = assoc
    list(assoc.send_c_get(query(QueryRetrieveLevel="SERIES", SeriesInstanceUID="1.2.826.0.1.34.1"),
                          StudyRootQueryRetrieveInformationModelGet))
    deadline = time.monotonic() + FINAL_WITHIN_S
    while not audit_rows(hostile, "dicom.get") and time.monotonic() < deadline:
        time.sleep(0.05)
    [(_, detail)] = audit_rows(hostile, "dicom.get")
    assert detail.startswith("level=SERIES instances=40 completed=") and "failed=0" not in detail
    while len(hostile.app.extensions["sivr_dimse"].servers[0].active_associations) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not hostile.app.extensions["sivr_dimse"].servers[0].active_associations
    still_serving(hostile)


def test_a_get_sub_operation_answered_for_another_instance_fails_alike_in_the_response_and_the_audit(hostile):
    """A C-GET caller whose C-STORE-RSP names another Affected SOP Instance UID than the one sent
    (PS3.7 9.3.1.2: if present, the request's) was counted by pynetdicom from the status (completed)
    and audited by the UID it named (failed): the final response said 3 completed, the audit
    completed=0 failed=3. Such a response does not say the instance sent was stored: it fails its
    sub-operation in both, keyed by the instance sent, and the Failed SOP Instance UID List names it."""
    series = "1.2.826.0.1.34.2"
    files = [(f"{n}.dcm", to_bytes(dataset(series=series, position=float(n)))) for n in range(3)]
    assert hostile.upload(files).status_code == 201
    received: list[str] = []

    def on_store(event: Any) -> Dataset:
        """Answers success, for the first instance naming another one."""
        received.append(str(event.request.AffectedSOPInstanceUID))
        answer = Dataset()
        answer.Status = 0x0000
        answer.AffectedSOPInstanceUID = "1.2.826.0.1.34.99" if len(received) == 1 else received[-1]
        return answer

    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", hostile.dicom_port, ae_title=SCP,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    final, identifier = list(assoc.send_c_get(query(QueryRetrieveLevel="SERIES", SeriesInstanceUID=series),
                                              StudyRootQueryRetrieveInformationModelGet))[-1]
    assoc.release()
    assert len(received) == 3 and final.Status == 0xB000  # sub-operations complete, one or more failed
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert identifier.FailedSOPInstanceUIDList == received[0]
    assert [detail for _, detail in audit_rows(hostile, "dicom.get")] == [
        "level=SERIES instances=3 completed=2 warning=0 failed=1"]
    still_serving(hostile)


def test_connections_closed_before_associating_free_their_places_at_once(make_node):
    """Bare TCP connects that close at once (a port scan, a load balancer's probe) held an association
    place each for the whole ACSE timeout: with `max_associations` of them, every caller was refused
    ("local limit exceeded") for 30 s."""
    harness = open_archive(make_node, dicom__max_associations=4, dicom__max_associations_per_address=4,
                           dicom__acse_timeout_s=30.0)
    try:
        for _ in range(8):
            socket.create_connection(("127.0.0.1", harness.dicom_port), timeout=5).close()
        deadline = time.monotonic() + 3.0
        while not echo(harness.dicom_port):
            assert time.monotonic() < deadline, "the closed connections still hold the listener's places"
            time.sleep(0.1)
    finally:
        close_archive(harness)


@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2's ss absent (it shows a listening socket's backlog)")
def test_the_listener_queues_a_burst_of_connections(hostile):
    """socketserver's backlog of 5 made the sixth of a burst of peers wait for a SYN retransmit (1 s, then
    3 s): the listening socket takes the system's maximum. `ss` shows it as a listener's Send-Q."""
    shown = subprocess.run(["ss", "-ltnH", f"sport = :{hostile.dicom_port}"], capture_output=True, text=True,
                           check=True).stdout.split()
    kernel = Path("/proc/sys/net/core/somaxconn")  # the kernel caps every backlog (128 before Linux 5.4)
    expected = min(socket.SOMAXCONN, int(kernel.read_text())) if kernel.exists() else socket.SOMAXCONN
    assert int(shown[2]) == expected > 5, shown


def test_a_deflated_bomb_is_refused_before_it_inflates_and_queries_take_no_deflate(hostile):
    """A C-STORE of a deflated data set was inflated whole by the encoding check before the bomb check
    ran (512 MiB from 510 KB); a deflated C-FIND, C-GET or C-MOVE identifier was inflated whole by
    pynetdicom itself. Stores are now checked first, and the query contexts do not take Deflated."""
    import tracemalloc

    from daemons.render.ingest.upload_checks import read_file_meta
    from tests.hostile.corpus import _deflate_bomb

    bomb = _deflate_bomb(192)
    _, meta_end = read_file_meta(bomb)
    assoc = associate(hostile.dicom_port, (CTImageStorage, [DeflatedExplicitVRLittleEndian]))
    request = C_STORE()
    request.AffectedSOPInstanceUID = generate_uid()
    request.DataSet = io.BytesIO(bomb[meta_end:])
    tracemalloc.start()
    try:
        assert exchange(assoc, request, CTImageStorage) == [0xA700]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        assoc.release()
    assert peak < 96 * MIB, f"{peak / MIB:.0f} MiB held while refusing it"
    for model in (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
                  StudyRootQueryRetrieveInformationModelMove):
        assoc = associate(hostile.dicom_port, (model, [DeflatedExplicitVRLittleEndian]),
                          (model, [ExplicitVRLittleEndian]))
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [ExplicitVRLittleEndian]
        assoc.release()
    still_serving(hostile)


def test_a_peer_trickling_a_pdu_is_aborted_within_the_network_timeout(hostile):
    """The network timeout bounded each wait for bytes, not a read: a peer sending one byte of a PDU
    every half second held its association (and a place among the listener's four) for as long
    as it liked."""
    assoc = associate(hostile.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
    started = time.monotonic()
    sent = send_raw(assoc, struct.pack(">BBL", 0x04, 0, 1000))  # a P-DATA-TF of 1,000 bytes, its body slowly
    while sent and time.monotonic() - started < 8:
        time.sleep(0.5)
        sent = send_raw(assoc, b"\0")
    wait_aborted(hostile, assoc)
    assert time.monotonic() - started < 6, "the node waited for the rest of the PDU"
    [(_, reason)] = audit_rows(hostile, "dicom.abort")
    assert "within the network timeout of 1.5 s" in reason, reason
    still_serving(hostile)


def test_a_store_slower_than_the_network_timeout_keeps_its_association(hostile, monkeypatch):
    """pynetdicom counts the network timeout from the last PDU received and checks it when a handler
    returns: a C-STORE whose ingest outlasted it was answered, then its association aborted, and
    the abort audited as the peer's silence. The peer waits for the node meanwhile; its silence
    counts from the node's answer (`limits.wait_for_peer_from_now`)."""
    ingest = hostile.app.extensions["sivr_dimse"].ingest
    real_add = ingest.add

    def slow_add(*args, **kwargs):
        time.sleep(2.0)  # over the fixture's network timeout of 1.5 s
        return real_add(*args, **kwargs)

    monkeypatch.setattr(ingest, "add", slow_add)
    series = "1.2.826.0.1.32.7"
    assoc = associate(hostile.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
    statuses = [int(assoc.send_c_store(dataset(series=series, position=float(n))).Status) for n in (1, 2)]
    assoc.release()
    assert statuses == [0x0000, 0x0000] and assoc.is_released
    assert audit_rows(hostile, "dicom.abort") == []
    still_serving(hostile)


def test_a_store_into_an_unmounted_store_is_a_processing_failure_audited_and_nothing_written(hostile):
    """The store's volume gone (its empty mount point left): 0x0110 with the reason audited, nothing
    written where the volume was; after the remount the same instance is stored."""
    root = hostile.root / "store"
    aside = root.with_name("store-volume")
    os.replace(root, aside)
    root.mkdir()
    ds = dataset(series="1.2.826.0.1.32.8")
    assert send_store(hostile.dicom_port, ds) == 0x0110
    assert list(root.iterdir()) == []
    [(_, detail)] = audit_rows(hostile, "dicom.store_refused")
    assert "store unavailable" in detail and "is its volume mounted" in detail, detail
    root.rmdir()
    os.replace(aside, root)
    assert send_store(hostile.dicom_port, ds) == 0x0000
    still_serving(hostile)


def test_a_store_that_finds_no_upload_memory_is_aborted_and_a_stored_one_frees_its_room(make_node):
    """C-STORE data sets count in the process's upload memory with HTTP bodies (`limits.upload_memory_mb`),
    as they arrive: while other bodies hold it, a C-STORE is aborted (the only way to stop its bytes),
    audited as refused and nothing stored; stores that went through leave nothing held."""
    harness = open_archive(make_node, limits__upload_memory_mb=1, dicom__network_timeout_s=1.5,
                           dicom__acse_timeout_s=2.0, dicom__dimse_timeout_s=3.0)
    try:
        memory = harness.app.extensions[INGEST_EXTENSION].memory
        ds = dataset(rows=256, cols=256, series="1.2.826.0.1.31.5")  # 128 KiB of pixels
        for number in range(3):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.31.5.{number}"
            assert send_store(harness.dicom_port, ds) == 0x0000
        assert memory.used == 0
        with memory.reservation() as other:
            other.grow_to(MIB // 3)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.31.5.9"
            assoc = associate(harness.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
            assert not assoc.send_c_store(ds)  # no answer: aborted
            wait_aborted(harness, assoc)
            assert memory.used == other.held
        refused = audit_rows(harness, "dicom.store_refused")
        assert len(refused) == 1 and refused[0][1].startswith("sop_instance_uid=1.2.826.0.1.31.5.9 busy:")
        assert "limits.upload_memory_mb" in audit_rows(harness, "dicom.abort")[0][1]
        assert models(harness).catalogue.Instance.select().count() == 3
        assert send_store(harness.dicom_port, ds) == 0x0000
        assert models(harness).catalogue.Instance.select().count() == 4 and memory.used == 0
    finally:
        close_archive(harness)


def _command(**elements: Any) -> bytes:
    command = Dataset()
    for keyword, value in elements.items():
        setattr(command, keyword, value)
    return encode(command, True, True)


@pytest.mark.parametrize("name, command, reason", [
    ("bytes that are no data set", b"\xff" * 40, "cannot be read"),
    ("an empty command set", b"", "cannot be read"),
    ("an unknown command", _command(AffectedSOPClassUID=Verification, CommandField=0x0777, MessageID=1,
                                    CommandDataSetType=0x0101), "Command Field 0x0777"),
    ("a C-ECHO-RQ without its Message ID", _command(AffectedSOPClassUID=Verification, CommandField=0x0030,
                                                    CommandDataSetType=0x0101), "MessageID"),
    ("a C-STORE-RQ without its SOP Instance UID", _command(AffectedSOPClassUID=CTImageStorage, CommandField=0x0001,
                                                           MessageID=3, Priority=0, CommandDataSetType=0x0101),
     "AffectedSOPInstanceUID"),
])
def test_a_command_set_that_is_no_valid_dimse_request_aborts_at_once(hostile, name, command, reason):
    """A P-DATA whose command set pynetdicom cannot decode or map to a message crashed its reader: the
    connection closed with no A-ABORT and nothing audited. One that decodes but lacks what its request
    needs was dropped without a word: the peer waited for an answer, the association held its place until
    the network timeout, then was audited as the peer's silence. Now: A-ABORT at once, audited with why."""
    assoc = associate(hostile.dicom_port, (Verification, [ImplicitVRLittleEndian]),
                      (CTImageStorage, [ImplicitVRLittleEndian]))
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == Verification)
    pdv = struct.pack(">LBB", len(command) + 2, context.context_id, 0x03) + command  # the last command fragment
    started = time.monotonic()
    send_raw(assoc, struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)
    wait_aborted(hostile, assoc)
    assert time.monotonic() - started < 1.0, f"{name}: not aborted at once"
    [(_, detail)] = audit_rows(hostile, "dicom.abort")
    assert "not a valid DIMSE request" in detail and reason in detail, (name, detail)
    still_serving(hostile)


def test_an_abort_from_the_pdu_reader_never_waits_for_itself(hostile, monkeypatch):
    """The reader's checks (a command set that is no request, a request its context does not serve,
    a data set beyond the memory of bodies being stored) abort from the thread that reads the PDUs.
    pynetdicom makes `Association.abort` non-blocking only while a notification handler runs, by
    swapping the method on the association, and the association's own thread swaps it back at the end
    of each of its own notifications (every response it sends): a reader that then called the blocking
    abort waited for itself to stop (seen: that thread spinning in `Association.kill` after a test run,
    holding the process open). The swap-back is forced here, the non-blocking method made the
    blocking one as that race leaves it, and every abort the reader makes must still not block."""
    blocking = Association._abort_blocking
    made: list[tuple[str, bool]] = []

    def recorded(self: Association, block: bool = True) -> None:
        made.append((threading.current_thread().name, block))
        return blocking(self, block)

    monkeypatch.setattr(Association, "_abort_blocking", recorded)
    monkeypatch.setattr(Association, "_abort_nonblocking", lambda self, block=True: self._abort_blocking(block))
    command = _command(AffectedSOPClassUID=Verification, CommandField=0x0030, CommandDataSetType=0x0101)
    assoc = associate(hostile.dicom_port, (Verification, [ImplicitVRLittleEndian]))
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == Verification)
    pdv = struct.pack(">LBB", len(command) + 2, context.context_id, 0x03) + command
    send_raw(assoc, struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)
    wait_aborted(hostile, assoc)
    [(_, detail)] = audit_rows(hostile, "dicom.abort")
    assert "MessageID" in detail
    readers = [block for thread, block in made if "run_reactor" in thread]
    assert readers and not any(readers), f"the reader aborted blocking: {made}"
    still_serving(hostile)


def test_cancels_naming_requests_not_in_progress_abort_before_one_is_queued(hostile, caplog):
    """pynetdicom keeps at most CANCELS_KEPT_APART C-CANCELs apart (by the Message ID they cancel) and
    queues the next as a request: the association's thread died on it (AttributeError: 'C_CANCEL'
    object has no attribute 'is_valid_request'), with no A-ABORT and nothing audited, and its reader
    went on queueing what the peer sent, a C-CANCEL flood unbounded (+35 MB in 20 s). The one past
    them aborts the association at once, audited with why; one C-CANCEL of the request in progress
    is still read as before (`test_a_cancel_sent_without_waiting_cancels_and_aborts_nothing`)."""
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(hostile.dicom_port, (model, [ImplicitVRLittleEndian]))
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == model).context_id
    cancels = [pdu(context, 0x03, _command(CommandField=0x0FFF, MessageIDBeingRespondedTo=100 + number,
                                            CommandDataSetType=0x0101)) for number in range(CANCELS_KEPT_APART + 1)]
    assoc._reactor_checkpoint.clear()  # the peer reads no answer meanwhile
    with caplog.at_level(logging.ERROR):
        send_raw(assoc, b"".join(cancels))
        assoc._reactor_checkpoint.set()
        wait_aborted(hostile, assoc)
    assert not [record for record in caplog.records if record.exc_info], "the association's thread failed"
    [(_, detail)] = audit_rows(hostile, "dicom.abort")
    assert f"a C-CANCEL-RQ while {CANCELS_KEPT_APART} others naming other Message IDs were held" in detail, detail
    still_serving(hostile)


def test_an_identifier_naming_thousands_of_character_sets_is_refused_before_pydicom_reads_them(hostile, caplog):
    """pydicom converts every value of an identifier's Specific Character Set as it reads it, and again for
    every text element it decodes, logging three warnings for each term it does not know: a C-FIND of
    489 KB naming 100,000 unknown terms held its association's thread 12 s and wrote 300,000 log lines.
    More values than `element_budget.CHARACTER_SETS_MAX` is 0xC000 for C-FIND and C-GET alike, counted in the
    identifier's bytes, audited with the reason; as many as that is still read (and answered)."""
    port = hostile.dicom_port
    keys = query(QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="Web*")

    def with_character_sets(count: int, implicit: bool = True) -> bytes:
        value = "\\".join(f"X{n}" for n in range(count)).encode()
        value += b" " * (len(value) % 2)
        header = struct.pack("<HH", 0x0008, 0x0005) + (b"" if implicit else b"UT\0\0")  # explicit: as a UT
        return header + struct.pack("<I", len(value)) + value + encode(keys, implicit, True)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pydicom"):
        for request, model, syntax in ((C_FIND(), StudyRootQueryRetrieveInformationModelFind, ImplicitVRLittleEndian),
                                       (C_FIND(), StudyRootQueryRetrieveInformationModelFind, ExplicitVRLittleEndian),
                                       (C_GET(), StudyRootQueryRetrieveInformationModelGet, ImplicitVRLittleEndian)):
            request.Identifier = io.BytesIO(with_character_sets(20_000, syntax == ImplicitVRLittleEndian))
            assoc = associate(port, (model, [syntax]))
            try:
                assert exchange(assoc, request, model) == [0xC000], model
            finally:
                assoc.release()
    assert time.monotonic() - started < FINAL_WITHIN_S  # 12 s of one thread each before
    assert not [record for record in caplog.records if record.name == "pydicom"]
    details = [detail for _, detail in audit_rows(hostile, "dicom.find_refused") + audit_rows(hostile, "dicom.get_")]
    assert len(details) == 3 and all(f"holds 20,000 values: name at most {CHARACTER_SETS_MAX}" in detail
                                     for detail in details), details
    request = C_FIND()
    request.Identifier = io.BytesIO(with_character_sets(CHARACTER_SETS_MAX))
    assoc = associate(port, (StudyRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian]))
    try:
        assert exchange(assoc, request, StudyRootQueryRetrieveInformationModelFind) == [0x0000]
    finally:
        assoc.release()
    still_serving(hostile)
