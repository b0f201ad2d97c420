"""Bounds on what one peer can make the DICOM listener hold in memory while it receives.

pynetdicom has none of its own: it reads each PDU whole, whatever length the PDU's header claims
(up to 4 GiB), and keeps every fragment of the DIMSE message in progress in RAM until the last
one has arrived. The node's limit on a C-STORE (`limits.max_upload_mb`) was checked only then, so
a peer streaming an endless data set grew the node by what it sent, until the process ran out of
memory for every association and the HTTP API. Here, as the bytes arrive:

- no PDU may be longer than MAXIMUM_PDU_SIZE, the Maximum Length Receive the node advertises:
  a longer one is refused from its header, before its body is read (A-ABORT, connection closed);
- once the DIMSE message in progress (command set and data set) holds more than the node's upload
  limit, the association is aborted: a data set that size would be refused when complete anyway,
  and answering it 0xA700 would mean receiving, and holding, the rest of it first;
- a message other than a C-STORE-RQ (a C-FIND, C-GET or C-MOVE identifier) is aborted alike once it
  holds more than OTHER_MESSAGE_MAX: only a C-STORE's data set counts in the upload memory below;
- a request that arrives while MAX_WAITING_REQUESTS others of its association (MAX_WAITING_STORES
  C-STOREs) still wait for their handler aborts the association: pynetdicom queues every whole
  message, unbounded.

A message in progress thus holds at most the upload limit and a PDU; and each C-STORE's data set
counts in the process's memory for bodies being stored (`ingest.upload_memory`) from its arrival
until it has been handled: one that finds no room aborts its association as well. Either abort is audited
(`dicom.abort`) with its reason (`abort_reason`). Conformance: docs/conformance.md.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from io import BytesIO
from typing import Any, NoReturn, cast

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_CANCEL_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationSocket

from daemons.render.dimse.callers import NO_REASON_GIVEN, SERVICE_PROVIDER_ACSE, reject
from daemons.render.dimse.identifiers import MODEL_REQUESTS
from daemons.render.ingest.upload_checks import MIB
from daemons.render.ingest.upload_memory import Reservation, UploadMemory, UploadMemoryFull

log = logging.getLogger(__name__)
# 1 MiB: large enough that a peer sends a data set in few PDUs (pynetdicom's default, 16 KiB, means
# 64 PDUs a MiB), small enough that a PDU costs the node little while it is read and decoded
MAXIMUM_PDU_SIZE = MIB
#: The most a DIMSE message other than a C-STORE-RQ (its command set and data set: a C-FIND, C-GET
#: or C-MOVE identifier, a command set still arriving) may hold. An identifier is a few hundred
#: bytes; 4 MiB takes the longest UID list the matching accepts (`matching.UID_LIST_MAX`, 50,000
#: UIDs of up to 64 characters) and its other keys. Only a C-STORE's data set may grow to the upload
#: limit, counted in the upload memory; an identifier of up to that limit (2 GiB) was held whole,
#: outside it, then copied to be read.
OTHER_MESSAGE_MAX = 4 * MIB
#: How many whole DIMSE requests of one association may wait for their handler, beside the one being
#: handled. The node performs one operation at a time (it answers an Asynchronous Operations Window
#: proposal with 1, PS3.7 D.3.3.3), so a peer waits for each answer before it sends the next request.
#: pynetdicom queued all a peer sent without waiting: 39 C-FIND identifiers of 2.4 MB sent at once
#: grew the node by 500 MB, and a stream of C-ECHO requests by 2 MB a second per association, for as
#: long as the peer went on. One request ahead is tolerated (two at times: the count is of the
#: requests in pynetdicom's queue, from which the association's thread takes the next as it starts
#: on it); C-STOREs, whose data sets each hold their room in the upload memory, up to
#: MAX_WAITING_STORES (some senders do not wait for answers). C-CANCELs are never counted.
MAX_WAITING_REQUESTS = 1
MAX_WAITING_STORES = 16
#: How many C-CANCEL requests pynetdicom keeps apart from its queue of requests, by the Message ID they
#: cancel (`DIMSEServiceProvider.receive_primitive`: "up to 10"); they are forgotten as each request
#: starts and ends. A peer cancels the one request in progress, so it never has more; a further one,
#: naming yet another Message ID, pynetdicom would queue as a request, and the association's thread
#: fails on it (`CommandCheck._message_received`).
CANCELS_KEPT_APART = 10
#: The smallest Maximum Length Received a requestor may announce (0 means no limit). pynetdicom
#: fragments what it sends to fit the peer's PDUs: at 1 to 6 bytes (a PDV's header alone is 6) it
#: failed with a traceback and aborted, unexplained; at 7 a C-GET of one 527 KB instance took 46 s
#: and 9.6 s of the node's CPU (a PDU, and its thread's work, every byte). At this floor the same
#: C-GET costs 0.14 s of CPU against 0.09 s at 16 KiB; PS3.8 sets none, and a peer with small PDUs
#: (a test tool, an embedded device) is still served. A smaller one is rejected
#: (`refuse_small_pdus`): sending larger PDUs than the peer can receive would break the protocol.
MINIMUM_PEER_PDU_SIZE = 128
INVALID_PDU_PARAMETER_VALUE = 0x06  # A-ABORT reason (PS3.8 Table 9-26)
COMMAND, LAST = 0x01, 0x02  # a PDV's message control header (PS3.8 E.2)
RESPONSE = 0x8000  # the Command Field bit of a response
READ_CHUNK = 1 << 16  # bytes asked of the socket at a time (pynetdicom asks 4 KiB)
P_DATA_TF_TYPE = 0x04  # PDU type (PS3.8 Table 9-22)
PDU_HEADER = 6  # bytes: type, reserved, length (PS3.8 9.3.1)
# why the node aborted an association, for its audit entry (pynetdicom's EVT_ABORTED says only that it was)
_abort_reasons: weakref.WeakKeyDictionary[Association, str] = weakref.WeakKeyDictionary()
# why an association is cut once the requests queued ahead are answered (`too_many_waiting`): its own
# thread aborts it on reaching the request that was never to be served
_cut_reasons: weakref.WeakKeyDictionary[Association, str] = weakref.WeakKeyDictionary()


def note_abort(assoc: Association, reason: str) -> None:
    """Why the node is aborting `assoc`, for its `dicom.abort` audit entry (`abort_reason`)."""
    _abort_reasons[assoc] = reason


def aborting(assoc: Association) -> bool:
    """Whether the node is aborting `assoc`: a message whose last PDU made it abort (over a limit)
    is still handed to its handler by pynetdicom, which must not act on it."""
    return assoc in _abort_reasons


def wait_for_peer_from_now(event: Any) -> None:
    """Restart the association's idle timer when the node sends a message (EVT_DIMSE_SENT): the
    network timeout bounds the peer's silence while the node waits for it. pynetdicom counts it
    from the last PDU received and checks it when a handler returns, so a handler that ran longer
    than the timeout (a large C-STORE's ingest, a C-FIND over a big catalogue, a C-MOVE's
    sub-operations) had its association aborted just after answering, audited as the peer's silence."""
    event.assoc.dul._idle_timer.restart()


