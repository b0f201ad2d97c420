"""C-GET and C-MOVE on the node's catalogue: the retrieve half of the DIMSE front door.

A retrieval matches the catalogue exactly as C-FIND does (`daemons.render.catalogue.matching.retrieve`),
then sends each instance as a C-STORE sub-operation: over the caller's own association (C-GET)
or over a new association to a destination of `dicom.destinations` (C-MOVE; over DICOM TLS to a
`tls://` one, `daemons.render.dimse.tls`). An instance leaves
the node as it was stored, bit for bit, when the receiver accepted its transfer syntax; else it is
transcoded to Explicit VR Little Endian as WADO-RS does (decompressed, or swapped from big endian)
when the receiver accepted an uncompressed syntax (pynetdicom re-encodes it in Implicit VR where
only that was accepted);
else its sub-operation fails (and the retrieval ends with 0xB000, or 0xA702 when none succeeded).
A retrieval refused before its sub-operations (`Retrieval.refusals`) counts none of them. Each
series is checked as every other door checks it before its instances go (`Retrieval._unsendable`):
a damaged one is quarantined, its sub-operations fail and the final response names it.
pynetdicom runs the sub-operations and counts them; this module chooses what to send and writes
one audit entry per series retrieved, with the outcome of its instances.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Flask
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import StoragePresentationContexts, build_context, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    # generated at import time (sop_class._generate_sop_classes): mypy cannot see them
    Verification,
)
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS

from daemons.render.catalogue.matching import retrieve
from daemons.render.dimse.callers import AE_TITLE_RULE, is_ae_title
from daemons.render.dimse.connections import AssociationConnections
from daemons.render.dimse.identifiers import failure_status, read_identifier, refusal
from daemons.render.imaging.decode import syntax_decodable
from daemons.render.imaging.transcode import stored_syntax, to_explicit_le
from daemons.render.node import Node
from daemons.render.statuses import CANCEL, CANNOT_UNDERSTAND, PENDING
from daemons.render.store.interface import RecordUnreadable, StoreUnavailable
from shared.config import Config, ConfigError
from shared.errors import ApiError

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # presentation contexts in one association (PS3.8 9.3.2.2: odd ids 1..255)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

Audit = Callable[[Any, str, "str | None", str], None]

#: What a sub-operation answered with a C-STORE-RSP status of each of pynetdicom's storage categories
#: counts as, as its C-GET and C-MOVE count them in their responses (Cancel, the one other category, they
#: count as nothing: `Outcomes.on_message` makes it a failure first)
SUB_OPERATION_RESULTS = {STATUS_SUCCESS: "completed", STATUS_WARNING: "warning", STATUS_FAILURE: "failed"}
#: Command Data Set Type: no data set follows the command (PS3.7 E.1).
NO_DATA_SET = 0x0101
#: The sub-operation counts of a final C-GET-RSP or C-MOVE-RSP (PS3.7 9.3.3.2, 9.3.4.2).
SUB_OPERATION_COUNTS = ("NumberOfCompletedSuboperations", "NumberOfWarningSuboperations",
                        "NumberOfFailedSuboperations")
#: C-MOVE: "Refused: Move Destination unknown" (PS3.4 Table C.4-3), which pynetdicom answers by itself
#: for a destination the handler does not name and for one that does not accept the association.
MOVE_DESTINATION_UNKNOWN = 0xA801
#: C-GET and C-MOVE: "Refused: Out of Resources - Unable to perform sub-operations" (PS3.4 Tables C.4-2,
#: C.4-3), which pynetdicom answers by itself when every sub-operation failed.
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
#: C-GET and C-MOVE "Warning: Sub-operations Complete - One or more Failures" (PS3.4 Tables C.4-2, C.4-3).
SOME_SUB_OPERATIONS_FAILED = 0xB000


def no_delay(event: Any) -> None:
    """TCP_NODELAY on an association's socket: each DIMSE message is a command PDU then a data set
    PDU, two small writes, and with Nagle's algorithm the second waits for the peer's delayed ACK
    (about 40 ms a message: a C-FIND that matched nothing took 50 ms)."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class Destination:
    """A C-MOVE destination of `dicom.destinations`: where it listens, and whether over DICOM TLS."""

    host: str
    port: int
    tls: bool = False


