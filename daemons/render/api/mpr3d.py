"""Reformat (MPR) and 3D volume endpoints of the render node.

The rendering itself lives in `daemons.render.volume` (pure functions); this module validates
requests, reads the loaded record from the node's registry, bounds how much 3D work runs at once
and encodes the result. What it needs of the node and of a loaded record is declared here
(`VolumeNode`, `VolumeRecord`): `node.Node` and `records.LoadedRecord` provide it, and so does the
tests' stand-in, through the same code paths.

Bounded work, per server process: at most `render.max_concurrent_3d` volume views are rendered
and encoded at once (the slot is held through the encoding: a 2048² GIF or WebP costs 1.6-2.1 s of
a core, so a slot freed before it let one user run any number of encodes at once); a request that
cannot start within a short wait gets `503 busy` with `Retry-After`. A viewer
that drags sends `view_id` (any short token of its own) and an increasing `seq`; a request whose
`seq` is older than the newest seen for its `view_id` gets `409 superseded` without being rendered,
also when it was still waiting for its turn, so a queue of stale previews never builds up.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from flask import Blueprint, Flask, Response, current_app

from daemons.render.api import query
from daemons.render.api.image_headers import image_etag, image_response, mirrored_labels, not_modified
from daemons.render.imaging.geometry import Region, inverted, mirror
from daemons.render.imaging.image_cache import ImageCache
from daemons.render.imaging.pixels import Modality, Voi, Window
from daemons.render.imaging.planes import volume_frame
from daemons.render.imaging.voi import KeyedVoi, keyed, stack_voi, with_function
from daemons.render.imaging.webp_effort import WebpEffort, weak_etag
from daemons.render.metrics import register_timings, timed
from daemons.render.node import NODE_EXTENSION
from daemons.render.stacks import Stack, find_stack, stack_manifest, stack_voxels
from daemons.render.store.manifest import Manifest
from daemons.render.stored_only import require_renderable
from daemons.render.view_audit import note_view
from daemons.render.volume import (
    MODES,
    PRESETS,
    PreparedVolume,
    ViewSpec,
    prepare_volume,
)
from daemons.render.volume.backend import select_backend
from daemons.render.volume.geometry import view_labels
from daemons.render.volume.mpr import PLANES, plane_labels, plane_layout, reformat_image
from daemons.render.volume.raycast import RayCaster, default_voi
from daemons.render.volume.volume import CT_AIR_HU
from daemons.render.warm import WarmUp, warm_up_kernels
from shared.auth import current_identity, require_auth
from shared.errors import ApiError
from shared.roles import ROLES
from shared.validation import parse_record_id

bp = Blueprint("render_3d", __name__)
bp.record_once(register_timings)

EXTENSION = "sivr_render_3d"
DEFAULT_SIZE = (512, 512)
WAIT_S = {"interactive": 0.25, "still": 2.0}
RETRY_AFTER_S = "1"
DEFAULT_FORMAT = {"interactive": "jpeg", "still": "png"}
DEFAULT_IMAGE_QUALITY = {"interactive": 60, "still": 85}
MPR_QUALITY = 85
STILL_MAX_AGE_S = 3600
VIEWS_KEEP = 10_000
_VIEW_ID = re.compile(query.VIEW_ID.schema["pattern"])


class _Sequences:
    """Newest `seq` seen per `view_id` (bounded: the least recently used views are forgotten)."""

    def __init__(self, keep: int = VIEWS_KEEP):
        self._newest: OrderedDict[str, int] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def admit(self, view_id: str, seq: int) -> bool:
        """Record `seq`; False when a newer one of the same view was already seen."""
        with self._lock:
            newest = self._newest.get(view_id)
            if newest is not None and seq < newest:
                return False
            self._newest[view_id] = seq
            self._newest.move_to_end(view_id)
            while len(self._newest) > self._keep:
                self._newest.popitem(last=False)
            return True

    def is_newest(self, view_id: str, seq: int) -> bool:
        with self._lock:
            return self._newest.get(view_id, seq) <= seq


@runtime_checkable
class VolumeRecord(Protocol):
    """What reformats and 3D views read of a loaded record (`records.LoadedRecord`)."""

    @property
    def manifest(self) -> Manifest: ...
    @property
    def pixels(self) -> np.ndarray: ...
    @property
    def frames_total(self) -> int: ...
    @property
    def frames_ready(self) -> int: ...
    @property
    def complete(self) -> bool: ...
    @property
    def errors(self) -> dict[int, str]: ...
    @property
    def photometric(self) -> str: ...
    @property
    def rescale_slope(self) -> float: ...
    @property
    def rescale_intercept(self) -> float: ...
    @property
    def default_voi(self) -> Voi | None: ...
    def count_copy(self, nbytes: int) -> None: ...
    def modality(self) -> Modality: ...


class LoadedRecords(Protocol):
    """The node's loaded records (`records.RecordRegistry`)."""

    def get_loaded(self, record_id: str) -> VolumeRecord | None: ...