def abort_reason(assoc: Association) -> str:
    """Why the node aborted `assoc` for one of these limits, or for the network timeout (pynetdicom's
    idle timer: no whole PDU for that long); "" for an abort by the peer or the network."""
    reason = _abort_reasons.get(assoc, "") or _cut_reasons.get(assoc, "")
    if not reason and assoc.dul.idle_timer_expired():
        reason = (f"no whole PDU received within the network timeout of {assoc.network_timeout:g} s "
                  "since the node last sent or received one")
    return reason


class BoundedSocket(AssociationSocket):
    """An association's socket that refuses a PDU longer than MAXIMUM_PDU_SIZE from its length field
    (pynetdicom's reader asks for a PDU's body in one `recv` of that length), instead of reading it:
    pynetdicom does not hold peers to the length the node advertised. And one read (a PDU's header or
    body) must end within the association's network timeout: the socket's own timeout bounds each wait
    for bytes, so a peer sending one byte every few seconds held the association, its thread and
    its place among `dicom.max_associations` for as long as a PDU of up to a MiB took it. Before the
    A-ASSOCIATE-RQ has arrived, a read ends by the connection's request timeout instead, when sooner
    (`dicom.request_timeout_s`, `admission`)."""

    def recv(self, nr_bytes: int) -> bytearray:
        """A read of pynetdicom's PDU reader, which asks for a PDU's header, then for its body:
        a P-DATA-TF body whose PDV items do not fill it exactly is refused (`pdv_problem`)."""
        pdu_type = getattr(self, "_body_of", None)  # the type of the PDU whose header was read last
        received = self._bounded_recv(nr_bytes)
        self._body_of = received[0] if pdu_type is None and len(received) == PDU_HEADER else None
        problem = pdv_problem(received) if pdu_type == P_DATA_TF_TYPE and len(received) == nr_bytes else None
        if problem is not None:
            self._abort(f"a P-DATA-TF of {nr_bytes} bytes whose {problem}")
        return received

    def _bounded_recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > MAXIMUM_PDU_SIZE:
            self._abort(f"a PDU of {nr_bytes} bytes, over the maximum of {MAXIMUM_PDU_SIZE}")
        limit_s = self.assoc.network_timeout
        sock = self.socket
        if limit_s is None or sock is None:
            return super().recv(nr_bytes)
        request_left = self._request_left()
        requesting = request_left is not None and request_left < limit_s
        deadline = time.monotonic() + (limit_s if request_left is None else min(request_left, limit_s))
        received = bytearray()
        while len(received) < nr_bytes:
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.0) or 1e-6)
                chunk = sock.recv(min(nr_bytes - len(received), READ_CHUNK))
            except TimeoutError:
                if requesting:
                    self._abort(f"no A-ASSOCIATE-RQ within the request timeout of {self.assoc.acse_timeout:g} s "
                                f"of the connection (only {len(received)} of the {nr_bytes} bytes of a read came)")
                self._abort(f"only {len(received)} of the {nr_bytes} bytes of a read came within the network "
                            f"timeout of {limit_s:g} s")
            if not chunk:  # the peer closed the connection: pynetdicom reads that from a short answer
                break
            received.extend(chunk)
        sock.settimeout(limit_s)
        return received

    def _request_left(self) -> float | None:
        """Seconds left for an accepted connection's A-ASSOCIATE-RQ (None once it has arrived): its
        ARTIM timer, which `admission.Admission` sets to `dicom.request_timeout_s` when it opens."""
        assoc = self.assoc
        if not assoc.is_acceptor or assoc.requestor.primitive is not None:
            return None
        return max(assoc.dul.artim_timer.remaining, 0.0)

    def _abort(self, reason: str) -> NoReturn:
        """A-ABORT (service provider, invalid PDU parameter value), then a failed read: pynetdicom takes
        it for a closed connection, closes it and aborts the association (audited with `reason`, also
        before the association's request has arrived). Once only: pynetdicom may read what the peer
        still sends while it closes the connection, and a read that fails then is no second abort."""
        if aborting(self.assoc):
            raise OSError(f"association aborted: {reason}")
        log.warning("DICOM peer %s: association aborted, %s", self.assoc.requestor.address, reason)
        note_abort(self.assoc, reason)
        if self.assoc.is_acceptor and self.assoc.requestor.primitive is None:
            # before the A-ASSOCIATE-RQ pynetdicom signals no abort (and may end the connection with no
            # EVT_CONN_CLOSE either): signalled here, for its audit and metrics, as for any other
            evt.trigger(self.assoc, evt.EVT_ABORTED, {})
        abort = A_ABORT_RQ()
        abort.source, abort.reason_diagnostic = 0x02, INVALID_PDU_PARAMETER_VALUE  # service provider
        with contextlib.suppress(OSError):
            self.send(abort.encode())
        raise OSError(f"association aborted: {reason}")


