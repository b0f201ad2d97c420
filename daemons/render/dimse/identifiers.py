"""The Identifier of a C-FIND, C-GET or C-MOVE request (PS3.4 C.4), read strictly.

pydicom reads a data set leniently, as it should a file on disk: an element whose declared length
runs past the end is given the bytes that are there, and a stub of a header after the last element
is dropped. For a query that leniency widens what is matched: a Study Instance UID cut short
became a universal match, and the peer received studies it never asked for. So the encoding of an
identifier is checked element by element before it is matched, and one that is not a whole data
set is refused with "Unable to process" (0xC000); a whole one whose keys make no sense for its
information model is refused by the matching (QueryError, 0xA900).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    # generated at import time (sop_class._generate_sop_classes): mypy cannot see them
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from daemons.render.catalogue.matching import QueryError, QueryTooLarge
from daemons.render.ingest.element_budget import character_sets_in, character_sets_problem
from daemons.render.statuses import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
)
from shared.errors import log_failure

STUDY_ROOT_MODELS = (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
                     StudyRootQueryRetrieveInformationModelMove)
#: The one request a presentation context of each query/retrieve information model serves (PS3.4 C.4).
MODEL_REQUESTS: dict[str, type] = {
    PatientRootQueryRetrieveInformationModelFind: C_FIND, StudyRootQueryRetrieveInformationModelFind: C_FIND,
    PatientRootQueryRetrieveInformationModelGet: C_GET, StudyRootQueryRetrieveInformationModelGet: C_GET,
    PatientRootQueryRetrieveInformationModelMove: C_MOVE, StudyRootQueryRetrieveInformationModelMove: C_MOVE,
}
UNDEFINED_LENGTH = 0xFFFFFFFF
#: C-GET and C-MOVE: "Refused: Out of Resources - Unable to calculate number of matches" (PS3.4 Tables
#: C.4-2, C.4-3); their out-of-resources status, where C-FIND's is 0xA700, which they do not define.
UNABLE_TO_CALCULATE_MATCHES = 0xA701

log = logging.getLogger(__name__)


class MalformedIdentifier(ValueError):
    """An identifier whose bytes are not a whole data set in its context's transfer syntax."""


class ForeignSopClass(ValueError):
    """A request naming another SOP class than the presentation context it came on."""


def foreign_sop_class(event: Any) -> str | None:
    """Why a request's Affected SOP Class UID is not its presentation context's abstract syntax, or
    None when it is: the context names the SOP class a request is for (PS3.7 9.1.1.1, 9.1.2.1), and
    the node checks a request against its context's, so one naming another (a Study Root C-FIND
    on a Patient Root context, at a level only the latter has) is refused, 0x0122, whatever its service."""
    named, context = str(event.request.AffectedSOPClassUID), str(event.context.abstract_syntax)
    return None if named == context else f"a request naming {named} on a presentation context of {context}"


def refusal(service: str, exc: Exception) -> tuple[Dataset, str]:
    """The failure status of a C-FIND, C-GET or C-MOVE request that could not be matched, and the
    reason its refusal is audited with: one rule for the three services. A request the peer got
    wrong is logged as information; anything else is the node's own failure, logged with its trace
    and audited without it (a trace is for the operator, not for the audit trail). A query too large
    to match is out of resources in the service's own code (a C-GET got C-FIND's 0xA700). The status
    tells the peer why (`failure_status`)."""
    too_large = OUT_OF_RESOURCES if service == "C-FIND" else UNABLE_TO_CALCULATE_MATCHES
    statuses = ((QueryTooLarge, too_large), (QueryError, DOES_NOT_MATCH_SOP_CLASS),
                (MalformedIdentifier, CANNOT_UNDERSTAND), (ForeignSopClass, SOP_CLASS_NOT_SUPPORTED))
    for kind, status in statuses:
        if isinstance(exc, kind):
            log.info("%s refused: %s", service, exc)
            reason = str(exc)[:200]
            return failure_status(status, reason, getattr(exc, "keyword", None)), reason
    log_failure(f"{service} failed", exc)  # a database's own message quotes row values: not logged
    return failure_status(CANNOT_UNDERSTAND, "processing failure"), "processing failure"


