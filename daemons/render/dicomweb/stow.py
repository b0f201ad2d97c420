"""STOW-RS (PS3.18 10.5): `POST /studies[/{study}]` with a multipart/related body of application/dicom parts.

The body is checked whole before anything is stored: its media type (415), its framing (400), and
the node's upload limits (413: the body, the file count and the files' total size, the same
`limits.*` as a browser upload). Then every part's header is counted from its bytes, all parts
together as one upload (`_count`), before any is parsed; then each part is read for its UIDs, the
parts are grouped by SeriesInstanceUID and each series goes through the node's one ingest service in one call (as a
browser upload does), so a series lands in the same record whether it came by C-STORE, upload or
STOW, with the same validation, isolation and audit.

When a series' batch is refused, the batch is split in halves and each half tried again, down to
single instances: the good instances are stored and each bad one is reported with its reason,
at a cost of a few more validations instead of one append per instance. A refusal that names its
instance (a SOP Instance UID stored with other content) fails that one and tries the rest again
without it, so it is validated and audited once; one about the whole series (a new series in
another patient's study) fails the batch at once. Ingest stores a call's
files all or none, so no file is ever half stored.

A series the store itself cannot take (unavailable or unreadable, a folder the node may not write,
an analysis that fails) fails that series' instances alone, with 0x0110 (processing failure, as
C-STORE answers it) and what went wrong; the request's other series are stored or tried all the
same. It was the whole request's error (503, or a 500), and a client whose earlier series were
stored was not told so. A request that stored nothing and failed only for passing trouble (the
store or the database unreachable) is still answered 503 with Retry-After, as every other door of
the node answers it: clients retry a 503, not a 409.

The answer (application/dicom+json) lists each stored instance in ReferencedSOPSequence with its
RetrieveURL and each refused one in FailedSOPSequence with a FailureReason (the C-STORE status the
same refusal gets over DIMSE, `daemons.render.statuses.status_of`): 200 when all were stored, 202 when
some were, 409 when none was.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pydicom
from flask import Response, request

from daemons.render.dicomweb import bp
from daemons.render.dicomweb.accept import asked
from daemons.render.dicomweb.multipart import boundary_of, media_type, split_related
from daemons.render.dicomweb.syntax import json_answer
from daemons.render.dicomweb.wado import instance_url, study_url
from daemons.render.ingest.service import Actor, ingest_service
from daemons.render.ingest.upload_checks import (
    MIB,
    Limits,
    ParsedFile,
    UploadError,
    check_native,
    check_parts,
)
from daemons.render.ingest.upload_memory import Reservation, stored_body
from daemons.render.node import node
from daemons.render.statuses import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    status_of,
)
from daemons.render.store.interface import RecordUnreadable, StoreUnavailable
from daemons.render.store.local import Precompressed, StoreFull
from daemons.render.uids import identity_problem, is_uid, uid_of
from shared.access import require_own_institution
from shared.auth import current_identity, require_auth
from shared.db import is_transient
from shared.errors import ApiError, log_failure
from shared.roles import INSTANCE_STORERS

log = logging.getLogger(__name__)

DICOM = "application/dicom"
#: multipart framing allowed on top of the files themselves (delimiters and part headers)
FRAMING_BYTES_PER_PART = 1024
FRAMING_BYTES = 64 * 1024
READ_CHUNK = 1 << 20
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")  # not printable ASCII: never in a Warning header

# DICOM JSON tags of the response (PS3.18 Table 10.5.3-1)
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS = "00081150"
REFERENCED_SOP_INSTANCE = "00081155"
FAILURE_REASON = "00081197"


@dataclass
class Candidate:
    """One part of the body and what became of it."""

    number: int
    raw: bytes
    sop_class: str = ""
    sop_instance: str = ""
    study: str = ""
    series: str = ""
    parsed: ParsedFile | None = None  # the node's own check of the part, when it needs no decode worker
    ahead: Precompressed | None = None  # its compression for the store, started once its header passed
    stored: bool = False
    failure: int | None = None
    reason: str = ""
    #: the passing trouble its series failed on (the store unreachable, the database): a request that
    #: stored nothing and failed only so is answered 503 (`_store_body`)
    trouble: Exception | None = None

    def fail(self, status: int, reason: str) -> None:
        self.failure, self.reason = status, reason


def _read_body(limits: Limits, reservation: Reservation) -> bytearray:
    """The request body, refused with 413 as soon as it is larger than the node's limits allow.

    Read into one buffer grown as the bytes arrive (chunks joined at the end held the body twice
    while it was read), never reserved ahead of them: a Content-Length near the limit and a body
    trickled in would hold that much memory per request. Its parts are still copied once each
    for the ingest, so a body costs about three times its size at its peak (docs/conformance.md):
    each chunk is reserved as it arrives (`upload_memory`)."""
    allowed = limits.max_upload_bytes + FRAMING_BYTES + FRAMING_BYTES_PER_PART * limits.max_files
    too_large = ApiError(413, "over_limits", f"the body is over this node's upload limit of "
                         f"{limits.max_upload_bytes // MIB} MiB; send the instances in several requests")
    if request.content_length is not None and request.content_length > allowed:
        raise too_large
    body = bytearray()
    while True:
        chunk = request.stream.read(READ_CHUNK)  # a body cut short of its length is werkzeug's 400
        if not chunk:
            return body
        if len(body) + len(chunk) > allowed:
            raise too_large
        reservation.grow_to(len(body) + len(chunk))
        body += chunk


def _check_media_types() -> tuple[str, str]:
    """The body's boundary and the answer's media type; 415 unless the body is multipart/related of
    application/dicom, 406 for the answer."""
    media, params = media_type(request.headers.get("Content-Type", ""))
    if media != "multipart/related":
        raise ApiError(415, "unsupported_media_type",
                       f"STOW-RS takes multipart/related; type=\"{DICOM}\" bodies, not {media or 'no media type'}")
    part_type = params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise ApiError(415, "unsupported_media_type", f"only {DICOM} parts are stored (not {part_type}): "
                       "the metadata-and-bulk-data form of STOW-RS is not supported")
    answer_type = json_answer(asked(), "the STOW-RS answer")
    return boundary_of(request.headers["Content-Type"]), answer_type


def _candidate(number: int, part: Any) -> Candidate:
    """A body part, marked failed when it is not application/dicom."""
    candidate = Candidate(number, bytes(part.content))
    media, _ = part.content_type
    if media and media != DICOM:
        candidate.fail(CANNOT_UNDERSTAND, f"part {number} is {media}, not {DICOM}")
    return candidate


def _count(candidates: list[Candidate], limits: Limits) -> None:
    """Count every part's elements, items and text values from its bytes before any part is parsed
    (`upload_checks.check_parts`: the bounds of one file and of one upload, as a browser upload's):
    a part over those of one file fails alone, 0xA700 (out of resources) as over_limits is answered;
    the parts together past those of one upload (the request is one upload, whatever its series) fail
    all, unread. Parsed first, a part of a million empty items cost the node 22.9 s of CPU and 674 MB."""
    unread = [c for c in candidates if c.failure is None]
    try:
        refusals = check_parts([(f"part {c.number}", c.raw) for c in unread], limits)
    except UploadError as exc:
        for candidate in unread:
            candidate.fail(status_of(exc), f"{exc.code}: {exc.message}")
        return
    for candidate, refusal in zip(unread, refusals, strict=True):
        if refusal is not None:
            candidate.fail(status_of(refusal), f"{refusal.code}: {refusal.message}")


def _read(candidate: Candidate, study_uid: str | None, limits: Limits) -> None:
    """Read a counted part's UIDs, or mark it failed when it cannot be stored.

    A part the node checks itself (uncompressed: `upload_checks.check_native`) is parsed once, here,
    and that parse goes on to the ingest service; one refused there is read no further. Any other
    part's header is read for its UIDs (a deflated one was inflated and bounded by its count first).
    """
    number = candidate.number
    try:
        candidate.parsed = check_native(f"part {number}", candidate.raw, limits, counted=True)
        ds = (candidate.parsed.dataset if candidate.parsed is not None
              else pydicom.dcmread(io.BytesIO(candidate.raw), stop_before_pixels=True))
    except UploadError as exc:
        candidate.fail(status_of(exc), f"{exc.code}: {exc.message}")
        return
    except Exception as exc:  # anything a header parser can raise on foreign bytes
        candidate.fail(CANNOT_UNDERSTAND, f"part {number} is not a DICOM file ({type(exc).__name__})")
        return
    candidate.sop_class, candidate.sop_instance = uid_of(ds, "SOPClassUID"), uid_of(ds, "SOPInstanceUID")
    if candidate.parsed is not None:
        candidate.parsed.name = candidate.sop_instance  # files are named by their UID, as in `_store`
    candidate.study, candidate.series = uid_of(ds, "StudyInstanceUID"), uid_of(ds, "SeriesInstanceUID")
    problem = identity_problem(ds)  # before any decoding: the ingest would refuse it for this
    if problem:
        candidate.fail(CANNOT_UNDERSTAND, f"part {number}: {problem}")
    elif study_uid is not None and candidate.study != study_uid:
        candidate.fail(DOES_NOT_MATCH_SOP_CLASS, f"part {number} belongs to study {candidate.study}, "
                       f"not to {study_uid} named in the request")
    else:
        # zstd releases the GIL: the part is compressed on another core while the next ones are checked
        # (a compressed copy is about its part's size at most, and is let go once its series is stored,
        # `_store`: the body's three copies still bound the request)
        candidate.ahead = Precompressed.start(candidate.raw)


def _store(batch: list[Candidate], actor: Actor) -> None:
    """Store one series' candidates; a refused batch is split in halves until each refusal is one instance.
    Their compressed copies are let go once the batch is stored or refused, not kept to the answer."""
    try:
        _store_batch(batch, actor)
    finally:
        for candidate in batch:
            candidate.ahead = None


def _store_batch(batch: list[Candidate], actor: Actor) -> None:
    try:
        ingest_service().add([(c.sop_instance, c.raw) for c in batch], actor, checked=[c.parsed for c in batch],
                             ahead={c.sop_instance: c.ahead for c in batch if c.ahead is not None})
    except UploadError as exc:
        if len(batch) == 1:
            batch[0].fail(status_of(exc), f"{exc.code}: {exc.message}")
            return
        if exc.whole_series:  # every instance of the batch is of that series: each is refused so
            for candidate in batch:
                candidate.fail(status_of(exc), f"{exc.code}: {exc.message}")
            return
        named = [c for c in batch if exc.file is not None and c.sop_instance == exc.file]
        if named:  # the refusal names its instance: the others are tried again without it
            named[0].fail(status_of(exc), f"{exc.code}: {exc.message}")
            _store([c for c in batch if c is not named[0]], actor)
            return
        half = len(batch) // 2
        _store(batch[:half], actor)
        _store(batch[half:], actor)
        return
    except StoreFull:
        for candidate in batch:
            candidate.fail(OUT_OF_RESOURCES, "the node's disk is full")
        return
    except Exception as exc:  # any failure of this series: the other series' outcomes are still told
        reason = _store_failure(exc, batch)
        passing = isinstance(exc, StoreUnavailable) or is_transient(exc)
        for candidate in batch:
            candidate.fail(PROCESSING_FAILURE, reason)
            candidate.trouble = exc if passing else None
        return
    for candidate in batch:
        candidate.stored = True


def _store_failure(exc: Exception, batch: list[Candidate]) -> str:
    """The FailureReason text of a series the store or its analysis failed on (module doc): what went
    wrong and what to do, never the node's paths (they go to its log)."""
    series = batch[0].series
    if isinstance(exc, RecordUnreadable):  # its message names the record's file in the store, not the path
        log.warning("STOW-RS of series %s not stored: %s", series, exc)
        return f"store_unavailable: {exc}; nothing of this series was stored, send its instances again"
    if isinstance(exc, StoreUnavailable):
        log.warning("STOW-RS of series %s not stored, the record store is unavailable: %s", series, exc)
        return ("store_unavailable: the node's record store cannot be reached; nothing of this series was "
                "stored, send its instances again shortly")
    if isinstance(exc, ApiError):
        log.warning("STOW-RS of series %s not stored: %s %s", series, exc.code, exc.message)
        return f"{exc.code}: {exc.message}"
    if is_transient(exc):
        log.warning("STOW-RS of series %s not stored, the database is unavailable: %s", series, exc)
        return ("database_unavailable: the node's database did not answer; nothing of this series was stored, "
                "send its instances again shortly")
    log_failure(f"STOW-RS of series {series} failed", exc)  # a database's own message quotes row values
    return ("processing_failure: the node failed to store this series (the error was logged); nothing of it "
            "was stored: send its instances again, and tell the node's administrator if it fails again")


def _answer(candidates: list[Candidate], study_uid: str | None, answer_type: str) -> Response:
    stored = [c for c in candidates if c.stored]
    failed = [c for c in candidates if not c.stored]
    body: dict[str, Any] = {}
    studies = {c.study for c in stored} | ({study_uid} if study_uid else set())
    if len(studies) == 1:
        body[RETRIEVE_URL] = {"vr": "UR", "Value": [study_url(studies.pop())]}
    if stored:
        body[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [{
            REFERENCED_SOP_CLASS: {"vr": "UI", "Value": [c.sop_class]},
            REFERENCED_SOP_INSTANCE: {"vr": "UI", "Value": [c.sop_instance]},
            RETRIEVE_URL: {"vr": "UR", "Value": [instance_url(c.study, c.series, c.sop_instance)]},
        } for c in stored]}
    if failed:
        body[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [_failure_item(c) for c in failed]}
    status = 200 if not failed else 202 if stored else 409
    response = Response(json.dumps(body), status=status, content_type=answer_type)
    if failed:
        reasons = "; ".join(c.reason for c in failed[:3]) + (" ..." if len(failed) > 3 else "")
        text = f"{len(failed)} of {len(candidates)} instances failed: {reasons}".replace('"', "'")
        # a header value is one line of printable characters: gunicorn refuses any control character
        # (the answer, after its instances were stored, would be lost as a 500), and the reasons quote
        # part headers and attribute values, which may hold any character (a NUL, a non-ASCII letter)
        text = _UNPRINTABLE.sub("?", " ".join(text.split()))[:1000]
        response.headers["Warning"] = f'299 SIVR "{text}"'
    return response


def _failure_item(candidate: Candidate) -> dict[str, Any]:
    item: dict[str, Any] = {FAILURE_REASON: {"vr": "US", "Value": [candidate.failure]}}
    if candidate.sop_class:
        item[REFERENCED_SOP_CLASS] = {"vr": "UI", "Value": [candidate.sop_class]}
    if candidate.sop_instance:
        item[REFERENCED_SOP_INSTANCE] = {"vr": "UI", "Value": [candidate.sop_instance]}
    return item


@bp.post("/studies")
@bp.post("/studies/<study>")
@require_auth(*INSTANCE_STORERS)
def store_instances(study: str | None = None) -> Response:
    """Store the instances of a STOW-RS body; per-instance outcome in the answer (module docstring)."""
    identity = current_identity()
    the_node = node()
    require_own_institution(identity, the_node.institution_id, "storing instances on this node")
    if study is not None and not is_uid(study):  # nor would an answer's RetrieveURL be built from it
        raise ApiError(400, "validation_error", f"{study[:80]!r} in the path is not a Study Instance UID (digits and "
                       "dots, at most 64 characters)")
    boundary, answer_type = _check_media_types()
    ingest = ingest_service()
    with stored_body(ingest.memory, ingest.uploads, identity.user_id) as reservation:
        return _store_body(study, boundary, answer_type, reservation, Actor(identity.user_id, identity.username))


def _store_body(study: str | None, boundary: str, answer_type: str, reservation: Reservation,
                actor: Actor) -> Response:
    """Read, check and store the body of a request whose headers passed (`store_instances`)."""
    limits = node().limits
    parts = split_related(_read_body(limits, reservation), boundary, limits.max_files)
    total = sum(len(part.content) for part in parts)
    if total > limits.max_upload_bytes:
        raise ApiError(413, "over_limits", f"the instances are {total // MIB} MiB, over this node's upload limit "
                       f"of {limits.max_upload_bytes // MIB} MiB")
    candidates = [_candidate(number, part) for number, part in enumerate(parts, start=1)]
    del parts
    _count(candidates, limits)
    for candidate in candidates:
        if candidate.failure is None:
            _read(candidate, study, limits)
    by_series: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        if candidate.failure is None:
            by_series.setdefault(candidate.series, []).append(candidate)
    for batch in by_series.values():
        _store(batch, actor)
    troubles = [c.trouble for c in candidates if c.trouble is not None]
    if troubles and not any(c.stored for c in candidates) and all(c.trouble is not None for c in candidates):
        # nothing stored, and only for passing trouble: the whole request is answered as the node's
        # other doors answer it (503 with Retry-After), which clients retry; a 409 is final
        raise troubles[0]
    return _answer(candidates, study, answer_type)
