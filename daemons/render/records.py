"""Records loaded in RAM: one decoded copy per node, filled slice by slice, demand first.

Why this shape:
- Every viewer of a record shares the same array (the paper's node kept one copy per user and
  refused the second one), whichever of the node's gunicorn workers answers it: the array is a
  file of the node's runtime folder that every worker maps (`daemons.render.shared_frames`).
- Loading runs in a thread pool (zstandard, AES-GCM, NumPy and the JPEG decoders release the GIL);
  each decoded slice is servable at once, and a slice a viewer asks for jumps the queue, so the
  first image never waits for the whole record.
- A slice that fails to decode is reported with its reason in the status, and the record still
  completes: the status can never say "loading" forever.
- A memory budget evicts the least recently used records; nothing is unloaded because one viewer
  went away.
- A series whose stacks differ in image size is held in ONE array padded to the largest frame
  (what the budget counts); every read goes through `frame(i)` or `stacks.stack_voxels`, which
  crop to the frame's own size, so no caller can read the padding.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import io
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from daemons.render.imaging.decode import decode_frames, fast_path_possible, read_dataset
from daemons.render.imaging.overlays import overlay_mask, overlay_planes
from daemons.render.imaging.pixels import GrayParams, Modality, Voi, gray_lut, lut_supported, value_range
from daemons.render.imaging.planes import record_spacing
from daemons.render.imaging.voi import default_voi, lut_from_json
from daemons.render.runtime import NodeRuntime
from daemons.render.shared_frames import (
    PENDING,
    READY,
    SUFFIX,
    TEMP_SUFFIX,
    SharedFrames,
    frames_on_node,
    pixel_bytes,
    remove,
)
from daemons.render.stacks import frame_stacks, stack_manifest, stacks_of
from daemons.render.store.frame_layout import Layout
from daemons.render.store.interface import Store
from daemons.render.store.manifest import Manifest
from shared.errors import ApiError

log = logging.getLogger(__name__)
LUT_CACHE_SIZE = 64
POLL_S = 0.005  # how often a wait looks for frames another worker decoded
STALL_S = 0.5  # a wait without progress this long checks whether the load lost its leader
CHECK_S = 1.0  # how often a worker checks that a record's shared frames are still the node's
OVERLAY_CACHE_SIZE = 64  # frames' overlay masks kept per loaded record
#: files whose overlay planes are kept parsed per loaded record: the frames of a multi-frame file
#: are asked one after another, and each first overlay request read and parsed the whole file again
OVERLAY_FILES_KEPT = 2
LOAD_ATTEMPTS = 3  # reads of a record's manifest by a load that finds it changed each time (then loaded as read)


class MemoryBudgetError(Exception):
    """The record alone is larger than the node's memory budget."""


def _nothing_to_do(record: LoadedRecord) -> None:
    """A record no registry holds has no leader to lose (`on_stall`) and no budget to keep (`on_copy`)."""


