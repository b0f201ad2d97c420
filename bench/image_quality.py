"""How close two renderings of one image are, in one definition for the benchmarks and the tests."""

from __future__ import annotations

import numpy as np


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """Peak signal-to-noise ratio of 8-bit images in dB (infinite when identical)."""
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
