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
  not) at once: one more is closed as it opens, before it is read (no A-ASSOCIATE-RQ has come to
  answer with A-ASSOCIATE-RJ, and waiting for one would hold a place), audited `dicom.reject`.
  So one address, a stranger's or a misbehaving listed peer's, leaves the other places free.
"""

from __future__ import annotations

import contextlib
import logging
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
#: The connections refused as they opened (over `max_associations_per_address`).
_refused: weakref.WeakSet[Association] = weakref.WeakSet()
#: How long pynetdicom waits for a refused connection's request: its socket is shut, so it reads none.
REFUSED_WAIT_S = 0.5
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
            live = [other for other in held if other.is_alive() or other.ident is None]
            admitted = len(live) < self.per_address
            if admitted:
                held.add(assoc)
            if len(self._held) > ADDRESSES_KEPT:  # many addresses came and went: forget those holding none
                self._held = {key: group for key, group in self._held.items()
                              if any(other.is_alive() or other.ident is None for other in group)}
        if not admitted:
            reason = (f"{address} already holds {len(live)} connections, the most one address may "
                      f"(dicom.max_associations_per_address ({self.per_address})): connection closed")
            log.warning("DICOM connection refused: %s", reason)
            _refused.add(assoc)
            assoc.acse_timeout = REFUSED_WAIT_S  # its thread ends at once, with its place
            with contextlib.suppress(OSError):
                assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
            note_rejection(assoc, reason)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            return
        _waiting.add(assoc)
        assoc.acse_timeout = self.request_timeout_s  # pynetdicom's wait for the request, and its ARTIM timer

    def _requested(self, event: Any) -> None:
        """EVT_REQUESTED: the request came in time; the ACSE timeout bounds the association's answers again.
        A refused connection whose request was read all the same (it came with the connection) is never
        negotiated (its socket is shut: no answer can be sent)."""
        assoc = event.assoc
        _waiting.discard(assoc)
        assoc.acse_timeout = self.acse_timeout_s
        if assoc in _refused:
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
