"""The OpenGL back end: the same ray casting as the CPU one, as a vispy gloo fragment shader.

It runs offscreen through EGL (a GPU when there is one, Mesa llvmpipe otherwise) into a float
framebuffer that is read back, so the results feed the same windowing as the CPU's. The shader
receives the very `RayGrid` and transfer table the CPU uses; texture filtering does the trilinear
sampling. A GL context belongs to one thread, so every GL call runs on one worker thread owned by
this object; requests from server threads queue for it.
"""

from __future__ import annotations

import logging
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from daemons.render.volume.cpu import CpuRayCaster
from daemons.render.volume.geometry import RayGrid
from daemons.render.volume.raycast import AMBIENT, DIFFUSE, OPAQUE_STOP, SHININESS, SPECULAR, RayCaster
from daemons.render.volume.transfer import LUT_SIZE, TransferLut
from daemons.render.volume.volume import NO_FLOOR, PreparedVolume

log = logging.getLogger(__name__)

DVR_CODE = 3
GL_MAX_3D_TEXTURE_SIZE = 0x8073  # not exported by vispy.gloo.gl

VERTEX = """
attribute vec2 a_position;
void main() { gl_Position = vec4(a_position, 0.0, 1.0); }
"""

FRAGMENT = """
#version 130
uniform sampler3D u_volume;
uniform sampler2D u_lut;
uniform vec3 u_size;
uniform vec3 u_origin;
uniform vec3 u_du;
uniform vec3 u_dv;
uniform vec3 u_step;
uniform vec3 u_box_hi;
uniform vec3 u_light;
uniform vec3 u_mm0;
uniform vec3 u_mm1;
uniform vec3 u_mm2;
uniform float u_height;
uniform float u_value_scale;
uniform float u_value_offset;
uniform float u_lut_lo;
uniform float u_lut_scale;
uniform int u_mode;
uniform float u_floor;
uniform vec4 u_shading;
uniform float u_opaque_stop;

float value_at(vec3 p) {
    return texture(u_volume, (p + 0.5) / u_size).r * u_value_scale + u_value_offset;
}

vec4 lut_at(float pos) {
    pos = clamp(pos, 0.0, %(lut_last)s);
    return texture(u_lut, vec2((pos + 0.5) / %(lut_size)s, 0.5));
}

void main() {
    float u = floor(gl_FragCoord.x);
    float v = u_height - 1.0 - floor(gl_FragCoord.y);
    vec3 o = u_origin + u * u_du + v * u_dv;
    float t_near = -1e30;
    float t_far = 1e30;
    bool miss = false;
    for (int a = 0; a < 3; a++) {
        if (abs(u_step[a]) < 1e-12) {
            if (o[a] < -0.5 || o[a] > u_box_hi[a]) miss = true;
        } else {
            float t0 = (-0.5 - o[a]) / u_step[a];
            float t1 = (u_box_hi[a] - o[a]) / u_step[a];
            t_near = max(t_near, min(t0, t1));
            t_far = min(t_far, max(t0, t1));
        }
    }
    int k0 = int(ceil(t_near));
    int k1 = int(ceil(t_far)) - 1;
    if (miss || t_near > t_far || k0 > k1) {
        gl_FragColor = vec4(0.0);
        return;
    }
    vec3 hi = u_size - 1.0;
    if (u_mode < %(dvr)s) {
        float best = u_mode == 0 ? -1e30 : 1e30;
        float total = 0.0;
        for (int k = k0; k <= k1; k++) {
            float value = max(value_at(clamp(o + float(k) * u_step, vec3(0.0), hi)), u_floor);
            if (u_mode == 0) best = max(best, value);
            else if (u_mode == 1) best = min(best, value);
            else total += value;
        }
        gl_FragColor = vec4(u_mode == 2 ? total / float(k1 - k0 + 1) : best, 1.0, 0.0, 1.0);
        return;
    }
    vec3 color = vec3(0.0);
    float opacity = 0.0;
    for (int k = k0; k <= k1; k++) {
        vec3 p = clamp(o + float(k) * u_step, vec3(0.0), hi);
        float pos = (value_at(p) - u_lut_lo) * u_lut_scale;
        vec4 rgba = lut_at(pos);
        if (rgba.a <= 0.0) continue;
        vec3 g = 0.5 * vec3(
            value_at(vec3(min(p.x + 1.0, hi.x), p.y, p.z)) - value_at(vec3(max(p.x - 1.0, 0.0), p.y, p.z)),
            value_at(vec3(p.x, min(p.y + 1.0, hi.y), p.z)) - value_at(vec3(p.x, max(p.y - 1.0, 0.0), p.z)),
            value_at(vec3(p.x, p.y, min(p.z + 1.0, hi.z))) - value_at(vec3(p.x, p.y, max(p.z - 1.0, 0.0))));
        vec3 n = vec3(dot(u_mm0, g), dot(u_mm1, g), dot(u_mm2, g));
        float norm = length(n);
        float facing = 1.0;
        if (norm > 1e-6) facing = min(abs(dot(g, u_light)) / norm, 1.0);
        float lit = u_shading.x + u_shading.y * facing;
        float shine = u_shading.z * pow(facing, u_shading.w);
        float weight = (1.0 - opacity) * rgba.a;
        color += weight * (rgba.rgb * lit + shine);
        opacity += weight;
        if (opacity >= u_opaque_stop) break;
    }
    gl_FragColor = vec4(color, 1.0);
}
""" % {"lut_last": f"{LUT_SIZE - 1}.0", "lut_size": f"{LUT_SIZE}.0", "dvr": DVR_CODE}  # noqa: UP031 (GLSL braces)