def pdv_problem(body: bytes) -> str | None:
    """What is wrong with the PDV items of a P-DATA-TF body, or None when they fill it exactly, each
    with its context ID and message control header (an item length of 2 or more: PS3.8 9.3.5.1, E.2).
    pynetdicom reads them with an `assert`: a PDV item longer than the PDU made its reader log an
    ERROR with a traceback and abort with no reason audited; a PDU length shorter than its items
    made it read the rest as a next PDU and abort twice."""
    offset = 0
    while offset < len(body):
        if len(body) - offset < 4:
            return f"last {len(body) - offset} bytes are no PDV item"
        length = int.from_bytes(body[offset:offset + 4], "big")
        if length < 2 or offset + 4 + length > len(body):
            return (f"PDV item at byte {offset} declares {length} bytes, where {len(body) - offset - 4} "
                    "follow and an item holds at least 2")
        offset += 4 + length
    return None if body else "body holds no PDV item"


def refuse_small_pdus(event: Any) -> None:
    """EVT_REQUESTED: reject a requestor whose Maximum Length Received is under MINIMUM_PEER_PDU_SIZE
    (A-ASSOCIATE-RJ, rejected-permanent, service provider (ACSE), no reason given; audited with the
    reason), unless another check rejected it already. Raising the peer's to the floor instead would
    send PDUs it said it cannot receive."""
    assoc = event.assoc
    announced = assoc.requestor.primitive.maximum_length_received
    if assoc.is_rejected or not announced or announced >= MINIMUM_PEER_PDU_SIZE:
        return
    reject(assoc, f"a Maximum Length Received of {announced} bytes, under the minimum of {MINIMUM_PEER_PDU_SIZE} "
                  "(0 for no limit)", SERVICE_PROVIDER_ACSE, NO_REASON_GIVEN)


