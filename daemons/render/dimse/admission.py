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
- one peer may hold at most `dicom.max_associations_per_address` connections (associated or
  not) at once, audited `dicom.reject`. A peer is an IP address, an IPv6 one's /64 network
  (`peers.peer_key`): one IPv6 host calling from a new address of its /64 each time took every place.
  One more whose A-ASSOCIATE-RQ is arriving as it opens (a
  modality sends it at once) is answered A-ASSOCIATE-RJ, rejected-transient, "local limit exceeded"
  (PS3.8 9.3.4), as pynetdicom answers when every place is taken, so the modality knows to try again
  later; it may take REFUSED_WAIT_S to send its request. One that has sent nothing within
  REQUEST_PEEK_S is closed unread: waiting for its request would let a stranger hold places with
  connections it never uses. So one address, a stranger's or a misbehaving listed peer's, leaves the
  other places free;
- the connections whose A-ASSOCIATE-RQ has not arrived yet, from all addresses together, hold at most
  `dicom.max_associations_per_address` places: one more makes the oldest of them give way (closed
  unread, audited `dicom.reject`). A modality sends its request as it connects and waits a moment at
  most, while a peer with many addresses (a /24 of its own, every 127.0.0.x of a local one) held every
  place with bare connections, one or two per address, renewed each request timeout;
- one calling AE title may hold at most `dicom.max_associations_per_title` associations at once
  (by default, 0, as many as one address), whatever addresses they come from: one more is answered
  A-ASSOCIATE-RJ, rejected-transient, "local limit exceeded". A listed title that is not bound to
  addresses (`callers`) otherwise let one peer with many addresses take every place from the other
  modalities. A key of its own: a modality that opens several associations at once from addresses
  of its own (a CT sending series in parallel) needs more than a tight per-address limit against
  strangers gives, and a site may hold each title to fewer than a PACS's address needs.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType

from daemons.render.dimse.callers import note_rejection
from daemons.render.dimse.limits import aborting, note_abort
from daemons.render.dimse.peers import peer_key
from shared.config import Config, ConfigError