def _use_egl() -> None:
    os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    import vispy

    vispy.use(app="egl")


class _GlState:
    """Objects living in the GL thread: canvas, program and the last volume's texture."""

    def __init__(self) -> None:
        _use_egl()
        from vispy import app, gloo

        self.gloo = gloo
        self.canvas = app.Canvas(show=False, size=(16, 16))
        self.canvas.set_current()
        self.renderer = str(gloo.gl.glGetParameter(gloo.gl.GL_RENDERER))
        self.max_3d = int(gloo.gl.glGetParameter(GL_MAX_3D_TEXTURE_SIZE))
        self.program = gloo.Program(VERTEX, FRAGMENT)
        self.program["a_position"] = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float32)
        self.volume_ref: weakref.ref | None = None
        self.volume_texture: Any = None  # a vispy Texture3D once bound (vispy has no type hints)
        self.value_scale = 1.0
        self.value_offset = 0.0
        self.floor = NO_FLOOR

    def bind_volume(self, volume: PreparedVolume) -> None:
        if self.volume_ref is not None and self.volume_ref() is volume:
            return
        voxels = volume.voxels
        if voxels.dtype.kind in "iu" and volume.raw_range[1] - volume.raw_range[0] <= 65535:
            data = (voxels.astype(np.int64) - int(volume.raw_range[0])).astype(np.uint16)
            self.value_scale, self.value_offset = 65535.0, float(int(volume.raw_range[0]))
            internal = "r16"
        else:
            data = voxels.astype(np.float32)
            self.value_scale, self.value_offset = 1.0, 0.0
            internal = "r32f"
        self.volume_texture = self.gloo.Texture3D(
            data[..., np.newaxis], interpolation="linear", wrapping="clamp_to_edge",
            internalformat=internal)
        self.volume_ref = weakref.ref(volume)
        self.floor = float(volume.floor)

    def draw(self, grid: RayGrid, code: int, lut: TransferLut | None) -> np.ndarray:
        gloo = self.gloo
        program = self.program
        program["u_volume"] = self.volume_texture
        program["u_value_scale"] = self.value_scale
        program["u_value_offset"] = self.value_offset
        shape = self.volume_texture.shape  # (frames, rows, cols, 1)
        program["u_size"] = (float(shape[2]), float(shape[1]), float(shape[0]))
        for name in ("origin", "du", "dv", "step", "box_hi"):
            program[f"u_{name}"] = tuple(float(c) for c in getattr(grid, name))
        program["u_light"] = tuple(float(c) for c in grid.light_index)
        for row in range(3):
            program[f"u_mm{row}"] = tuple(float(c) for c in grid.gradient_to_mm[row])
        program["u_height"] = float(grid.height)
        program["u_mode"] = int(code)
        program["u_floor"] = self.floor
        program["u_shading"] = (AMBIENT, DIFFUSE, SPECULAR, SHININESS)
        program["u_opaque_stop"] = OPAQUE_STOP
        if lut is not None:
            program["u_lut"] = gloo.Texture2D(lut.table[np.newaxis], interpolation="linear",
                                              wrapping="clamp_to_edge", internalformat="rgba32f")
            program["u_lut_lo"] = float(lut.lo)
            program["u_lut_scale"] = float(lut.scale)
        else:
            program["u_lut"] = gloo.Texture2D(np.zeros((1, 2, 4), np.float32), internalformat="rgba32f")
            program["u_lut_lo"] = 0.0
            program["u_lut_scale"] = 0.0
        target = gloo.Texture2D(shape=(grid.height, grid.width, 4), internalformat="rgba32f")
        framebuffer = gloo.FrameBuffer(color=target)
        with framebuffer:
            gloo.set_viewport(0, 0, grid.width, grid.height)
            gloo.set_state(blend=False, depth_test=False)
            program.draw("triangle_strip")
            pixels = gloo.read_pixels((0, 0, grid.width, grid.height), alpha=True, out_type="float")
        return pixels


class GlRayCaster(RayCaster):
    """vispy/EGL back end; creating it raises RuntimeError when no context can be made."""

    name = "vispy"

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sivr-gl")
        self._state: _GlState = self._executor.submit(_GlState).result()
        self.renderer = self._state.renderer
        self._cpu = CpuRayCaster()

    def _fits(self, volume: PreparedVolume) -> bool:
        """Volumes beyond the GL's 3D texture size are rendered by the CPU back end instead."""
        return max(volume.voxels.shape) <= self._state.max_3d

    def _run(self, volume: PreparedVolume, grid: RayGrid, code: int,
             lut: TransferLut | None) -> np.ndarray | None:
        """The framebuffer, or None when the driver failed (the caller then renders on the CPU)."""
        def job() -> np.ndarray:
            self._state.bind_volume(volume)
            return self._state.draw(grid, code, lut)

        try:
            return self._executor.submit(job).result()
        except Exception:  # a driver can fail in ways no exception type predicts
            log.exception("OpenGL rendering failed; this view is rendered on the CPU")
            self._state.volume_ref = None
            return None

    def project(self, volume: PreparedVolume, grid: RayGrid, code: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = self._run(volume, grid, code, None) if self._fits(volume) else None
        if pixels is None:
            return self._cpu.project(volume, grid, code)
        return np.ascontiguousarray(pixels[..., 0]), pixels[..., 1] > 0.5

    def composite(self, volume: PreparedVolume, grid: RayGrid, lut: TransferLut) -> np.ndarray:
        pixels = self._run(volume, grid, DVR_CODE, lut) if self._fits(volume) else None
        if pixels is None:
            return self._cpu.composite(volume, grid, lut)
        return np.ascontiguousarray(pixels[..., :3])
