"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data of the node's studies.

- `/studies/{study}[/series/{series}[/instances/{sop}]]`: multipart/related of application/dicom
  parts, read from the encrypted store one instance at a time while the answer streams (a study is
  never held in RAM); transfer syntaxes as `syntax` explains (stored bytes bit-exact, or Explicit
  VR Little Endian).
- `.../metadata`: a JSON array of the instances' DICOM JSON (`metadata`).
- `.../instances/{sop}/frames/{n[,m...]}`: the frames' pixel data, native or as stored.
- `.../instances/{sop}/bulk/{path}`: a BulkDataURI of the metadata.
Reads are open to any signed-in user whose token is for this node (cross-institution reading is by
design) and every one is audited per series (`note_view("dicomweb", record id)`).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pydicom
from flask import Flask, Response
from pydicom.dataset import Dataset

from daemons.render.dicomweb import ROOT, bp, resolve
from daemons.render.dicomweb.accept import ANY, DICOM, OCTETS, asked
from daemons.render.dicomweb.metadata import find_element, metadata_cache
from daemons.render.dicomweb.multipart import new_boundary, related_content_type, write_related
from daemons.render.dicomweb.syntax import (
    bulk_form,
    frame_bytes,
    frame_choice,
    instance_form,
    instance_syntax,
    json_answer,
    needs_stored_syntax,
    not_acceptable,
)
from daemons.render.imaging.decode import little_endian_value
from daemons.render.imaging.transcode import BIG_ENDIAN, EXPLICIT_LE, frame_count, stored_syntax, to_explicit_le
from daemons.render.node import node
from daemons.render.stored_only import syntax_text
from daemons.render.view_audit import note_view
from shared.auth import require_auth
from shared.errors import ApiError
from shared.roles import ORIGINAL_FILE_READERS, ROLES

AUDIT_KIND = "dicomweb"
MAX_FRAMES_PER_REQUEST = 1000
INSTANCE_PATH = "/studies/<study>/series/<series>/instances/<sop>"