def bound_pdus(event: Any) -> None:
    """On EVT_CONN_OPEN, before the association reads anything: its socket becomes a BoundedSocket
    (pynetdicom's server builds the socket itself and offers no way to choose its class)."""
    event.assoc.dul.socket.__class__ = BoundedSocket


def free_unassociated(event: Any) -> None:
    """On EVT_CONN_CLOSE: a connection closed before its A-ASSOCIATE-RQ arrived frees its place at once.
    pynetdicom's acceptor waits `acse_timeout` for that request even after the DUL saw the transport
    close (PS3.8 AA-5 returns to idle), and `max_associations` counts the waiting thread: ten bare
    connects and closes kept every caller out for that long. Nothing in its queue: the wait ends
    with no primitive, as on a timeout, and the thread ends the association and returns."""
    assoc = event.assoc
    if (assoc.is_acceptor and assoc.requestor.primitive is None and not assoc.is_established
            and assoc.dul.to_user_queue.empty()):
        assoc.dul.to_user_queue.put(None)


class CommandCheck:
    """A DIMSE message the listener cannot serve aborts its association at once, audited with why.

    pynetdicom's reader decodes each command set as its last fragment arrives: bytes that are no data
    set, or a Command Field it does not know, raised in its state machine, which died: the connection
    closed with no A-ABORT and nothing audited. And a request that decodes but lacks an element its
    service needs (a C-ECHO-RQ without its Message ID, a C-STORE-RQ without its SOP Instance UID) it
    dropped without a word: the peer waited for an answer, the association held its place until the
    network timeout and was audited as the peer's silence. pynetdicom queued a C-CANCEL-RQ beyond the
    CANCELS_KEPT_APART it holds as a request, and the association's thread died on it (an AttributeError,
    no A-ABORT, nothing audited) while its reader went on queueing all the peer sent, unbounded
    (`too_many_waiting` counts no C-CANCEL): it aborts. Checked here, on pynetdicom's events:
    the command set before its PDU is added to the message (EVT_PDU_RECV: the PDU is then emptied,
    so nothing of it is decoded), a request's elements once its message is whole (EVT_DIMSE_RECV)."""

    @staticmethod
    def handlers() -> list[EventHandlerType]:
        return [(evt.EVT_PDU_RECV, CommandCheck._pdu_received), (evt.EVT_DIMSE_RECV, CommandCheck._message_received)]

    @staticmethod
    def _pdu_received(event: Any) -> None:
        assoc, pdu = event.assoc, event.pdu
        if assoc.is_aborted or aborting(assoc) or not isinstance(pdu, P_DATA_TF):
            return
        message = assoc.dimse.message
        command = bytearray(message.encoded_command_set.getvalue() if message is not None else b"")
        for item in pdu.presentation_data_value_items:
            value = item.presentation_data_value or b""
            if not value or not value[0] & COMMAND:
                continue
            command += value[1:]
            if value[0] & LAST:
                problem = CommandCheck._problem(bytes(command))
                if problem:
                    pdu.presentation_data_value_items = []  # pynetdicom would decode it, and fail
                    CommandCheck._abort(assoc, problem)
                return

    @staticmethod
    def _problem(command: bytes) -> str | None:
        """What is wrong with a whole command set (None: pynetdicom can make a message of it)."""
        try:
            field = int(decode(BytesIO(command), True, True).CommandField)
        except Exception as exc:
            return f"a command set that cannot be read ({type(exc).__name__}: {exc})"[:300]
        if field not in _MESSAGE_TYPES:
            return f"a command set whose Command Field 0x{field:04X} names no DIMSE message"
        return None

    @staticmethod
    def _message_received(event: Any) -> None:
        assoc, message = event.assoc, event.message
        if assoc.is_aborted or aborting(assoc):
            return
        if isinstance(message, C_CANCEL_RQ):
            held = assoc.dimse.cancel_req
            if len(held) >= CANCELS_KEPT_APART:
                CommandCheck._abort(assoc, f"a C-CANCEL-RQ while {len(held)} others naming other Message IDs "
                                    "were held", "a peer cancels only its request in progress")
                held.clear()  # so pynetdicom keeps this one apart too, out of the queue its thread fails on
            return
        if int(message.command_set.CommandField) & RESPONSE:
            return  # an answer to the node's own request (a C-GET's C-STORE), or one pynetdicom ignores
        try:
            primitive = message.message_to_primitive()
        except Exception as exc:
            CommandCheck._abort(assoc, f"a {type(message).__name__} that cannot be read ({exc})"[:300])
            return
        missing = [keyword for keyword in primitive.REQUEST_KEYWORDS if getattr(primitive, keyword) is None]
        if missing:
            CommandCheck._abort(assoc, f"a {type(primitive).__name__} request without its {', '.join(missing)}")
            return
        unserved = CommandCheck._unserved(assoc, message.context_id, primitive)
        if unserved:
            # pynetdicom queues the message once this returns, and its reactor may take it before the abort
            # stops it: on no presentation context, its service is never run (pynetdicom logs it and aborts)
            message.context_id = None
            CommandCheck._abort(assoc, unserved, "no service of the node serves it")

    @staticmethod
    def _unserved(assoc: Association, context_id: int, primitive: Any) -> str | None:
        """What is wrong with a request that pynetdicom hands to its Query/Retrieve service (it names a
        query/retrieve SOP class) on a presentation context that does not serve its kind: a C-FIND
        naming a GET model on a GET context, a C-MOVE on a GET context, a C-ECHO or N-CREATE naming a
        Q/R model. That service raised (an ERROR with its traceback, the association aborted with no
        reason audited). Like the listener's `_abort_other_service` for Verification and Storage. A
        request of its context's own kind naming another model is refused by its handler (0x0122)."""
        named = getattr(primitive, "AffectedSOPClassUID", None) or getattr(primitive, "RequestedSOPClassUID", None)
        context = assoc._accepted_cx.get(context_id)
        if named is None or context is None:  # pynetdicom drops, or aborts for, a request with neither
            return None
        served = uid_to_service_class(named)
        if not issubclass(served, QueryRetrieveServiceClass):
            return None
        abstract = str(context.abstract_syntax)
        if served is QueryRetrieveServiceClass and MODEL_REQUESTS.get(abstract) is type(primitive):
            return None
        kind = type(primitive).__name__
        return f"a {kind} naming {UID(named).name} on a presentation context of {UID(abstract).name}"

    @staticmethod
    def _abort(assoc: Association, problem: str, why: str = "not a valid DIMSE request") -> None:
        reason = f"{problem}: {why}"
        log.warning("DICOM peer %s: association aborted, %s", assoc.requestor.address, reason)
        note_abort(assoc, reason)
        abort_from_reader(assoc)


