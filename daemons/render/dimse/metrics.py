"""Prometheus figures of the node's DICOM listener, on the node's `/metrics` (issue 16).

They are taken from pynetdicom's notification events, not from the service handlers, so every
association and every answer counts, including those pynetdicom gives by itself (a rejected
association, a status for a handler's exception, 0xA801 for an unknown move destination):
- `sivr_dicom_associations_total{result}`: accepted, rejected (caller not allowed, too many
  associations...) and aborted (by either side, including a peer dropped for silence);
- `sivr_dicom_operations_total{operation, status}` and `sivr_dicom_operation_seconds{operation}`:
  each C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE by its final status (hex, a bounded set), timed
  from the complete request to the final response;
- `sivr_dicom_suboperations_total{operation, result}`: the C-STORE sub-operations of C-GET and
  C-MOVE (completed, warning, failed), as the final response counts them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import Counter, Histogram
from pynetdicom import evt
from pynetdicom.events import EventHandlerType

from daemons.render.statuses import PENDING, PENDING_WITH_WARNING
from shared.metrics import Metrics

OPERATIONS = {"C_ECHO": "echo", "C_STORE": "store", "C_FIND": "find", "C_GET": "get", "C_MOVE": "move"}
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class DimseMetrics:
    """The listener's counters, registered in the app's registry; `handlers` binds them to pynetdicom."""

    def __init__(self, metrics: Metrics):
        registry = metrics.registry
        self.associations = Counter("sivr_dicom_associations", "DICOM associations, by outcome",
                                    ["result"], registry=registry)
        self.operations = Counter("sivr_dicom_operations", "DIMSE requests answered, by service and final status",
                                  ["operation", "status"], registry=registry)
        self.seconds = Histogram("sivr_dicom_operation_seconds",
                                 "Time from a complete DIMSE request to its final response",
                                 ["operation"], buckets=SECONDS_BUCKETS, registry=registry)
        self.suboperations = Counter("sivr_dicom_suboperations",
                                     "C-STORE sub-operations of C-GET and C-MOVE, by outcome",
                                     ["operation", "result"], registry=registry)
        self._started: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_ACCEPTED, lambda event: self.associations.labels("accepted").inc()),
            (evt.EVT_REJECTED, lambda event: self.associations.labels("rejected").inc()),
            (evt.EVT_ABORTED, lambda event: self.associations.labels("aborted").inc()),
            (evt.EVT_DIMSE_RECV, self._received),
            (evt.EVT_DIMSE_SENT, self._sent),
            (evt.EVT_CONN_CLOSE, self._closed),
        ]

    def _received(self, event: Any) -> None:
        kind, _, direction = type(event.message).__name__.rpartition("_")
        if direction == "RQ" and kind in OPERATIONS:
            key = (id(event.assoc), int(event.message.command_set.MessageID))
            with self._lock:
                self._started[key] = time.perf_counter()

    def _sent(self, event: Any) -> None:
        kind, _, direction = type(event.message).__name__.rpartition("_")
        if direction != "RSP" or kind not in OPERATIONS:
            return
        command = event.message.command_set
        status = int(command.Status)
        if status in (PENDING, PENDING_WITH_WARNING):
            return
        operation = OPERATIONS[kind]
        self.operations.labels(operation, f"0x{status:04X}").inc()
        with self._lock:
            started = self._started.pop((id(event.assoc), int(command.MessageIDBeingRespondedTo)), None)
        if started is not None:
            self.seconds.labels(operation).observe(time.perf_counter() - started)
        if operation in ("get", "move"):
            for result, keyword in (("completed", "NumberOfCompletedSuboperations"),
                                    ("warning", "NumberOfWarningSuboperations"),
                                    ("failed", "NumberOfFailedSuboperations")):
                count = command.get(keyword)
                if count:
                    self.suboperations.labels(operation, result).inc(int(count))

    def _closed(self, event: Any) -> None:
        """Forget the requests of a connection that closed before they were answered."""
        with self._lock:
            for key in [key for key in self._started if key[0] == id(event.assoc)]:
                del self._started[key]