@runtime_checkable
class VolumeNode(Protocol):
    """What these endpoints need of the node (`node.Node`, at `app.extensions[NODE_EXTENSION]`)."""

    @property
    def registry(self) -> LoadedRecords: ...
    @property
    def images(self) -> ImageCache: ...
    @property
    def webp_effort(self) -> WebpEffort: ...
    def manifest(self, record_id: str, fresh: bool = False) -> Manifest: ...


def volume_node() -> VolumeNode:
    return current_app.extensions[NODE_EXTENSION]


class Render3D:
    """Per-app state of the 3D endpoints: back end, admission control, prepared volumes."""

    def __init__(self, backend_name: str, max_concurrent: int):
        self.caster: RayCaster = select_backend(backend_name)
        self.slots = threading.BoundedSemaphore(max(1, max_concurrent))
        self.sequences = _Sequences()
        # Keyed weakly by the loaded record (then by stack id and time point): an entry lives exactly as
        # long as the registry keeps the record, so evicting it frees the voxels and nothing here can
        # outlive the budget; a copy of its pixels is counted in the record's memory (`count_copy`).
        self._prepared: weakref.WeakKeyDictionary[VolumeRecord, dict[tuple[str, int], PreparedVolume]] = (
            weakref.WeakKeyDictionary())
        # Projection default windows, by (stack id, mode), as weakly: one per stack, its first time
        # point's, so a cine across time keeps one window.
        self._windows: weakref.WeakKeyDictionary[VolumeRecord, dict[tuple[str, str], Window]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        # Before the worker accepts a request (the app factory makes this state): a physician's
        # first 3D view then costs what later ones cost.
        self.warm_up: WarmUp = warm_up_kernels(self.caster)

    def prepared(self, record: VolumeRecord, stack: Stack) -> PreparedVolume:
        """The PreparedVolume of one stack of the record at its time point (`daemons.render.stacks`),
        made once per loaded copy of it: the time point's frames in spatial order, with the stack's
        own spacing and orientation. Voxels copied out of the record's pixels (a stack or time point
        whose frames are not stored one after another) count in the record's memory, so the node's
        budget sees them (at most the record's own size: every frame is in one stack's time point)."""
        with self._lock:
            volumes = self._prepared.setdefault(record, {})
            volume = volumes.get((stack.id, stack.phase))
            if volume is None:
                spacing, orientation, slice_direction = volume_frame(stack_manifest(record.manifest, stack))
                voxels = stack_voxels(record.pixels, stack)
                volume = prepare_volume(
                    voxels, spacing, orientation, record.rescale_slope, record.rescale_intercept,
                    record.photometric, record.default_voi, slice_direction,
                    CT_AIR_HU if _modality(record).upper() == "CT" else None)
                if not np.may_share_memory(volume.voxels, record.pixels):
                    record.count_copy(int(volume.voxels.nbytes))
                volumes[(stack.id, stack.phase)] = volume
            return volume

    def projection_window(self, record: VolumeRecord, stack: Stack, mode: str) -> Window:
        """The default window of projection `mode` (mip, minip, avg) of one stack of a record,
        measured once per loaded copy of it (RayCaster.default_window) on its first time point:
        every door to a 3D view, and every time point of the stack, uses this one."""
        with self._lock:
            known = self._windows.get(record, {}).get((stack.id, mode))
        if known is not None:
            return known
        window = self.caster.default_window(self.prepared(record, stack.at_phase(0)), mode)
        with self._lock:
            self._windows.setdefault(record, {})[(stack.id, mode)] = window
        return window


def install_render_state(app: Flask) -> Render3D:
    """Make the app's 3D state: called by the app factory, so the back end's probe and the kernels'
    warm-up run before the worker serves (not on the first request that happens to need them)."""
    config = app.config["SIVR"]
    state = app.extensions[EXTENSION] = Render3D(config.get_key("render.backend_3d"),
                                                 int(config.get_key("render.max_concurrent_3d")))
    return state


def render_state(app: Flask) -> Render3D:
    """The app's 3D state, made by `install_render_state`."""
    return app.extensions[EXTENSION]


# --- query parameters (declared and parsed in daemons.render.api.query) ------------------------

def _voi(record: VolumeRecord, stack: Stack, window: Voi | None, function: str | None) -> KeyedVoi:
    """The request's window, else the stack's default VOI (`daemons.render.imaging.voi.stack_voi` of its
    first time point: the record's, the one 2D frames without their own use, for a record of one
    stack; every time point takes it, so a cine across time keeps one window) with the request's
    VOI function `function`, if any."""
    if window is not None:
        return keyed(window)
    return stack_voi(record.manifest, stack.phases[0], function)


def _projection_voi(state: Render3D, record: VolumeRecord, stack: Stack, mode: str, function: str | None) -> Voi | None:
    """A projection's default window (Render3D.projection_window) with the request's VOI function,
    else the function of the record's own default window (a sigmoid stays a sigmoid)."""
    own = record.default_voi.function if isinstance(record.default_voi, Window) else None
    return with_function(keyed(state.projection_window(record, stack, mode)), function or own).voi


def _max_px() -> int:
    return int(current_app.config["SIVR"].get_key("limits.max_output_px"))


# --- record access ----------------------------------------------------------------------------

def require_reformattable(manifest: Manifest) -> None:
    """400 `unsupported_record` for a record whose values no reformat or 3D view can draw: colour
    (held as RGB samples, not one value per voxel) or greyscale through a Modality LUT (the volume
    back ends map stored values linearly). Read from the manifest, so the rule holds for a record
    not loaded as well (a key image of a reformat, daemons.render.api.key_images) as for a loaded one."""
    layout = manifest.render.layout
    if layout.is_color or layout.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ApiError(400, "unsupported_record",
                       "reformats and 3D views need a greyscale record (MONOCHROME1 or MONOCHROME2)")
    if manifest.render.modality_lut is not None and not layout.float_modality:
        raise ApiError(400, "unsupported_record",
                       "reformats and 3D views need a linear rescale; this record has a Modality LUT")


def loaded_stack(record_id: str, stack_id: str | None, phase: int = 0) -> tuple[VolumeRecord, Stack]:
    """The fully loaded record and its stack `stack_id` (None: the first) at time point `phase`, or
    an immediate 409 saying how far loading has come (404 for a record this node does not store,
    or for a stack or time point it does not have); 422 with the reason for a stack whose frames
    form no volume or cannot all be shown.

    Whether the record is still stored is asked first, as the frames ask it: a worker holds a
    record another worker deleted until it sweeps (`records.CHECK_S`), and drew reformats and 3D
    views of a deleted series from it meanwhile."""
    the_node = volume_node()
    manifest = the_node.manifest(record_id)  # 404 when not stored
    record = the_node.registry.get_loaded(record_id)
    if record is None:
        require_renderable(manifest)  # 415 when stored only
        raise ApiError(409, "not_loaded",
                       f"record {record_id} is not loaded on this node; load it with "
                       f"POST /api/v1/records/{record_id}/load, then retry",
                       frames_ready=0, frames_total=0)
    if not record.complete:
        raise ApiError(409, "loading",
                       f"record {record_id} is still loading ({record.frames_ready} of "
                       f"{record.frames_total} frames); reformats and 3D views need every frame",
                       headers={"Retry-After": RETRY_AFTER_S},
                       frames_ready=int(record.frames_ready), frames_total=int(record.frames_total))
    require_reformattable(record.manifest)
    stack = find_stack(record.manifest, stack_id, phase)
    if stack.volume is not None:
        raise ApiError(422, "no_volume", f"stack {stack.id} ({stack.label}) cannot be reformatted or shown in 3D: "
                       f"{stack.volume}; view its frames one by one")
    errors = sorted(set(record.errors) & stack.all_frames)
    if errors:
        listed = ", ".join(str(i) for i in errors[:10])
        raise ApiError(422, "incomplete_record",
                       f"reformats and 3D views need every frame of the stack; {len(errors)} of its frames "
                       f"cannot be shown (frames {listed}); view its frames one by one")
    return record, stack


def _modality(record: VolumeRecord) -> str:
    """The record's modality code (it picks the default transfer function), from its manifest."""
    return record.manifest.meta.modality


def _encoded(record_id: str, etag: str | None, draw: Callable[[], np.ndarray], fmt: str,
             image_quality: int, kind: str,
             bound: Callable[[], AbstractContextManager[object]] = nullcontext) -> tuple[bytes, str]:
    """Encoded image bytes, from the node's image cache when this exact image was made before
    (stills only: `etag` names the record's frames by their content and every parameter,
    `image_headers.image_etag`, so it never goes stale). Drawn and encoded inside `bound` (a 3D
    view: one of the node's 3D slots, `_slot`), so the encoding counts against the same limit as
    the rendering; encoded as every image of the node is (`WebpEffort.encode`)."""
    the_node = volume_node()
    images = the_node.images
    if etag is not None:
        cached = images.get(record_id, etag)
        if cached is not None:
            return cached
    with bound():
        with timed("render", kind, fmt):
            image = draw()
        with timed("encode", kind, fmt):
            body, mimetype = the_node.webp_effort.encode(image, fmt, image_quality)
    if etag is not None:
        images.put(record_id, etag, body, mimetype)
    return body, mimetype


def _image_response(encoded: tuple[bytes, str], fmt: str, started: float, cache: str, etag: str | None,
                    labels: dict[str, str] | None, window: Voi | None = None) -> Response:
    """The image with `X-Orientation` and `X-Window` (see `image_headers`): a viewer labels the
    edges without knowing our camera, and drags the window from the one shown. The ETag is weak
    where the format's bytes vary with the node's load (`webp_effort.weak_etag`), as a frame's is."""
    return image_response(encoded[0], encoded[1], cache, (time.perf_counter() - started) * 1000, etag,
                          weak_etag(fmt), labels=labels, window=window)


# --- endpoints --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlaneImage:
    """What shapes one reformatted image, however it was asked for (this API or DICOMweb)."""

    fmt: str
    quality: int
    box: tuple[int, int] | None
    region: Region
    window: Window | None  # None: the record's default VOI (with `voi_function`, if any)
    voi_function: str | None
    slab_mm: float
    slab_mode: str
    flip: tuple[bool, bool] = (False, False)
    invert: bool = False  # display values turned over (the viewer's Invert tool)


@bp.get("/api/v1/records/<record_id>/mpr/<plane>/<int(signed=True):index>")
@require_auth(*ROLES, token_in_query=True)
def mpr(record_id: str, plane: str, index: int) -> Response:
    """A reformatted plane; `index` counts along the stored axis closest to the plane's normal
    (for an axial series the axial index is the frame index)."""
    started = time.perf_counter()
    record_id = parse_record_id(record_id)
    check_plane(plane)
    window = query.window()
    fmt = query.image_format()
    slab_mm, slab_mode = query.slab()
    spec = PlaneImage(fmt, query.quality(fmt, MPR_QUALITY), query.size(_max_px()), query.region(), window,
                      query.voi_function(), slab_mm, slab_mode, invert=query.invert())
    return plane_image(record_id, *loaded_stack(record_id, query.stack(), query.phase()), plane, index, spec,
                       started)


def check_plane(plane: str) -> None:
    if plane not in PLANES:
        raise query.bad(f"plane must be one of {', '.join(PLANES)}")


def plane_image(record_id: str, record: VolumeRecord, stack: Stack, plane: str, index: int, spec: PlaneImage,
                started: float) -> Response:
    """Reformat `index` of `plane` of one stack of a fully loaded record (`loaded_stack`), as `spec` says."""
    voi = _voi(record, stack, spec.window, spec.voi_function)
    volume = render_state(current_app).prepared(record, stack)
    layout = plane_layout(volume.geometry, plane)
    query.check_index(f"{plane} plane", index, layout.count)
    flip = (spec.flip,) if any(spec.flip) else ()
    invert = ("invert",) if spec.invert else ()
    etag = image_etag(record_id, record.manifest, stack.id, stack.phase, plane, index, voi.key, spec.fmt,
                      spec.quality, spec.box, spec.region, spec.slab_mm, spec.slab_mode, *flip, *invert)
    cache = f"private, max-age={STILL_MAX_AGE_S}"
    unchanged = not_modified(etag, cache, weak_etag(spec.fmt))
    if unchanged is not None:
        note_view("mpr", record_id)
        return unchanged
    encoded = _encoded(record_id, etag, lambda: mirror(inverted(reformat_image(
        volume, plane, index, voi.voi, spec.box, _max_px(), spec.slab_mm, spec.slab_mode, spec.region),
        spec.invert), spec.flip), spec.fmt, spec.quality, "mpr")
    note_view("mpr", record_id)
    labels = plane_labels(volume.geometry, layout) if record.manifest.render.known_orientation else None
    if labels and flip:
        labels = mirrored_labels(labels, spec.flip)
    return _image_response(encoded, spec.fmt, started, cache, etag, labels, voi.voi or default_voi(volume))


def view_spec(mode: str, render: str, window: Window | None, box: tuple[int, int]) -> ViewSpec:
    """The 3D view the request's angles, zoom and (DVR) preset describe (daemons.render.api.query)."""
    preset = query.choice(query.VOLUME_PRESET, None, sorted(PRESETS)) if mode == "dvr" else None
    return ViewSpec(
        mode=mode, width=box[0], height=box[1],
        azimuth=query.number(query.AZIMUTH, 0.0, *query.ANGLES["azimuth"]),
        elevation=query.number(query.ELEVATION, 0.0, *query.ANGLES["elevation"]),
        roll=query.number(query.ROLL, 0.0, *query.ANGLES["roll"]),
        zoom=query.number(query.ZOOM, 1.0, *query.ZOOM_LIMITS),
        preset=preset, window=None if mode == "dvr" else window, quality=render)


def view_sequence() -> tuple[str | None, int]:
    """`view_id` and `seq` (see the module doc). The view is the caller's own: its key holds the
    user's id, so another user who learnt a `view_id` cannot supersede (block) that view."""
    view_id = query.VIEW_ID.raw()
    if view_id is not None and not _VIEW_ID.fullmatch(view_id):
        raise query.bad("query parameter view_id must be 1-64 letters, digits or _.:-")
    owned = None if view_id is None else view_key(current_identity().user_id, view_id)
    return owned, query.integer(query.SEQ, 0, 0, 2**53)


def view_key(user_id: str, view_id: str) -> str:
    """The key of one user's view among the sequences (`_Sequences`)."""
    return f"{user_id}/{view_id}"


def render_mode() -> tuple[str, str]:
    """`render` (interactive or still) and `mode` (mip, minip, avg, dvr)."""
    render = query.choice(query.RENDER, "still", ("interactive", "still")) or "still"
    return render, query.choice(query.MODE, "mip", MODES) or "mip"


@bp.get("/api/v1/records/<record_id>/volume")
@require_auth(*ROLES, token_in_query=True)
def volume(record_id: str) -> Response:
    """A 3D rendering of the whole record; see the module doc for `view_id`/`seq`."""
    started = time.perf_counter()
    record_id = parse_record_id(record_id)
    render, mode = render_mode()
    # parsed in every mode, so a malformed window is 400 whatever the mode; DVR draws with its
    # transfer function and leaves the window unused (view_spec), and its `preset` names that
    # function, not a window
    window = query.window(None) if mode == "dvr" else query.window()
    view = view_spec(mode, render, window, query.size(_max_px(), DEFAULT_SIZE) or DEFAULT_SIZE)
    fmt = query.image_format(DEFAULT_FORMAT[render])
    image_quality = query.quality(fmt, DEFAULT_IMAGE_QUALITY[render])
    view_id, seq = view_sequence()
    record, stack = loaded_stack(record_id, query.stack(), query.phase())
    return volume_image(record_id, record, stack, view, query.voi_function(), fmt, image_quality,
                        view_id, seq, started, query.invert())


def volume_image(record_id: str, record: VolumeRecord, stack: Stack, view: ViewSpec, voi_function: str | None,
                 fmt: str, image_quality: int, view_id: str | None, seq: int, started: float,
                 invert: bool = False) -> Response:
    """A 3D rendering of one stack of a fully loaded record (`loaded_stack`): `view` (its window
    None: the projection's default window, Render3D.projection_window, with `voi_function`),
    bounded by the node's 3D slots. `X-Window` says the window a projection was drawn with."""
    render = view.quality
    state = render_state(current_app)
    if view.mode != "dvr":
        window = view.window or _projection_voi(state, record, stack, view.mode, voi_function)
        view = dataclasses.replace(view, window=window)
    if view_id is not None and not state.sequences.admit(view_id, seq):
        raise ApiError(409, "superseded", "a newer request of this view arrived; this one was dropped")
    volume_data = state.prepared(record, stack)
    etag = None
    if render == "still":
        etag = image_etag(record_id, record.manifest, stack.id, stack.phase, view, fmt, image_quality,
                          state.caster.name, *(("invert",) if invert else ()))
        unchanged = not_modified(etag, f"private, max-age={STILL_MAX_AGE_S}", weak_etag(fmt))
        if unchanged is not None:
            note_view("volume", record_id)
            return unchanged
    modality = _modality(record)
    encoded = _encoded(record_id, etag, lambda: inverted(state.caster.render(volume_data, view, modality), invert),
                       fmt, image_quality, "volume", lambda: _slot(state, view, view_id, seq))
    note_view("volume", record_id)
    cache = f"private, max-age={STILL_MAX_AGE_S}" if render == "still" else "no-store"
    labels = view_labels(view.azimuth, view.elevation, view.roll) if record.manifest.render.known_orientation else None
    return _image_response(encoded, fmt, started, cache, etag, labels, view.window)


@contextmanager
def _slot(state: Render3D, view: ViewSpec, view_id: str | None, seq: int) -> Iterator[None]:
    """Hold one of the node's 3D slots while a view is rendered and encoded: 503 when none frees up
    in time, 409 when a newer request of the same view arrived meanwhile."""
    if not state.slots.acquire(timeout=WAIT_S[view.quality]):
        raise ApiError(503, "busy", "this node is rendering as many 3D views as it can; retry shortly",
                       headers={"Retry-After": RETRY_AFTER_S})
    try:
        if view_id is not None and not state.sequences.is_newest(view_id, seq):
            raise ApiError(409, "superseded", "a newer request of this view arrived while this one waited")
        yield
    finally:
        state.slots.release()
