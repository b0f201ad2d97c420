"""The OpenGL (vispy/EGL) back end against the CPU one, and the choice between them."""

from __future__ import annotations

import pytest

from bench.image_quality import psnr
from daemons.render.imaging.pixels import Window
from daemons.render.volume import ViewSpec
from daemons.render.volume.backend import probe_gl, select_backend
from daemons.render.volume.cpu import CpuRayCaster


@pytest.fixture(scope="module")
def gl_caster():
    probe = probe_gl()
    if not probe.ok:
        pytest.skip(f"no EGL/OpenGL context can be made here: {probe.reason}")
    from daemons.render.volume.gl import GlRayCaster

    return GlRayCaster()


@pytest.mark.parametrize("mode,extra", [
    ("mip", {}),
    ("mip", {"azimuth": 47, "elevation": -30, "roll": 12, "zoom": 1.6}),
    ("dvr", {"preset": "ct_bone"}),
    ("dvr", {"preset": "ct_soft_tissue", "azimuth": 130, "elevation": 35}),
    ("dvr", {"preset": "ct_bone", "quality": "interactive", "azimuth": -60}),
    ("avg", {"azimuth": 10, "window": Window(0, 3000)}),
    ("minip", {"elevation": 60, "window": Window(0, 3000)}),
])
def test_gl_and_cpu_agree(phantom, gl_caster, mode, extra):
    view = ViewSpec(mode=mode, width=160, height=128, **extra)
    cpu = CpuRayCaster().render(phantom, view)
    gl = gl_caster.render(phantom, view)
    assert cpu.shape == gl.shape
    assert cpu.max() > 0
    assert psnr(cpu, gl) >= 30.0


def test_cpu_is_always_available():
    assert select_backend("cpu").name == "cpu"


def test_auto_picks_a_working_backend(phantom):
    caster = select_backend("auto")
    assert caster.name in ("cpu", "vispy")
    assert caster.render(phantom, ViewSpec(width=32, height=32)).shape == (32, 32)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError):
        select_backend("directx")


def test_a_broken_egl_is_detected_without_harming_this_process(monkeypatch):
    from daemons.render.volume import backend

    monkeypatch.setenv("EGL_PLATFORM", "no-such-platform")
    for display in ("DISPLAY", "WAYLAND_DISPLAY"):  # else Mesa falls back to a window system
        monkeypatch.delenv(display, raising=False)
    probe = backend._run_probe()
    assert not probe.ok and probe.reason


def test_without_gl_every_choice_falls_back_to_the_cpu(monkeypatch, phantom):
    from daemons.render.volume import backend

    monkeypatch.setattr(backend, "_probe_result", backend.GlProbe(False, reason="no EGL here"))
    for name in ("auto", "vispy"):
        caster = select_backend(name)
        assert caster.name == "cpu"
        assert caster.render(phantom, ViewSpec(width=16, height=16)).shape == (16, 16)


def test_auto_prefers_the_cpu_over_a_software_rasteriser(monkeypatch):
    from daemons.render.volume import backend

    monkeypatch.setattr(backend, "_probe_result", backend.GlProbe(True, renderer="llvmpipe (LLVM 15.0.6, 256 bits)"))
    assert select_backend("auto").name == "cpu"


@pytest.mark.parametrize("mode", ["minip", "avg", "mip"])
def test_gl_and_cpu_count_ct_padding_as_air_alike(gl_caster, mode):
    """The floor of a CT with padding (PreparedVolume.floor) is applied by both back ends."""
    from tests.render3d.test_projection_defaults import ct_like_volume

    volume = ct_like_volume()
    view = ViewSpec(mode=mode, width=96, height=96, azimuth=30, elevation=20)
    cpu_values, cpu_hit = CpuRayCaster().projection(volume, view)
    gl_values, gl_hit = gl_caster.projection(volume, view)
    both = cpu_hit & gl_hit
    assert both.mean() > 0.9 * cpu_hit.mean()
    assert volume.to_modality(gl_values[both].astype(float)).min() >= -1024.0 - 0.5
    assert psnr(CpuRayCaster().render(volume, view), gl_caster.render(volume, view)) >= 30.0


def test_a_worker_takes_the_probe_its_node_made_and_probes_itself_only_without_one(monkeypatch):
    """`sivr serve` probes once and passes the answer down (SIVR_GL_PROBE): a worker and each of
    its replacements would otherwise pay a Python start-up and a GL context (about a second)."""
    from daemons.render.volume import backend

    asked: list[str] = []
    monkeypatch.setattr(backend, "_run_probe", lambda: asked.append("probe") or backend.GlProbe(False, reason="asked"))
    monkeypatch.setattr(backend, "_probe_result", None)
    monkeypatch.setenv(backend.PROBE_ENV, "")  # empty: none inherited; and undone after the test
    node = backend.share_probe_with_workers()
    assert asked == ["probe"] and node == backend.GlProbe(False, reason="asked")

    monkeypatch.setattr(backend, "_probe_result", None)  # a worker forked after it
    monkeypatch.setattr(backend, "_run_probe", lambda: pytest.fail("the worker probed again"))
    assert backend.probe_gl() == node

    monkeypatch.setattr(backend, "_run_probe", lambda: backend.GlProbe(True, renderer="its own"))
    assert backend.share_probe_with_workers() == backend.GlProbe(True, renderer="its own")  # a node start
    # probes whatever it inherited
    for damaged in ("{", "[]", '{"ok": true}', '{"ok": "false", "renderer": "", "reason": ""}'):
        monkeypatch.setattr(backend, "_probe_result", None)
        monkeypatch.setenv(backend.PROBE_ENV, damaged)
        assert backend.probe_gl() == backend.GlProbe(True, renderer="its own")
