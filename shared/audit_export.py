"""Every audit entry, also sent to a central syslog (RFC 5424) when `audit.syslog` names one.

The audit table in each layer's database stays the record the console reads; the export is a copy
for the hospital's SIEM / audit repository, where an auditor reads every layer's trail together.
Transport follows the syslog RFCs: `udp://` one message per datagram (RFC 5426), `tcp://` and
`tls://` octet-counted frames (RFC 6587, RFC 5425). Messages leave from a queue in a background
thread, so a slow or absent syslog server never holds up a physician's request; when the queue is
full (the server unreachable for long) entries are dropped from the export, counted and logged,
and remain in the database.

Message format (docs/operations.md, "Audit export", is the auditor's description):

    <110>1 2026-11-29T21:40:00.123Z host sivr-render 1234 record.read - \
    [sivrAudit@32473 id="…" at="…" layer="render" action="record.read" outcome="0" \
     user_id="…" username="…" client_ip="…" object_type="record" object_id="…" \
     patient_id="…" event_id="110106" event_action="R"] detail text

Facility 13 ("log audit"), severity 6 (informational); MSGID is the SIVR action; the
structured data element carries every field of the audit row and the IHE ATNA / DICOM PS3.15
A.5 event id and action code the action maps to.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import peewee
from flask import Flask, Response, current_app, g

from shared.config import Config, ConfigError

log = logging.getLogger(__name__)

EXPORT_EXTENSION = "sivr_audit_export"
FACILITY_LOG_AUDIT = 13
SEVERITY_INFO = 6
SD_ID = "sivrAudit@32473"
QUEUE_SIZE = 10_000
DEFAULT_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}

# DICOM PS3.15 A.5 / IHE ATNA event (EventID code, DCM) and EventActionCode for SIVR's action verbs.
_ATNA_EVENTS = {
    "login": ("110114", "E"),  # User Authentication
    "logout": ("110114", "E"),
    "read": ("110110", "R"),  # Patient Record
    "view": ("110110", "R"),  # images of a record shown (render nodes' record.view)
    "list": ("110112", "E"),  # Query
    "search": ("110112", "E"),
    "create": ("110110", "C"),
    "upload": ("110104", "C"),  # DICOM Instances Transferred
    "append": ("110104", "C"),  # instances added to a stored series (C-STORE, STOW-RS, an upload)
    "update": ("110110", "U"),
    "delete": ("110105", "D"),  # DICOM Study Deleted
    "load": ("110110", "R"),
    "original": ("110106", "R"),  # Export (the original files leave the node)
    "get": ("110106", "R"),  # DICOM C-GET: instances leave the node to the caller
    "move": ("110106", "R"),  # DICOM C-MOVE: instances leave the node to a destination AE
    "find": ("110112", "E"),  # DICOM C-FIND
    "link": ("110110", "U"),
    "unlink": ("110110", "U"),
    "password": ("110137", "U"),  # User Security Attributes Changed
    "denied": ("110113", "E"),  # Security Alert: a request refused for who made it (access.denied)
}

#: The action of a request refused with 403 `forbidden` to a known caller (`shared.audit.audit_denials`).
ACCESS_DENIED = "access.denied"


def atna_event(action: str) -> tuple[str, str]:
    """(EventID code, EventActionCode) for an action like `record.read`: the first matching verb
    after the object (`user.password_change` is a security attribute change, not a user update)."""
    for verb in action.replace("_", ".").split(".")[1:]:
        if verb in _ATNA_EVENTS:
            return _ATNA_EVENTS[verb]
    return "110100", "E"  # Application Activity


#: How the actions of refused attempts end: a failed login or password change, a refused C-STORE, C-FIND,
#: C-GET or C-MOVE (`dicom.store_refused`...), an instance, series or study refused as another's.
REFUSED_SUFFIXES = ("_failed", "_refused", ".conflict")


def atna_outcome(action: str) -> str:
    """EventOutcomeIndicator: 4 (minor failure) for refused attempts (`REFUSED_SUFFIXES`,
    `access.denied`), else 0."""
    return "4" if action.endswith(REFUSED_SUFFIXES) or action == ACCESS_DENIED else "0"


def _sd_escape(value: Any) -> str:
    """A PARAM-VALUE: `"`, `\\` and `]` escaped as RFC 5424 section 6.3.3 requires."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, '-' when empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def format_message(entry: dict[str, Any], layer: str, hostname: str | None = None) -> bytes:
    """One RFC 5424 message for an audit entry (as `shared.audit.audit_to_json` returns it)."""
    event_id, event_action = atna_event(entry["action"])
    params = {
        "id": entry["id"], "at": entry["at"], "layer": layer, "action": entry["action"],
        "outcome": atna_outcome(entry["action"]),
        "user_id": entry["user_id"], "username": entry["username"], "client_ip": entry["client_ip"],
        "object_type": entry["object_type"], "object_id": entry["object_id"], "patient_id": entry["patient_id"],
        "event_id": event_id, "event_action": event_action,
    }
    sd = "[" + SD_ID + "".join(f' {name}="{_sd_escape(value)}"' for name, value in params.items()) + "]"
    pri = FACILITY_LOG_AUDIT * 8 + SEVERITY_INFO
    timestamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = " ".join((
        f"<{pri}>1", timestamp, _header_field(hostname or socket.gethostname(), 255),
        _header_field(f"sivr-{layer}", 48), _header_field(str(os.getpid()), 128),
        _header_field(entry["action"], 32),
    ))
    message = f"{header} {sd}"
    if entry.get("detail"):
        return message.encode("utf-8") + b" \xef\xbb\xbf" + str(entry["detail"]).encode("utf-8")  # BOM: UTF-8 MSG
    return message.encode("utf-8")


