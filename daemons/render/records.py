"""Records loaded in RAM: one decoded copy per node, filled slice by slice, demand first.

Why this shape:
- The node runs ONE gunicorn worker with many threads, so every viewer of a record shares the
  same array (the paper's node kept one copy per user and refused the second one).
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

import heapq
import io
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pydicom

from daemons.render.imaging.decode import decode_frames, fast_path_possible, read_dataset
from daemons.render.imaging.overlays import overlay_mask
from daemons.render.imaging.pixels import GrayParams, Modality, Voi, gray_lut, lut_supported, value_range
from daemons.render.imaging.planes import record_spacing
from daemons.render.imaging.voi import default_voi, lut_from_json
from daemons.render.stacks import frame_stacks, stack_manifest, stacks_of
from daemons.render.store.frame_layout import Layout
from daemons.render.store.interface import Store
from daemons.render.store.manifest import Manifest

LUT_CACHE_SIZE = 64
OVERLAY_CACHE_SIZE = 64  # frames' overlay masks kept per loaded record


class MemoryBudgetError(Exception):
    """The record alone is larger than the node's memory budget."""


class LoadedRecord:
    """A record's frames in RAM (stored integer values; modality LUT not applied) and its load state.

    `pixels` is (frames, rows, cols) in the stored dtype, or (frames, rows, cols, 3) uint8 for
    colour, padded to the largest frame of the record; where the files disagree on rescale it
    holds float32 modality values with slope 1 and intercept 0. Frames not yet decoded are zero:
    check `is_ready(i)` or `complete`. Read a frame with `frame(i)` and a stack's volume with
    `stacks.stack_voxels(pixels, stack)` (cropped to their own size), never `pixels[...]` directly.
    """

    def __init__(self, record_id: str, manifest: Manifest):
        render = manifest.render
        self.record_id = record_id
        self.manifest = manifest
        self.layout = render.layout
        self.frames_total = manifest.meta.frames
        stacks = stacks_of(manifest)
        padded = self.layout.padded_to((s.rows, s.columns) for s in stacks)
        self.pixels = np.zeros((self.frames_total, *padded.frame_shape), dtype=self.layout.stored_dtype)
        self._stacks = frame_stacks(manifest)
        # (row, column) mm each stack's frames are drawn with (an unknown spacing counts as 1 mm)
        self._spacings = {s.id: record_spacing(stack_manifest(manifest, s))[1:] for s in stacks}
        self.rescale_slope = render.rescale_slope
        self.rescale_intercept = render.rescale_intercept
        self.orientation = render.orientation
        self.photometric = self.layout.photometric
        self.default_voi = default_voi(manifest).voi
        self.modality_lut = lut_from_json(render.modality_lut)
        self.errors: dict[int, str] = {}
        # Copies of its pixels made for it (a stack's or time point's volume, daemons.render.api.mpr3d):
        # they live as long as the record and count in its memory.
        self.derived_bytes = 0
        self._ready = np.zeros(self.frames_total, dtype=bool)
        self._done = 0
        self._cond = threading.Condition()
        self._luts: OrderedDict[tuple, tuple[np.ndarray, int, int]] = OrderedDict()
        self._ranges: dict[int, tuple[int, int]] = {}
        self._lut_lock = threading.Lock()
        self.cancelled = False
        self.started_at = time.perf_counter()
        self.finished_at: float | None = None
        for bad in render.bad_frames:  # found at upload: short or undecodable frames
            self._frame_done(bad.frame, bad.message)

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

    # --- state -------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes) + self.derived_bytes

    @property
    def frames_ready(self) -> int:
        return int(self._ready.sum())

    @property
    def complete(self) -> bool:
        return self._done >= self.frames_total

    @property
    def is_color(self) -> bool:
        return self.layout.is_color

    def is_ready(self, index: int) -> bool:
        return bool(self._ready[index])

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
        """Wait until frame `index` is decoded or failed; True if it is ready."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready[index] and index not in self.errors and not self.cancelled:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return bool(self._ready[index])

    def wait_complete(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.complete and not self.cancelled:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return self.complete

    def _frame_done(self, index: int, error: str | None) -> None:
        with self._cond:
            if error is None:
                self._ready[index] = True
            else:
                self.errors[index] = error
            self._done += 1
            if self.complete:
                self.finished_at = time.perf_counter()
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
        for index in record.errors:  # known bad at upload: never decoded
            self._taken[index] = True
            self._file_left[self.sources[index][0]] -= 1
        for _ in range(max(1, workers)):
            pool.submit(self._pump)

    def overlay(self, index: int) -> np.ndarray | None:
        """The overlay planes covering frame `index` as one mask (daemons.render.imaging.overlays), read
        from the stored file on first use; None when it has none. A manifest from before overlays
        were recorded says nothing, and the file is looked at."""
        with self._lock:
            if index in self._overlays:
                self._overlays.move_to_end(index)
                return self._overlays[index]
        file_index, frame = self.sources[index]
        info = self.files[file_index]
        mask = None
        if info.overlays is not False:  # None: stored before overlays were recorded
            raw = self.store.read_file(self.record.record_id, info.blob, info.sha256, verify=False)
            dataset = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
            layout = self.record.frame_layout(index)
            mask = overlay_mask(dataset, frame, layout.rows, layout.columns)
        with self._lock:
            self._overlays[index] = mask
            while len(self._overlays) > OVERLAY_CACHE_SIZE:
                self._overlays.popitem(last=False)
        return mask

    def demand(self, index: int) -> None:
        with self._lock:
            if not self._taken[index]:
                heapq.heappush(self._heap, (0, -next(self._seq), index))

    def _next(self) -> int | None:
        with self._lock:
            while self._heap:
                _, _, index = heapq.heappop(self._heap)
                if not self._taken[index]:
                    self._taken[index] = True
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
                cached = self._file_cache[file_index] = (raw, dataset)
            return cached

    def _release(self, file_index: int) -> None:
        with self._lock:
            self._file_left[file_index] -= 1
            if self._file_left[file_index] <= 0:
                self._file_cache.pop(file_index, None)

    def queued(self) -> int:
        """Frames no thread has started to decode yet."""
        with self._lock:
            return int(self.record.frames_total - self._taken.sum())

    def take(self, index: int) -> bool:
        """Claim frame `index` for the caller to decode; False if a loader thread has it already."""
        with self._lock:
            if self._taken[index]:
                return False
            self._taken[index] = True
            return True

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


class RecordRegistry:
    """The node's loaded records, its loader pool and its memory budget."""

    def __init__(self, store: Store, budget_bytes: int, threads: int = 2,
                 manifest_reader: Callable[[str], Manifest] | None = None):
        self.store = store
        self.budget_bytes = budget_bytes
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads * 4, thread_name_prefix="sivr-load")
        self._records: OrderedDict[str, LoadedRecord] = OrderedDict()
        self._loaders: dict[str, _Loader] = {}
        self._lock = threading.Lock()
        self._manifest_reader = manifest_reader or store.read_manifest

    def get_loaded(self, record_id: str) -> LoadedRecord | None:
        """The loaded (or loading) record, marked as just used; None if not in RAM."""
        with self._lock:
            record = self._records.get(record_id)
            if record is not None:
                self._records.move_to_end(record_id)
            return record

    def load(self, record_id: str) -> LoadedRecord:
        """Start loading (or return the record already loaded); evicts LRU records beyond the budget."""
        existing = self.get_loaded(record_id)
        if existing is not None:
            return existing
        manifest = self._manifest_reader(record_id)
        with self._lock:
            existing = self._records.get(record_id)
            if existing is not None:
                return existing
            record = LoadedRecord(record_id, manifest)
            if record.nbytes > self.budget_bytes:
                raise MemoryBudgetError(
                    f"the record needs {record.nbytes // 2**20} MiB, more than this node's memory budget "
                    f"of {self.budget_bytes // 2**20} MiB")
            self._evict(record.nbytes)
            self._records[record_id] = record
            self._loaders[record_id] = _Loader(record, self.store, self._pool, self.threads)
        return record

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
        the loader pool is busy with other records.
        """
        loader = self._loaders.get(record_id)
        if loader is not None and loader.take(index):
            loader.decode(index)

    def _evict(self, needed: int) -> None:
        while self._records and self.memory_used() + needed > self.budget_bytes:
            _, victim = self._records.popitem(last=False)
            self._drop(victim)

    def _drop(self, record: LoadedRecord) -> None:
        record.cancelled = True
        self._loaders.pop(record.record_id, None)
        with record._cond:
            record._cond.notify_all()

    def unload(self, record_id: str) -> bool:
        with self._lock:
            record = self._records.pop(record_id, None)
            if record is not None:
                self._drop(record)
            return record is not None

    def memory_used(self) -> int:
        return sum(r.nbytes for r in list(self._records.values()))

    def loaded_count(self) -> int:
        return len(self._records)

    def queued_frames(self) -> int:
        """Frames waiting in every loader's queue: how far decoding is behind the loads asked for."""
        return sum(loader.queued() for loader in list(self._loaders.values()))

    def shutdown(self) -> None:
        for record_id in list(self._records):
            self.unload(record_id)
        self._pool.shutdown(wait=False, cancel_futures=True)
