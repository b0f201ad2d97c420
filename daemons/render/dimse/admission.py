"""Who gets one of the DICOM listener's `dicom.max_associations` places, and for how long before
associating.

pynetdicom counts a place for every connection from the moment it is accepted (its thread), and
waited `dicom.acse_timeout_s` (30 s) for a connection's A-ASSOCIATE-RQ; an association then keeps
its place while it is silent for up to `dicom.network_timeout_s` (60 s). So anyone who could reach
the port, a stranger with no listed AE title included, took every place with `max_associations`
bare TCP connections (or listed callers' associations left idle), and every modality was rejected
("local limit exceeded") for 30 to 60 s at a time, as often as the connections were renewed.
As mature archives bound it (dcm4che's request timeout, dcmtk's ACSE timeout on accept):

- the A-ASSOCIATE-RQ must arrive within `dicom.request_timeout_s` of the connection (PS3.8's ARTIM
  timer in state Sta2), whether nothing comes or its bytes trickle in (`limits.BoundedSocket` ends
  a read under way by then); after it, `dicom.acse_timeout_s` bounds the
  association's own answers as before. A connection closed so is audited `dicom.abort` with the reason;
- one IP address may hold at most `dicom.max_associations_per_address` connections (associated or
  not) at once, audited `dicom.reject`. One more whose A-ASSOCIATE-RQ is arriving as it opens (a
  modality sends it at once) is answered A-ASSOCIATE-RJ, rejected-transient, "local limit exceeded"
  (PS3.8 9.3.4), as pynetdicom answers when every place is taken, so the modality knows to try again
  later; it may take REFUSED_WAIT_S to send its request. One that has sent nothing within
  REQUEST_PEEK_S is closed unread: waiting for its request would let a stranger hold places with
  connections it never uses. So one address, a stranger's or a misbehaving listed peer's, leaves the
  other places free.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType

from daemons.render.dimse.callers import note_rejection
from daemons.render.dimse.limits import aborting, note_abort
from shared.config import Config, ConfigError

log = logging.getLogger(__name__)


#: The accepted connections whose A-ASSOCIATE-RQ has not arrived yet (timed by `request_timeout_s`).
_waiting: weakref.WeakSet[Association] = weakref.WeakSet()
#: The connections refused as they opened (over `max_associations_per_address`), closed unread.
_refused: weakref.WeakSet[Association] = weakref.WeakSet()
#: The connections refused as they opened whose request is to be answered A-ASSOCIATE-RJ.
_answered: weakref.WeakSet[Association] = weakref.WeakSet()
#: How long a refused connection may take to send its whole A-ASSOCIATE-RQ (pynetdicom's wait, and
#: `limits.BoundedSocket`'s deadline for a trickled one); a shut one's ends at once.
REFUSED_WAIT_S = 0.5
#: How long a refused connection's first bytes are waited for before it is closed unread.
REQUEST_PEEK_S = 0.05
#: A-ASSOCIATE-RJ: rejected-transient, service provider (presentation), local limit exceeded (PS3.8 9.3.4).
REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 0x02, 0x03, 0x02
#: Addresses remembered before those holding no connection are forgotten.
ADDRESSES_KEPT = 256


class Admission:
    """The listener's handlers that bound what one address holds and how long a connection may
    wait to associate. A refusal is signalled as pynetdicom signals its own (EVT_REJECTED, EVT_ABORTED),
    so the listener audits it (`dicom.reject`, `dicom.abort`, with the reason), counts it in its
    metrics and closes the thread's database connection, as for any other."""

    def __init__(self, per_address: int, request_timeout_s: float, acse_timeout_s: float):
        self.per_address = per_address
        self.request_timeout_s = request_timeout_s
        self.acse_timeout_s = acse_timeout_s
        self._lock = threading.Lock()
        self._held: dict[str, weakref.WeakSet[Association]] = {}

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_REQUESTED, self._requested),
                (evt.EVT_CONN_CLOSE, self._closed)]

    def _opened(self, event: Any) -> None:
        """EVT_CONN_OPEN, in the connection's thread before anything is read: admit it, or close it."""
        assoc = event.assoc
        address = str(assoc.requestor.address)
        with self._lock:
            held = self._held.setdefault(address, weakref.WeakSet())
            # connections that ended are gone from pynetdicom's count too (its thread ended); ones not
            # yet started (this one's peers opened at the same moment) already count
            live = [other for other in held if _holds_place(other)]
            admitted = len(live) < self.per_address
            if admitted:
                held.add(assoc)
            if len(self._held) > ADDRESSES_KEPT:  # many addresses came and went: forget those holding none
                self._held = {key: group for key, group in self._held.items()
                              if any(_holds_place(other) for other in group)}
        if not admitted:
            self._refuse(assoc, f"{address} already holds {len(live)} connections, the most one address may "
                                f"(dicom.max_associations_per_address ({self.per_address}))")
            return
        _waiting.add(assoc)
        assoc.acse_timeout = self.request_timeout_s  # pynetdicom's wait for the request, and its ARTIM timer

    def _refuse(self, assoc: Association, reason: str) -> None:
        """Refuse a connection over its address's limit: answer its request if it is arriving and no other
        refusal of that address is being answered (so a flood of refused connections that send a byte
        and stop holds one place more at most, for REFUSED_WAIT_S), else close it."""
        assoc.acse_timeout = REFUSED_WAIT_S
        address = str(assoc.requestor.address)
        with self._lock:
            answering = any(_holds_place(other) and str(other.requestor.address) == address for other in _answered)
            if not answering:
                _answered.add(assoc)  # holds the address's one answer while its request arrives
        if not answering and _request_arriving(assoc):
            log.warning("DICOM association refused: %s: A-ASSOCIATE-RJ, local limit exceeded", reason)
            note_rejection(assoc, f"{reason}: rejected, local limit exceeded")
            return  # rejected when its request has been read (`_requested`)
        _answered.discard(assoc)
        log.warning("DICOM connection refused: %s: closed, no request had come", reason)
        note_rejection(assoc, f"{reason}: connection closed, no A-ASSOCIATE-RQ had come")
        _refused.add(assoc)
        sock = _raw_socket(assoc)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # its thread ends at once, with its place
        evt.trigger(assoc, evt.EVT_REJECTED, {})

    def _requested(self, event: Any) -> None:
        """EVT_REQUESTED: the request came in time; the ACSE timeout bounds the association's answers again.
        A refused connection's request is answered A-ASSOCIATE-RJ (transient) unless another check
        rejected it already; one whose socket was shut but whose request was read all the same (it
        came with the connection) is never negotiated (no answer can be sent)."""
        assoc = event.assoc
        _waiting.discard(assoc)
        assoc.acse_timeout = self.acse_timeout_s
        if assoc in _answered and not assoc.is_rejected:
            assoc.requestor.ae_title = str(assoc.requestor.primitive.calling_ae_title).strip()  # who is audited
            assoc.acse.send_reject(REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
        elif assoc in _refused:
            assoc.is_rejected = True  # pynetdicom negotiates only an association neither rejected nor aborted
            assoc.kill()

    def _closed(self, event: Any) -> None:
        """EVT_CONN_CLOSE: audit a silent connection that the request timeout ended (pynetdicom's ARTIM
        timer; one whose read the node ended is signalled by its socket, `limits.BoundedSocket`)."""
        assoc = event.assoc
        if assoc not in _waiting or assoc.requestor.primitive is not None:
            return
        _waiting.discard(assoc)
        if not aborting(assoc) and assoc.dul.artim_timer.expired:
            reason = f"no A-ASSOCIATE-RQ within the request timeout of {self.request_timeout_s:g} s of the connection"
            log.warning("DICOM connection from %s closed: %s", assoc.requestor.address, reason)
            note_abort(assoc, reason)
            evt.trigger(assoc, evt.EVT_ABORTED, {})


def _holds_place(assoc: Association) -> bool:
    """Whether `assoc` counts among pynetdicom's associations: its thread runs, or is about to (connections
    opened at the same moment are admitted before their threads start)."""
    return assoc.is_alive() or assoc.ident is None


def _raw_socket(assoc: Association) -> socket.socket | None:
    """The connection's socket, None once pynetdicom has let it go."""
    wrapper = assoc.dul.socket
    return None if wrapper is None else wrapper.socket


def _request_arriving(assoc: Association) -> bool:
    """Whether the peer has sent something (or closed) within REQUEST_PEEK_S of connecting."""
    sock = _raw_socket(assoc)
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # bytes a TLS socket has already decrypted
    if pending is not None and pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], REQUEST_PEEK_S)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(readable)


def per_address_limit(section: Mapping[str, Any]) -> int:
    """The connections one address may hold: `dicom.max_associations_per_address`, or by default
    (0) half of `dicom.max_associations`, at least one. A default that follows the total keeps a
    node whose operator lowered `max_associations` starting after an upgrade."""
    configured, most = int(section["max_associations_per_address"]), int(section["max_associations"])
    return configured or max(1, most // 2)


def check_config(config: Config) -> None:
    """`dicom.max_associations_per_address` within `dicom.max_associations` (bounds checked when read)."""
    section = config["dicom"]
    per_address, most = per_address_limit(section), int(section["max_associations"])
    if per_address > most:
        raise ConfigError(f"{config.source or '<config>'}: dicom.max_associations_per_address ({per_address}) must "
                          f"not exceed dicom.max_associations ({most}); set it lower, so that one address cannot "
                          "take every place")
