"""Transfer-function presets for composited volume rendering, and the lookup table built from them.

A preset is a piecewise-linear map from a value to colour and opacity. CT presets are in
Hounsfield units, so they mean the same tissue on every scanner; MR has no absolute scale, so its
preset is placed on the record's own value range (fractions between two percentiles). Each
preset names the modality it is made for: a viewer offers a record only its modality's presets,
and `default_preset` is the one a view without a preset gets (the one rule, for every door).
Opacities are per millimetre of ray: the table is corrected for the actual step length
(alpha_step = 1 - (1 - alpha_mm) ** step_mm), so a finer preview and a still agree in density.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUT_SIZE = 4096


@dataclass(frozen=True)
class TransferPreset:
    name: str
    units: str  # "hu" (modality values) or "relative" (0..1 between the record's percentiles)
    modality: str  # the modality it is made for ("CT": Hounsfield units; "MR": relative)
    points: tuple[tuple[float, float, float, float, float], ...]  # (value, r, g, b, alpha per mm)


PRESETS: dict[str, TransferPreset] = {p.name: p for p in (
    TransferPreset("ct_bone", "hu", "CT", (
        (-3024, 0.0, 0.0, 0.0, 0.0),
        (180, 0.73, 0.25, 0.30, 0.0),
        (260, 0.90, 0.72, 0.55, 0.12),
        (450, 0.96, 0.90, 0.78, 0.55),
        (1200, 1.0, 1.0, 0.95, 0.85),
        (3071, 1.0, 1.0, 1.0, 0.9),
    )),
    TransferPreset("ct_soft_tissue", "hu", "CT", (
        (-3024, 0.0, 0.0, 0.0, 0.0),
        (-500, 0.55, 0.25, 0.15, 0.0),
        (-100, 0.88, 0.60, 0.50, 0.04),
        (20, 0.80, 0.35, 0.30, 0.08),
        (80, 0.85, 0.45, 0.40, 0.12),
        (250, 0.95, 0.88, 0.75, 0.40),
        (1000, 1.0, 1.0, 0.95, 0.80),
        (3071, 1.0, 1.0, 1.0, 0.85),
    )),
    TransferPreset("ct_lung", "hu", "CT", (
        (-3024, 0.0, 0.0, 0.0, 0.0),
        (-950, 0.30, 0.30, 0.60, 0.0),
        (-800, 0.70, 0.70, 0.90, 0.03),
        (-550, 0.95, 0.65, 0.55, 0.30),
        (-250, 1.0, 0.80, 0.70, 0.0),
        (3071, 1.0, 1.0, 1.0, 0.0),
    )),
    TransferPreset("ct_angio", "hu", "CT", (
        (-3024, 0.0, 0.0, 0.0, 0.0),
        (120, 0.55, 0.05, 0.05, 0.0),
        (200, 0.85, 0.15, 0.10, 0.30),
        (400, 1.0, 0.60, 0.45, 0.70),
        (1000, 1.0, 1.0, 0.95, 0.90),
        (3071, 1.0, 1.0, 1.0, 0.95),
    )),
    # Tissue above the background noise in skin-to-white tones, brighter tissue denser.
    TransferPreset("mr_soft_tissue", "relative", "MR", (
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (0.12, 0.30, 0.20, 0.15, 0.0),
        (0.35, 0.80, 0.65, 0.55, 0.08),
        (0.70, 0.95, 0.90, 0.80, 0.35),
        (1.0, 1.0, 1.0, 1.0, 0.60),
    )),
    # Bright vessels (contrast-enhanced or time-of-flight MR angiography): only the brightest
    # signal, above most tissue, is opaque; the rest is a faint context.
    TransferPreset("mr_angio", "relative", "MR", (
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (0.45, 0.40, 0.25, 0.20, 0.0),
        (0.65, 0.70, 0.35, 0.30, 0.01),
        (0.85, 0.95, 0.30, 0.22, 0.25),
        (1.1, 1.0, 0.85, 0.75, 0.70),
        (1.6, 1.0, 1.0, 1.0, 0.90),
    )),
)}

#: The preset of a DVR view that names none, by modality; any other modality has no absolute
#: scale and takes a relative preset.
DEFAULT_PRESET = {"CT": "ct_bone", "MR": "mr_soft_tissue"}
FALLBACK_PRESET = "mr_soft_tissue"


def default_preset(modality: str) -> str:
    """The transfer-function preset a DVR view of a `modality` record starts with."""
    return DEFAULT_PRESET.get(modality.upper(), FALLBACK_PRESET)


def presets_for(modality: str) -> list[str]:
    """The presets a viewer offers a `modality` record: that modality's, else the relative ones
    (which fit any scale); every preset when `modality` is empty."""
    if not modality:
        return sorted(PRESETS)
    own = sorted(n for n, p in PRESETS.items() if p.modality == modality.upper())
    return own or sorted(n for n, p in PRESETS.items() if p.units == "relative")


@dataclass(frozen=True)
class TransferLut:
    """RGBA per raw value: entry i holds raw value `lo + i / scale`; alpha is per step."""

    table: np.ndarray  # (LUT_SIZE, 4) float32
    lo: float
    scale: float

    def position(self, raw: np.ndarray | float) -> np.ndarray | float:
        return (np.asarray(raw, dtype=np.float64) - self.lo) * self.scale


def build_lut(preset: TransferPreset, raw_range: tuple[float, float], slope: float, intercept: float,
              relative_range: tuple[float, float], step_mm: float) -> TransferLut:
    """Sample `preset` over the volume's raw value range, in raw units (no per-voxel rescale)."""
    lo, hi = float(raw_range[0]), float(raw_range[1])
    if hi <= lo:
        hi = lo + 1.0
    raw = np.linspace(lo, hi, LUT_SIZE)
    values = raw * slope + intercept
    if preset.units == "relative":
        low, high = relative_range
        values = (values - low) / max(high - low, 1e-6)
    points = np.asarray(preset.points, dtype=np.float64)
    table = np.empty((LUT_SIZE, 4), dtype=np.float32)
    for channel in range(4):
        table[:, channel] = np.interp(values, points[:, 0], points[:, channel + 1])
    alpha = np.clip(table[:, 3].astype(np.float64), 0.0, 1.0)
    table[:, 3] = 1.0 - np.power(1.0 - alpha, step_mm)
    return TransferLut(table, lo, (LUT_SIZE - 1) / (hi - lo))


def empty_bricks(lut: TransferLut, brick_min: np.ndarray, brick_max: np.ndarray) -> np.ndarray:
    """True for bricks whose whole value range maps to zero opacity (safe to skip when compositing).

    A sample's table position lies between those of the brick's extremes and is interpolated from
    the two entries around it, hence the +1 on the upper index.
    """
    opaque = np.concatenate([[0], np.cumsum(lut.table[:, 3] > 0)])
    first = np.clip(np.floor(lut.position(brick_min)).astype(np.int64), 0, LUT_SIZE - 1)
    last = np.clip(np.floor(lut.position(brick_max)).astype(np.int64) + 1, 0, LUT_SIZE - 1)
    return (opaque[last + 1] - opaque[first]) == 0