#: Error Comment (0000,0902) is LO: at most 64 characters of the default repertoire, no backslash.
ERROR_COMMENT_CHARS = 64


def failure_status(status: int, reason: str, keyword: str | None = None) -> Dataset:
    """A failure status that says why, as PS3.4 Table C.4-1 (and C.4-2, C.4-3) relates to it: the
    Error Comment (0000,0902), and the Offending Element (0000,0901) where one key is at fault. Before,
    the peer got the bare status ("DataSetDoesNotMatchSOPClass" in dcmtk) and the reason went only
    to the node's log. The comment is the reason cut to LO's 64 characters (the audit keeps it whole)."""
    comment = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in reason)
    if len(comment) > ERROR_COMMENT_CHARS:
        comment = comment[:ERROR_COMMENT_CHARS - 3].rstrip() + "..."
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment
    tag = tag_for_keyword(keyword) if keyword else None
    if tag is not None:
        answer.OffendingElement = [tag]
    return answer


def encoding_problem(raw: bytes, implicit_vr: bool, little_endian: bool) -> str | None:
    """What is wrong with the encoding of a data set, or None when every element is whole and
    nothing follows the last one. Nested sequence items are read by pydicom as it goes."""
    stream = io.BytesIO(raw)
    end = 0
    try:
        for element in data_element_generator(stream, implicit_vr, little_endian):
            if isinstance(element, RawDataElement) and element.length != UNDEFINED_LENGTH:
                present = len(element.value or b"")
                if present != element.length:
                    return (f"element {element.tag} declares {element.length} bytes but only {present} follow "
                            f"(the identifier is {len(raw)} bytes)")
            end = stream.tell()
    except Exception as exc:
        return f"its bytes cannot be read as a data set after byte {end}: {exc}"
    if end != len(raw):
        return f"{len(raw) - end} bytes after its last whole element (byte {end} of {len(raw)})"
    return None


def read_identifier(event: Any) -> tuple[str, Dataset]:
    """The request's Query/Retrieve Level and its Identifier. MalformedIdentifier when the bytes are
    not a whole data set, name too many character sets or hold a value that cannot be read; QueryError
    when the level is one the information model has not; ForeignSopClass when the request names another
    model than its context.

    The query contexts never take Deflated (`listener.QUERY_SYNTAXES`), so the bytes are the data set."""
    foreign = foreign_sop_class(event)
    if foreign is not None:
        raise ForeignSopClass(foreign)
    syntax, stream = event.context.transfer_syntax, event.request.Identifier
    raw = stream.getvalue() if stream is not None else b""
    # counted in its bytes: pydicom converts the values as soon as it reads the element, even in
    # `encoding_problem`'s walk (element_budget.CHARACTER_SETS_MAX, one rule with the uploads)
    problem = character_sets_problem(character_sets_in(raw, 0, syntax.is_implicit_VR, syntax.is_little_endian))
    if problem is not None:
        raise MalformedIdentifier(f"the identifier cannot be read: its {problem}")
    problem = encoding_problem(raw, syntax.is_implicit_VR, syntax.is_little_endian)
    if problem is not None:
        raise MalformedIdentifier(f"the identifier is not a whole data set: {problem}")
    identifier = event.identifier
    try:
        for _element in identifier:  # pydicom converts each value as it is first read
            pass
    except Exception as exc:
        raise MalformedIdentifier(f"the identifier has an element that cannot be read: {exc}") from exc
    return query_level(str(event.context.abstract_syntax), identifier), identifier


def query_level(model: str, identifier: Dataset) -> str:
    """The identifier's Query/Retrieve Level, refused when the information model has no such level."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level == "PATIENT" and model in STUDY_ROOT_MODELS:
        raise QueryError("the study root model has no PATIENT level")
    return level