log = logging.getLogger(__name__)


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
    """The listener's handlers that bound what one peer, the connections not yet associated and one
    calling AE title hold, and how long a connection may wait to associate. A refusal is signalled as
    pynetdicom signals its own (EVT_REJECTED, EVT_ABORTED),
    so the listener audits it (`dicom.reject`, `dicom.abort`, with the reason), counts it in its
    metrics and closes the thread's database connection, as for any other."""

    def __init__(self, per_address: int, per_title: int, request_timeout_s: float, acse_timeout_s: float):
        self.per_address = per_address
        self.per_title = per_title
        self.request_timeout_s = request_timeout_s
        self.acse_timeout_s = acse_timeout_s
        self._lock = threading.Lock()
        self._held: dict[str, weakref.WeakSet[Association]] = {}  # by peer (`peer_key`)
        #: the accepted connections whose A-ASSOCIATE-RQ has not arrived yet, with when they opened
        self._waiting: weakref.WeakKeyDictionary[Association, float] = weakref.WeakKeyDictionary()
        self._titles: dict[str, weakref.WeakSet[Association]] = {}  # the associations requested, by calling AE title

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_REQUESTED, self._requested),
                (evt.EVT_CONN_CLOSE, self._closed)]

    def _opened(self, event: Any) -> None:
        """EVT_CONN_OPEN, in the connection's thread before anything is read: admit it, or close it."""
        assoc = event.assoc
        address = peer_key(str(assoc.requestor.address))
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
            oldest = self._oldest_waiting() if admitted else None
            if admitted:
                self._waiting[assoc] = time.monotonic()
        if not admitted:
            self._refuse(assoc, f"{address} already holds {len(live)} connections, the most one address may "
                                f"(dicom.max_associations_per_address ({self.per_address}))")
            return
        assoc.acse_timeout = self.request_timeout_s  # pynetdicom's wait for the request, and its ARTIM timer
        if oldest is not None:
            self._give_way(*oldest)

    def _oldest_waiting(self) -> tuple[Association, float] | None:
        """With the lock held, as a connection is admitted: the oldest connection still waiting for its
        A-ASSOCIATE-RQ when as many wait as all addresses together may hold (no longer counted as
        waiting), else None."""
        waiting = [(opened, other) for other, opened in self._waiting.items()
                   if _holds_place(other) and other.requestor.primitive is None]
        if len(waiting) < self.per_address:
            return None
        opened, oldest = min(waiting, key=lambda pair: pair[0])
        del self._waiting[oldest]
        return oldest, opened

    def _give_way(self, assoc: Association, opened: float) -> None:
        """Close a connection that has sent no A-ASSOCIATE-RQ so that a newer one gets its place
        (`_oldest_waiting`); its thread ends at once. One whose request is read all the same is never
        negotiated (`_requested`)."""
        reason = (f"{assoc.requestor.address} sent no A-ASSOCIATE-RQ in the {time.monotonic() - opened:.2f} s since it "
                  f"connected, and {self.per_address} connections were waiting for theirs, the most all addresses "
                  f"together may (dicom.max_associations_per_address ({self.per_address})): the oldest, it was "
                  "closed for a newer one")
        log.warning("DICOM connection refused: %s", reason)
        note_rejection(assoc, reason)
        _refused.add(assoc)
        sock = _raw_socket(assoc)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        evt.trigger(assoc, evt.EVT_REJECTED, {})

    def _refuse(self, assoc: Association, reason: str) -> None:
        """Refuse a connection over its address's limit: answer its request if it is arriving and no other
        refusal of that address is being answered (so a flood of refused connections that send a byte
        and stop holds one place more at most, for REFUSED_WAIT_S), else close it."""
        assoc.acse_timeout = REFUSED_WAIT_S
        address = peer_key(str(assoc.requestor.address))
        with self._lock:
            answering = any(_holds_place(other) and peer_key(str(other.requestor.address)) == address
                            for other in _answered)
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
        came with the connection) is never negotiated (no answer can be sent). So is an association
        whose calling AE title holds as many as one title may (`_title_refusal`)."""
        assoc = event.assoc
        with self._lock:
            self._waiting.pop(assoc, None)
        assoc.acse_timeout = self.acse_timeout_s
        if assoc in _refused:
            assoc.is_rejected = True  # pynetdicom negotiates only an association neither rejected nor aborted
            assoc.kill()
        elif assoc.is_rejected:
            return
        elif assoc in _answered:
            _reject_transient(assoc, "")
        else:
            reason = self._title_refusal(assoc)
            if reason is not None:
                _reject_transient(assoc, reason)

    def _title_refusal(self, assoc: Association) -> str | None:
        """Why `assoc` is refused for its calling AE title's associations (None: admitted, and counted)."""
        title = _calling_title(assoc)
        with self._lock:
            held = self._titles.setdefault(title, weakref.WeakSet())
            live = [other for other in held if _holds_place(other) and not other.is_rejected]
            if len(live) >= self.per_title:
                return (f"calling AE title {title!r} already holds {len(live)} associations, the most one caller may "
                        f"(dicom.max_associations_per_title ({self.per_title}))")
            held.add(assoc)
            if len(self._titles) > ADDRESSES_KEPT:
                self._titles = {key: group for key, group in self._titles.items()
                                if any(_holds_place(other) for other in group)}
        return None

    def _closed(self, event: Any) -> None:
        """EVT_CONN_CLOSE: audit a silent connection that the request timeout ended (pynetdicom's ARTIM
        timer; one whose read the node ended is signalled by its socket, `limits.BoundedSocket`)."""
        assoc = event.assoc
        with self._lock:
            waited = self._waiting.pop(assoc, None)
        if waited is None or assoc.requestor.primitive is not None:
            return
        if not aborting(assoc) and assoc.dul.artim_timer.expired:
            reason = f"no A-ASSOCIATE-RQ within the request timeout of {self.request_timeout_s:g} s of the connection"
            log.warning("DICOM connection from %s closed: %s", assoc.requestor.address, reason)
            note_abort(assoc, reason)
            evt.trigger(assoc, evt.EVT_ABORTED, {})


def _reject_transient(assoc: Association, reason: str) -> None:
    """From an EVT_REQUESTED handler: A-ASSOCIATE-RJ, rejected-transient, service provider (presentation),
    local limit exceeded (PS3.8 9.3.4), audited with `reason` (when not noted already), as pynetdicom
    rejects when every place is taken: the peer may try again later."""
    if reason:
        log.warning("DICOM association refused: %s: A-ASSOCIATE-RJ, local limit exceeded", reason)
        note_rejection(assoc, f"{reason}: rejected, local limit exceeded")
    assoc.requestor.ae_title = _calling_title(assoc)  # who is audited
    assoc.acse.send_reject(REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def _calling_title(assoc: Association) -> str:
    """The calling AE title of an association whose A-ASSOCIATE-RQ has been read."""
    request = assoc.requestor.primitive
    assert request is not None, "EVT_REQUESTED is signalled once the A-ASSOCIATE-RQ has been read"
    return str(request.calling_ae_title).strip()


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


def per_title_limit(section: Mapping[str, Any]) -> int:
    """The associations one calling AE title may hold: `dicom.max_associations_per_title`, or by
    default (0) the per-address limit (`per_address_limit`), which bound titles before the key was
    added: a config without it keeps its behaviour."""
    return int(section["max_associations_per_title"]) or per_address_limit(section)


def check_config(config: Config) -> None:
    """`dicom.max_associations_per_address` and `dicom.max_associations_per_title` within
    `dicom.max_associations` (bounds checked when read)."""
    section = config["dicom"]
    most = int(section["max_associations"])
    for key, limit, who in (("max_associations_per_address", per_address_limit(section), "one address"),
                            ("max_associations_per_title", per_title_limit(section), "one calling AE title")):
        if limit > most:
            raise ConfigError(f"{config.source or '<config>'}: dicom.{key} ({limit}) must not exceed "
                              f"dicom.max_associations ({most}); set it lower, so that {who} cannot take every place")
