"""DICOMweb rendered resources and thumbnails (PS3.18 §8.3.5, §10.4), and SIVR's reformats and 3D
views as rendered resources of a series (extensions, see docs/conformance.md).

Nothing here renders: the parameters of the standard are parsed by `daemons.render.api.query` and
mapped onto the node's own (`window` -> the VOI functions of daemons.render.imaging.voi, `viewport` ->
size box, crop region and mirroring), then the frame, reformat and 3D paths of `api_frames` and
`api_3d` draw, encode, cache and audit the image exactly as for the node's own API, so
`/rendered` and `/api/v1/records/{id}/frames/{i}` give the same pixels for the same window and
size. A series not yet in RAM is loaded on demand: a DICOMweb client cannot poll a load status.

Which image a resource shows:
- a frame list: those frames (several: multipart/related, one part per frame);
- an instance: its first frame, or every frame when the client accepts multipart/related;
- a series or study: its first instance's first frame (as Orthanc does), or with multipart/related
  every frame, series by series in slice order (a study's series without images, e.g. reports, passed over);
- a thumbnail: the middle frame of the instance (frames: of the list; series: of the middle
  instance; study: of the middle instance of the first series with images), in a 128x128 box by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, stream_with_context

from daemons.render.api import query
from daemons.render.api.frames import FrameImage, frame_image
from daemons.render.api.mpr3d import (
    DEFAULT_IMAGE_QUALITY,
    DEFAULT_SIZE,
    MPR_QUALITY,
    PlaneImage,
    check_plane,
    loaded_stack,
    plane_image,
    plane_layout,
    render_mode,
    render_state,
    view_sequence,
    view_spec,
    volume_image,
)
from daemons.render.api.records import start_loading
from daemons.render.dicomweb import ROOT, bp, resolve
from daemons.render.dicomweb.accept import Offer, asked
from daemons.render.dicomweb.multipart import new_boundary, write_related
from daemons.render.imaging.annotate import Annotation
from daemons.render.imaging.encode import MIMETYPES
from daemons.render.imaging.pixels import PRESETS
from daemons.render.node import node
from daemons.render.stacks import Stack, frame_stack
from shared.auth import require_auth
from shared.errors import ApiError
from shared.roles import ROLES

DEFAULT_MEDIA_TYPE = "image/jpeg"
MEDIA_TYPES = {mimetype: fmt for fmt, mimetype in MIMETYPES.items()}
THUMBNAIL_BOX = (128, 128)
MAX_FRAME_LIST = 4096
#: output pixels one multipart answer may render: 1,024 frames of 512x512, or 64 of 2048x2048 (100
#: frames at viewport=2048,2048, 400 Mpx, were 128 MB of PNG and 5 s of a worker; a study of long
#: series at that size held one for minutes)
MAX_MULTIPART_PX = 2**28



# --- media types ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """An acceptable answer: an image format, alone or as the parts of multipart/related."""

    fmt: str
    multipart: bool


#: the image formats in the order a wildcard offers them: the default first
FORMATS = tuple(dict.fromkeys((MEDIA_TYPES[DEFAULT_MEDIA_TYPE], *MEDIA_TYPES.values())))


def _offers(several: bool) -> list[Offer[Choice]]:
    """The answers a rendered resource can give, in its order of preference: each image format alone
    (not for `several` images: PS3.18 10.4.4), then as the parts of multipart/related."""
    singles = [] if several else [Offer(Choice(fmt, False), (MIMETYPES[fmt],), multipart=False) for fmt in FORMATS]
    return singles + [Offer(Choice(fmt, True), (MIMETYPES[fmt],), multipart=True) for fmt in FORMATS]


def _not_acceptable(why: str) -> ApiError:
    offered = ", ".join(MEDIA_TYPES)
    return ApiError(406, "not_acceptable",
                    f"{why}; rendered images are offered as {offered} (default {DEFAULT_MEDIA_TYPE}), several "
                    "as multipart/related with one of them as type")


def negotiate(several: bool) -> Choice:
    """The answer to give (`accept.Asked.choose`): `several` images need multipart/related (406 when
    it is not accepted)."""
    chosen = asked().choose(_offers(several))
    if chosen:
        return chosen[0].value
    raise _not_acceptable("several frames need multipart/related; type=image/... in the Accept header "
                          "(or accept parameter)" if several else
                          "the Accept header (or accept parameter) names no media type offered here")


# --- parameters -------------------------------------------------------------------------------

def _max_px() -> int:
    return int(node().config["limits"]["max_output_px"])


def _frame_spec(fmt: str, viewport: query.Viewport, rows: int, cols: int, annotation: Annotation,
                thumbnail: bool) -> FrameImage:
    return FrameImage(fmt=fmt, quality=query.quality(fmt), box=viewport.box, region=viewport.region(rows, cols),
                      window=None if thumbnail else query.rendered_window(), flip=viewport.flip,
                      annotation=annotation, invert=not thumbnail and query.invert())


# --- what a path shows ------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One image to render: a frame of a series' record, with what annotations would say of it."""

    record_id: str
    index: int
    series: Any
    instance_uid: str
    instance_number: int | None
    frame_number: int