def abort_from_reader(assoc: Association) -> None:
    """Abort `assoc` from a handler that runs on the thread reading its PDUs (EVT_PDU_RECV,
    EVT_DIMSE_RECV): the A-ABORT is queued, and that thread sends it once the handler returns.

    `block=False` is said, not left to pynetdicom: it makes `abort` non-blocking only while a
    notification handler runs, by swapping the method on the association, and the association's own
    thread swaps it back at the end of each of its own notifications (a response sent). A reader
    that called the blocking one then waited for itself to stop: its thread spun in `kill` for ever,
    the peer's socket stayed open and the association kept its place among the node's."""
    assoc.abort(block=False)


def message_bytes(assoc: Association, pdu: P_DATA_TF) -> int:
    """The bytes of the DIMSE message in progress on `assoc` once `pdu` is added to it: what pynetdicom
    holds of it (it starts a new message after each complete one) and the PDU's length."""
    message = assoc.dimse.message
    if message is None:
        return pdu.pdu_length
    return message.encoded_command_set.tell() + cast(BytesIO, message.data_set).tell() + pdu.pdu_length


def waiting_requests(assoc: Association) -> tuple[int, int]:
    """The whole DIMSE requests of `assoc` that wait for their handler, as (C-STOREs, others).
    pynetdicom's queue also holds the peer's answers to the node's own requests (a C-GET's
    C-STOREs), which do not count."""
    queue = assoc.dimse.msg_queue
    with queue.mutex:  # the association's reactor takes from it meanwhile
        waiting = [primitive for _, primitive in queue.queue
                   if primitive is not None and getattr(primitive, "Status", None) is None]
    stores = sum(1 for primitive in waiting if isinstance(primitive, C_STORE))
    return stores, len(waiting) - stores


