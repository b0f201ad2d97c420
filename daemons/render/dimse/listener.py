"""The node's DIMSE front door (pynetdicom): C-ECHO, C-STORE into `Ingest`, C-FIND, C-GET and C-MOVE
on the catalogue (the retrievals in `daemons.render.dimse.retrieve`).

It runs in the node's own process (threads of pynetdicom's server, started by `create_app`), so
it shares the store, the catalogue and the records in RAM with the HTTP API: an instance stored
here is viewable over HTTP at once. Only the calling AE titles in `dicom.allowed_callers`, from the
addresses listed with them, may associate (others get A-ASSOCIATE-RJ, "calling AE title not
recognised"; `daemons.render.dimse.callers`); each association and
each stored or refused instance is audited. Peers that stall are dropped after the `dicom.*_timeout_s`
timeouts, at most `dicom.max_associations` are served at once, at most
`dicom.max_associations_per_address` of them from one address (an IPv6 /64), as many not yet associated
from all addresses together, and as many from one calling AE title (`daemons.render.dimse.admission`); the
listener's figures are on the node's `/metrics` (`daemons.render.dimse.metrics`). With `dicom.tls_port` a
second server of the same AE speaks DICOM TLS (`daemons.render.dimse.tls`). Conformance: docs/conformance.md.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    # these UIDs are generated at import time (sop_class._generate_sop_classes): mypy cannot see them
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from daemons.render.catalogue.matching import find, given_return_keys
from daemons.render.dimse import admission
from daemons.render.dimse import tls as dimse_tls
from daemons.render.dimse.callers import parse_callers, rejection_reason
from daemons.render.dimse.connections import AssociationConnections
from daemons.render.dimse.file_meta import stored_file
from daemons.render.dimse.find_answers import DRAIN_EVERY, AnswerSender, pending_status
from daemons.render.dimse.identifiers import MODEL_REQUESTS, foreign_sop_class, read_identifier, refusal
from daemons.render.dimse.limits import (
    MAXIMUM_PDU_SIZE,
    CommandCheck,
    MessageLimit,
    abort_reason,
    aborting,
    free_unassociated,
    note_abort,
    refuse_small_pdus,
    wait_for_peer_from_now,
)
from daemons.render.dimse.metrics import DimseMetrics
from daemons.render.dimse.peers import peer_key
from daemons.render.dimse.refusal_audit import RefusalAudit
from daemons.render.dimse.retrieve import Retrieval, no_delay, parse_destinations
from daemons.render.imaging.decode import syntax_decodable
from daemons.render.ingest.service import Actor, Ingest
from daemons.render.ingest.upload_checks import UploadError, check_encoding
from daemons.render.models import DIMSE_SENDER_PREFIX
from daemons.render.node import Node
from daemons.render.statuses import (
    CANCEL,
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    status_of,
)
from daemons.render.store.interface import StoreUnavailable
from daemons.render.store.local import StoreFull
from shared.audit import record_audit
from shared.config import Config, ConfigError
from shared.errors import log_failure
from shared.metrics import app_metrics

log = logging.getLogger(__name__)
DIMSE_EXTENSION = "sivr_dimse"
# The file descriptor of a socket already bound to `dicom.port`, inherited from whoever started the
# node (`sivr serve --dicom-fd`): the listener serves on it instead of binding the port itself, so
# that nothing can take the port between the launcher choosing it and the node starting. The
# gunicorn master keeps its copy, so a worker it restarts serves on the same socket.
DICOM_FD_ENV = "SIVR_DICOM_FD"

CANDIDATE_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
    JPEG2000Lossless, JPEG2000, RLELossless,
]


def decodable_syntaxes() -> list[str]:
    """The transfer syntaxes whose pixel data this node can decode (the ones it renders)."""
    syntaxes = []
    for uid in CANDIDATE_SYNTAXES:
        try:
            if not uid.is_compressed or get_decoder(uid).is_available:
                syntaxes.append(str(uid))
        except NotImplementedError:
            continue
    return syntaxes


#: The syntaxes of the query, retrieve and verification contexts: not Deflated Explicit VR Little
#: Endian, whose identifiers pynetdicom inflates whole before anything can bound them (a 510 KB
#: identifier inflated to 512 MiB in the node); an identifier is a few hundred bytes, deflating it
#: saves nothing, and a peer proposing Deflated also proposes Explicit VR Little Endian.
QUERY_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]


def accepted_syntaxes() -> list[str]:
    """The transfer syntaxes the listener accepts, best first: the decodable ones, then every other
    syntax pydicom knows, those the ingest can decode too (HTJ2K where a decoder is installed) before
    those it cannot (their instances are stored only, `daemons.render.stored_only`). The order is the
    listener's preference: pynetdicom accepts the first of these the peer proposed."""
    decodable = decodable_syntaxes()
    others = [str(uid) for uid in AllTransferSyntaxes if str(uid) not in decodable]
    return decodable + sorted(others, key=lambda syntax: not syntax_decodable(syntax))