def _instance_targets(row: Any, series: Any, numbers: list[int] | None = None) -> list[Target]:
    span = resolve.frame_span(row)
    numbers = numbers or list(range(1, span.count + 1))
    return [Target(span.record_id, span.record_frame(n), series, row.sop_instance_uid, row.instance_number, n)
            for n in numbers]


def _series_targets(series: Any) -> list[Target]:
    targets: list[Target] = []
    for row in resolve.renderable_instances(series):
        targets.extend(_instance_targets(row, series))
    return sorted(targets, key=lambda t: t.index)


def _middle(items: list) -> Any:
    return items[(len(items) - 1) // 2]


def _first_instance(series: Any) -> Any:
    rows = resolve.renderable_instances(series)
    if not rows:
        raise ApiError(404, "not_found", f"series {series.series_uid} has no instances")
    return rows[0]


def _middle_instance(series: Any) -> Any:
    rows = resolve.renderable_instances(series)
    if not rows:
        raise ApiError(404, "not_found", f"series {series.series_uid} has no instances")
    return _middle(rows)


def _study_series(study_uid: str) -> list[Any]:
    """The series of a study that have images (`resolve.image_series`), in SeriesNumber order."""
    rows = resolve.series_of_study(study_uid)
    if not rows:
        raise ApiError(404, "not_found", f"study {study_uid} has no series")
    return resolve.image_series(rows)


# --- answers ----------------------------------------------------------------------------------

def _annotation(target: Target, wanted: tuple[str, ...]) -> Annotation:
    """The text `annotation` asks for: patient (name, id, birth date, sex) and technique (modality,
    study date, series, instance and frame numbers, the explicit window)."""
    if not wanted:
        return Annotation()
    series = target.series
    study = series.study
    patient = study.patient
    top: tuple[str, ...] = ()
    bottom: tuple[str, ...] = ()
    if "patient" in wanted:
        top = tuple(line for line in (
            str(patient.name).replace("^", " ").strip(), f"ID {patient.patient_id}",
            " ".join(v for v in (patient.birth_date, patient.sex) if v)) if line and line != "ID ")
    if "technique" in wanted:
        window = query.rendered_window()
        numbers = (f"Se {_or_dash(series.series_number)}  Im {_or_dash(target.instance_number)}  "
                   f"Fr {target.frame_number}")
        lines = [" ".join(v for v in (series.modality, study.study_date, series.description) if v), numbers]
        if window is not None:
            lines.append(f"W {window.width:g} C {window.center:g} {window.function}")
        bottom = tuple(line for line in lines if line)
    return Annotation(top, bottom)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _check_showable(targets: list[Target]) -> None:
    """422 naming the first target the upload found short or undecodable, in DICOM's numbering
    (before a multipart answer starts: its status cannot change once streaming)."""
    for record_id in dict.fromkeys(t.record_id for t in targets):
        bad = node().manifest(record_id).render.bad_frame_messages()
        for target in targets:
            if target.record_id == record_id and target.index in bad:
                raise ApiError(422, "frame_error", f"frame {target.frame_number} of instance {target.instance_uid} "
                                                  f"cannot be shown: {bad[target.index]}")


def _frame_size(target: Target) -> tuple[int, int]:
    """Rows and columns of the target's frame: its stack's (a series may hold several sizes)."""
    stack = frame_stack(node().manifest(target.record_id), target.index)
    return stack.rows, stack.columns


def _render(target: Target, fmt: str, started: float, thumbnail: bool, conditional: bool = True) -> Response:
    _check_showable([target])
    start_loading(target.record_id)
    box = THUMBNAIL_BOX if thumbnail else None
    viewport = query.viewport(_max_px(), box)
    annotation = Annotation() if thumbnail else _annotation(target, query.annotation_items())
    spec = _frame_spec(fmt, viewport, *_frame_size(target), annotation, thumbnail)
    return frame_image(target.record_id, target.index, spec, started, conditional)


def _check_budget(viewport: query.Viewport, sizes: list[tuple[int, int]]) -> None:
    """400 when the images of a multipart answer could hold more than MAX_MULTIPART_PX pixels: each
    counted at its viewport box, or at its frame's size without one (an upper bound: the box is filled
    at most)."""
    total = sum(viewport.box[0] * viewport.box[1] if viewport.box else rows * cols for rows, cols in sizes)
    if total > MAX_MULTIPART_PX:
        size = f"{viewport.box[0]}x{viewport.box[1]}" if viewport.box else "their own size"
        raise query.bad(f"{len(sizes)} images at {size} are {total / 2**20:.0f} Mpx, more than the "
                        f"{MAX_MULTIPART_PX // 2**20} Mpx one multipart answer renders: ask for fewer frames "
                        "(a frame list, or series by series) or a smaller viewport")


def _multipart(targets: list[Target], fmt: str, started: float) -> Response:
    """Every target rendered, one part each, streamed as they are made.

    Everything that can refuse the request is checked before the 200 goes out, as the status cannot
    change once streaming: the parameters, the viewport's source rectangle against every distinct
    frame size of the targets (it may start outside a smaller series of a study), the pixels all the
    images may hold (`_check_budget`), the frames the
    upload found unshowable, and the loading of every record (415 stored only, 507 over the memory
    budget). What can still fail only while streaming (a frame not decoded within
    `render.frame_wait_s`, 409; a record evicted meanwhile) cuts the answer after the parts already
    sent (`multipart.write_related`), so a client sees it incomplete."""
    viewport = query.viewport(_max_px())
    query.rendered_window()
    query.annotation_items()
    query.invert()
    query.quality(fmt)
    sizes = [_frame_size(target) for target in targets]
    for rows, cols in dict.fromkeys(sizes):
        viewport.region(rows, cols)
    _check_budget(viewport, sizes)
    _check_showable(targets)
    for record_id in dict.fromkeys(target.record_id for target in targets):
        start_loading(record_id)
    boundary = new_boundary()
    mimetype = MIMETYPES[fmt]

    def parts() -> Iterator[tuple[str, bytes]]:
        for target in targets:
            yield mimetype, _render(target, fmt, started, thumbnail=False, conditional=False).get_data()

    what = f"rendered, {len(targets)} frames from instance {targets[0].instance_uid}"
    return Response(stream_with_context(write_related(parts(), boundary, what)), headers={
        "Content-Type": f'multipart/related; type="{mimetype}"; boundary={boundary}',
        "Cache-Control": "private, no-store"})


def _answer(targets: Callable[[], list[Target]], representative: Target, several: bool) -> Response:
    """Every target as multipart when the client accepts it (required when `several`), else the
    `representative` alone."""
    started = time.perf_counter()
    choice = negotiate(several)
    if choice.multipart:
        return _multipart(targets(), choice.fmt, started)
    return _render(representative, choice.fmt, started, thumbnail=False)


def _thumbnail(target: Target) -> Response:
    """One small image, in the best image type accepted (multipart/related gives its part type)."""
    return _render(target, negotiate(False).fmt, time.perf_counter(), thumbnail=True)


# --- rendered resources -----------------------------------------------------------------------

@bp.get("/studies/<study_uid>/rendered")
@require_auth(*ROLES)
def study_rendered(study_uid: str) -> Response:
    series_rows = _study_series(study_uid)
    representative = _instance_targets(_first_instance(series_rows[0]), series_rows[0], [1])[0]
    return _answer(lambda: [t for series in series_rows for t in _series_targets(series)], representative,
                   several=False)


@bp.get("/studies/<study_uid>/series/<series_uid>/rendered")
@require_auth(*ROLES)
def series_rendered(study_uid: str, series_uid: str) -> Response:
    series = resolve.series(study_uid, series_uid)
    representative = _instance_targets(_first_instance(series), series, [1])[0]
    return _answer(lambda: _series_targets(series), representative, several=False)


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/rendered")
@require_auth(*ROLES)
def instance_rendered(study_uid: str, series_uid: str, sop_uid: str) -> Response:
    series = resolve.series(study_uid, series_uid)
    targets = _instance_targets(resolve.instance(study_uid, series_uid, sop_uid), series)
    return _answer(lambda: targets, targets[0], several=False)


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<frame_list>/rendered")
@require_auth(*ROLES)
def frames_rendered(study_uid: str, series_uid: str, sop_uid: str, frame_list: str) -> Response:
    numbers = resolve.frame_numbers(frame_list, MAX_FRAME_LIST)
    series = resolve.series(study_uid, series_uid)
    targets = _instance_targets(resolve.instance(study_uid, series_uid, sop_uid), series, numbers)
    return _answer(lambda: targets, targets[0], several=len(targets) > 1)


# --- thumbnails -------------------------------------------------------------------------------

@bp.get("/studies/<study_uid>/thumbnail")
@require_auth(*ROLES)
def study_thumbnail(study_uid: str) -> Response:
    series = _study_series(study_uid)[0]
    return _thumbnail(_middle(_instance_targets(_middle_instance(series), series)))


@bp.get("/studies/<study_uid>/series/<series_uid>/thumbnail")
@require_auth(*ROLES)
def series_thumbnail(study_uid: str, series_uid: str) -> Response:
    series = resolve.series(study_uid, series_uid)
    return _thumbnail(_middle(_instance_targets(_middle_instance(series), series)))


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/thumbnail")
@require_auth(*ROLES)
def instance_thumbnail(study_uid: str, series_uid: str, sop_uid: str) -> Response:
    series = resolve.series(study_uid, series_uid)
    return _thumbnail(_middle(_instance_targets(resolve.instance(study_uid, series_uid, sop_uid), series)))


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<frame_list>/thumbnail")
@require_auth(*ROLES)
def frames_thumbnail(study_uid: str, series_uid: str, sop_uid: str, frame_list: str) -> Response:
    numbers = resolve.frame_numbers(frame_list, MAX_FRAME_LIST)
    series = resolve.series(study_uid, series_uid)
    return _thumbnail(_middle(_instance_targets(resolve.instance(study_uid, series_uid, sop_uid), series,
                                                numbers)))


# --- SIVR extensions: reformats and 3D views of a series --------------------------------------

def _whole_series(study_uid: str, series_uid: str) -> tuple[str, Any, Stack]:
    """The series' record id, its fully loaded record and the stack the `stack` parameter names
    (the first without it) at the time point `phase` names (the first without it), loading it and
    waiting up to `dicomweb.load_wait_s`; 409 loading with Retry-After beyond."""
    stack_id, phase = query.stack(), query.phase()
    record_id = resolve.series(study_uid, series_uid).id
    record = start_loading(record_id)
    record.wait_complete(float(current_app.config["SIVR"].get_key("dicomweb.load_wait_s")))
    return record_id, *loaded_stack(record_id, stack_id, phase)


def _single_image_format(what: str) -> str:
    choice = negotiate(False)
    if choice.multipart:
        raise _not_acceptable(f"{what} is one image, not multipart/related")
    return choice.fmt


def _no_annotation(what: str) -> None:
    if query.ANNOTATION.raw() is not None:
        raise query.bad(f"query parameter annotation is not supported on {what}")


@bp.get("/studies/<study_uid>/series/<series_uid>/rendered/mpr/<plane>/<int(signed=True):index>")
@require_auth(*ROLES)
def series_mpr(study_uid: str, series_uid: str, plane: str, index: int) -> Response:
    """A reformat of the series (as GET /api/v1/records/{id}/mpr/{plane}/{index})."""
    started = time.perf_counter()
    check_plane(plane)
    _no_annotation("reformats")
    fmt = _single_image_format("a reformat")
    window = query.rendered_window()
    viewport = query.viewport(_max_px())
    quality = query.quality(fmt, MPR_QUALITY)
    slab_mm, slab_mode = query.slab()
    record_id, record, stack = _whole_series(study_uid, series_uid)
    geometry = render_state(current_app).prepared(record, stack).geometry
    layout = plane_layout(geometry, plane)
    region = viewport.region(geometry.shape[layout.down_axis], geometry.shape[layout.right_axis])
    spec = PlaneImage(fmt, quality, viewport.box, region, window, None, slab_mm, slab_mode, viewport.flip,
                      query.invert())
    return plane_image(record_id, record, stack, plane, index, spec, started)


@bp.get("/studies/<study_uid>/series/<series_uid>/rendered/volume")
@require_auth(*ROLES)
def series_volume(study_uid: str, series_uid: str) -> Response:
    """A 3D view of the series (as GET /api/v1/records/{id}/volume, with DICOMweb's window and
    viewport: VW,VH only; `preset` names a window for MIP/MinIP/AvgIP as there)."""
    started = time.perf_counter()
    _no_annotation("3D views")
    fmt = _single_image_format("a 3D view")
    render, mode = render_mode()
    viewport = query.viewport(_max_px(), DEFAULT_SIZE)
    if viewport.source is not None:
        raise query.bad("query parameter viewport: a 3D view takes VW,VH only (zoom and angles frame it)")
    # parsed in every mode, as the node API's volume does: DVR leaves the window unused (view_spec)
    # and its `preset` names a transfer function, not a window
    window = query.rendered_window(None) if mode == "dvr" else query.rendered_window(PRESETS)
    view = view_spec(mode, render, window, viewport.box or DEFAULT_SIZE)
    quality = query.quality(fmt, DEFAULT_IMAGE_QUALITY[render])
    view_id, seq = view_sequence()
    record_id, record, stack = _whole_series(study_uid, series_uid)
    return volume_image(record_id, record, stack, view, None, fmt, quality, view_id, seq, started, query.invert())


# --- OpenAPI (daemons.render.api.openapi), from the same declarations the routes parse with ------

def _uid(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64},
            "description": description}


