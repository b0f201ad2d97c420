"""Benchmark of the 3D back ends and reformats on a paper-sized CT (record C: 512x512x555).

The volume is DERIVED from the real 100-slice CT in ../shared/data/dicom/tcia-cmb-crc-ct-100:
its slices, sorted by position, are linearly resampled along the patient axis to 555 slices over
the same 247.5 mm (slice spacing 0.4466 mm; in-plane 0.898 mm), int16, rescale 1 / -1024.
Every figure is the median of `--repeat` runs after one warm-up run (numba compilation, GL shader
compilation and texture upload are reported separately as first-call costs).

    python bench/bench_3d.py                    # CPU and, where EGL works, vispy
    python bench/bench_3d.py --backends cpu --repeat 9 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemons.render.imaging.encode import encode_image  # noqa: E402
from daemons.render.imaging.pixels import Window  # noqa: E402
from daemons.render.volume import ViewSpec, prepare_volume  # noqa: E402
from daemons.render.volume.backend import probe_gl, select_backend  # noqa: E402
from daemons.render.volume.mpr import reformat_image  # noqa: E402

SOURCE = REPO.parent / "shared" / "data" / "dicom" / "tcia-cmb-crc-ct-100"
SLICES = 555
MIP_WINDOW = Window(300.0, 1500.0)

VIEWS = {
    "MIP still, anterior": ViewSpec(mode="mip", window=MIP_WINDOW),
    "MIP still, oblique (az 30, el 20)": ViewSpec(mode="mip", window=MIP_WINDOW, azimuth=30, elevation=20),
    "MIP interactive (256^2 preview)": ViewSpec(mode="mip", window=MIP_WINDOW, quality="interactive", azimuth=30,
                                                elevation=20),
    "AvgIP still, anterior": ViewSpec(mode="avg", window=Window(-300.0, 1200.0)),
    "DVR still, ct_bone, oblique": ViewSpec(mode="dvr", preset="ct_bone", azimuth=30, elevation=20),
    "DVR still, ct_soft_tissue, anterior": ViewSpec(mode="dvr", preset="ct_soft_tissue"),
    "DVR interactive, ct_bone (256^2 preview)": ViewSpec(mode="dvr", preset="ct_bone", quality="interactive",
                                                         azimuth=30, elevation=20),
}


def derived_volume() -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """The 555-slice volume derived from the real 100-slice CT (see the module doc)."""
    datasets = [pydicom.dcmread(path) for path in sorted(SOURCE.glob("*.dcm"))]
    orientation = tuple(float(v) for v in datasets[0].ImageOrientationPatient)
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, dtype=float)))
    positions = [float(normal @ np.asarray(ds.ImagePositionPatient, dtype=float)) for ds in datasets]
    source = np.stack([ds.pixel_array for ds in datasets])
    where = np.linspace(0, len(datasets) - 1, SLICES)
    below = np.minimum(np.floor(where).astype(int), len(datasets) - 2)
    frac = (where - below)[:, None, None]
    volume = np.rint(source[below] * (1 - frac) + source[below + 1] * frac).astype(np.int16)
    row_mm, col_mm = (float(v) for v in datasets[0].PixelSpacing)
    slice_mm = (positions[-1] - positions[0]) / (SLICES - 1)
    return volume, (slice_mm, row_mm, col_mm), orientation


def timed(function, repeat: int) -> tuple[float, float, float, object]:
    """(first call s, median wall s and median CPU s of `repeat` further calls, last result).

    CPU time is summed over all threads of this process (numba's and llvmpipe's workers alike);
    on a shared machine it shows the work done when the wall clock is inflated by other load.
    """
    start = time.perf_counter()
    result = function()
    first = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return first, statistics.median(walls), statistics.median(cpus), result


def markdown(report: dict) -> str:
    """The figures as the tables of docs/benchmarks-3d.md."""
    backends = sorted({b for row in report["render"].values() for b in row})
    lines = ["| view (512x512 requested) | " + " | ".join(f"{b} wall ms | {b} CPU ms" for b in backends) + " |",
             "|---|" + "---:|" * (2 * len(backends))]
    for label, row in report["render"].items():
        cells = []
        for backend in backends:
            figures = row.get(backend)
            cells += [f"{figures['median_ms']:.0f}", f"{figures['cpu_ms']:.0f}"] if figures else ["-", "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| view | JPEG q60 | WebP q60 | WebP q80 | PNG |", "|---|---:|---:|---:|---:|"]
    for label, sizes in report["bytes"].items():
        lines.append(f"| {label} | " + " | ".join(f"{sizes[k] / 1000:.1f} KB" for k in
                                                   ("jpeg_q60", "webp_q60", "webp_q80", "png")) + " |")
    lines += ["", "| reformat (fitted into 512x512) | reformat wall ms | CPU ms | + PNG encode ms | output | PNG |",
              "|---|---:|---:|---:|---|---:|"]
    for label, figures in report["mpr_ms"].items():
        lines.append(f"| {label} | {figures['median_ms']:.1f} | {figures['cpu_ms']:.1f} | {figures['png_ms']:.1f} | "
                     f"{figures['size'][1]}x{figures['size'][0]} | {figures['png_bytes'] / 1000:.1f} KB |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="cpu,vispy")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not SOURCE.is_dir():
        print(f"{SOURCE} is absent (fresh clone without ../shared/data)", file=sys.stderr)
        return 2

    start = time.perf_counter()
    voxels, spacing, orientation = derived_volume()
    derive_s = time.perf_counter() - start
    start = time.perf_counter()
    volume = prepare_volume(voxels, spacing, orientation, 1.0, -1024.0, default_voi=Window(40.0, 400.0))
    prepare_s = time.perf_counter() - start
    probe = probe_gl()
    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}",
        "gl_renderer": probe.renderer or probe.reason,
        "volume": {"shape": list(voxels.shape), "dtype": str(voxels.dtype), "spacing_mm": spacing,
                   "derived_from": str(SOURCE.name), "derive_s": round(derive_s, 2),
                   "prepare_s": round(prepare_s, 3)},
        "render": {}, "bytes": {}, "mpr_ms": {}, "load_before": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(report, indent=1))

    for name in args.backends.split(","):
        if name == "vispy" and not probe.ok:
            print(f"vispy skipped: {probe.reason}")
            continue
        caster = select_backend(name)
        if caster.name != name:
            print(f"{name} unavailable, skipped")
            continue
        for label, view in VIEWS.items():
            first, median, cpu, image = timed(partial(caster.render, volume, view), args.repeat)
            report["render"].setdefault(label, {})[name] = {
                "first_s": round(first, 3), "median_ms": round(median * 1000, 1),
                "cpu_ms": round(cpu * 1000, 1), "load": round(os.getloadavg()[0], 1)}
            print(f"{name:6s} {label:45s} median {median * 1000:8.1f} ms  cpu {cpu * 1000:8.1f} ms"
                  f"  first {first:6.2f} s  load {os.getloadavg()[0]:.1f}")
            if name == "cpu":
                sizes = {}
                for fmt, quality in (("jpeg", 60), ("webp", 60), ("png", 100), ("webp", 80)):
                    body, _ = encode_image(image, fmt, quality)
                    sizes[f"{fmt}_q{quality}" if fmt != "png" else "png"] = len(body)
                report["bytes"][label] = sizes

    box = (512, 512)
    for plane, index in (("axial", 277), ("coronal", 256), ("sagittal", 256)):
        for slab in (0.0, 10.0):
            _, median, cpu, image = timed(partial(reformat_image, volume, plane, index, Window(40.0, 400.0),
                                                           box, 2048, slab, "mip"), args.repeat * 4)
            _, encode, _, (body, _) = timed(partial(encode_image, image, "png", 100), args.repeat * 4)
            label = f"{plane}{' slab 10 mm MIP' if slab else ''}"
            report["mpr_ms"][label] = {"median_ms": round(median * 1000, 2), "cpu_ms": round(cpu * 1000, 2),
                                       "png_ms": round(encode * 1000, 2), "size": list(image.shape),
                                       "png_bytes": len(body)}
            print(f"MPR {label:28s} {median * 1000:7.2f} ms + PNG {encode * 1000:5.2f} ms  {image.shape}")

    report["load_after"] = round(os.getloadavg()[0], 1)
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