def inherited_socket_problem(fd: int, port: int) -> str | None:
    """Why the inherited descriptor `fd` cannot serve TCP `port` (None: it can): asked by `sivr serve
    --dicom-fd` before the daemon starts, and by the listener that takes the socket over."""
    try:
        copy = os.dup(fd)
    except OSError as exc:
        return f"no such open descriptor ({exc.strerror})"
    try:
        sock = socket.socket(fileno=copy)
    except OSError as exc:
        os.close(copy)
        return f"not a socket ({exc.strerror})"
    with sock:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return "not a TCP socket"
        bound = sock.getsockname()[1]
        if bound != port:
            return f"bound to port {bound}, not dicom.port {port}"
    return None


class ListeningServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the system's listen backlog instead of socketserver's 5: a
    burst of peers connecting at once (a modality's several associations, a PACS's prefetch) waited
    for SYN retransmits, 1 s and then 3 s, once five connections were queued."""

    request_queue_size = socket.SOMAXCONN


class InheritedSocketServer(ListeningServer):
    """pynetdicom's threaded server, on a socket bound by someone else (DICOM_FD_ENV) rather than
    one it binds. The socket gets the options pynetdicom gives its own: SO_REUSEADDR above all, which
    the accepted connections inherit, so that a node restarted while their TIME_WAIT lasts can bind
    the port again. Closing it closes this process's copy only: `shutdown()` on a listening socket
    would stop it listening in the gunicorn master too, whose copy a restarted worker serves."""

    def __init__(self, *args: Any, inherited: socket.socket, **kwargs: Any):
        self._inherited = inherited
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.socket is not None:  # the one socketserver made, never bound
            self.socket.close()
        self.socket = self._inherited
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.ae.network_timeout is not None:
            self.socket.settimeout(self.ae.network_timeout)
        self.server_address = self.socket.getsockname()

    def server_close(self) -> None:
        if self.socket is not None:
            self.socket.close()


class Listener:
    """A node's DICOM listener: one pynetdicom AE serving `dicom.port` (plain) and/or `dicom.tls_port`
    (DICOM TLS), each a server in background threads, with the same callers, services and limits."""

    def __init__(self, config: Config, app: Flask, node: Node, ingest: Ingest):
        section = config["dicom"]
        self.app, self.node, self.ingest = app, node, ingest
        self.ae_title = section["ae_title"]
        self.host, self.port, self.tls_port = section["host"], int(section["port"]), int(section["tls_port"])
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        callers = parse_callers(config)
        ae.require_calling_aet = callers.titles
        ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
        ae.maximum_associations = int(section["max_associations"])
        ae.network_timeout = float(section["network_timeout_s"])
        ae.acse_timeout = float(section["acse_timeout_s"])
        ae.dimse_timeout = float(section["dimse_timeout_s"])
        syntaxes = accepted_syntaxes()
        for context in StoragePresentationContexts:
            assert context.abstract_syntax is not None, "pynetdicom's storage contexts all name their SOP class"
            # both roles: a peer sends to the node (C-STORE), or receives from it within its C-GET
            ae.add_supported_context(context.abstract_syntax, syntaxes, scu_role=True, scp_role=True)
        ae.add_supported_context(Verification, QUERY_SYNTAXES)
        for model in MODEL_REQUESTS:  # C-FIND, C-GET and C-MOVE, patient and study root
            ae.add_supported_context(model, QUERY_SYNTAXES)
        destinations = parse_destinations(config)
        tls_client = (dimse_tls.client_context(config)
                      if any(destination.tls for destination in destinations.values()) else None)
        self.connections = AssociationConnections(node.models.database)
        self.messages = MessageLimit(node.limits.max_upload_bytes, ingest.memory, self._store_refused_while_arriving)
        self.refusals = RefusalAudit()
        admitting = admission.Admission(admission.per_address_limit(section), admission.per_title_limit(section),
                                        float(section["request_timeout_s"]), ae.acse_timeout)
        retrieval = Retrieval(app, node, self._audit, destinations, syntaxes, tls_client, self.connections)
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._guard(self._on_store)),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, retrieval.on_get),
            (evt.EVT_C_MOVE, retrieval.on_move),
            (evt.EVT_ACCEPTED, self._guard(lambda event: self._audit(event, "dicom.associate"))),
            (evt.EVT_REQUESTED, callers.check),
            (evt.EVT_REQUESTED, refuse_small_pdus),
            (evt.EVT_REJECTED, self._guard(self._audit_refusal)),
            (evt.EVT_ABORTED, self._guard(lambda event: self._audit(event, "dicom.abort",
                                                                     detail=abort_reason(event.assoc)))),
            (evt.EVT_CONN_OPEN, self._limit_waits),
            *admitting.handlers(),
            (evt.EVT_CONN_CLOSE, free_unassociated),
            (evt.EVT_DIMSE_SENT, wait_for_peer_from_now),
            *CommandCheck.handlers(),  # first: a message it aborts is neither held nor stored (`messages`)
            *self.messages.handlers(),
            *retrieval.handlers(),  # before the metrics: they count what a refusal's final response says
            *DimseMetrics(app_metrics(app)).handlers(),
            *self.connections.handlers(),
        ]
        self.servers: list[ThreadedAssociationServer] = []
        if self.port:
            inherited = os.environ.pop(DICOM_FD_ENV, None)  # not for this process's children
            if inherited:
                self.port = self._serve_inherited(ae, int(inherited), handlers)
            else:
                self.port = self._serve(ae, self.port, handlers, None)
        if self.tls_port:
            self.tls_port = self._serve(ae, self.tls_port, handlers, dimse_tls.server_context(config))

    def _serve(self, ae: AE, port: int, handlers: list[EventHandlerType], tls: ssl.SSLContext | None) -> int:
        """Start one server of the AE; its port (the one bound, when `port` asked for any)."""
        server = ae.make_server((self.host, port), evt_handlers=handlers, ssl_context=tls,
                                server_class=ListeningServer)
        self._start(ae, server)
        return int(server.server_address[1])

    def _serve_inherited(self, ae: AE, fd: int, handlers: list[EventHandlerType]) -> int:
        """Serve `dicom.port` on the inherited socket `fd` (DICOM_FD_ENV), in a thread as `_serve` does."""
        problem = inherited_socket_problem(fd, self.port)
        if problem:
            raise ConfigError(f"{DICOM_FD_ENV}={fd}: {problem}")
        sock = socket.socket(fileno=os.dup(fd))  # the inherited descriptor stays for a restarted worker
        server = ae.make_server((self.host, self.port), evt_handlers=handlers,
                                server_class=InheritedSocketServer, inherited=sock)
        self._start(ae, server)
        return self.port

    def _start(self, ae: AE, server: ThreadedAssociationServer) -> None:
        """Serve in a thread, as pynetdicom's non-blocking `start_server` does (which cannot be given a
        server class)."""
        threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{server.server_address[1]}",
                         daemon=True).start()
        ae._servers.append(server)  # as start_server does: the server's shutdown() removes itself from it
        self.servers.append(server)

    @staticmethod
    def _limit_waits(event: Any) -> None:
        """Give the connection's socket `dicom.network_timeout_s`: pynetdicom's own idle timer never
        fires while its reader waits for the rest of a PDU a peer stopped sending half-way (nor while a
        peer stops reading what the node sends), which would hold the association's thread forever.
        And TCP_NODELAY (`dimse_retrieve.no_delay`), for the node's answers."""
        event.assoc.dul.socket.socket.settimeout(event.assoc.network_timeout)
        no_delay(event)

    def stop(self) -> None:
        """Close the listening socket; a second call does nothing (pynetdicom's own shutdown raises)."""
        servers, self.servers = self.servers, []
        for server in servers:
            server.shutdown()

    def _guard(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Run a handler in the app's context (the audit export lives there), on the association's
        database connection (`connections`)."""

        def run(event: Any) -> Any:
            with self.connections.held(), self.app.app_context():
                return handler(event)

        return run

    @staticmethod
    def _actor(event: Any) -> Actor:
        requestor = event.assoc.requestor
        title = str(requestor.ae_title).strip()
        return Actor(f"{DIMSE_SENDER_PREFIX}{title}"[:36], title, str(requestor.address))

    def _audit_refusal(self, event: Any) -> None:
        """`dicom.reject` with its reason, within what one peer (an address, an IPv6 /64) may write (`RefusalAudit`)."""
        detail = self.refusals.detail(peer_key(str(event.assoc.requestor.address)), rejection_reason(event.assoc))
        if detail is not None:
            self._audit(event, "dicom.reject", detail=detail)

    def _audit(self, event: Any, action: str, record_id: str | None = None, detail: str = "") -> None:
        actor = self._actor(event)
        record_audit(self.node.models.AuditEntry, action, "dicom", record_id, detail=detail,
                     user_id=actor.user_id, username=actor.username, client_ip=actor.client_ip)

    @staticmethod
    def _abort_other_service(event: Any, named: str) -> int:
        """pynetdicom hands a request to the service of the SOP class it names, whatever the request
        is: a C-STORE-RQ or an N-CREATE-RQ naming the Verification SOP Class would be answered with a
        C-ECHO-RSP of success, an N-CREATE-RQ naming a storage class with a C-STORE-RSP. Such a peer
        is broken: its association is aborted (the status is never sent)."""
        reason = f"a {type(event.request).__name__} naming {named}"
        log.warning("DICOM peer %s sent %s: association aborted", event.assoc.requestor.address, reason)
        note_abort(event.assoc, reason)
        event.assoc.abort()
        return SOP_CLASS_NOT_SUPPORTED

    @classmethod
    def _on_echo(cls, event: Any) -> int:
        """C-ECHO: success; any other request naming the Verification SOP Class aborts its association."""
        if isinstance(event.request, C_ECHO):
            return SUCCESS
        return cls._abort_other_service(event, "the Verification SOP Class")

    def _on_store(self, event: Any) -> int:
        """A C-STORE, whose data set's room in the upload memory (`dimse.limits.MessageLimit`) is
        freed once it is handled; not stored when its last PDU made the node abort (audited there),
        nor when the connection closed before its turn came (no answer could reach the peer)."""
        if not isinstance(event.request, C_STORE):
            return self._abort_other_service(event, "a storage SOP Class")
        data_set = event.request.DataSet
        assert data_set is not None, "pynetdicom gives every C-STORE it hands over a data set buffer"
        reservation = self.messages.take(event.assoc, data_set)
        try:
            if aborting(event.assoc):  # audited with the abort's reason
                return OUT_OF_RESOURCES  # never sent: the association is gone
            if reservation is None:
                self._audit(event, "dicom.store_refused", detail=f"sop_instance_uid="
                            f"{event.request.AffectedSOPInstanceUID} not stored: the connection closed before "
                            "it was handled")
                return OUT_OF_RESOURCES  # never sent: the connection is gone
            return self._store(event)
        finally:
            if reservation is not None:
                reservation.release()

    def _store(self, event: Any) -> int:
        request = event.request
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        foreign = foreign_sop_class(event)
        if foreign is not None:
            self._audit(event, "dicom.store_refused", detail=f"sop_instance_uid={sop_instance}: {foreign}")
            return SOP_CLASS_NOT_SUPPORTED
        try:
            raw = stored_file(event)
            check_encoding(sop_instance, raw)
            self.ingest.add([(sop_instance, raw)], self._actor(event), expected_sop_class=sop_class,
                            expected_sop_instance=sop_instance)
        except UploadError as exc:
            self._audit(event, "dicom.store_refused", detail=f"sop_instance_uid={sop_instance} {exc.code}: "
                        f"{exc.message}")
            return status_of(exc)
        except StoreFull:
            self._audit(event, "dicom.store_refused", detail=f"sop_instance_uid={sop_instance} store full")
            return OUT_OF_RESOURCES
        except StoreUnavailable as exc:  # the peer may retry: an expected outage, logged without a trace
            log.warning("C-STORE of %s not stored, the record store is unavailable: %s", sop_instance, exc)
            self._audit(event, "dicom.store_refused", detail=f"sop_instance_uid={sop_instance} store unavailable: "
                        f"{exc}"[:400])
            return PROCESSING_FAILURE
        except Exception as exc:  # a database's own message quotes row values: not logged (`log_failure`)
            log_failure(f"C-STORE of {sop_instance} failed", exc)
            return PROCESSING_FAILURE
        return SUCCESS  # audited by the ingest (record.upload / record.append, naming the instance)

    def _store_refused_while_arriving(self, event: Any, sop_instance: str, reason: str) -> None:
        """Audit a C-STORE refused while its data set arrived (`dimse.limits`: over `limits.max_upload_mb`,
        or no room in `limits.upload_memory_mb`; its association is aborted), as `_on_store` audits
        the stores it refuses."""
        self._guard(lambda event: self._audit(
            event, "dicom.store_refused", detail=f"sop_instance_uid={sop_instance} {reason}; association aborted"
        ))(event)

    def _on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Any]]:
        """The matches, sent as they are encoded (`find_answers`), each 0xFF01 when the identifier
        holds a key the node does not support (`find_answers.pending_status`); pynetdicom sends the
        final success response when this generator ends without a status of its own."""
        try:
            level, identifier = read_identifier(event)
            with self.connections.held(), self.app.app_context():
                answers = find(self.node.models.catalogue, level, identifier,
                               self.node.config["dicom"]["max_find_matches"],
                               given_return_keys(self.ae_title))
                self._audit(event, "dicom.find", detail=f"level={level} results={len(answers.rows)}")
        except Exception as exc:
            status, reason = refusal("C-FIND", exc)
            self._find_refused(event, reason)
            yield status, None
            return
        sender = AnswerSender(event, pending_status(identifier))
        for index, row in enumerate(answers.rows):
            if index and index % DRAIN_EVERY == 0:
                sender.drain()
            if event.is_cancelled:
                yield CANCEL, None
                return
            if not event.assoc.is_established:
                return
            if not sender.send(answers, row):  # neither here nor by pydicom (a CS beyond Latin-1)
                log.error("C-FIND at level %s: answer %d of %d could not be encoded (keys %s)", level, index + 1,
                          len(answers.rows), ", ".join(answers.requested))
                yield CANNOT_UNDERSTAND, None
                return

    def _find_refused(self, event: Any, reason: str) -> None:
        """Audit a refused C-FIND with its reason, as `retrieve` audits refused C-GET and C-MOVE. An
        audit that cannot be written is logged: the peer still gets the refusal's own status."""
        try:
            self._guard(lambda event: self._audit(event, "dicom.find_refused", detail=reason))(event)
        except Exception as exc:
            log_failure(f"C-FIND refused ({reason}); its audit entry could not be written", exc)


def check_config(config: Config) -> None:
    """Refuse a listener that nobody may use or everybody could, and malformed callers and destinations (checked
    before the node starts; ports, limits and timeouts are bounded by their keys when the file is read)."""
    where = config.source or "<config>"
    section = config["dicom"]
    if (int(section["port"]) or int(section["tls_port"])) and not section["allowed_callers"]:
        # pynetdicom would take an empty list as "anyone"
        raise ConfigError(f"{where}: dicom.allowed_callers must list the calling AE "
                          "titles allowed to send and query (or set dicom.port = 0 and dicom.tls_port = 0)")
    parse_callers(config)
    admission.check_config(config)
    destinations = parse_destinations(config)
    dimse_tls.check_config(config, any(destination.tls for destination in destinations.values()))


def set_protocol_logging(level: str) -> None:
    """Have pynetdicom describe every PDU, DIMSE message and C-FIND/C-GET/C-MOVE answer only when
    the node logs at debug level. It builds those descriptions (a text dump of each answer's data
    set) whether or not its logger would write them: a third of a many-answer C-FIND's time, and
    work for every PDU of a C-STORE. Its own documented switches, process-wide: the node is the
    process's only DICOM user."""
    debug = level.upper() == "DEBUG"
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if debug else "none"
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = debug
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = debug


def start_listener(config: Config, app: Flask, node: Node, ingest: Ingest) -> Listener | None:
    """Start the node's DICOM listener, or None when `dicom.port` and `dicom.tls_port` are 0 (turned off)."""
    set_protocol_logging(config["log"]["level"])
    if int(config["dicom"]["port"]) == 0 and int(config["dicom"]["tls_port"]) == 0:
        return None
    listener = Listener(config, app, node, ingest)
    log.info("DICOM listener %s on %s, port %s, TLS port %s", listener.ae_title, listener.host,
             listener.port or "off", listener.tls_port or "off")
    return listener