def instance_url(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The WADO-RS URL of an instance on this node (STOW-RS answers and BulkDataURIs name it)."""
    return f"{node().url}{ROOT}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def study_url(study_uid: str) -> str:
    return f"{node().url}{ROOT}/studies/{study_uid}"


def _audit(series_rows: list[Any]) -> None:
    for row in series_rows:
        note_view(AUDIT_KIND, row.id)


# --- instances ---------------------------------------------------------------------------------
def _stream_instances(rows: list[Any], study_uid: str, series_uids: dict[str, str],
                      single_item: bool = False) -> Response:
    """The instances as multipart/related, read and (where asked) transcoded one at a time; an
    instance resource (`single_item`) as its Part 10 file alone where the request prefers the
    single-part `application/dicom` (`syntax.instance_form`).

    The first is read before the answer starts, so that one damaged instance asked alone gets a
    422 rather than a 200 cut short; a later one found damaged cuts the answer (`multipart.AnswerCut`),
    which tells the client it is incomplete."""
    wanted = asked()
    the_node = node()

    def refused(syntax: str) -> bool:
        """Whether the request takes an instance stored in `syntax` in no form this resource has."""
        return (instance_form(wanted, syntax) if single_item else instance_syntax(wanted, syntax)) is None

    if needs_stored_syntax(wanted, single_item):  # only a specific other syntax: each instance must be in it
        bulk_base = _bulk_base(study_uid, series_uids)
        for entry in metadata_cache().entries(the_node, rows, bulk_base):
            if refused(entry.syntax):
                raise not_acceptable(f"an instance is stored in {entry.syntax}; this node sends instances as "
                                     f"stored (transfer-syntax=*) or in {EXPLICIT_LE} only")
    for row in rows:  # a stored-only instance cannot be transcoded: refused before the answer starts
        kept = the_node.manifest(row.series_id).stored_only_blob(row.blob)
        if kept is not None and refused(kept.transfer_syntax or ""):
            raise not_acceptable(f"instance {row.sop_instance_uid} is stored only, in "
                                 f"{syntax_text(kept.transfer_syntax or '')}, which this node cannot decode: ask "
                                 f"for it as stored (transfer-syntax=* or transfer-syntax={kept.transfer_syntax})")

    def parts() -> Iterator[tuple[str, bytes]]:
        for row in rows:
            raw = resolve.read_instance(the_node, row)
            syntax = _syntax_of(raw)
            yield _instance_bytes(raw, syntax, instance_syntax(wanted, syntax))

    if not single_item:
        made = first_made(parts())
    else:  # read first: whether it goes single-part may depend on its stored syntax
        raw = resolve.read_instance(the_node, rows[0])
        syntax = _syntax_of(raw)
        form = instance_form(wanted, syntax)
        content_type, body = _instance_bytes(raw, syntax, form.syntax if form is not None else None)
        if form is not None and not form.multipart:  # the Part 10 file as the body (PS3.18 10.4.4)
            return _single_part(body, content_type)
        made = iter([(content_type, body)])
    boundary = new_boundary()
    response = Response(write_related(made, boundary, f"WADO-RS instances of study {study_uid}"),
                        content_type=related_content_type(DICOM, boundary))
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _single_part(body: bytes, content_type: str) -> Response:
    """A resource of one item answered as that item alone (PS3.18 10.4.4), uncached as every
    WADO-RS answer is."""
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _syntax_of(raw: bytes) -> str:
    return stored_syntax(pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]))


def _instance_bytes(raw: bytes, syntax: str, chosen: str | None) -> tuple[str, bytes]:
    """An instance stored in `syntax` as sent in `chosen` (`syntax.instance_syntax`): its part's
    media type and its bytes, as stored or transcoded to Explicit VR Little Endian."""
    if chosen in (ANY, syntax):
        return f"{DICOM}; transfer-syntax={syntax}", raw
    return f"{DICOM}; transfer-syntax={EXPLICIT_LE}", to_explicit_le(raw)


def warm_metadata(app: Flask, record_id: str, datasets: dict[str, Dataset]) -> None:
    """Build the metadata of a series that just became complete (the ingest's series-complete rule),
    so its first `/metadata` is served from RAM instead of parsing every file (3 s for 500). From
    the ingest's own parse of the files (`datasets`, by SHA-256) where it holds them: reading them
    back from the store (decrypted, decompressed, parsed again) was three quarters of the work, and
    it competed with the C-STOREs of the next series for the node's cores."""
    with app.app_context():
        database = node().models.database
        try:
            cat = node().models.catalogue
            series = cat.Series.get_or_none(cat.Series.id == record_id)
            if series is not None:
                base = _bulk_base(series.study.study_uid, {series.id: series.series_uid})
                metadata_cache().entries(node(), resolve.instances_of_series(series), base, datasets)
        finally:
            if not database.is_closed():
                database.close()


def _bulk_base(study_uid: str, series_uids: dict[str, str]) -> Callable[[Any], str]:
    """The BulkDataURI base of an instance row (used from the metadata cache's worker threads)."""
    root = f"{node().url}{ROOT}"

    def base(row: Any) -> str:
        return f"{root}/studies/{study_uid}/series/{series_uids[row.series_id]}/instances/{row.sop_instance_uid}/bulk"
    return base


def _study_rows(study_uid: str) -> tuple[list[Any], list[Any], dict[str, str]]:
    series_rows = resolve.series_of_study(study_uid)
    rows = [row for series in series_rows for row in resolve.instances_of_series(series)]
    return series_rows, rows, {s.id: s.series_uid for s in series_rows}


@bp.get("/studies/<study>")
@require_auth(*ORIGINAL_FILE_READERS)
def retrieve_study(study: str) -> Response:
    series_rows, rows, series_uids = _study_rows(study)
    _audit(series_rows)
    return _stream_instances(rows, study, series_uids)


@bp.get("/studies/<study>/series/<series>")
@require_auth(*ORIGINAL_FILE_READERS)
def retrieve_series(study: str, series: str) -> Response:
    series_row = resolve.series(study, series)
    _audit([series_row])
    return _stream_instances(resolve.instances_of_series(series_row), study, {series_row.id: series})


@bp.get(INSTANCE_PATH)
@require_auth(*ORIGINAL_FILE_READERS)
def retrieve_instance(study: str, series: str, sop: str) -> Response:
    row = resolve.instance(study, series, sop)
    _audit([row.series])
    return _stream_instances([row], study, {row.series_id: series}, single_item=True)


# --- metadata ----------------------------------------------------------------------------------
def _metadata(rows: list[Any], study_uid: str, series_uids: dict[str, str]) -> Response:
    media = json_answer(asked(), "metadata")
    entries = metadata_cache().entries(node(), rows, _bulk_base(study_uid, series_uids))
    body = b"[" + b",".join(entry.json for entry in entries) + b"]"
    response = Response(body, content_type=media)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/studies/<study>/metadata")
@require_auth(*ROLES)
def study_metadata(study: str) -> Response:
    series_rows, rows, series_uids = _study_rows(study)
    _audit(series_rows)
    return _metadata(rows, study, series_uids)


@bp.get("/studies/<study>/series/<series>/metadata")
@require_auth(*ROLES)
def series_metadata(study: str, series: str) -> Response:
    series_row = resolve.series(study, series)
    _audit([series_row])
    return _metadata(resolve.instances_of_series(series_row), study, {series_row.id: series})


@bp.get(f"{INSTANCE_PATH}/metadata")
@require_auth(*ROLES)
def instance_metadata(study: str, series: str, sop: str) -> Response:
    row = resolve.instance(study, series, sop)
    _audit([row.series])
    return _metadata([row], study, {row.series_id: series})


# --- frames and bulk data ----------------------------------------------------------------------
def _frames_response(ds: pydicom.Dataset, numbers: list[int]) -> Response:
    """The frames `numbers` as multipart/related, or one frame alone as the body where the request
    prefers that single-part answer (`syntax.frame_choice`)."""
    choice = frame_choice(asked(), stored_syntax(ds), single_item=len(numbers) == 1)
    if not choice.multipart:
        return _single_part(frame_bytes(ds, numbers[0], choice), choice.content_type)
    parts = first_made((choice.content_type, frame_bytes(ds, n, choice)) for n in numbers)  # one in RAM at a time
    boundary = new_boundary()
    response = Response(write_related(parts, boundary, f"WADO-RS frames of instance {ds.SOPInstanceUID}"),
                        content_type=related_content_type(choice.part_type, boundary))
    response.headers["Cache-Control"] = "private, no-store"
    return response


def first_made(parts: Iterator[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
    """`parts` with its first part made now, before the answer starts: a refusal that holds for every
    part (a 406 for frames that cannot be sent apart, a 404 for a series deleted meanwhile) is then
    an answer with its status, not a 200 whose stream breaks off."""
    first = next(parts, None)
    return itertools.chain(() if first is None else (first,), parts)


def _instance_dataset(study: str, series: str, sop: str) -> tuple[Any, pydicom.Dataset]:
    row = resolve.instance(study, series, sop)
    _audit([row.series])
    return row, pydicom.dcmread(io.BytesIO(resolve.read_instance(node(), row)))


def _check_showable(row: Any, numbers: list[int]) -> None:
    """422 for a frame found short or undecodable when it arrived (its file was stored for the others),
    415 for every frame of a stored-only instance (`resolve.frame_span`)."""
    resolve.frame_span(row)
    bad = node().manifest(row.series_id).render.bad_frame_messages()
    if not bad:
        return
    span = resolve.frame_span(row)
    for number in numbers:
        reason = bad.get(span.record_frame(number))
        if reason is not None:
            raise ApiError(422, "frame_error", f"frame {number} of instance {row.sop_instance_uid} cannot be "
                           f"sent: {reason}")


@bp.get(f"{INSTANCE_PATH}/frames/<frames>")
@require_auth(*ROLES)
def retrieve_frames(study: str, series: str, sop: str, frames: str) -> Response:
    numbers = resolve.frame_numbers(frames, MAX_FRAMES_PER_REQUEST)
    row, ds = _instance_dataset(study, series, sop)
    if "PixelData" not in ds:
        raise ApiError(404, "not_found", f"instance {sop} has no pixel data")
    count = frame_count(ds)
    missing = [n for n in numbers if n > count]
    if missing:
        raise ApiError(404, "not_found", f"frame {missing[0]} does not exist: the instance has frames 1..{count}")
    _check_showable(row, numbers)
    return _frames_response(ds, numbers)


@bp.get(f"{INSTANCE_PATH}/bulk/<path:element>")
@require_auth(*ROLES)
def retrieve_bulk(study: str, series: str, sop: str, element: str) -> Response:
    """A BulkDataURI: pixel data as the instance's frames, any other value as application/octet-stream."""
    row, ds = _instance_dataset(study, series, sop)
    found = find_element(ds, element.upper())
    if found is None or not isinstance(found.value, (bytes, bytearray)):
        raise ApiError(404, "not_found", f"instance {sop} has no bulk data at {element[:80]!r}")
    if found.tag == 0x7FE00010 and element.upper() == "7FE00010":
        numbers = list(range(1, frame_count(ds) + 1))
        _check_showable(row, numbers)
        return _frames_response(ds, numbers)
    multipart = bulk_form(asked())
    if multipart is None:
        raise not_acceptable("bulk data is sent as application/octet-stream")
    value = found.value
    if stored_syntax(ds) == BIG_ENDIAN:  # bulk data is little endian (PS3.18 8.7.3.3.2)
        value = little_endian_value(found, int(ds.get("BitsAllocated", 16) or 16))
    if not multipart:
        return _single_part(bytes(value), OCTETS)
    boundary = new_boundary()
    response = Response(write_related([(OCTETS, bytes(value))], boundary, "WADO-RS bulk data"),
                        content_type=related_content_type(OCTETS, boundary))
    response.headers["Cache-Control"] = "private, no-store"
    return response
