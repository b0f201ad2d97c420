"""Compiled kernels ready before a render node serves anyone.

The node's numba kernels (the 2D window and table loops, the 3D brick scan and ray casters) take a minute or
more to compile on a busy machine. Every one is declared `cache=True`, so numba keeps the machine
code on disk (in NUMBA_CACHE_DIR: the systemd units point it at the unit's CacheDirectory, and
installers/install.sh fills it at install time). `warm_up_kernels` runs each kernel once on tiny
input: it compiles what the cache lacks and loads the rest, and says which happened, so a start
or a worker restart pays a cache load (about a second) instead of a compilation, and never in a
physician's first request. `sivr serve render` calls it before gunicorn starts (systemd counts the
node as started only after that), and the app factory again before the worker accepts requests.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from daemons.render.imaging import pixels
from daemons.render.volume import MODES, ViewSpec, cpu, prepare_volume, volume
from daemons.render.volume.cpu import CpuRayCaster
from daemons.render.volume.raycast import RayCaster

log = logging.getLogger(__name__)

KERNELS = (pixels._gather, pixels._linear_window, pixels._round_to_bytes,
           volume._brick_extremes, cpu._project, cpu._composite)
WARM_DTYPES = (np.int16, np.uint16)  # CT and MR; other stored types compile on first use


@dataclass(frozen=True)
class WarmUp:
    """What one warm-up did: `compiled` signatures were built now, `from_cache` loaded from disk."""

    seconds: float
    compiled: int
    from_cache: int
    cache_dir: str

    def as_json(self) -> dict:
        """For `GET /api/v1/node` (without the folder: clients need not know the node's paths)."""
        return {"seconds": self.seconds, "compiled": self.compiled, "from_cache": self.from_cache}

    def summary(self) -> str:
        return (f"kernels warm in {self.seconds:.2f} s: {self.compiled} compiled, "
                f"{self.from_cache} loaded from the cache in {self.cache_dir}")


def _counts() -> tuple[int, int]:
    """Cache misses (compilations) and hits of the node's kernels so far in this process."""
    misses = sum(sum(k.stats.cache_misses.values()) for k in KERNELS)
    hits = sum(sum(k.stats.cache_hits.values()) for k in KERNELS)
    return misses, hits


def warm_up_kernels(caster: RayCaster | None = None) -> WarmUp:
    """Run every kernel once (and `caster`, when it is another back end, for its own set-up)."""
    start = time.perf_counter()
    misses, hits = _counts()
    pixels.warm_up()
    casters: list[RayCaster] = [CpuRayCaster()]
    if caster is not None and not isinstance(caster, CpuRayCaster):
        casters.append(caster)
    for dtype in WARM_DTYPES:
        tiny = prepare_volume(np.arange(9 * 9 * 9).astype(dtype).reshape(9, 9, 9), (1.0, 1.0, 1.0))
        for each in casters:
            for mode in MODES:
                each.render(tiny, ViewSpec(mode=mode, width=8, height=8))
    misses_after, hits_after = _counts()
    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or "the package's __pycache__ folders"
    done = WarmUp(round(time.perf_counter() - start, 3), misses_after - misses, hits_after - hits, cache_dir)
    log.info("%s", done.summary())
    return done


def main() -> int:
    """`python -m daemons.render.warm`: fill the kernel cache (installers/install.sh runs it)."""
    print(warm_up_kernels().summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