def parse_destinations(config: Config) -> dict[str, Destination]:
    """`dicom.destinations` ("AE_TITLE=host:port" or "AE_TITLE=tls://host:port" each) by AE title;
    ConfigError if malformed."""
    destinations: dict[str, Destination] = {}
    for entry in config["dicom"]["destinations"]:
        title, _, address = str(entry).partition("=")
        address = address.strip()
        tls = address.lower().startswith("tls://")
        host, _, port = address[len("tls://") if tls else 0:].rpartition(":")
        title, host = title.strip(), host.strip().strip("[]")
        if not (is_ae_title(title) and host and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"{config.source or '<config>'}: dicom.destinations: {entry!r} is not "
                              "\"AE_TITLE=host:port\" or \"AE_TITLE=tls://host:port\" "
                              f"(an AE title of {AE_TITLE_RULE})")
        destinations[title] = Destination(host, int(port), tls)
    return destinations


@dataclass
class Outcomes:
    """The C-STORE responses of one retrieval's sub-operations, by the SOP Instance UID sent."""

    statuses: dict[str, int] = field(default_factory=dict)
    sending: str = ""  # the instance of the sub-operation in progress (they run one at a time)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, event: Any) -> None:
        """EVT_DIMSE_RECV handler of the association the sub-operations run on: the outcome of the
        instance being sent (they run one at a time), as pynetdicom will count it in the C-GET or
        C-MOVE response. Before pynetdicom reads it, the response's status becomes 0xC000 (failed)
        when it is no storage success, warning or failure (0xFE00 Cancel, a pending or unknown
        code: pynetdicom counts such a sub-operation as none of completed, warning and failed, and
        a retrieval that stored nothing would end in success), or when the response names another
        instance than the one sent (`answers_another`)."""
        if type(event.message).__name__ != "C_STORE_RSP":
            return
        command = event.message.command_set
        status = int(command.Status)
        with self.lock:
            sending = self.sending
        named = answers_another(command, sending)
        if named is not None:
            log.info("the peer answered the C-STORE sub-operation of %s naming %s: counted as failed", sending, named)
            status = command.Status = CANNOT_UNDERSTAND
        elif STORAGE_SERVICE_CLASS_STATUS.get(status, ("",))[0] not in SUB_OPERATION_RESULTS:
            log.info("the peer answered a C-STORE sub-operation with 0x%04X, no storage status: counted as failed",
                     status)
            status = command.Status = CANNOT_UNDERSTAND
        with self.lock:
            self.statuses[sending] = status

    def of(self, sop_instance_uid: str) -> str:
        """completed, warning or failed, as pynetdicom counted it (a sub-operation never answered,
        or never sent, failed), so that the audit and the final response agree."""
        with self.lock:
            status = self.statuses.get(sop_instance_uid)
        if status is None:
            return "failed"
        return SUB_OPERATION_RESULTS[STORAGE_SERVICE_CLASS_STATUS[status][0]]


def answers_another(command: Dataset, sending: str) -> str | None:
    """The other SOP Instance UID a C-STORE-RSP names than the instance sent, or None. Its Affected
    SOP Instance UID is optional but, when present, the one of the request (PS3.7 9.3.1.2, "U(=)").
    A response naming another instance does not say the one sent was stored: its sub-operation
    counts as failed (PS3.4 C.4.2, C.4.3: the counts are those of the sub-operations), in the final
    response's counts and its Failed SOP Instance UID List as in the audit, so that the caller
    knows to retrieve it again. Keyed by what was sent, never by what the peer named: a peer naming
    one instance for all of them made the audit say completed=0 failed=24 while the final C-GET-RSP
    said 24 completed."""
    named = str(command.get("AffectedSOPInstanceUID") or "")
    return named if named and named != sending else None