class LoadedRecord:
    """A record's frames in RAM (stored integer values; modality LUT not applied) and its load state.

    `pixels` is (frames, rows, cols) in the stored dtype, or (frames, rows, cols, 3) uint8 for
    colour, padded to the largest frame of the record; where the files disagree on rescale it
    holds float32 modality values with slope 1 and intercept 0. Frames not yet decoded are zero:
    check `is_ready(i)` or `complete`. Read a frame with `frame(i)` and a stack's volume with
    `stacks.stack_voxels(pixels, stack)` (cropped to their own size), never `pixels[...]` directly.
    """

    def __init__(self, record_id: str, manifest: Manifest, frames: SharedFrames | None = None):
        render = manifest.render
        self.record_id = record_id
        self.manifest = manifest
        self.layout = render.layout
        self.frames_total = manifest.meta.frames
        stacks = stacks_of(manifest)
        shape, dtype = held_shape(manifest)
        # the node's one copy, shared by its workers (`RecordRegistry`), or this process's own
        self.shared = frames if frames is not None else SharedFrames.private(shape, dtype)
        self.pixels = self.shared.pixels
        self._stacks = frame_stacks(manifest)
        # (row, column) mm each stack's frames are drawn with (an unknown spacing counts as 1 mm)
        self._spacings = {s.id: record_spacing(stack_manifest(manifest, s))[1:] for s in stacks}
        self.rescale_slope = render.rescale_slope
        self.rescale_intercept = render.rescale_intercept
        self.orientation = render.orientation
        self.photometric = self.layout.photometric
        self.default_voi = default_voi(manifest).voi
        self.modality_lut = lut_from_json(render.modality_lut)
        self.bad_frames = {bad.frame: bad.message for bad in render.bad_frames}  # found at upload
        # Copies of its pixels made for it (a stack's or time point's volume, daemons.render.api.mpr3d):
        # they live as long as the record and count in its memory (`count_copy`).
        self.derived_bytes = 0
        # called with the record once a copy of its pixels is counted: the registry then makes room in
        # the node's budget (given the record, not closing over it, as `on_stall`)
        self.on_copy: Callable[[LoadedRecord], None] = _nothing_to_do
        self._cond = threading.Condition()
        self._luts: OrderedDict[tuple, tuple[np.ndarray, int, int]] = OrderedDict()
        self._ranges: dict[int, tuple[int, int]] = {}
        self._lut_lock = threading.Lock()
        self.cancelled = False
        self.started_at = time.perf_counter()
        self.finished_at: float | None = None
        # called with the record while a wait finds no progress: the registry then takes over a load
        # whose leader died. Given the record, not closing over it: a record referring to itself is
        # freed only by the cycle collector, and an evicted one kept its frames mapped until then.
        self.on_stall: Callable[[LoadedRecord], None] = _nothing_to_do
        self.checked_at = time.monotonic()  # when the registry last checked the shared frames
        if self.shared.leading:
            self.mark_bad_frames()

    def mark_bad_frames(self) -> None:
        """The worker leading the load marks the frames found bad at upload: they are never decoded."""
        for index, message in self.bad_frames.items():
            if self.shared.states[index] == PENDING:
                self._frame_done(index, message)

    # --- pixels ------------------------------------------------------------------------------
    def frame(self, index: int) -> np.ndarray:
        """Frame `index` at its own size (a view of `pixels`, without the padding)."""
        stack = self._stacks[index]
        return self.pixels[index, :stack.rows, :stack.columns]

    def frame_layout(self, index: int) -> Layout:
        """The record's layout at frame `index`'s own size: what its file decodes to."""
        stack = self._stacks[index]
        return self.layout.sized(stack.rows, stack.columns)

    def frame_spacing(self, index: int) -> tuple[float, float]:
        """(row, column) mm frame `index` is drawn with: its stack's pixel spacing (1 mm where unknown)."""
        return self._spacings[self._stacks[index].id]

    def count_copy(self, nbytes: int) -> None:
        """Count a copy of `nbytes` made of this record's pixels (a time point's or stack's voxels)
        in its memory; the registry then evicts records used least recently until the node's
        budget holds it (`RecordRegistry._copied`)."""
        self.derived_bytes += nbytes
        self.on_copy(self)

    # --- state -------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes) + self.derived_bytes

    @property
    def frames_ready(self) -> int:
        return self.shared.ready()

    @property
    def complete(self) -> bool:
        return self.shared.done() >= self.frames_total

    @property
    def errors(self) -> dict[int, str]:
        """Why each failed frame cannot be shown (frame index -> reason), whichever worker found it."""
        return {**self.shared.errors(), **self.bad_frames}

    @property
    def is_color(self) -> bool:
        return self.layout.is_color

    def is_ready(self, index: int) -> bool:
        return bool(self.shared.states[index] == READY)

    def state(self) -> str:
        if not self.complete:
            return "loading"
        return "error" if len(self.errors) >= self.frames_total else "ready"

    def status(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "state": self.state(),
            "frames_total": self.frames_total,
            "frames_ready": self.frames_ready,
            "errors": [{"frame": i, "message": m} for i, m in sorted(self.errors.items())],
            "stored_only": self.manifest.meta.stored_only,  # the series' instances kept but not rendered
        }

    def wait_frame(self, index: int, timeout: float) -> bool:
        """Wait until frame `index` is decoded or failed (by any worker); True if it is ready."""
        self._wait(lambda: self.shared.states[index] != PENDING, timeout)
        return self.is_ready(index)

    def wait_complete(self, timeout: float) -> bool:
        self._wait(lambda: self.complete, timeout)
        return self.complete

    def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait for `done`: woken by this process's loader threads, and looking every POLL_S for
        what another worker decoded (it cannot notify this process)."""
        deadline = time.monotonic() + timeout
        stalled_since = time.monotonic()
        with self._cond:
            while not done() and not self.cancelled:
                now = time.monotonic()
                if now >= deadline:
                    return
                if now - stalled_since >= STALL_S:
                    self.on_stall(self)
                    stalled_since = now
                self._cond.wait(min(deadline - now, POLL_S))

    def _frame_done(self, index: int, error: str | None) -> None:
        with self._cond:
            self.shared.mark(index, error)
            if self.complete:
                self.finished_at = time.perf_counter()
                self.shared.release_lead()
            self._cond.notify_all()

    # --- rendering parameters ----------------------------------------------------------------
    def modality(self) -> Modality:
        if self.modality_lut is not None and not self.layout.float_modality:
            return Modality(lut=self.modality_lut)
        return Modality(self.rescale_slope, self.rescale_intercept)

    def gray_params(self, voi: Voi | None) -> GrayParams:
        return GrayParams(self.modality(), voi, self.photometric == "MONOCHROME1")

    def frame_range(self, index: int) -> tuple[int, int]:
        """Lowest and highest stored value of a decoded integer frame, computed once."""
        known = self._ranges.get(index)
        if known is None:
            known = self._ranges[index] = value_range(self.frame(index))
        return known

    def lut_for(self, key: tuple, params: GrayParams, index: int) -> np.ndarray | None:
        """The display table for one VOI choice covering frame `index`'s values (kept for reuse).

        None where frames are not 8/16-bit integers, or there is no VOI (an automatic window
        is then computed per frame). A cached table whose value range misses this frame's is
        rebuilt over both ranges.
        """
        if params.voi is None or not lut_supported(self.pixels.dtype):
            return None
        lowest, highest = self.frame_range(index)
        with self._lut_lock:
            cached = self._luts.get(key)
            if cached is not None:
                self._luts.move_to_end(key)
                lut, cached_low, cached_high = cached
                if cached_low <= lowest and highest <= cached_high:
                    return lut
                lowest, highest = min(lowest, cached_low), max(highest, cached_high)
        lut = gray_lut(self.pixels.dtype, params, (lowest, highest))
        with self._lut_lock:
            self._luts[key] = (lut, lowest, highest)
            while len(self._luts) > LUT_CACHE_SIZE:
                self._luts.popitem(last=False)
        return lut


class _Loader:
    """Decodes one record's frames in a shared pool; a demanded frame is taken next."""

    def __init__(self, record: LoadedRecord, store: Store, pool: ThreadPoolExecutor, workers: int):
        self.record = record
        self.store = store
        files = record.manifest.files
        self.files = files
        self.sources: list[tuple[int, int]] = [
            (file_index, frame) for file_index, f in enumerate(files) for frame in range(f.frames)
        ]
        self._lock = threading.Lock()
        self._heap: list[tuple] = [(1, i, i) for i in range(record.frames_total)]
        self._taken = np.zeros(record.frames_total, dtype=bool)
        self._seq = itertools.count()
        self._file_cache: dict[int, tuple[bytes, Any]] = {}
        self._file_left = [f.frames for f in files]
        self._file_locks = [threading.Lock() for _ in files]
        self._overlays: OrderedDict[int, np.ndarray | None] = OrderedDict()
        self._overlay_files: OrderedDict[int, Dataset | None] = OrderedDict()
        self._pool = pool
        self._workers = max(1, workers)
        self._pumping = False
        for index in record.bad_frames:  # known bad at upload: never decoded
            self._taken[index] = True
            self._file_done(self.sources[index][0])
        if record.shared.leading:
            self.start()

    def start(self) -> None:
        """Decode the frames no worker has decoded yet, in the pool (this process leads the load)."""
        with self._lock:
            if self._pumping:
                return
            self._pumping = True
        for _ in range(self._workers):
            self._pool.submit(self._pump)

    def overlay(self, index: int) -> np.ndarray | None:
        """The overlay planes covering frame `index` as one mask (daemons.render.imaging.overlays), read
        from the stored file on first use; None when it has none. A manifest from before overlays
        were recorded says nothing, and the file is looked at."""
        with self._lock:
            if index in self._overlays:
                self._overlays.move_to_end(index)
                return self._overlays[index]
        file_index, frame = self.sources[index]
        mask = None
        planes = self._overlay_planes(file_index)
        if planes is not None:
            layout = self.record.frame_layout(index)
            mask = overlay_mask(planes, frame, layout.rows, layout.columns)
        with self._lock:
            self._overlays[index] = mask
            while len(self._overlays) > OVERLAY_CACHE_SIZE:
                self._overlays.popitem(last=False)
        return mask

    def _overlay_planes(self, file_index: int) -> Dataset | None:
        """The overlay planes of stored file `file_index` (None: it has none), read from the store once
        while the file is among the OVERLAY_FILES_KEPT last asked for. A manifest from before
        overlays were recorded says nothing, and the file is looked at."""
        with self._lock:
            if file_index in self._overlay_files:
                self._overlay_files.move_to_end(file_index)
                return self._overlay_files[file_index]
        info = self.files[file_index]
        planes = None
        if info.overlays is not False:  # None: stored before overlays were recorded
            raw = self.store.read_file(self.record.record_id, info.blob, info.sha256, verify=False)
            planes = overlay_planes(pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True))
        with self._lock:
            self._overlay_files[file_index] = planes
            while len(self._overlay_files) > OVERLAY_FILES_KEPT:
                self._overlay_files.popitem(last=False)
        return planes

    def demand(self, index: int) -> None:
        with self._lock:
            if not self._taken[index]:
                heapq.heappush(self._heap, (0, -next(self._seq), index))

    def _claim(self, index: int) -> bool:
        """Take frame `index` for this process to decode: False if it is taken here already, or
        done by another worker (its file then counts it as done too). The caller holds `_lock`."""
        if self._taken[index]:
            return False
        self._taken[index] = True
        if self.record.shared.states[index] != PENDING:
            self._file_done(self.sources[index][0])
            return False
        return True

    def _next(self) -> int | None:
        with self._lock:
            while self._heap:
                _, _, index = heapq.heappop(self._heap)
                if self._claim(index):
                    return index
            return None

    def _file(self, file_index: int) -> tuple[bytes, Any]:
        """Decrypted bytes (and, for compressed multi-frame files, the parsed dataset) of a file."""
        info = self.files[file_index]
        if info.frames == 1:
            return self.store.read_file(self.record.record_id, info.blob, info.sha256, verify=False), None
        with self._file_locks[file_index]:
            cached = self._file_cache.get(file_index)
            if cached is None:
                raw = self.store.read_file(self.record.record_id, info.blob, info.sha256, verify=False)
                dataset = None
                if info.pixel_offset is None or not fast_path_possible(self.record.layout):
                    dataset = read_dataset(raw)
                    _ = dataset.PixelData  # read the deferred value now: frames are decoded from several threads
                cached = (raw, dataset)
                if self._pumping:  # kept until its last frame is decoded here; a worker decoding only
                    self._file_cache[file_index] = cached  # the frames its viewers wait for would keep it for ever
            return cached

    def _release(self, file_index: int) -> None:
        with self._lock:
            self._file_done(file_index)

    def _file_done(self, file_index: int) -> None:
        """One more frame of a file needs it no more (the caller holds `_lock`); the last one frees it."""
        self._file_left[file_index] -= 1
        if self._file_left[file_index] <= 0:
            self._file_cache.pop(file_index, None)

    def queued(self) -> int:
        """Frames no thread has started to decode yet (0 in a worker that does not lead the load)."""
        with self._lock:
            return int(self.record.frames_total - self._taken.sum()) if self._pumping else 0

    def take(self, index: int) -> bool:
        """Claim frame `index` for the caller to decode; False if a loader thread has it already."""
        with self._lock:
            return self._claim(index)

    def decode(self, index: int) -> None:
        """Decode one claimed frame into the record; a failure is recorded for that frame."""
        record = self.record
        file_index, frame_in_file = self.sources[index]
        info = self.files[file_index]
        try:
            raw, dataset = self._file(file_index)
            slope, intercept = info.rescale(frame_in_file)
            _, frame = next(decode_frames(raw, record.frame_layout(index), [frame_in_file], info.pixel_offset,
                                          slope, intercept, dataset))
            record.frame(index)[...] = frame
            error = None
        except Exception as exc:  # any failure of one slice is reported for that slice
            error = f"{type(exc).__name__}: {exc}"
        self._release(file_index)
        record._frame_done(index, error)

    def _pump(self) -> None:
        while not self.record.cancelled:
            index = self._next()
            if index is None:
                return
            self.decode(index)


