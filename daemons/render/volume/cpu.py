"""The CPU back end: ray casting compiled with numba, one thread per core over image rows.

Speed comes from (1) parallel rows with small dynamic chunks (the rays through the body cost far
more than those through air), (2) skipping samples in bricks that cannot change the result (a MIP
cannot rise inside a brick whose maximum is below the current one; a brick whose whole value range
is transparent adds nothing to a composite), which also avoids touching most of the volume's
memory; a MIP starts from a sample of the ray's brightest brick so that the test bites early,
and (3) early ray termination once a composited ray is nearly opaque. The skipping is exact: the
image equals the one without it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from daemons.render.volume.geometry import RayGrid
from daemons.render.volume.raycast import AMBIENT, AVG, DIFFUSE, MIP, OPAQUE_STOP, SHININESS, SPECULAR, RayCaster
from daemons.render.volume.transfer import TransferLut, empty_bricks
from daemons.render.volume.volume import BRICK, BRICK_SHIFT, PARALLEL_LOCK, PreparedVolume

CHUNK_ROWS = 2


@numba.njit(inline="always", fastmath=True)
def _ray_span(ox, oy, oz, sx, sy, sz, hx, hy, hz):
    """Integer sample range [k0, k1] of the ray o + k*s inside the box [-0.5, h] per axis.

    Half-open (t_far excluded): each sample stands for one step of ray, so a box face that falls
    exactly on a sample plane does not add a sample and every ray weighs its true length."""
    t_near = -1e30
    t_far = 1e30
    for o, s, h in ((ox, sx, hx), (oy, sy, hy), (oz, sz, hz)):
        if abs(s) < 1e-12:
            if o < -0.5 or o > h:
                return 1, 0
        else:
            t0 = (-0.5 - o) / s
            t1 = (h - o) / s
            if t0 > t1:
                t0, t1 = t1, t0
            t_near = max(t_near, t0)
            t_far = min(t_far, t1)
    if t_near > t_far:
        return 1, 0
    return int(math.ceil(t_near)), int(math.ceil(t_far)) - 1


@numba.njit(inline="always", fastmath=True)
def _clamp(value, high):
    return min(max(value, 0.0), high)


@numba.njit(inline="always", fastmath=True)
def _trilinear(vol, x, y, z):
    """Value at a point already clamped to [0, n-1] on each axis."""
    nz, ny, nx = vol.shape
    # Unsigned indices: numba then skips its negative-index wraparound test on each of 8 loads.
    x0 = np.uint64(x)
    y0 = np.uint64(y)
    z0 = np.uint64(z)
    x1 = min(x0 + np.uint64(1), np.uint64(nx - 1))
    y1 = min(y0 + np.uint64(1), np.uint64(ny - 1))
    z1 = min(z0 + np.uint64(1), np.uint64(nz - 1))
    fx = x - x0
    fy = y - y0
    fz = z - z0
    c00 = vol[z0, y0, x0] + fx * (vol[z0, y0, x1] - np.float32(vol[z0, y0, x0]))
    c01 = vol[z0, y1, x0] + fx * (vol[z0, y1, x1] - np.float32(vol[z0, y1, x0]))
    c10 = vol[z1, y0, x0] + fx * (vol[z1, y0, x1] - np.float32(vol[z1, y0, x0]))
    c11 = vol[z1, y1, x0] + fx * (vol[z1, y1, x1] - np.float32(vol[z1, y1, x0]))
    c0 = c00 + fy * (c01 - c00)
    c1 = c10 + fy * (c11 - c10)
    return c0 + fz * (c1 - c0)


@numba.njit(inline="always", fastmath=True)
def _promising_sample(vol, brick_max, ox, oy, oz, step, k0, k1):
    """The largest sample near the ray's brightest brick, found by a coarse walk of the bricks.

    Starting a MIP with it lets the brick test discard most of the ray at once instead of only
    what lies behind the point where a high value happens to be met (25-40 % less work on CT).
    It is one of the ray's own samples, so the result is unchanged. (MinIP gains nothing: its
    rays meet air at once.)"""
    mx, my, mz = vol.shape[2] - 1.0, vol.shape[1] - 1.0, vol.shape[0] - 1.0
    brightest = -1e30
    k_best = k0
    for k in range(k0, k1 + 1, BRICK // 2):
        bound = brick_max[int(_clamp(oz + k * step[2], mz)) >> BRICK_SHIFT,
                          int(_clamp(oy + k * step[1], my)) >> BRICK_SHIFT,
                          int(_clamp(ox + k * step[0], mx)) >> BRICK_SHIFT]
        if bound > brightest:
            brightest = bound
            k_best = k
    best = -1e30
    for k in range(max(k0, k_best - BRICK // 2), min(k1, k_best + BRICK // 2) + 1):
        best = max(best, _trilinear(vol, _clamp(ox + k * step[0], mx), _clamp(oy + k * step[1], my),
                                    _clamp(oz + k * step[2], mz)))
    return best


@numba.njit(inline="always", fastmath=True)
def _ray_mean(vol, ox, oy, oz, step, k0, k1, floor):
    """Mean of the samples k0..k1. Every sample counts here, so the loop is kept lean: positions
    advance by addition and only samples in the outer half voxel of the box are clamped (this
    halves the CPU time of an average projection against the generic loop)."""
    mx, my, mz = vol.shape[2] - 1.0, vol.shape[1] - 1.0, vol.shape[0] - 1.0
    x = ox + k0 * step[0]
    y = oy + k0 * step[1]
    z = oz + k0 * step[2]
    total = 0.0
    for _ in range(k1 - k0 + 1):
        if 0.0 <= x <= mx and 0.0 <= y <= my and 0.0 <= z <= mz:
            total += max(_trilinear(vol, x, y, z), floor)
        else:
            total += max(_trilinear(vol, _clamp(x, mx), _clamp(y, my), _clamp(z, mz)), floor)
        x += step[0]
        y += step[1]
        z += step[2]
    return total / (k1 - k0 + 1)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _project(vol, brick_min, brick_max, code, floor, origin, du, dv, step, box_hi, out, hit):
    """MIP, MinIP or mean of each ray; samples below raw value `floor` count as `floor`
    (PreparedVolume.floor: CT padding counts as air)."""
    nz, ny, nx = vol.shape
    height, width = out.shape
    hx, hy, hz = box_hi[0], box_hi[1], box_hi[2]
    mx, my, mz = nx - 1.0, ny - 1.0, nz - 1.0
    for v in numba.prange(height):
        for u in range(width):
            ox = origin[0] + u * du[0] + v * dv[0]
            oy = origin[1] + u * du[1] + v * dv[1]
            oz = origin[2] + u * du[2] + v * dv[2]
            k0, k1 = _ray_span(ox, oy, oz, step[0], step[1], step[2], hx, hy, hz)
            if k0 > k1:
                out[v, u] = 0.0
                hit[v, u] = False
                continue
            best = -1e30 if code == MIP else 1e30
            if code == MIP:
                best = _promising_sample(vol, brick_max, ox, oy, oz, step, k0, k1)
            elif code == AVG:
                out[v, u] = _ray_mean(vol, ox, oy, oz, step, k0, k1, floor)
                hit[v, u] = True
                continue
            for k in range(k0, k1 + 1):
                x = _clamp(ox + k * step[0], mx)
                y = _clamp(oy + k * step[1], my)
                z = _clamp(oz + k * step[2], mz)
                if code == MIP:
                    if brick_max[int(z) >> BRICK_SHIFT, int(y) >> BRICK_SHIFT, int(x) >> BRICK_SHIFT] <= best:
                        continue
                    best = max(best, _trilinear(vol, x, y, z))
                else:
                    if brick_min[int(z) >> BRICK_SHIFT, int(y) >> BRICK_SHIFT, int(x) >> BRICK_SHIFT] >= best:
                        continue
                    best = min(best, _trilinear(vol, x, y, z))
                    if best <= floor:
                        break
            out[v, u] = max(best, floor)
            hit[v, u] = True


@numba.njit(inline="always", fastmath=True)
def _lut_lookup(table, pos, channel):
    last = table.shape[0] - 1
    pos = min(max(pos, 0.0), float(last))
    i = int(pos)
    j = min(i + 1, last)
    f = pos - i
    return table[i, channel] + f * (table[j, channel] - table[i, channel])


@numba.njit(parallel=True, cache=True, fastmath=True)
def _composite(vol, skip, table, lut_lo, lut_scale, origin, du, dv, step, box_hi, light, to_mm,
               shading, out):
    nz, ny, nx = vol.shape
    height, width, _ = out.shape
    hx, hy, hz = box_hi[0], box_hi[1], box_hi[2]
    mx, my, mz = nx - 1.0, ny - 1.0, nz - 1.0
    ambient, diffuse, specular, shininess = shading[0], shading[1], shading[2], shading[3]
    for v in numba.prange(height):
        for u in range(width):
            ox = origin[0] + u * du[0] + v * dv[0]
            oy = origin[1] + u * du[1] + v * dv[1]
            oz = origin[2] + u * du[2] + v * dv[2]
            k0, k1 = _ray_span(ox, oy, oz, step[0], step[1], step[2], hx, hy, hz)
            red = 0.0
            green = 0.0
            blue = 0.0
            opacity = 0.0
            for k in range(k0, k1 + 1):
                x = _clamp(ox + k * step[0], mx)
                y = _clamp(oy + k * step[1], my)
                z = _clamp(oz + k * step[2], mz)
                if skip[int(z) >> BRICK_SHIFT, int(y) >> BRICK_SHIFT, int(x) >> BRICK_SHIFT]:
                    continue
                pos = (_trilinear(vol, x, y, z) - lut_lo) * lut_scale
                alpha = _lut_lookup(table, pos, 3)
                if alpha <= 0.0:
                    continue
                gx = 0.5 * (_trilinear(vol, min(x + 1.0, mx), y, z) - _trilinear(vol, max(x - 1.0, 0.0), y, z))
                gy = 0.5 * (_trilinear(vol, x, min(y + 1.0, my), z) - _trilinear(vol, x, max(y - 1.0, 0.0), z))
                gz = 0.5 * (_trilinear(vol, x, y, min(z + 1.0, mz)) - _trilinear(vol, x, y, max(z - 1.0, 0.0)))
                px = to_mm[0, 0] * gx + to_mm[0, 1] * gy + to_mm[0, 2] * gz
                py = to_mm[1, 0] * gx + to_mm[1, 1] * gy + to_mm[1, 2] * gz
                pz = to_mm[2, 0] * gx + to_mm[2, 1] * gy + to_mm[2, 2] * gz
                norm = math.sqrt(px * px + py * py + pz * pz)
                facing = 1.0
                if norm > 1e-6:
                    facing = min(abs(gx * light[0] + gy * light[1] + gz * light[2]) / norm, 1.0)
                lit = ambient + diffuse * facing
                shine = specular * facing ** shininess
                weight = (1.0 - opacity) * alpha
                red += weight * (_lut_lookup(table, pos, 0) * lit + shine)
                green += weight * (_lut_lookup(table, pos, 1) * lit + shine)
                blue += weight * (_lut_lookup(table, pos, 2) * lit + shine)
                opacity += weight
                if opacity >= OPAQUE_STOP:
                    break
            out[v, u, 0] = red
            out[v, u, 1] = green
            out[v, u, 2] = blue


class CpuRayCaster(RayCaster):
    """Always available. One render at a time per process (see PARALLEL_LOCK)."""

    name = "cpu"

    def project(self, volume: PreparedVolume, grid: RayGrid, code: int) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty((grid.height, grid.width), dtype=np.float32)
        hit = np.empty((grid.height, grid.width), dtype=np.bool_)
        with PARALLEL_LOCK, numba.parallel_chunksize(CHUNK_ROWS):
            _project(volume.voxels, volume.brick_min, volume.brick_max, code, volume.floor, grid.origin, grid.du,
                     grid.dv, grid.step, grid.box_hi, out, hit)
        return out, hit

    def composite(self, volume: PreparedVolume, grid: RayGrid, lut: TransferLut) -> np.ndarray:
        out = np.empty((grid.height, grid.width, 3), dtype=np.float32)
        skip = empty_bricks(lut, volume.brick_min, volume.brick_max)
        shading = np.array([AMBIENT, DIFFUSE, SPECULAR, SHININESS])
        with PARALLEL_LOCK, numba.parallel_chunksize(CHUNK_ROWS):
            _composite(volume.voxels, skip, lut.table, lut.lo, lut.scale, grid.origin, grid.du,
                       grid.dv, grid.step, grid.box_hi, grid.light_index, grid.gradient_to_mm,
                       shading, out)
        return out
