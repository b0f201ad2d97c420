"""The DICOM PS3.3 C.11 greyscale pipeline and colour handling: arrays in, arrays out.

Stored values → Modality LUT (rescale slope/intercept, or a Modality LUT Sequence) → VOI (a window
with the LINEAR, LINEAR_EXACT or SIGMOID function of C.11.2.1.2, or a VOI LUT Sequence) →
MONOCHROME1 inversion → 8-bit display values.

The window is applied per request (the paper baked it into 8-bit data at load time, which loses
every other window). To make that cheap, integer data of at most 16 bits is rendered through a
lookup table built per (record, window) over the stored values the frames actually use (a CT
frame uses about 4,000 of 65,536), then one table read per pixel in a compiled loop that runs
without the GIL. `render_gray_reference` is the same pipeline in float maths for every dtype; the
table is built with it, so both paths agree by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

WINDOW_FUNCTIONS = ("linear", "linear_exact", "sigmoid")
#: Values taken through the float pipeline at once (`display_bytes`). Each costs about 24 bytes of
#: temporaries there (float64 modality and display values, rounding), so a frame or reformat of
#: 8192 x 8192 values windowed whole held 1.5 GB per request beside the frames the memory budget
#: counts; in chunks of this many values, 6 MB, whatever the image's size.
WINDOW_CHUNK = 1 << 18

# Named windows (center, width) in Hounsfield units; values as commonly taught (Radiopaedia).
PRESETS: dict[str, tuple[float, float]] = {
    "ct_brain": (40.0, 80.0),
    "ct_subdural": (75.0, 215.0),
    "ct_stroke": (40.0, 40.0),
    "ct_temporal_bone": (600.0, 2800.0),
    "ct_lung": (-600.0, 1500.0),
    "ct_mediastinum": (50.0, 350.0),
    "ct_abdomen": (50.0, 400.0),
    "ct_liver": (30.0, 150.0),
    "ct_bone": (400.0, 1800.0),
    "ct_spine_soft": (50.0, 250.0),
}


def preset_modality(name: str) -> str:
    """The modality a named window is for: its prefix ("ct_lung" is for CT). Windows in absolute
    values only mean something for a modality with calibrated values (Hounsfield units); MR
    signal has no fixed scale, so no MR window is named here."""
    return name.split("_", 1)[0].upper()

_LUT_DTYPES = {np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.uint16), np.dtype(np.int16)}


@dataclass(frozen=True, eq=False)
class LutTable:
    """A LUT from a Modality or VOI LUT Sequence item: descriptor values and the table data."""

    first_mapped: int
    bits: int
    data: np.ndarray

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Input below the first mapped value takes the first entry, above the last the last."""
        index = np.floor(np.asarray(values, dtype=np.float64)) - self.first_mapped
        index = np.clip(index, 0, len(self.data) - 1).astype(np.intp)
        return self.data[index]


@dataclass(frozen=True, eq=False)
class Modality:
    """Modality LUT stage: a LUT when the file has one, else rescale slope and intercept."""

    slope: float = 1.0
    intercept: float = 0.0
    lut: LutTable | None = None

    def apply(self, stored: np.ndarray) -> np.ndarray:
        if self.lut is not None:
            return self.lut.lookup(stored).astype(np.float64)
        return np.asarray(stored, dtype=np.float64) * self.slope + self.intercept


@dataclass(frozen=True)
class Window:
    """A VOI window; `width` must be >= 1 for LINEAR and > 0 otherwise (C.11.2.1.2)."""

    center: float
    width: float
    function: str = "linear"

    def __post_init__(self) -> None:
        if self.function not in WINDOW_FUNCTIONS:
            raise ValueError(f"unknown VOI LUT function {self.function!r}")
        if self.function == "linear" and not self.width >= 1:
            raise ValueError("a LINEAR window needs a width of at least 1")
        if not self.width > 0:
            raise ValueError("a window needs a positive width")


@dataclass(frozen=True, eq=False)
class GrayParams:
    """Everything that maps stored values of a greyscale frame to display values."""

    modality: Modality = field(default_factory=Modality)
    voi: Window | LutTable | None = None
    invert: bool = False