def too_many_waiting(assoc: Association, message: DIMSEMessage) -> str | None:
    """Why the request `message`, just arrived, aborts `assoc`: sent while too many others wait for
    their handler (MAX_WAITING_REQUESTS, MAX_WAITING_STORES); None when it may wait too."""
    if isinstance(message, C_CANCEL_RQ):  # sent without waiting by design; pynetdicom keeps them apart
        return None
    stores, others = waiting_requests(assoc)
    storing = isinstance(message, C_STORE_RQ)
    if (stores >= MAX_WAITING_STORES) if storing else (others >= MAX_WAITING_REQUESTS):
        waited = f"{stores} C-STORE requests" if storing else f"{others} other request(s)"
        return (f"a {type(message).__name__} sent while {waited} of the association still waited for their "
                "answers: the node performs one operation at a time")
    return None


def other_message_kind(message: DIMSEMessage | None) -> str:
    """What a DIMSE message other than a C-STORE-RQ is, for the reason its abort is audited with."""
    if message is None or type(message) is DIMSEMessage:  # pynetdicom types it once its command set is whole
        return "DIMSE command set"
    return f"{type(message).__name__} (command set and identifier)"


class MessageLimit:
    """Bounds the DIMSE messages each association makes the process hold, from pynetdicom's events on
    the thread that reads the association's PDUs (EVT_PDU_RECV before a PDU is added to the message
    in progress, EVT_DIMSE_RECV when a message is complete, before it is queued for its handler):

    - a message that outgrows `max_bytes` (the node's upload limit), or OTHER_MESSAGE_MAX when it is
      no C-STORE-RQ, aborts its association, and so does a request that finds MAX_WAITING_REQUESTS
      others (a C-STORE: MAX_WAITING_STORES C-STOREs) waiting for their handler;
    - a C-STORE's data set holds its own room in the process's `UploadMemory`, shared with the HTTP
      uploads, from its PDUs' arrival (a data set in one PDU with its command: when complete) until
      its handler is done with it (`take`, then the handler releases it). A peer that sends data sets
      without waiting for the answers (pynetdicom queues them, unbounded) holds room for each. One
      that finds no room aborts its association: there is no other way to stop its bytes, and the
      peer may send it again.
    - When the connection closes, what was still arriving or waiting for its handler is freed, and a
      handler that had not begun stores nothing (`take` is None: the peer can learn no outcome).

    A handler takes its own data set's reservation, found by the data set's buffer (pynetdicom hands
    the message's buffer to the handler as the request's DataSet). Taking them in arrival order went
    wrong after a request pynetdicom drops without a handler: the next handler took the dropped
    one's small room, and a closing connection then freed the room of the data set being stored.
    A dropped request's room (and its buffer) stays held until the connection closes.
    `store_refused(event, sop_instance_uid, reason)` audits a C-STORE refused while it arrived."""

    def __init__(self, max_bytes: int, memory: UploadMemory, store_refused: Callable[[Any, str, str], None]):
        self.max_bytes = max_bytes
        self.memory = memory
        self.store_refused = store_refused
        self._lock = threading.Lock()
        self._arriving: weakref.WeakKeyDictionary[Association, Reservation] = weakref.WeakKeyDictionary()
        # per association, the complete C-STOREs waiting for their handler, by their data set's buffer
        self._waiting: weakref.WeakKeyDictionary[Association, dict[BytesIO, Reservation]] = weakref.WeakKeyDictionary()
        self._closed: weakref.WeakSet[Association] = weakref.WeakSet()

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, bound_pdus), (evt.EVT_PDU_RECV, self._pdu_received),
                (evt.EVT_DIMSE_RECV, self._message_received), (evt.EVT_CONN_CLOSE, self._connection_closed)]

    def take(self, assoc: Association, data_set: BytesIO) -> Reservation | None:
        """For a C-STORE's handler: the reservation of the data set it handles (the request's
        DataSet), to release when done; None when the connection closed before the handler began
        (then store nothing)."""
        with self._lock:
            if assoc in self._closed:
                return None
            return self._waiting.get(assoc, {}).pop(data_set, None) or Reservation(self.memory)

    def _pdu_received(self, event: Any) -> None:
        assoc = event.assoc
        if not isinstance(event.pdu, P_DATA_TF):
            return
        # aborting (the abort may be on its way, `too_many_waiting`) or aborted: nothing of what the peer
        # still sends is held or decoded (a message's command set dropped and its data set then read
        # alone failed in pynetdicom's reader)
        if assoc.is_aborted or aborting(assoc) or assoc in _cut_reasons:
            event.pdu.presentation_data_value_items = []
            return
        size = message_bytes(assoc, event.pdu)
        message = assoc.dimse.message
        storing = isinstance(message, C_STORE_RQ)  # its command set is complete: the data set is arriving
        # one PDU (at most MAXIMUM_PDU_SIZE, under this bound) may end a C-STORE's command set and start its
        # data set before the message is known as a C-STORE: it is never taken for another message
        if not storing and size > OTHER_MESSAGE_MAX:
            self._abort(event, message, f"a {other_message_kind(message)} of over {OTHER_MESSAGE_MAX // MIB} MiB: "
                        "only a C-STORE data set may be larger", "")
            return
        if size > self.max_bytes:
            self._abort(event, message, f"a DIMSE message over the upload limit of {self.max_bytes // MIB} MiB",
                        f"over_limits: the data set is over this node's limit of {self.max_bytes // MIB} MiB"
                        if storing else "")
            return
        if storing:
            with self._lock:
                closed = assoc in self._closed
                reservation = None if closed else self._arriving.setdefault(assoc, Reservation(self.memory))
            if reservation is not None:
                self._grow(event, message, reservation, size)

    def _message_received(self, event: Any) -> None:
        assoc, message = event.assoc, event.message
        with self._lock:
            reservation = self._arriving.pop(assoc, None) or Reservation(self.memory)
        if (not assoc.is_aborted and not aborting(assoc) and assoc not in _cut_reasons
                and not int(message.command_set.CommandField) & RESPONSE
                and (why := too_many_waiting(assoc, message)) is not None):
            reservation.release()
            # Not aborted from this thread while a handler may be answering (its next answer would
            # fail on the aborted association, in pynetdicom's state machine): pynetdicom queues the
            # message once this returns, with no presentation context, and the association's own
            # thread aborts it on reaching it, after serving the requests ahead (not `aborting` yet:
            # their handlers store and answer them); what arrives meanwhile is dropped unread.
            message.context_id = None
            log.warning("DICOM peer %s: association to be aborted, %s", assoc.requestor.address, why)
            _cut_reasons[assoc] = why
            if isinstance(message, C_STORE_RQ):
                self.store_refused(event, str(message.command_set.AffectedSOPInstanceUID),
                                   "busy: sent before the answers to earlier requests")
            return
        if not isinstance(message, C_STORE_RQ) or assoc.is_aborted or aborting(assoc):
            reservation.release()  # never handled: aborting, or no data set to store
            return
        size = message.encoded_command_set.tell() + cast(BytesIO, message.data_set).tell()
        if not self._grow(event, message, reservation, size):
            return
        with self._lock:
            if assoc not in self._closed:
                self._waiting.setdefault(assoc, {})[cast(BytesIO, message.data_set)] = reservation
                return
        reservation.release()

    def _connection_closed(self, event: Any) -> None:
        with self._lock:
            self._closed.add(event.assoc)
            held = [self._arriving.pop(event.assoc, None), *self._waiting.pop(event.assoc, {}).values()]
        for reservation in held:
            if reservation is not None:
                reservation.release()

    def _grow(self, event: Any, message: C_STORE_RQ, reservation: Reservation, size: int) -> bool:
        """Whether the data set's room could grow to `size` bytes; if not, it is freed and the
        association aborted."""
        try:
            reservation.grow_to(size)
            return True
        except UploadMemoryFull as exc:
            reservation.release()
            self._abort(event, message, f"no memory left for bodies being stored ({exc})",
                        "busy: the node is storing as many data sets as its memory allows (limits.upload_memory_mb)")
            return False

    def _abort(self, event: Any, message: Any, reason: str, refused: str) -> None:
        """Abort the association for `reason`; a C-STORE `message` is audited refused with `refused`."""
        assoc = event.assoc
        log.warning("DICOM peer %s: association aborted, %s", assoc.requestor.address, reason)
        note_abort(assoc, reason)
        if refused:
            self.store_refused(event, str(message.command_set.AffectedSOPInstanceUID), refused)
        abort_from_reader(assoc)