class Receiver:
    """What the peer receiving the sub-operations accepted: {SOP class: transfer syntaxes}."""

    def __init__(self) -> None:
        self.accepted: dict[str, set[str]] = {}

    def learn(self, contexts: list[PresentationContext]) -> None:
        for context in contexts:
            if context.as_scu and context.abstract_syntax is not None:
                self.accepted.setdefault(str(context.abstract_syntax), set()).add(str(context.transfer_syntax[0]))

    def on_established(self, event: Any) -> None:
        """EVT_ESTABLISHED handler of a C-MOVE's association to its destination."""
        self.learn(event.assoc.accepted_contexts)

    def prepare(self, raw: bytes) -> Dataset:
        """The stored file as the dataset to send: as stored when the peer accepts its transfer
        syntax (pydicom writes the elements it did not touch back byte for byte) or when it is
        uncompressed little endian (pynetdicom re-encodes it in the other one), else transcoded to
        Explicit VR Little Endian as WADO-RS does (`transcode.to_explicit_le`: decompressed, or
        swapped from big endian) when the peer accepts an uncompressed syntax. A dataset the peer
        accepts in no form is returned as stored: pynetdicom then counts its sub-operation as
        failed. A stored-only instance (a syntax this node cannot decode) goes as stored or not at
        all."""
        dataset = dcmread(io.BytesIO(raw))
        stored = UID(stored_syntax(dataset))
        accepted = self.accepted.get(str(dataset.SOPClassUID), set())
        if stored in accepted or stored in UNCOMPRESSED or not accepted & set(UNCOMPRESSED) \
                or not syntax_decodable(stored):
            return dataset
        try:
            return dcmread(io.BytesIO(to_explicit_le(raw)))
        except Exception as exc:  # pixel data that cannot be decoded after all
            log.warning("instance %s cannot be transcoded for the peer: %s", dataset.SOPInstanceUID, exc)
            return dataset


def refusal_contexts() -> list[PresentationContext]:
    """What a refused C-MOVE proposes to its destination. pynetdicom sends a C-MOVE's failure status
    only once associated with the destination, and answers 0xA801 (unknown destination) when the
    destination rejects the association: so besides Verification, which a storage SCP need not
    support, pynetdicom's 120 storage SOP classes, uncompressed (121 of the 128 contexts an
    association may propose), of which a storage SCP accepts one."""
    storage = [str(context.abstract_syntax) for context in StoragePresentationContexts]
    return [build_context(Verification), *move_contexts(storage, [])][:MAX_CONTEXTS]


def move_contexts(sop_classes: list[str], stored_syntaxes: list[str]) -> list[PresentationContext]:
    """The presentation contexts a C-MOVE proposes to its destination: for each SOP class, one
    with the uncompressed syntaxes, then (up to the limit of 128) one per compressed syntax the
    node stores, so that a destination accepting one receives those instances bit-exact. They go
    syntax by syntax in the node's order (decodable first, then the stored-only ones), so the
    limit drops the rarest syntaxes of every SOP class, not every syntax of the last classes."""
    contexts = [build_context(sop_class, list(UNCOMPRESSED)) for sop_class in sop_classes]
    compressed = [syntax for syntax in stored_syntaxes if UID(syntax).is_compressed]
    contexts += [build_context(sop_class, [syntax]) for syntax in compressed for sop_class in sop_classes]
    return contexts[:MAX_CONTEXTS]