def window_values(x: np.ndarray, window: Window, y_min: float = 0.0, y_max: float = 255.0) -> np.ndarray:
    """The VOI window functions of PS3.3 C.11.2.1.2.1-3, exactly as written there (float64)."""
    x = np.asarray(x, dtype=np.float64)
    c, w = float(window.center), float(window.width)
    if window.function == "sigmoid":
        with np.errstate(over="ignore"):
            return (y_max - y_min) / (1.0 + np.exp(-4.0 * (x - c) / w)) + y_min
    flat = x.ravel()  # a view where x is contiguous: the loop reads it once and writes one new array
    y = np.empty_like(flat)
    _linear_window(flat, c, w, window.function == "linear_exact", y_min, y_max, y)
    return y.reshape(x.shape)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _linear_window(x: np.ndarray, c: float, w: float, exact: bool, y_min: float, y_max: float,
                   y: np.ndarray) -> None:
    # C.11.2.1.2.1 (LINEAR) and C.11.2.1.3.2 (LINEAR_EXACT) value by value, each formula's steps in
    # the standard's order (IEEE rounding at each, no fused or reordered arithmetic): one pass, where
    # NumPy needed a temporary and a pass per step, and a new window's table is built per request
    span = y_max - y_min
    if exact:
        low, high = c - w / 2.0, c + w / 2.0
    else:
        low, high = c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0
    for i in range(x.size):
        v = x[i]
        if v <= low:
            y[i] = y_min
        elif v > high or (not exact and w <= 1.0):
            y[i] = y_max
        elif exact:
            y[i] = ((v - c) / w + 0.5) * span + y_min
        else:
            y[i] = ((v - (c - 0.5)) / (w - 1.0) + 0.5) * span + y_min


def voi_lut_values(x: np.ndarray, lut: LutTable, y_max: float = 255.0) -> np.ndarray:
    """VOI LUT Sequence: table output (0..2^bits-1) scaled linearly onto 0..y_max."""
    return lut.lookup(x).astype(np.float64) * (y_max / float((1 << lut.bits) - 1))


Voi = Window | LutTable
"""A VOI stage: a window (with its function) or a VOI LUT Sequence item."""


def voi_values(x: np.ndarray, voi: Voi) -> np.ndarray:
    """Modality values to display values 0..255 (float64) through a window or a VOI LUT: the one
    VOI step that 2D frames, reformats and 3D projections all use."""
    if isinstance(voi, LutTable):
        return voi_lut_values(x, voi)
    return window_values(x, voi)


def to_uint8(y: np.ndarray) -> np.ndarray:
    """Round half up and clip to 0..255."""
    y = np.asarray(y, dtype=np.float64)
    out = np.empty(y.size, dtype=np.uint8)
    _round_to_bytes(y.ravel(), out)
    return out.reshape(y.shape)[()]  # [()]: a scalar for a scalar, the whole array otherwise


@numba.njit(nogil=True, cache=True)
def _round_to_bytes(y: np.ndarray, out: np.ndarray) -> None:
    for i in range(y.size):
        r = np.floor(y[i] + 0.5)
        out[i] = 0 if r < 0.0 else 255 if r > 255.0 else np.uint8(r)