_STUDY, _SERIES, _INSTANCE = (_uid("study", "Study Instance UID"), _uid("series", "Series Instance UID"),
                              _uid("instance", "SOP Instance UID"))
_FRAMES = {"name": "frames", "in": "path", "required": True, "description": "frame numbers from 1, comma-separated",
           "schema": {"type": "string", "pattern": f"^{resolve.FRAME_LIST_PATTERN}$"}}
_IMAGES: dict[str, dict] = {mimetype: {} for mimetype in MIMETYPES.values()}


def openapi_paths(error_responses: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The rendered resources' entries of the node's OpenAPI document (`error_responses(*codes)`
    gives the document's error answers)."""
    rendered = {"description": "the rendered image (several: multipart/related, one part per frame)",
                "content": {**_IMAGES, "multipart/related": {}}}
    single = {"description": "the rendered image", "content": _IMAGES}
    errors = error_responses(400, 401, 404, 406, 409, 415, 422)
    levels = {"/studies/{study}": [_STUDY], "/studies/{study}/series/{series}": [_STUDY, _SERIES],
              "/studies/{study}/series/{series}/instances/{instance}": [_STUDY, _SERIES, _INSTANCE],
              "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}":
                  [_STUDY, _SERIES, _INSTANCE, _FRAMES]}
    paths: dict[str, Any] = {}
    for prefix, params in levels.items():
        paths[f"{ROOT}{prefix}/rendered"] = {"parameters": params, "get": {
            "summary": "DICOMweb rendered resource (PS3.18 §8.3.5)",
            "parameters": [p.openapi() for p in query.RENDERED_PARAMS], "responses": {"200": rendered, **errors}}}
        paths[f"{ROOT}{prefix}/thumbnail"] = {"parameters": params, "get": {
            "summary": "DICOMweb thumbnail: the middle frame, 128x128 by default",
            "parameters": [p.openapi() for p in query.THUMBNAIL_PARAMS], "responses": {"200": single, **errors}}}
    series = f"{ROOT}/studies/{{study}}/series/{{series}}/rendered"
    paths[f"{series}/mpr/{{plane}}/{{index}}"] = {
        "parameters": [_STUDY, _SERIES, {"name": "plane", "in": "path", "required": True,
                                         "schema": {"enum": ["axial", "coronal", "sagittal"]}},
                       {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}],
        "get": {"summary": "SIVR extension: a reformat (MPR, slab) of the series",
                "parameters": [p.openapi() for p in query.RENDERED_MPR_PARAMS],
                "responses": {"200": single, **errors}}}
    paths[f"{series}/volume"] = {"parameters": [_STUDY, _SERIES], "get": {
        "summary": "SIVR extension: a 3D view (MIP, MinIP, AvgIP, DVR) of the series",
        "parameters": [p.openapi() for p in query.RENDERED_VOLUME_PARAMS],
        "responses": {"200": single, **error_responses(400, 401, 404, 406, 409, 415, 422, 503)}}}
    return paths