class SyslogExporter:
    """Sends formatted messages to one syslog server from a daemon thread, reconnecting as needed."""

    def __init__(self, url: str, layer: str, ca_file: str = "", where: str = "<config>"):
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ConfigError(f"{where}: audit.syslog must be udp://host[:port], tcp://host[:port] or "
                              f"tls://host[:port], not {url!r}")
        self.transport = parts.scheme
        self.address = (parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme])
        self.layer = layer
        self._context: ssl.SSLContext | None = None
        if self.transport == "tls":
            self._context = ssl.create_default_context(cafile=ca_file or None)
        self._queue: queue.Queue[bytes] = queue.Queue(QUEUE_SIZE)
        self._socket: socket.socket | None = None
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="sivr-audit-syslog", daemon=True)
        self._thread.start()

    def send(self, entry: dict[str, Any]) -> None:
        """Queue one audit entry; never blocks the request."""
        try:
            self._queue.put_nowait(format_message(entry, self.layer))
        except queue.Full:
            self.dropped += 1
            log.error("audit export queue full (%s unreachable?): entry %s kept in the database only",
                      self.address, entry["id"])

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued message was handed to the network; True if the queue drained."""
        done = threading.Event()

        def drain() -> None:
            self._queue.join()
            done.set()

        waiter = threading.Thread(target=drain, daemon=True)
        waiter.start()
        return done.wait(timeout_s)

    def _connect(self) -> socket.socket:
        if self.transport == "udp":
            family, kind, proto, _, address = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(address)
            return sock
        sock = socket.create_connection(self.address, timeout=10)
        if self._context is not None:
            sock = self._context.wrap_socket(sock, server_hostname=self.address[0])
        return sock

    def _deliver(self, message: bytes) -> None:
        if self._socket is None:
            self._socket = self._connect()
        if self.transport == "udp":
            self._socket.send(message)
        else:
            self._socket.sendall(str(len(message)).encode("ascii") + b" " + message)

    def _run(self) -> None:
        backoff = 0.5
        while True:
            message = self._queue.get()
            try:
                while True:
                    try:
                        self._deliver(message)
                        backoff = 0.5
                        break
                    except OSError as exc:
                        log.warning("audit export to %s:%s failed (%s); retrying", *self.address, exc)
                        self._close()
                        threading.Event().wait(backoff)
                        backoff = min(backoff * 2, 30.0)
            finally:
                self._queue.task_done()

    def _close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


def install_audit_export(app: Flask, config: Config) -> None:
    """Start the export when `audit.syslog` is set; `shared.audit.record_audit` then sends each entry."""
    url = config["audit"]["syslog"]
    if not url:
        return
    exporter = SyslogExporter(url, config.layer, config["audit"]["syslog_ca"], str(config.source or "<config>"))
    app.extensions[EXPORT_EXTENSION] = exporter

    @app.after_request
    def _export_committed(response: Response) -> Response:
        # after_request runs before the teardown that closes the request's database connection
        _send_committed(exporter)
        return response


def _as_json(row: peewee.Model) -> dict[str, Any]:
    from shared.audit import (
        audit_to_json,  # shared.audit calls export_entry: imported when used
    )

    return audit_to_json(row)


def export_entry(model: type[peewee.Model], row: peewee.Model) -> None:
    """Send a just-written audit row, if the current app exports its audit log.

    A row written inside a transaction is sent only after the view returned, and only if it is
    then in the database: an action rolled back was not done, and the central copy must not say
    it was.
    """
    exporter: SyslogExporter | None = current_app.extensions.get(EXPORT_EXTENSION)
    if exporter is None:
        return
    if model._meta.database.in_transaction():
        g.setdefault("audit_deferred", []).append((model, row.get_id()))
    else:
        exporter.send(_as_json(row))


def _send_committed(exporter: SyslogExporter) -> None:
    for model, entry_id in g.pop("audit_deferred", []):
        row = model.get_or_none(model.id == entry_id)
        if row is not None:
            exporter.send(_as_json(row))
