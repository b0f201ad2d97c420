"""Sending a C-FIND's answers (PS3.4 C.4.1): each pending C-FIND-RSP as one P-DATA-TF PDU holding
its command set and its identifier, the command set encoded once per request.

pynetdicom's own path builds, for every answer, a pydicom dataset, encodes it, builds and encodes
the C-FIND-RSP's command set and hands each to its DUL as a separate P-DATA: about 1.3 ms per
answer on this project's 2-core machines, so a search matching 391 studies took 514 ms before its
last answer left (issue 11 asks 50 ms; `bench/cfind_cost.py`). Here:

* the command set of a pending answer is the same for every answer of a request (message ID being
  responded to, SOP class, its pending status, a data set present): pynetdicom encodes it once;
* an answer's identifier holds only Query/Retrieve Level, the keys asked for that the node returns
  (`matching.KEYS`, and RetrieveAETitle and InstanceAvailability: `matching.GIVEN_RETURN_KEYS`) and
  perhaps Specific Character Set, all of short text VRs (`matching.Answers.values`), so
  `encode_identifier` writes its elements straight from the values in the negotiated little-endian
  syntax. It writes exactly what pydicom writes for the same dataset
  (tests/render/test_find_answers.py compares the bytes), and leaves to pydicom every answer it
  could not write so (another VR, a value pydicom would write in
  another character set or refuse, a big-endian context; the query contexts take no Deflated syntax,
  `listener.QUERY_SYNTAXES`);
* the command set and the identifier go in one P-DATA-TF PDU (one message per PDU: pynetdicom as
  a receiver keeps only the first message of a PDU);
* every DRAIN_EVERY answers the sender waits until pynetdicom's DUL has sent what it was given
  (`drain`): the DUL reads what the peer sent only while it has nothing to send, so without that
  pause a C-CANCEL or an A-ABORT would be read only once every answer was queued, and the queue
  would hold all of them in memory.

Every pending answer of a request carries one status (`pending_status`): 0xFF00 when every attribute of
the identifier is a key the node matches and returns, 0xFF01 (PS3.4 Table C.4-1, "one or more Optional
Keys were not supported for existence and/or matching") when one is not, so that the peer knows the
answers were neither narrowed by it nor carry it.

The final response (success, cancel or failure) is still pynetdicom's, after these in its DUL queue.
Pending answers sent here raise no `EVT_DIMSE_SENT` (the node's metrics count final responses only);
at debug level their data sets are described in the log, as pynetdicom describes those it sends
(its info line per pending answer is not written).
"""

from __future__ import annotations

import functools
import logging
import select
import struct
import time
from io import BytesIO
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode, pretty_dataset
from pynetdicom.pdu_primitives import P_DATA

from daemons.render.catalogue.matching import GIVEN_RETURN_KEYS, KEYS, UTF8_CHARACTER_SET, Answers, is_universal
from daemons.render.statuses import PENDING, PENDING_WITH_WARNING

#: where pynetdicom describes the answers it sends, at debug level (`listener.set_protocol_logging`)
PROTOCOL_LOG = logging.getLogger("pynetdicom.service_class")
#: The VRs of the answers' elements (`matching.KEYS`, `matching.GIVEN_RETURN_KEYS`' AE and CS,
#: Query/Retrieve Level, Specific Character Set): text that pydicom writes as it is (padded to an
#: even length), with a 2-byte length in Explicit VR, and whether the dataset's character set
#: applies to it (PS3.5 6.1.2.3)
SHORT_TEXT_VRS = {"AE": False, "CS": False, "DA": False, "IS": False, "TM": False, "UI": False,
                  "LO": True, "PN": True, "SH": True}
