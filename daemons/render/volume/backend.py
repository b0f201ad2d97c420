"""Choosing the 3D back end: the CPU one always works; OpenGL only where a context can be made.

Making an EGL context can crash a process outright on a broken driver, so whether one works is
probed in a child process; only then is a context made in this process. The probe costs a Python
start-up and a context (about a second): `sivr serve` asks once, before gunicorn forks, and hands
the answer to every worker (and every replacement of one) in SIVR_GL_PROBE. On Mesa's software
rasteriser (llvmpipe) the numba CPU back end is several times faster (see docs/benchmarks-3d.md),
so "auto" takes OpenGL only on a hardware GPU.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from daemons.render.volume.cpu import CpuRayCaster
from daemons.render.volume.raycast import RayCaster

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "vispy")
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")
PROBE_TIMEOUT_S = 60
PROBE_ENV = "SIVR_GL_PROBE"

_PROBE_SCRIPT = (
    "from daemons.render.volume.gl import _GlState\n"
    "print('SIVR-GL-RENDERER:' + _GlState().renderer, flush=True)\n"
)


@dataclass(frozen=True)
class GlProbe:
    ok: bool
    renderer: str = ""
    reason: str = ""

    @property
    def hardware(self) -> bool:
        return self.ok and not any(s in self.renderer.lower() for s in SOFTWARE_RENDERERS)


_probe_lock = threading.Lock()
_probe_result: GlProbe | None = None


def probe_gl() -> GlProbe:
    """Whether an offscreen EGL context with our shader works here (the parent's answer, or asked
    once per process)."""
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _inherited_probe() or _run_probe()
        return _probe_result


def share_probe_with_workers() -> GlProbe:
    """Probe now, whatever this process inherited, and leave the answer in the environment the
    processes started from here inherit."""
    global _probe_result
    with _probe_lock:
        _probe_result = _run_probe()
        os.environ[PROBE_ENV] = json.dumps(asdict(_probe_result))
        return _probe_result


def _inherited_probe() -> GlProbe | None:
    text = os.environ.get(PROBE_ENV)
    if not text:
        return None
    try:
        values = json.loads(text)
        if not isinstance(values["ok"], bool):
            raise TypeError("ok is not true or false")
        return GlProbe(ok=values["ok"], renderer=str(values["renderer"]), reason=str(values["reason"]))
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring %s=%r (%s): probing OpenGL again", PROBE_ENV, text[:200], exc)
        return None


def _run_probe() -> GlProbe:
    root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return GlProbe(False, reason=f"the GL probe did not finish: {exc}")
    for line in done.stdout.splitlines():
        if line.startswith("SIVR-GL-RENDERER:"):
            return GlProbe(True, renderer=line.split(":", 1)[1].strip())
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return GlProbe(False, reason=f"no EGL context (exit {done.returncode}): {tail[:300]}")


def select_backend(name: str = "auto") -> RayCaster:
    """The back end named in the config, or the CPU one when OpenGL is unavailable.

    An explicit "vispy" that cannot work logs an error and still serves on the CPU: a node that
    renders slower beats one that renders nothing.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown 3D back end {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cpu":
        return CpuRayCaster()
    probe = probe_gl()
    if name == "auto" and not probe.hardware:
        log.info("3D back end: cpu (OpenGL %s)", probe.renderer or probe.reason)
        return CpuRayCaster()
    if not probe.ok:
        log.error("3D back end vispy requested but unavailable (%s); using the CPU", probe.reason)
        return CpuRayCaster()
    from daemons.render.volume.gl import GlRayCaster

    try:
        caster = GlRayCaster()
    except Exception as exc:  # a driver can fail in ways no exception type predicts
        log.error("3D back end vispy failed to start (%s); using the CPU", exc)
        return CpuRayCaster()
    log.info("3D back end: vispy on %s", caster.renderer)
    return caster
