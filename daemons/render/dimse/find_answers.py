"""Sending a C-FIND's answers (PS3.4 C.4.1): each pending C-FIND-RSP as one P-DATA-TF PDU holding
its command set and its identifier, the command set encoded once per request.

pynetdicom's own path builds, for every answer, a pydicom dataset, encodes it, builds and encodes
the C-FIND-RSP's command set and hands each to its DUL as a separate P-DATA: about 0.8 ms per
answer on this project's 2-core machines, so a search matching 400 studies took 320 ms before its
first byte left (issue 11 asks 50 ms; `bench/cfind_cost.py`). Here:

* the command set of a pending answer is the same for every answer of a request (message ID being
  responded to, SOP class, status 0xFF00, a data set present): pynetdicom encodes it once;
* an identifier holds only Query/Retrieve Level, the keys asked for and perhaps Specific Character
  Set, all of short text VRs (`matching.Answers.values`), so `encode_identifier` writes its elements
  straight from the values in the negotiated little-endian syntax. It writes exactly what pydicom
  writes for the same dataset (tests/render/test_find_answers.py compares the bytes), and leaves
  to pydicom every answer it could not write so (another VR, a value pydicom would write in
  another character set or refuse, a big-endian or deflated context);
* the command set and the identifier go in one P-DATA-TF PDU (one message per PDU: pynetdicom as
  a receiver keeps only the first message of a PDU).

The final response (success, cancel or failure) is still pynetdicom's, after these in its DUL queue.
Pending answers sent here raise no `EVT_DIMSE_SENT` (the node's metrics count final responses only);
they are described in the log at debug level as pynetdicom describes its own.
"""

from __future__ import annotations

import functools
import logging
import struct
from io import BytesIO
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode, pretty_dataset
from pynetdicom.pdu_primitives import P_DATA

from daemons.render.catalogue.matching import Answers
from daemons.render.statuses import PENDING

#: where pynetdicom describes the answers it sends, at debug level (`listener.set_protocol_logging`)
PROTOCOL_LOG = logging.getLogger("pynetdicom.service_class")
#: VRs whose value is text written as it is (padded to an even length) with a 2-byte length in
#: Explicit VR, and whether the dataset's character set applies to it (PS3.5 6.1.2.3)
SHORT_TEXT_VRS = {"AE": False, "AS": False, "CS": False, "DA": False, "DS": False, "DT": False, "IS": False,
                  "TM": False, "UI": False, "LO": True, "PN": True, "SH": True}
#: the most bytes a PDU of this module holds when the peer sets no limit (maximum length 0)
UNLIMITED_PDU = 1 << 20
#: a PDV item's own bytes: its length (4), presentation context ID (1), message control header (1)
PDV_OVERHEAD = 6
COMMAND_LAST = b"\x03"  # message control header: command, last fragment
DATA_SET_LAST = b"\x02"  # data set, last fragment


@functools.cache
def _element(keyword: str) -> tuple[int, bytes, bytes, bool, bytes] | None:
    """(tag, Explicit VR prefix, Implicit VR prefix, character set applies, padding) of a keyword,
    None when its VR is not one `encode_identifier` writes."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    vr = dictionary_VR(tag)
    if vr not in SHORT_TEXT_VRS:
        return None
    tag_bytes = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    return tag, tag_bytes + vr.encode(), tag_bytes, SHORT_TEXT_VRS[vr], b"\0" if vr == "UI" else b" "


def encode_identifier(values: list[tuple[str, str]], implicit_vr: bool) -> bytes | None:
    """An identifier of (keyword, text) pairs in Implicit or Explicit VR Little Endian, as pydicom
    writes it; None when one of them is not a short text element pydicom would write as its text
    (in ASCII, or in UTF-8 where the identifier names ISO_IR 192 and the VR follows it)."""
    utf8 = ("SpecificCharacterSet", "ISO_IR 192") in values
    elements = []
    for keyword, value in values:
        known = _element(keyword)
        if known is None:
            return None
        tag, explicit_prefix, implicit_prefix, follows_charset, padding = known
        if value.isascii():
            data = value.encode("ascii")
        elif utf8 and follows_charset:
            data = value.encode("utf-8")
        else:
            return None
        if len(data) % 2:
            data += padding
        if implicit_vr:
            elements.append((tag, implicit_prefix + struct.pack("<I", len(data)) + data))
        elif len(data) > 0xFFFF:
            return None
        else:
            elements.append((tag, explicit_prefix + struct.pack("<H", len(data)) + data))
    elements.sort(key=lambda element: element[0])
    return b"".join(encoded for _, encoded in elements)


class AnswerSender:
    """Sends the pending answers of one C-FIND request (`send`), for the handler of `EVT_C_FIND`
    whose generator then ends: pynetdicom sends the final success response after them."""

    def __init__(self, event: Any):
        context = event.context
        self.context_id = int(context.context_id)
        syntax = context.transfer_syntax
        self.implicit_vr, self.little_endian = bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
        self.deflated = bool(syntax.is_deflated)
        self.dimse, self.dul = event.assoc.dimse, event.assoc.dul
        self.limit = int(self.dimse.maximum_pdu_size) or UNLIMITED_PDU
        request = event.request
        self.response = C_FIND()
        self.response.MessageIDBeingRespondedTo = request.MessageID
        self.response.AffectedSOPClassUID = request.AffectedSOPClassUID
        self.response.Status = PENDING
        self.response.Identifier = BytesIO(b"\0\0")  # a data set is present: the command says so
        message = C_FIND_RSP()
        message.primitive_to_message(self.response)
        command = encode(message.command_set, True, True)
        assert command is not None, "pynetdicom encodes the command sets it builds"
        self.command = command

    def send(self, answers: Answers, row: dict[str, Any]) -> bool:
        """Send the answer for `row`: one PDU when its identifier is written here and fits the peer's
        maximum PDU length; otherwise pynetdicom encodes it (with pydicom) and fragments it. False
        when pydicom could not encode it either (nothing sent)."""
        if pynetdicom_config.LOG_RESPONSE_IDENTIFIERS:  # the node logs at debug level
            PROTOCOL_LOG.debug("Find SCP Response Identifier:")
            for line in pretty_dataset(answers.dataset(row)):
                PROTOCOL_LOG.debug(line)
        plain = self.little_endian and not self.deflated
        identifier = encode_identifier(answers.values(row), self.implicit_vr) if plain else None
        if identifier is not None and 2 * PDV_OVERHEAD + len(self.command) + len(identifier) <= self.limit:
            pdata = P_DATA()  # filled as pynetdicom's own DIMSE messages fill theirs
            pdata.presentation_data_value_list.append((self.context_id, COMMAND_LAST + self.command))
            pdata.presentation_data_value_list.append((self.context_id, DATA_SET_LAST + identifier))
            self.dul.send_pdu(pdata)
            return True
        if identifier is None:
            identifier = encode(answers.dataset(row), self.implicit_vr, self.little_endian, self.deflated)
            if not identifier:
                return False
        self.response.Identifier = BytesIO(identifier)
        self.dimse.send_msg(self.response, self.context_id)
        return True
