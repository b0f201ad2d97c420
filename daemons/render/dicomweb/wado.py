"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data of the node's studies.

- `/studies/{study}[/series/{series}[/instances/{sop}]]`: multipart/related of application/dicom
  parts, read from the encrypted store one instance at a time while the answer streams (a study is
  never held in RAM); transfer syntaxes as `syntax` explains (stored bytes bit-exact, or Explicit
  VR Little Endian).
- `.../metadata`: a JSON array of the instances' DICOM JSON (`metadata`).
- `.../instances/{sop}/frames/{n[,m...]}`: the frames' pixel data, native or as stored.
- `.../instances/{sop}/bulk/{path}`: a BulkDataURI of the metadata.
- `/studies/{study}[/series/{series}[/instances/{sop}]]/pixeldata` and `.../bulkdata` (PS3.18
  10.4.1.1.5-6): the pixel data, or every bulk data value, of the instances, one instance read at a
  time while the answer streams, each part named by its Content-Location.
Reads are open to any signed-in user whose token is for this node (cross-institution reading is by
design) and every one is audited per series (`note_view("dicomweb", record id)`).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pydicom
from flask import Flask, Response
from pydicom.dataset import Dataset
from pydicom.uid import UID

from daemons.render.dicomweb import ROOT, bp, resolve
from daemons.render.dicomweb.accept import ANY, DICOM, OCTETS, asked
from daemons.render.dicomweb.metadata import InstanceMeta, find_element, metadata_cache
from daemons.render.dicomweb.multipart import (
    AnswerPart,
    media_type,
    new_boundary,
    related_content_type,
    write_related,
)
from daemons.render.dicomweb.syntax import (
    FrameChoice,
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
Part = TypeVar("Part")


def instance_url(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The WADO-RS URL of an instance on this node (STOW-RS answers and BulkDataURIs name it)."""
    return f"{node().url}{ROOT}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def study_url(study_uid: str) -> str:
    return f"{node().url}{ROOT}/studies/{study_uid}"


def _viewed(response: Response, series_rows: list[Any]) -> Response:
    """`response`, counting the series it shows in the view audit. Every route calls this with its
    answer made, its form chosen and its first part read (a multipart answer streams the rest): after
    every check that refuses it, as a 404, 406, 415 or 422 shows no image. Counted before those checks,
    an RLE series asked for as JPEG answered 406 and the audit said its images had been viewed."""
    for row in series_rows:
        note_view(AUDIT_KIND, row.id)
    return response


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

    if needs_stored_syntax(wanted, single_item):  # a specific syntax named or refused: each instance checked
        entries = metadata_cache().entries(the_node, rows, _bulk_base(study_uid, series_uids))
        others = [(row, entry.syntax) for row, entry in zip(rows, entries, strict=True) if refused(entry.syntax)]
        if others:
            raise not_acceptable(_in_other_syntaxes(others, len(rows), series_uids))
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
            chosen = instance_syntax(wanted, syntax)
            assert chosen is not None, "an instance the request takes in no form is refused above"
            yield _instance_bytes(raw, syntax, chosen)

    if not single_item:
        _, made = first_made(parts())
    else:  # read first: whether it goes single-part may depend on its stored syntax
        raw = resolve.read_instance(the_node, rows[0])
        syntax = _syntax_of(raw)
        form = instance_form(wanted, syntax)
        assert form is not None, "an instance the request takes in no form is refused above"
        content_type, body = _instance_bytes(raw, syntax, form.syntax)
        if not form.multipart:  # the Part 10 file as the body (PS3.18 10.4.4)
            return _single_part(body, content_type)
        made = iter([(content_type, body)])
    boundary = new_boundary()
    response = Response(write_related(made, boundary, f"WADO-RS instances of study {study_uid}"),
                        content_type=related_content_type(DICOM, boundary))
    response.headers["Cache-Control"] = "private, no-store"
    return response


#: the instances a 406 on their stored syntaxes names (the rest are counted)
NAMED_INSTANCES = 5


def _in_other_syntaxes(refused: list[tuple[Any, str]], total: int, series_uids: dict[str, str]) -> str:
    """Why a request for instances is 406 (`refused`: the rows it takes in no form, and their stored
    syntaxes): which instances, of which series, are stored in which syntax, and the Accept that takes
    them all. Before, it said "an instance is stored in X": of a study whose series came in different
    syntaxes, the client could not tell which to ask for apart. The UIDs are the caller's to read (it
    may read the study)."""
    named = "; ".join(f"instance {row.sop_instance_uid} of series {series_uids[row.series_id]} in "
                      f"{syntax_text(syntax)}" for row, syntax in refused[:NAMED_INSTANCES])
    more = f"; and {len(refused) - NAMED_INSTANCES} more" if len(refused) > NAMED_INSTANCES else ""
    return (f"{len(refused)} of the {total} instances asked for are stored in a transfer syntax the request "
            f"does not take, and this node sends an instance as stored or in {EXPLICIT_LE} only: {named}{more}. "
            'Send Accept: multipart/related; type="application/dicom"; transfer-syntax=* for each as stored, '
            f'or multipart/related; type="application/dicom" for each in {EXPLICIT_LE}, or ask for those '
            "instances apart")


def _single_part(body: bytes, content_type: str) -> Response:
    """A resource of one item answered as that item alone (PS3.18 10.4.4), uncached as every
    WADO-RS answer is."""
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _syntax_of(raw: bytes) -> str:
    return stored_syntax(pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]))


def _instance_bytes(raw: bytes, syntax: str, chosen: str) -> tuple[str, bytes]:
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


def _instance_urls(study_uid: str, series_uids: dict[str, str]) -> Callable[[Any], str]:
    """The WADO-RS URL of an instance row of the study (used from the metadata cache's worker threads)."""
    root = f"{node().url}{ROOT}"

    def url(row: Any) -> str:
        return f"{root}/studies/{study_uid}/series/{series_uids[row.series_id]}/instances/{row.sop_instance_uid}"
    return url


def _bulk_base(study_uid: str, series_uids: dict[str, str]) -> Callable[[Any], str]:
    """The BulkDataURI base of an instance row (used from the metadata cache's worker threads)."""
    url = _instance_urls(study_uid, series_uids)
    return lambda row: f"{url(row)}/bulk"


def _study_rows(study_uid: str) -> tuple[list[Any], list[Any], dict[str, str]]:
    series_rows = resolve.series_of_study(study_uid)
    rows = [row for series in series_rows for row in resolve.instances_of_series(series)]
    return series_rows, rows, {s.id: s.series_uid for s in series_rows}


@bp.get("/studies/<study>")
@require_auth(*ORIGINAL_FILE_READERS)
def retrieve_study(study: str) -> Response:
    series_rows, rows, series_uids = _study_rows(study)
    return _viewed(_stream_instances(rows, study, series_uids), series_rows)


@bp.get("/studies/<study>/series/<series>")
@require_auth(*ORIGINAL_FILE_READERS)
def retrieve_series(study: str, series: str) -> Response:
    series_row = resolve.series(study, series)
    return _viewed(_stream_instances(resolve.instances_of_series(series_row), study, {series_row.id: series}),
                   [series_row])


@bp.get(INSTANCE_PATH)
@require_auth(*ORIGINAL_FILE_READERS)
def retrieve_instance(study: str, series: str, sop: str) -> Response:
    row = resolve.instance(study, series, sop)
    return _viewed(_stream_instances([row], study, {row.series_id: series}, single_item=True), [row.series])


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
    return _viewed(_metadata(rows, study, series_uids), series_rows)


@bp.get("/studies/<study>/series/<series>/metadata")
@require_auth(*ROLES)
def series_metadata(study: str, series: str) -> Response:
    series_row = resolve.series(study, series)
    return _viewed(_metadata(resolve.instances_of_series(series_row), study, {series_row.id: series}), [series_row])


@bp.get(f"{INSTANCE_PATH}/metadata")
@require_auth(*ROLES)
def instance_metadata(study: str, series: str, sop: str) -> Response:
    row = resolve.instance(study, series, sop)
    return _viewed(_metadata([row], study, {row.series_id: series}), [row.series])


# --- frames and bulk data ----------------------------------------------------------------------
def _frames_response(ds: pydicom.Dataset, numbers: list[int]) -> Response:
    """The frames `numbers` as multipart/related, or one frame alone as the body where the request
    prefers that single-part answer (`syntax.frame_choice`)."""
    choice = frame_choice(asked(), stored_syntax(ds), single_item=len(numbers) == 1)
    if not choice.multipart:
        return _single_part(frame_bytes(ds, numbers[0], choice), choice.content_type)
    _, parts = first_made((choice.content_type, frame_bytes(ds, n, choice)) for n in numbers)  # one in RAM at a time
    boundary = new_boundary()
    response = Response(write_related(parts, boundary, f"WADO-RS frames of instance {ds.SOPInstanceUID}"),
                        content_type=related_content_type(choice.part_type, boundary))
    response.headers["Cache-Control"] = "private, no-store"
    return response


def first_made(parts: Iterator[Part]) -> tuple[Part | None, Iterator[Part]]:
    """The first of `parts` (None: there is none), made now, before the answer starts, and `parts` with it:
    a refusal that holds for every part (a 406 for frames that cannot be sent apart, a 404 for a series
    deleted meanwhile) is then an answer with its status, not a 200 whose stream breaks off; and the
    first part's media type can name the answer's `type` (RFC 2387: the root part's)."""
    first = next(parts, None)
    return first, itertools.chain(() if first is None else (first,), parts)


def _instance_dataset(study: str, series: str, sop: str) -> tuple[Any, pydicom.Dataset]:
    row = resolve.instance(study, series, sop)
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
    return _viewed(_frames_response(ds, numbers), [row.series])


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
        return _viewed(_frames_response(ds, numbers), [row.series])
    multipart = bulk_form(asked())
    if multipart is None:
        raise not_acceptable(BULK_DATA_FORM)
    if not multipart:
        return _viewed(_single_part(_bulk_value(ds, found), OCTETS), [row.series])
    boundary = new_boundary()
    response = Response(write_related([(OCTETS, _bulk_value(ds, found))], boundary, "WADO-RS bulk data"),
                        content_type=related_content_type(OCTETS, boundary))
    response.headers["Cache-Control"] = "private, no-store"
    return _viewed(response, [row.series])


BULK_DATA_FORM = "bulk data is sent as application/octet-stream"


def _bulk_value(ds: pydicom.Dataset, element: Any) -> bytes:
    """A bulk data value as sent: little endian, also of an instance stored big endian (PS3.18 8.7.3.3.2)."""
    if stored_syntax(ds) == BIG_ENDIAN:
        return little_endian_value(element, int(ds.get("BitsAllocated", 16) or 16))
    return bytes(element.value)


# --- pixel data and bulk data of a study, series or instance (PS3.18 10.4.1.1.5, 10.4.1.1.6) ----
PIXEL_DATA_PATH = "7FE00010"


def _pixel_data_parts(ds: pydicom.Dataset, url: str, choice: FrameChoice) -> Iterator[AnswerPart]:
    """An instance's Pixel Data as parts (PS3.18 10.4.3.3.6). Stored uncompressed, the whole value in one
    part named by its BulkDataURI in the metadata (it is in RAM as read). Stored compressed, one part per
    frame named by its frame's URL, sent as stored (a single-frame media type, PS3.18 8.7.3.3.2) or
    decoded: frames are made one at a time, so a long cine is never decoded whole into one part."""
    if choice.stored or UID(stored_syntax(ds)).is_compressed:
        for number in range(1, frame_count(ds) + 1):
            yield choice.content_type, frame_bytes(ds, number, choice), f"{url}/frames/{number}"
        return
    yield choice.content_type, _bulk_value(ds, ds["PixelData"]), f"{url}/bulk/{PIXEL_DATA_PATH}"


def _bulk_uris(model: Any) -> Iterator[str]:
    """The BulkDataURIs of a DICOM JSON model, in its order (nested sequence items too)."""
    if isinstance(model, dict):
        for key, value in model.items():
            if key == "BulkDataURI":
                yield value
            else:
                yield from _bulk_uris(value)
    elif isinstance(model, list):
        for item in model:
            yield from _bulk_uris(item)


def _has_bulk_pixel_data(entry: InstanceMeta) -> bool:
    """Whether an instance's metadata names its Pixel Data by a BulkDataURI (small values are inline)."""
    return "BulkDataURI" in json.loads(entry.json).get(PIXEL_DATA_PATH, {})


def _stream_bulk(rows: list[Any], study_uid: str, series_uids: dict[str, str], pixel_data_only: bool) -> Response:
    """The pixel data (`pixel_data_only`: `rows` all have frames) or all the bulk data (every BulkDataURI
    of their metadata) of the instances `rows`, multipart, read one instance at a time as the answer
    streams. The forms are chosen before it starts, per stored syntax, by the frames' rule
    (`syntax.frame_choice`; other values as `bulk_form`, whose application/octet-stream is then required
    only where some instance has such a value): instances that cannot be sent as the request asks are a
    406 naming what they can be sent as, not a 200 cut short. The answer's `type` is its first part's
    media type (RFC 2387), which may be a compressed frame's (`image/jp2`)."""
    wanted = asked()
    the_node = node()
    url = _instance_urls(study_uid, series_uids)
    entries = metadata_cache().entries(the_node, rows, _bulk_base(study_uid, series_uids))
    choices: dict[str, FrameChoice] = {}
    for row, entry in zip(rows, entries, strict=True):
        if pixel_data_only or _has_bulk_pixel_data(entry):
            _check_showable(row, list(range(1, entry.frames + 1)))  # the frames' 415 and 422, before the 200
            choices[entry.syntax] = choices.get(entry.syntax) or frame_choice(wanted, entry.syntax)
    if not pixel_data_only:
        uris = [uri for entry in entries for uri in _bulk_uris(json.loads(entry.json))]
        if not uris:
            raise ApiError(404, "not_found", "these instances hold no bulk data: their metadata has every value "
                           "inline (values up to 1024 bytes are); read it with .../metadata")
        others = any(uri.rpartition("/bulk/")[2] != PIXEL_DATA_PATH for uri in uris)
        if others and bulk_form(wanted, single_item=False) is None:
            raise not_acceptable("values other than pixel data are sent as application/octet-stream: add it to Accept")

    def parts() -> Iterator[AnswerPart]:
        for row, entry in zip(rows, entries, strict=True):
            uris = [PIXEL_DATA_PATH] if pixel_data_only else list(_bulk_uris(json.loads(entry.json)))
            if not uris:
                continue
            ds = pydicom.dcmread(io.BytesIO(resolve.read_instance(the_node, row)))
            for uri in uris:
                path = uri.rpartition("/bulk/")[2]
                if path == PIXEL_DATA_PATH:
                    yield from _pixel_data_parts(ds, url(row), choices[entry.syntax])
                    continue
                found = find_element(ds, path)
                if found is not None:
                    yield OCTETS, _bulk_value(ds, found), uri

    first, made = first_made(parts())
    part_type = OCTETS if first is None else media_type(first[0])[0]
    boundary = new_boundary()
    what = "pixel data" if pixel_data_only else "bulk data"
    response = Response(write_related(made, boundary, f"WADO-RS {what} of study {study_uid}"),
                        content_type=related_content_type(part_type, boundary))
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _pixel_data_rows(series_rows: list[Any]) -> list[Any]:
    """The instances with frames of these series (stored-only ones left out, as the rendered resources
    leave them: 415 when that is every instance), in series then instance order."""
    return [row for series in resolve.image_series(series_rows) for row in resolve.renderable_instances(series)]


@bp.get("/studies/<study>/pixeldata")
@require_auth(*ROLES)
def study_pixel_data(study: str) -> Response:
    series_rows = resolve.series_of_study(study)
    return _viewed(_stream_bulk(_pixel_data_rows(series_rows), study, {s.id: s.series_uid for s in series_rows},
                                True), series_rows)


@bp.get("/studies/<study>/series/<series>/pixeldata")
@require_auth(*ROLES)
def series_pixel_data(study: str, series: str) -> Response:
    series_row = resolve.series(study, series)
    return _viewed(_stream_bulk(_pixel_data_rows([series_row]), study, {series_row.id: series}, True), [series_row])


@bp.get(f"{INSTANCE_PATH}/pixeldata")
@require_auth(*ROLES)
def instance_pixel_data(study: str, series: str, sop: str) -> Response:
    row = resolve.instance(study, series, sop)
    resolve.frame_span(row)  # 415 for a stored-only instance, as its frames
    return _viewed(_stream_bulk([row], study, {row.series_id: series}, True), [row.series])


@bp.get("/studies/<study>/bulkdata")
@require_auth(*ROLES)
def study_bulk_data(study: str) -> Response:
    series_rows, rows, series_uids = _study_rows(study)
    return _viewed(_stream_bulk(rows, study, series_uids, False), series_rows)


@bp.get("/studies/<study>/series/<series>/bulkdata")
@require_auth(*ROLES)
def series_bulk_data(study: str, series: str) -> Response:
    series_row = resolve.series(study, series)
    return _viewed(_stream_bulk(resolve.instances_of_series(series_row), study, {series_row.id: series}, False),
                   [series_row])


@bp.get(f"{INSTANCE_PATH}/bulkdata")
@require_auth(*ROLES)
def instance_bulk_data(study: str, series: str, sop: str) -> Response:
    row = resolve.instance(study, series, sop)
    return _viewed(_stream_bulk([row], study, {row.series_id: series}, False), [row.series])