class _NotOnNode(Exception):
    """The frames another worker held went (evicted, changed) before this one mapped them."""


class _Changed(Exception):
    """The record changed (grew, was analysed anew or deleted) after its manifest was read for a load."""


class RecordRegistry:
    """The node's loaded records, its loader pool and its memory budget.

    The decoded frames are the node's, not this process's: they live in the runtime folder every
    worker of the node maps (`daemons.render.shared_frames`), named by the record and its content
    (a series that grew is another file). A worker asked for a record another worker loaded maps
    its file; the budget counts every worker's files and evicts the one used least recently by any
    of them; a worker finds out that a file it maps was evicted (or its series changed) within
    CHECK_S, and takes over a load whose leader died.
    """

    def __init__(self, store: Store, budget_bytes: int, runtime: NodeRuntime, threads: int = 2,
                 manifest_reader: Callable[[str], Manifest] | None = None):
        self.store = store
        self.budget_bytes = budget_bytes
        self.runtime = runtime
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads * 4, thread_name_prefix="sivr-load")
        self._records: OrderedDict[str, LoadedRecord] = OrderedDict()
        self._loaders: dict[str, _Loader] = {}
        self._lock = threading.RLock()
        self._manifest_reader = manifest_reader or store.read_manifest
        self._swept_at = time.monotonic()
        self._frames_lock = runtime.lock("frames")  # the node's budget: one worker evicts and creates at a time
        self._closed = threading.Event()
        self._sweeper: threading.Thread | None = None

    def get_loaded(self, record_id: str) -> LoadedRecord | None:
        """The loaded (or loading) record, marked as just used; None if no worker of the node has it."""
        self._sweep()
        with self._lock:
            record = self._records.get(record_id)
            if record is not None:
                self._records.move_to_end(record_id)
        if record is None:
            if not any(self.runtime.folder.glob(f"{_file_prefix(record_id)}.*{SUFFIX}")):
                return None
            try:  # another worker loaded its current content: map those frames
                name = _frames_name(record_id, self._manifest_reader(record_id))
                return self.load(record_id, attach_only=True) if (self.runtime.folder / f"{name}{SUFFIX}").exists() \
                    else None
            except _NotOnNode:  # evicted since: asking is not loading
                return None
            except (ApiError, MemoryBudgetError, OSError) as exc:
                log.warning("record %s: the frames another worker loaded cannot be mapped here: %s", record_id, exc)
                return None
        record.shared.touch()  # the node's LRU order is the files' (one cheap syscall)
        now = time.monotonic()
        if now - record.checked_at >= CHECK_S:
            record.checked_at = now
            if record.shared.gone():  # evicted, or its series changed, by another worker
                self.let_go(record_id, record)
                return self.get_loaded(record_id)
            if not record.complete:
                self._adopt(record)
        return record

    def _sweep(self) -> None:
        """Let go of every record whose frames another worker evicted (at most every CHECK_S):
        their memory comes back only once no worker maps them, whether or not they are asked for again."""
        now = time.monotonic()
        if now - self._swept_at < CHECK_S:
            return
        self._swept_at = now
        with self._lock:
            gone = [(record_id, record) for record_id, record in self._records.items() if record.shared.gone()]
        for record_id, record in gone:
            self.let_go(record_id, record)

    def load(self, record_id: str, attach_only: bool = False, attempts: int = LOAD_ATTEMPTS) -> LoadedRecord:
        """Start loading (or return the record already loaded); evicts LRU records beyond the budget.
        `attach_only`: map the frames another worker has, never make them (raises _NotOnNode): a
        viewer's status or frame request must not load again, evicting others, a series just evicted.

        A record that changed after its manifest was read (the change board) is read again, up to
        `attempts` times (404 once deleted): its frames were made after the change had unlinked
        them, and a series deleted meanwhile stayed decoded in the node's memory until evicted.
        """
        with self._lock:
            existing = self._records.get(record_id)
        if existing is not None:
            return self.get_loaded(record_id) or self.load(record_id)
        changes = self.runtime.change_count(record_id)
        manifest = self._manifest_reader(record_id)
        try:
            return self._open(record_id, manifest, attach_only, changes if attempts > 1 else None)
        except _Changed:  # outside `_lock`: the manifest is read again without holding it, as above
            return self.load(record_id, attach_only, attempts - 1)

    def _open(self, record_id: str, manifest: Manifest, attach_only: bool, changes: int | None) -> LoadedRecord:
        """`load` of a record read at `manifest` while its count on the change board was `changes`:
        `_Changed` if it moved before the frames are made (None: made whatever it is)."""
        with self._lock:
            existing = self._records.get(record_id)
            if existing is not None:
                return existing
            shape, dtype = held_shape(manifest)
            needed = pixel_bytes(shape, dtype)
            if needed > self.budget_bytes:
                raise MemoryBudgetError(
                    f"the record needs {needed // 2**20} MiB, more than this node's memory budget "
                    f"of {self.budget_bytes // 2**20} MiB")
            name = _frames_name(record_id, manifest)
            try:
                with self._frames_lock:  # a change unlinks the record's frames under this lock: checked here
                    if changes is not None and self.runtime.change_count(record_id) != changes:
                        raise _Changed(record_id)
                    if not (self.runtime.folder / f"{name}{SUFFIX}").exists():
                        if attach_only:
                            raise _NotOnNode(record_id)
                        self._evict(needed)
                    frames = SharedFrames.open(self.runtime.folder, name, shape, dtype)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT, errno.EFBIG):
                    raise MemoryBudgetError(
                        f"the record needs {needed // 2**20} MiB and the node's runtime folder "
                        f"{self.runtime.folder} (tmpfs) has no room left: lower memory.budget_mb or give "
                        "/dev/shm more room") from exc
                raise ApiError(503, "runtime_unavailable",
                               f"record {record_id}: the node's runtime folder {self.runtime.folder} cannot hold "
                               f"decoded frames ({exc}); restart the node", headers={"Retry-After": "5"}) from exc
            try:
                record = LoadedRecord(record_id, manifest, frames)
                record.on_stall = self._adopt
                record.on_copy = self._copied
                loader = _Loader(record, self.store, self._pool, self.threads)
            except BaseException:  # its descriptor and its lead (other workers would wait on it) go now
                frames.close()
                raise
            self._records[record_id] = record
            self._loaders[record_id] = loader
            if self._sweeper is None and not self._closed.is_set():
                self._sweeper = threading.Thread(target=self._sweep_while_open, name="sivr-frames-sweep", daemon=True)
                self._sweeper.start()
        return record

    def _sweep_while_open(self) -> None:
        """Sweep every CHECK_S whether or not requests come: a worker nobody asks anything keeps an
        evicted series mapped (its memory out of the budget's count), or goes on decoding it, otherwise."""
        while not self._closed.wait(max(CHECK_S, 0.05)):  # never a busy loop
            try:
                self._sweep()
            except Exception:  # the runtime folder unreadable: the next request's sweep says why
                log.exception("the sweep of this worker's shared frames failed")

    def _copied(self, record: LoadedRecord) -> None:
        """A copy of `record`'s pixels was counted in its memory: evict the node's records used least
        recently, never this one, until the budget holds it. Copies were counted but evicted for only
        when a record was loaded: a cine's 20 time points reformatted one by one held 120 MiB under a
        budget of 100 MiB, evicting nothing."""
        with self._lock, self._frames_lock:
            self._evict(0, keep=record.shared.path)

    def _adopt(self, record: LoadedRecord) -> None:
        """Finish a load whose leading worker died (nobody holds its lock any more)."""
        loader = self._loaders.get(record.record_id)
        if loader is not None and not record.cancelled and record.shared.try_lead():
            record.mark_bad_frames()  # in case the leader died before it did
            loader.start()

    def overlay(self, record_id: str, index: int) -> np.ndarray | None:
        """The overlay mask of a loaded record's frame (None: none, or the record is not loaded)."""
        loader = self._loaders.get(record_id)
        return None if loader is None else loader.overlay(index)

    def demand(self, record_id: str, index: int) -> None:
        """Put a frame at the head of the loader's queue."""
        loader = self._loaders.get(record_id)
        if loader is not None:
            loader.demand(index)

    def decode_now(self, record_id: str, index: int) -> None:
        """Decode a frame a viewer waits for in the caller's thread, unless a loader thread has it.

        The request thread would only wait otherwise; this keeps the first image fast even while
        the loader pool (or another worker's) is busy with other frames or records.
        """
        loader = self._loaders.get(record_id)
        if loader is not None and loader.take(index):
            loader.decode(index)

    def _evict(self, needed: int, keep: Path | None = None) -> None:
        """Unlink the node's least recently used frames (never those at `keep`) until `needed` more
        bytes fit the budget.

        First, files a worker killed while creating frames left half made (reserved, uncounted): the
        caller holds the frames lock, under which alone frames are created, so any there is a leftover."""
        for leftover in self.runtime.folder.glob(f".*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)
        on_node = frames_on_node(self.runtime.folder)
        used = sum(held.pixel_bytes for held in on_node) + self._derived_bytes()
        for held in on_node:
            if used + needed <= self.budget_bytes:
                break
            if held.path == keep:
                continue
            victim = next((r for r in self._records.values() if r.shared.path == held.path), None)
            if victim is not None:
                used -= victim.derived_bytes
                self._records.pop(victim.record_id, None)
                self._drop(victim)
            remove(held.path)
            used -= held.pixel_bytes

    def _drop(self, record: LoadedRecord) -> None:
        record.cancelled = True
        self._loaders.pop(record.record_id, None)
        record.shared.close()
        with record._cond:
            record._cond.notify_all()

    def let_go(self, record_id: str, seen: LoadedRecord | None = None) -> LoadedRecord | None:
        """Stop holding a record in this worker (other workers keep theirs). With `seen`, only if
        that is still the one held: a thread that found its frames gone must not drop the record
        another thread has loaded again since."""
        with self._lock:
            record = self._records.get(record_id)
            if record is None or (seen is not None and record is not seen):
                return None
            del self._records[record_id]
            self._drop(record)
            return record

    def unload(self, record_id: str) -> bool:
        """Take the record out of the node (it changed or went away): its frames are unlinked, and
        the change board tells the other workers to drop what they hold of it."""
        record = self.let_go(record_id)
        self.runtime.changed(record_id)
        self._unlink_frames(record_id)
        return record is not None

    def changed(self, record_id: str, manifest: Manifest) -> None:
        """The record was analysed anew here (`manifest`): every worker lets go of what it holds
        and maps the record again from the new manifest; frames decoded from the same files stay."""
        self.let_go(record_id)
        self.runtime.changed(record_id)
        self.drop_stale(record_id, manifest)

    def drop_stale(self, record_id: str, manifest: Manifest) -> None:
        """Unlink the node's frames of a record's older content (the series changed, here or on
        another node sharing the store): no worker will be given them again."""
        self._unlink_frames(record_id, keep=f"{_frames_name(record_id, manifest)}{SUFFIX}")

    def _unlink_frames(self, record_id: str, keep: str | None = None) -> None:
        """Unlink the node's frames of a record (but the file named `keep`), under the frames lock as
        evictions are: a worker mapping them meanwhile must not make them anew, unbudgeted."""
        with self._frames_lock:
            for path in self.runtime.folder.glob(f"{_file_prefix(record_id)}.*{SUFFIX}"):
                if path.name != keep:
                    remove(path)

    def _derived_bytes(self) -> int:
        return sum(r.derived_bytes for r in list(self._records.values()))

    def memory_used(self) -> int:
        """Bytes of decoded frames the node's workers hold, and this worker's copies made of them."""
        return sum(held.pixel_bytes for held in frames_on_node(self.runtime.folder)) + self._derived_bytes()

    def loaded_count(self) -> int:
        """Records the node holds decoded (by any of its workers)."""
        return len(frames_on_node(self.runtime.folder))

    def queued_frames(self) -> int:
        """Frames waiting in every loader's queue: how far decoding is behind the loads asked for."""
        return sum(loader.queued() for loader in list(self._loaders.values()))

    def shutdown(self) -> None:
        """This worker stops: it lets go of its records, which stay loaded for the node's other workers."""
        self._closed.set()
        for record_id in list(self._records):
            self.let_go(record_id)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.runtime.close()


def held_shape(manifest: Manifest) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a record's frames as held in RAM: every frame padded to the largest."""
    layout = manifest.render.layout
    padded = layout.padded_to((s.rows, s.columns) for s in stacks_of(manifest))
    return (manifest.meta.frames, *padded.frame_shape), np.dtype(layout.stored_dtype)


def _file_prefix(record_id: str) -> str:
    """The record's part of its frames' file name (hex whatever the id holds: safe in a path and a glob)."""
    return hashlib.blake2b(record_id.encode(), digest_size=16).hexdigest()


def frames_content(manifest: Manifest) -> str:
    """What a record's frames are decoded from: the files in frame order (with their rescale), the
    pixel layout and the padded shape, as a digest computed once per manifest. A series that grew
    decodes to other frames (and frame index `i` may name another instance), so this changes; one
    analysed anew with the same frames (a new automatic window) keeps it. It names the decoded
    frames' file and, with every parameter, each rendered image's ETag (`api.image_headers`).
    Canonical JSON: the worker that analysed a series holds NumPy numbers and tuples where one that
    read it from the store holds JSON's."""
    content = manifest.derived.get("frames_content")
    if content is None:
        shape, dtype = held_shape(manifest)
        described = json.dumps([[entry.to_json() for entry in manifest.files], manifest.render.layout.to_json(),
                                list(shape), dtype.str], sort_keys=True, default=float)
        content = manifest.derived["frames_content"] = hashlib.blake2b(described.encode(), digest_size=16).hexdigest()
    return content


def _frames_name(record_id: str, manifest: Manifest) -> str:
    """The record's frames file, named by what its pixels are decoded from (`frames_content`):
    frames of a grown series must not be mixed with the old ones."""
    return f"{_file_prefix(record_id)}.{frames_content(manifest)}"