#: answers handed to the DUL between two `AnswerSender.drain`s
DRAIN_EVERY = 128
#: how often `drain` looks at the DUL's queue and the socket
DRAIN_POLL_S = 0.0005
#: the longest `drain` waits for the DUL, once it has sent everything, to read what the peer sent
READ_TURN_S = 0.05
#: the most bytes a PDU of this module holds when the peer sets no limit (maximum length 0)
UNLIMITED_PDU = 1 << 20
#: a PDV item's own bytes: its length (4), presentation context ID (1), message control header (1)
PDV_OVERHEAD = 6
COMMAND_LAST = b"\x03"  # message control header: command, last fragment
DATA_SET_LAST = b"\x02"  # data set, last fragment
#: The attributes of a C-FIND identifier that are not keys (PS3.4 C.4.1.1.3.1: Query/Retrieve Level,
#: Query/Retrieve View, Specific Character Set, Timezone Offset From UTC): they never ask for anything
#: the node could leave out, so they are no reason for 0xFF01 (Orthanc too ignores the offset)
NOT_KEYS = frozenset({"QueryRetrieveLevel", "QueryRetrieveView", "SpecificCharacterSet", "TimezoneOffsetFromUTC"})


@functools.cache
def _element(keyword: str) -> tuple[int, str, bytes, bytes] | None:
    """(tag, VR, Explicit VR prefix, Implicit VR prefix) of a keyword, None when its VR is not one
    `encode_identifier` writes."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    vr = dictionary_VR(tag)
    if vr not in SHORT_TEXT_VRS:
        return None
    tag_bytes = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    return tag, vr, tag_bytes + vr.encode(), tag_bytes


def encode_identifier(values: list[tuple[str, str]], implicit_vr: bool) -> bytes | None:
    """An identifier of (keyword, text) pairs in Implicit or Explicit VR Little Endian, as pydicom
    writes it; None when one of them is not a short text element pydicom would write as its text
    (in ASCII, or in UTF-8 where the identifier names ISO_IR 192 and the VR follows it). A person
    name with a trailing empty component group (`DOE^JOHN=`) is left to pydicom, which drops it."""
    utf8 = ("SpecificCharacterSet", UTF8_CHARACTER_SET) in values
    elements = []
    for keyword, value in values:
        known = _element(keyword)
        if known is None:
            return None
        tag, vr, explicit_prefix, implicit_prefix = known
        if vr == "PN" and any(name.endswith("=") for name in value.split("\\")):
            return None
        try:
            if value.isascii():
                data = value.encode("ascii")
            elif utf8 and SHORT_TEXT_VRS[vr]:
                data = value.encode("utf-8")
            else:
                return None
        except UnicodeEncodeError:  # a lone surrogate: pydicom writes "?" for it
            return None
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
        if implicit_vr:
            elements.append((tag, implicit_prefix + struct.pack("<I", len(data)) + data))
        elif len(data) > 0xFFFF:
            return None
        else:
            elements.append((tag, explicit_prefix + struct.pack("<H", len(data)) + data))
    elements.sort(key=lambda element: element[0])
    return b"".join(encoded for _, encoded in elements)


def unsupported_keys(identifier: Dataset) -> list[str]:
    """The attributes of a C-FIND identifier the node neither matches nor returns (a key outside
    `matching.KEYS`: InstitutionName, a private tag, a sequence), and the return-only keys given a
    value to match (the Number of ... Related counts, which PS3.4 does not match): they are ignored, so
    the answers say so (`pending_status`). Group lengths are no keys."""
    unsupported = []
    for element in identifier:
        keyword = element.keyword or str(element.tag)
        if element.tag.element == 0 or keyword in NOT_KEYS:
            continue
        key = KEYS.get(keyword)
        returned_only = keyword in GIVEN_RETURN_KEYS or (key is not None and not key.matchable)
        if key is None and keyword not in GIVEN_RETURN_KEYS or returned_only and _asks_a_match(element):
            unsupported.append(keyword)
    return unsupported


def _asks_a_match(element: DataElement) -> bool:
    """The element holds a value to match, not one that matches everything (`matching.is_universal`),
    so a return-only key sent so is returned, not ignored."""
    return not element.is_empty and not is_universal(str(element.value))


def pending_status(identifier: Dataset) -> int:
    """The status of every pending answer to `identifier`: 0xFF01 when one of its keys was not
    supported for existence or matching (PS3.4 Table C.4-1: a peer that was told 0xFF00 takes the
    answers as matched on InstitutionName=X, and a missing return key as a value the node does not
    have), else 0xFF00."""
    return PENDING_WITH_WARNING if unsupported_keys(identifier) else PENDING


class AnswerSender:
    """Sends the pending answers of one C-FIND request (`send`), for the handler of `EVT_C_FIND`
    whose generator then ends: pynetdicom sends the final success response after them."""

    def __init__(self, event: Any, status: int = PENDING):
        context = event.context
        self.context_id = int(context.context_id)
        syntax = context.transfer_syntax
        self.implicit_vr, self.little_endian = bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
        self.dimse, self.dul = event.assoc.dimse, event.assoc.dul
        self.limit = int(self.dimse.maximum_pdu_size) or UNLIMITED_PDU
        request = event.request
        self.response = C_FIND()
        self.response.MessageIDBeingRespondedTo = request.MessageID
        self.response.AffectedSOPClassUID = request.AffectedSOPClassUID
        self.response.Status = status  # `pending_status`: one for every answer of the request
        self.response.Identifier = BytesIO(b"\0\0")  # a data set is present: the command says so
        message = C_FIND_RSP()
        message.primitive_to_message(self.response)
        command = encode(message.command_set, True, True)
        assert command is not None, "pynetdicom encodes the command sets it builds"
        self.command = command

    def drain(self) -> None:
        """Wait until the DUL has sent every answer handed to it, then, if the peer sent something
        meanwhile (a C-CANCEL, an A-ABORT), until the DUL has read it: the caller checks next."""
        while not self.dul.to_provider_queue.empty() and self.dul.is_alive():
            time.sleep(DRAIN_POLL_S)
        if not self._peer_sent():
            return
        deadline = time.monotonic() + READ_TURN_S
        while self._peer_sent() and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
        time.sleep(2 * DRAIN_POLL_S)  # read is not yet decoded: the DUL decodes it right after

    def _peer_sent(self) -> bool:
        """Whether bytes from the peer wait on the association's socket (a look, not a read)."""
        sock = self.dul.socket.socket if self.dul.socket is not None else None
        if sock is None or sock.fileno() < 0:
            return False
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def send(self, answers: Answers, row: dict[str, Any]) -> bool:
        """Send the answer for `row`: one PDU when its identifier is written here and fits the peer's
        maximum PDU length; otherwise pynetdicom encodes it (with pydicom) and fragments it. False
        when pydicom could not encode it either (nothing sent)."""
        if pynetdicom_config.LOG_RESPONSE_IDENTIFIERS:  # the node logs at debug level
            PROTOCOL_LOG.debug("Find SCP Response Identifier:")
            for line in pretty_dataset(answers.dataset(row)):
                PROTOCOL_LOG.debug(line)
        identifier = encode_identifier(answers.values(row), self.implicit_vr) if self.little_endian else None
        if identifier is not None and 2 * PDV_OVERHEAD + len(self.command) + len(identifier) <= self.limit:
            pdata = P_DATA()  # filled as pynetdicom's own DIMSE messages fill theirs
            pdata.presentation_data_value_list.append((self.context_id, COMMAND_LAST + self.command))
            pdata.presentation_data_value_list.append((self.context_id, DATA_SET_LAST + identifier))
            self.dul.send_pdu(pdata)
            return True
        if identifier is None:
            identifier = encode(answers.dataset(row), self.implicit_vr, self.little_endian)
            if not identifier:
                return False
        self.response.Identifier = BytesIO(identifier)
        self.dimse.send_msg(self.response, self.context_id)
        return True