class Retrieval:
    """The EVT_C_GET and EVT_C_MOVE handlers of a node's listener."""

    def __init__(self, app: Flask, node: Node, audit: Audit, destinations: dict[str, Destination],
                 stored_syntaxes: list[str], tls_context: ssl.SSLContext | None, connections: AssociationConnections):
        self.app, self.node, self.audit, self.destinations = app, node, audit, destinations
        self.connections = connections  # the association's database connection (the listener's)
        self.stored_syntaxes = stored_syntaxes  # the transfer syntaxes the node accepts, so may hold
        self.tls_context = tls_context  # for the `tls://` destinations (None when there are none)
        #: the request each association is refusing (its Message ID): one at a time, as they are answered
        self._refusing: weakref.WeakKeyDictionary[Association, int] = weakref.WeakKeyDictionary()
        #: the retrieval each association is running (its Message ID) and what its final response says
        #: of the failure pynetdicom answers by itself, by status (`final_comments`)
        self._comments: weakref.WeakKeyDictionary[Association, tuple[int, dict[int, str]]] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def handlers(self) -> list[EventHandlerType]:
        """The listener's handler that makes a refusal's counts those of no sub-operation (`refusals`);
        bound before the metrics read them; and the one that says why of the failures pynetdicom answers."""
        return [(evt.EVT_DIMSE_SENT, self.refusals), (evt.EVT_DIMSE_SENT, self.final_comments)]

    def _comment(self, event: Any, comments: dict[int, str]) -> None:
        """What the final response of the retrieval `event` is running says, by its status (`final_comments`);
        a status already given a reason in this retrieval keeps the first."""
        message_id = int(event.request.MessageID)
        with self._lock:
            running = self._comments.get(event.assoc)
            kept = running[1] if running is not None and running[0] == message_id else {}
            self._comments[event.assoc] = (message_id, {**comments, **kept})

    def final_comments(self, event: Any) -> None:
        """EVT_DIMSE_SENT, before the message is encoded: the failures pynetdicom answers by itself carry
        an Error Comment (0000,0902) as every other refusal does (`identifiers.failure_status`): a C-MOVE's
        0xA801 (the handler named no destination, or the destination did not accept the association) and
        a C-GET's 0xA702 when the caller took none of the instances' SOP classes with the SCP role. Before,
        the peer got the bare status ("MoveDestinationUnknown" in dcmtk) and could not tell a title the
        node does not know from a destination that is down, nor a C-GET without SCP/SCU role selection
        from a node out of resources. Its group length is counted again."""
        if type(event.message).__name__ not in ("C_GET_RSP", "C_MOVE_RSP"):
            return
        command = event.message.command_set
        with self._lock:
            running = self._comments.get(event.assoc)
            if running is None or running[0] != int(command.MessageIDBeingRespondedTo) \
                    or int(command.Status) == PENDING:
                return
            del self._comments[event.assoc]
        status = int(command.Status)
        reason = running[1].get(status)
        if reason is None:
            return
        command.ErrorComment = failure_status(status, reason).ErrorComment
        del command.CommandGroupLength
        # as pynetdicom counts it (`DIMSEMessage._set_command_group_length`): a command set of plain
        # values always encodes, in Implicit VR Little Endian (PS3.7 6.3.1)
        command.CommandGroupLength = len(cast(bytes, encode(command, True, True)))

    def refusals(self, event: Any) -> None:
        """EVT_DIMSE_SENT, before the message is encoded: the final C-GET-RSP or C-MOVE-RSP of a request
        refused before its sub-operations (`_refusal`) counts 0 completed, 0 warning, 0 failed, and carries
        no identifier. pynetdicom sends a handler's failure status only after a count of sub-operations,
        counts them all failed (it answered "Number of Failed Sub-operations = 1" to a request that invoked
        none) and adds an empty Failed SOP Instance UID List; the counts are of the C-STORE sub-operations
        invoked (PS3.7 9.3.3.2, 9.3.4.2) and the list names the failed ones (PS3.4 C.4.2.1.4, C.4.3.1.4):
        an SCU reads them to decide what to retrieve again, and dcmtk's getscu, which reads no data set
        after a refused C-GET, found it where it awaited the release answer and aborted the association.
        The command's values are overwritten in place, same lengths, so its group length stays right."""
        name = type(event.message).__name__
        if name not in ("C_GET_RSP", "C_MOVE_RSP"):
            return
        command = event.message.command_set
        with self._lock:
            refusing = self._refusing.get(event.assoc)
            if refusing != int(command.MessageIDBeingRespondedTo) or int(command.Status) == PENDING:
                return
            del self._refusing[event.assoc]
        for keyword in SUB_OPERATION_COUNTS:
            if keyword in command:
                setattr(command, keyword, 0)
        event.message.data_set = io.BytesIO()
        command.CommandDataSetType = NO_DATA_SET

    def _connection(self, destination: Destination) -> dict[str, Any]:
        """The associate() arguments that carry a destination's TLS (its host name is verified)."""
        if not destination.tls:
            return {}
        assert self.tls_context is not None, "the listener makes a TLS context when a destination needs one"
        return {"tls_args": (self.tls_context, destination.host)}

    def _match(self, event: Any) -> tuple[str, list[Any]]:
        """The level and the catalogue rows of the instances the request retrieves."""
        level, identifier = read_identifier(event)
        with self.connections.held():
            return level, retrieve(self.node.models.catalogue, level, identifier)

    def on_get(self, event: Any) -> Iterator[Any]:
        """C-GET: the matches go back over the caller's association, in the storage contexts it
        proposed with the SCP role for itself."""
        try:
            level, instances = self._match(event)
        except Exception as exc:
            yield 1  # pynetdicom sends a failure status only once it has a count of sub-operations
            yield self._refusal(event, "C-GET", exc), None
            return
        receiver, outcomes = Receiver(), Outcomes()
        receiver.learn(event.assoc.accepted_contexts)
        untaken = sorted({row.sop_class_uid for row in instances} - set(receiver.accepted))
        if untaken:  # pynetdicom fails their sub-operations, and answers 0xA702 when all failed
            self._comment(event, {UNABLE_TO_PERFORM_SUB_OPERATIONS: f"propose {untaken[0]} with SCP role selection"})
        event.assoc.bind(evt.EVT_DIMSE_RECV, outcomes.on_message)
        try:
            yield len(instances)
            yield from self._sub_operations(event, instances, receiver, outcomes)
        finally:
            event.assoc.unbind(evt.EVT_DIMSE_RECV, outcomes.on_message)
            self._audit_outcomes(event, "dicom.get", f"level={level}", instances, outcomes)

    def on_move(self, event: Any) -> Iterator[Any]:
        """C-MOVE: the matches go to the destination AE over a new association (unknown destination: 0xA801)."""
        destination = str(event.move_destination).strip()
        target = self.destinations.get(destination)
        self._comment(event, {MOVE_DESTINATION_UNKNOWN: f"'{destination}' did not accept the association; retry later"
                              if target is not None else f"'{destination}' not in dicom.destinations: ask to add it"})
        if target is None:
            self._audit_now(event, "dicom.move_refused", f"destination={destination} is not in dicom.destinations")
            yield None, None
            return
        try:
            level, instances = self._match(event)
        except Exception as exc:
            # audited before the destination is reached: pynetdicom sends a failure status only after
            # associating with it, and when it cannot, answers 0xA801 and never resumes this handler
            status = self._refusal(event, "C-MOVE", exc)
            yield target.host, target.port, {"contexts": refusal_contexts(), **self._connection(target)}
            yield 1
            yield status, None
            return
        receiver, outcomes = Receiver(), Outcomes()
        sop_classes = list(dict.fromkeys(row.sop_class_uid for row in instances))
        association = {"contexts": move_contexts(sop_classes, self.stored_syntaxes),
                       "evt_handlers": [(evt.EVT_CONN_OPEN, no_delay),
                                        (evt.EVT_ESTABLISHED, receiver.on_established),
                                        (evt.EVT_DIMSE_RECV, outcomes.on_message)],
                       **self._connection(target)}
        try:
            yield target.host, target.port, association
            yield len(instances)
            yield from self._sub_operations(event, instances, receiver, outcomes)
        finally:
            self._audit_outcomes(event, "dicom.move", f"level={level} destination={destination}", instances,
                                 outcomes)

    def _sub_operations(self, event: Any, instances: list[Any], receiver: Receiver,
                        outcomes: Outcomes) -> Iterator[tuple[int, Any]]:
        store = self.node.store
        unsendable: dict[str, tuple[str, str] | None] = {}  # why each series met cannot be sent (None: it can)
        for row in instances:
            if event.is_cancelled:
                yield CANCEL, None
                return
            outcomes.sending = row.sop_instance_uid
            if row.series_id not in unsendable:
                unsendable[row.series_id] = why = self._unsendable(row.series_id)
                if why is not None:
                    log.error("series %s is not sent: %s", row.series_id, why[0])
                    self._comment(event, {SOME_SUB_OPERATIONS_FAILED: why[1], UNABLE_TO_PERFORM_SUB_OPERATIONS: why[1]})
            dataset = None
            if unsendable[row.series_id] is None:
                try:
                    dataset = receiver.prepare(store.read_file(row.series_id, row.blob, row.sha256))
                except Exception as exc:
                    log.error("instance %s of series %s cannot be read from the store: %s",
                              row.sop_instance_uid, row.series_id, exc)
            if dataset is None:  # no file meta: pynetdicom cannot send it and counts the sub-operation as failed
                dataset = Dataset()
                dataset.SOPClassUID, dataset.SOPInstanceUID = row.sop_class_uid, row.sop_instance_uid
            yield PENDING, dataset  # its pending response restarts the idle timer (`limits.wait_for_peer_from_now`)

    def _unsendable(self, series_id: str) -> tuple[str, str] | None:
        """Why a series matched cannot be sent, for the log and for the final response's Error Comment
        (LO's 64 characters: the log and the audit entry name the whole series id), or None.

        Its manifest is read as every other door reads it before serving a series (`Node.manifest`;
        not analysed: a series still growing is sent as stored): one that fails verification is
        quarantined and audited on the way. Each instance's own file is sealed and checked as it is
        read, but the series as a whole was never checked here: a C-GET or C-MOVE sent a series
        every other door refused as damaged, and it stayed listed."""
        short = series_id[:16]
        try:
            with self.connections.held(), self.app.app_context():
                self.node.manifest(series_id, analysed=False)
        except ApiError as exc:
            comments = {"store_corrupt": f"series {short} failed verification: ask IT",
                        "not_found": f"series {short} was deleted meanwhile"}
            return exc.message, comments.get(exc.code, f"series {short}: {exc.code}")
        except RecordUnreadable as exc:  # this series only (its file mode, a disk error): retrying will not do
            return str(exc), f"series {short} cannot be read: ask IT"
        except StoreUnavailable as exc:
            return f"the store cannot be reached: {exc}", "the store cannot be reached: retry later"
        return None

    def _refusal(self, event: Any, service: str, exc: Exception) -> Dataset:
        """The failure status of a request that cannot be matched (audited as refused), whose final
        response counts no sub-operation (`refusals`)."""
        status, reason = refusal(service, exc)
        with self._lock:
            self._refusing[event.assoc] = int(event.request.MessageID)
        self._audit_now(event, "dicom.get_refused" if service == "C-GET" else "dicom.move_refused", reason)
        return status

    def _audit_now(self, event: Any, action: str, detail: str, record_id: str | None = None) -> None:
        with self.connections.held(), self.app.app_context():
            self.audit(event, action, record_id, detail)

    def _audit_outcomes(self, event: Any, action: str, detail: str, instances: list[Any],
                        outcomes: Outcomes) -> None:
        """One entry per series retrieved (its record id), with its instances' outcomes."""
        by_series: dict[str, Counter] = {}
        for row in instances:
            by_series.setdefault(row.series_id, Counter())[outcomes.of(row.sop_instance_uid)] += 1
        if not by_series:
            self._audit_now(event, action, f"{detail} instances=0")
        for record_id, counts in by_series.items():
            self._audit_now(event, action, f"{detail} instances={sum(counts.values())} "
                            f"completed={counts['completed']} warning={counts['warning']} failed={counts['failed']}",
                            record_id)