def display_bytes(stored: np.ndarray, to_modality: Callable[[np.ndarray], np.ndarray], voi: Voi,
                  invert: bool = False) -> np.ndarray:
    """8-bit display values of `stored` through `to_modality`, `voi` and (MONOCHROME1) inversion, in
    float maths: the one float pipeline of 2D frames, reformats and 3D projections. Element by element,
    WINDOW_CHUNK values at a time (along the first axis), so its temporaries stay small however large
    the image: the result is the same as in one piece."""
    if stored.ndim == 0:
        display = voi_values(to_modality(stored), voi)
        return to_uint8(255.0 - display if invert else display)
    out = np.empty(stored.shape, dtype=np.uint8)
    step = max(1, WINDOW_CHUNK // max(1, math.prod(stored.shape[1:])))
    for start in range(0, stored.shape[0], step):
        display = voi_values(to_modality(stored[start:start + step]), voi)
        out[start:start + step] = to_uint8(255.0 - display if invert else display)
    return out


def render_gray_reference(stored: np.ndarray, params: GrayParams) -> np.ndarray:
    """The whole greyscale pipeline in float maths, for any dtype; the definition of correct."""
    voi = auto_window(stored, params.modality) if params.voi is None else params.voi
    return display_bytes(stored, params.modality.apply, voi, params.invert)


def lut_supported(dtype: np.dtype) -> bool:
    """Whether frames of this dtype can be rendered through a full-range lookup table."""
    return np.dtype(dtype).newbyteorder("=") in _LUT_DTYPES


def gray_lut(dtype: np.dtype, params: GrayParams, value_range: tuple[int, int] | None = None) -> np.ndarray:
    """The 8-bit output for every value of an 8- or 16-bit dtype, indexed by its unsigned view.

    Signed values index by their two's-complement bit pattern (`frame.view(uint16)`), so no
    offset arithmetic or copy is needed per frame. With `value_range` (lowest, highest stored
    value of the frames it will serve) only those entries are computed and the rest are 0: a
    viewer dragging the window asks for a new table with every image, and a CT frame's range is
    a sixteenth of the 16-bit one.
    """
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype not in _LUT_DTYPES:
        raise ValueError(f"no lookup table for dtype {dtype}")
    unsigned = np.dtype(f"u{dtype.itemsize}")
    if value_range is None:
        domain = np.arange(1 << (8 * dtype.itemsize), dtype=np.int64).astype(unsigned).view(dtype)
        return render_gray_reference(domain, params)
    lowest, highest = int(value_range[0]), int(value_range[1])  # Python ints: the index sums below must not wrap
    info = np.iinfo(dtype)
    if not info.min <= lowest <= highest <= info.max:
        raise ValueError(f"value range {value_range} is not within {dtype}")
    size = 1 << (8 * dtype.itemsize)
    table = np.zeros(size, dtype=np.uint8)
    values = render_gray_reference(np.arange(lowest, highest + 1, dtype=dtype), params)
    # Stored values lowest..highest sit at one run of unsigned indexes, or at two where a signed
    # range crosses zero (its negative values at the top): slices, not a scatter (a new window per
    # request builds a table, so this is on the request path)
    if lowest < 0 <= highest:
        table[size + lowest:] = values[:-lowest]
        table[:highest + 1] = values[-lowest:]
    else:
        start = lowest % size
        table[start:start + len(values)] = values
    return table


@numba.njit(nogil=True, cache=True)
def _gather(table: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    # A plain loop: NumPy's fancy indexing converts every index to intp first (4x slower), and
    # it holds the GIL, which the node's other request threads need.
    rows, cols = index.shape
    for r in range(rows):
        for c in range(cols):
            out[r, c] = table[index[r, c]]


def apply_gray_lut(stored: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Render one frame through a table from `gray_lut` (its range must cover the frame's values)."""
    stored = stored.astype(stored.dtype.newbyteorder("="), copy=False)
    index = stored.view(f"u{stored.dtype.itemsize}")
    if index.ndim != 2:
        return lut[index]
    out = np.empty(index.shape, dtype=np.uint8)
    _gather(lut, index, out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the table loops now, not in a viewer's first request."""
    to_uint8(window_values(np.zeros(2), Window(0.0, 2.0)))
    for dtype in (np.uint8, np.uint16):
        table = np.zeros(1 << (8 * np.dtype(dtype).itemsize), np.uint8)
        for index in (np.zeros((1, 1), dtype), np.zeros((2, 2), dtype)[:, ::2]):  # whole frame, and a crop
            _gather(table, index, np.empty(index.shape, np.uint8))


def value_range(stored: np.ndarray) -> tuple[int, int]:
    """Lowest and highest stored value of integer pixels, for `gray_lut`."""
    return int(stored.min()), int(stored.max())


def render_gray(stored: np.ndarray, params: GrayParams, lut: np.ndarray | None = None) -> np.ndarray:
    """Render a greyscale frame: through `lut` (or a new table) when the dtype allows, else in floats."""
    if lut is not None:
        return apply_gray_lut(stored, lut)
    if lut_supported(stored.dtype) and stored.size and params.voi is not None:
        lowest, highest = value_range(stored)
        if highest - lowest < stored.size:
            return apply_gray_lut(stored, gray_lut(stored.dtype, params, (lowest, highest)))
    return render_gray_reference(stored, params)


def auto_window(stored: np.ndarray, modality: Modality | None = None, low_pct: float = 0.5,
                high_pct: float = 99.5) -> Window:
    """A window over the bulk of the modality values of `stored` (percentiles, so padding and
    outliers do not flatten it; without `modality` the values as they are).

    Integer data of at most 16 bits is counted per stored value (`_value_counts`, in chunks) and
    only its distinct values go through the modality stage, so a 4096 x 4096 frame costs a 64 K
    table rather than the two float64 copies of its 16 M values (268 MB) that `np.percentile` of
    the modality values held; the percentiles are the same order statistics, interpolated as NumPy
    does."""
    modality = modality or Modality()
    if stored.size == 0:
        return Window(0.0, 1.0)
    if np.dtype(stored.dtype).newbyteorder("=") in _LUT_DTYPES:
        values, counts = _value_counts(stored)
        mapped = modality.apply(values)
        order = np.argsort(mapped, kind="stable")
        mapped, counts = mapped[order], counts[order]
        low, high = _weighted_percentiles(mapped, np.cumsum(counts), (low_pct, high_pct))
        lowest, highest = float(mapped[0]), float(mapped[-1])
    else:
        values = modality.apply(stored)
        low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
        lowest, highest = float(values.min()), float(values.max())
    if high - low < 1.0:
        low, high = lowest, highest
    width = max(high - low, 1.0)
    return Window((low + high) / 2.0, width)


def _value_counts(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of 8- or 16-bit integer `stored` (ascending) and how often each occurs,
    counted by their unsigned bit pattern a block of rows at a time: only a block is ever copied
    (to native byte order and contiguous), whatever the frame's strides or byte order."""
    dtype = np.dtype(stored.dtype).newbyteorder("=")
    unsigned = np.dtype(f"u{dtype.itemsize}")
    size = 1 << (8 * dtype.itemsize)
    rows = stored.reshape(stored.shape[0], -1) if stored.ndim > 1 else stored.reshape(1, -1)
    step = max(1, WINDOW_CHUNK // max(1, rows.shape[1]))
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, rows.shape[0], step):
        block = np.ascontiguousarray(rows[start:start + step], dtype=dtype)
        counts += np.bincount(block.reshape(-1).view(unsigned), minlength=size)
    present = np.flatnonzero(counts)
    values = present.astype(unsigned).view(dtype)
    order = np.argsort(values, kind="stable")
    return values[order], counts[present][order]


def _weighted_percentiles(sorted_values: np.ndarray, cumulative: np.ndarray,
                          percents: tuple[float, ...]) -> list[float]:
    """`np.percentile`'s linear interpolation over the values `sorted_values` repeated as
    `cumulative` (the running count) says: the k-th smallest is the first whose running count
    exceeds k."""
    last = int(cumulative[-1]) - 1
    out = []
    for percent in percents:
        position = percent / 100.0 * last
        below = math.floor(position)
        fraction = position - below
        a = float(sorted_values[np.searchsorted(cumulative, below, side="right")])
        b = float(sorted_values[np.searchsorted(cumulative, min(below + 1, last), side="right")])
        # NumPy's own interpolation (`_lerp`): from the nearer end, so the result is its bit for bit
        out.append(b - (b - a) * (1.0 - fraction) if fraction >= 0.5 else a + (b - a) * fraction)
    return out


def color_to_uint8(rgb: np.ndarray, bits_stored: int) -> np.ndarray:
    """RGB samples of any bit depth as 8-bit (linear scaling of 0..2^bits-1 onto 0..255)."""
    if rgb.dtype == np.uint8 and bits_stored <= 8:
        return rgb
    top = float((1 << bits_stored) - 1)
    return to_uint8(np.asarray(rgb, dtype=np.float64) * (255.0 / top))
