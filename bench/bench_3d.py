"""Benchmark of the 3D back ends and reformats on a paper-sized CT (record C: 512x512x555).

The volume is DERIVED from the real 100-slice CT in ../shared/data/dicom/tcia-cmb-crc-ct-100:
its slices, sorted by position, are linearly resampled along the patient axis to 555 slices over
the same 247.5 mm (slice spacing 0.4466 mm; in-plane 0.898 mm), int16, rescale 1 / -1024.
Every figure is the median of `--repeat` runs after one warm-up run (numba compilation, GL shader
compilation and texture upload are reported separately as first-call costs).

    python bench/bench_3d.py                    # CPU and, where EGL works, vispy
    python bench/bench_3d.py --backends cpu --repeat 9 --json out.json

On a machine without the DICOM files or pydicom and the image codecs (the GPU machine a session
may be lent, which reaches no package index), save the source slices here and measure the 3D
views alone there, from the same voxels:

    python bench/bench_3d.py --save-stack stack.xz
    python bench/bench_3d.py --stack stack.xz --views-only   # on the other machine
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from bench.image_quality import psnr  # noqa: E402
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


@dataclass(frozen=True)
class SourceSlices:
    """The real CT's slices in position order (int16), their positions along the slice normal and
    what the derivation keeps of their headers."""

    pixels: np.ndarray
    positions: list[float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]

    @classmethod
    def read(cls, folder: Path) -> SourceSlices:
        import pydicom

        datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
        orientation = tuple(float(v) for v in datasets[0].ImageOrientationPatient)
        normal = np.cross(orientation[:3], orientation[3:])
        datasets.sort(key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, dtype=float)))
        positions = [float(normal @ np.asarray(ds.ImagePositionPatient, dtype=float)) for ds in datasets]
        row_mm, col_mm = (float(v) for v in datasets[0].PixelSpacing)
        return cls(np.stack([ds.pixel_array for ds in datasets]), positions, orientation, (row_mm, col_mm))

    def save(self, path: Path) -> None:
        """A JSON header line, then the raw little-endian voxels; xz-compressed (a fifth smaller
        than zlib on this CT: what travels to a lent machine is limited)."""
        header = {"shape": list(self.pixels.shape), "positions": self.positions,
                  "orientation": list(self.orientation), "pixel_spacing": list(self.pixel_spacing)}
        with lzma.open(path, "wb") as out:
            out.write(json.dumps(header).encode() + b"\n")
            out.write(self.pixels.astype("<i2").tobytes())

    @classmethod
    def load(cls, path: Path) -> SourceSlices:
        with lzma.open(path, "rb") as source:
            header = json.loads(source.readline())
            pixels = np.frombuffer(source.read(), dtype="<i2").reshape(header["shape"]).astype(np.int16)
        return cls(pixels, header["positions"], tuple(header["orientation"]), tuple(header["pixel_spacing"]))


def derived_volume(source: SourceSlices) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """The 555-slice volume derived from the real 100-slice CT (see the module doc)."""
    count = len(source.positions)
    where = np.linspace(0, count - 1, SLICES)
    below = np.minimum(np.floor(where).astype(int), count - 2)
    frac = (where - below)[:, None, None]
    volume = np.rint(source.pixels[below] * (1 - frac) + source.pixels[below + 1] * frac).astype(np.int16)
    slice_mm = (source.positions[-1] - source.positions[0]) / (SLICES - 1)
    return volume, (slice_mm, *source.pixel_spacing), source.orientation


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
    if report["bytes"]:
        lines += ["", "| view | JPEG q60 | WebP q60 | WebP q80 | PNG |", "|---|---:|---:|---:|---:|"]
    for label, sizes in report["bytes"].items():
        lines.append(f"| {label} | " + " | ".join(f"{sizes[k] / 1000:.1f} KB" for k in
                                                   ("jpeg_q60", "webp_q60", "webp_q80", "png")) + " |")
    if report["mpr_ms"]:
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
    parser.add_argument("--stack", type=Path, help="the source slices from a file --save-stack wrote, "
                                                   f"instead of reading {SOURCE.name}")
    parser.add_argument("--save-stack", type=Path, help="write the source slices to this file and stop")
    parser.add_argument("--views-only", action="store_true",
                        help="the 3D views' times alone: no encoded sizes, no reformats (no image codecs needed)")
    args = parser.parse_args()
    if args.stack is None and not SOURCE.is_dir():
        print(f"{SOURCE} is absent (fresh clone without ../shared/data)", file=sys.stderr)
        return 2
    source = SourceSlices.load(args.stack) if args.stack else SourceSlices.read(SOURCE)
    if args.save_stack:
        source.save(args.save_stack)
        print(f"{args.save_stack}: {source.pixels.shape} slices, {args.save_stack.stat().st_size / 1e6:.1f} MB")
        return 0

    start = time.perf_counter()
    voxels, spacing, orientation = derived_volume(source)
    derive_s = time.perf_counter() - start
    start = time.perf_counter()
    volume = prepare_volume(voxels, spacing, orientation, 1.0, -1024.0, default_voi=Window(40.0, 400.0))
    prepare_s = time.perf_counter() - start
    probe = probe_gl()
    report: dict = {
        "machine": machine.describe(),
        "gl_renderer": probe.renderer or probe.reason,
        "volume": {"shape": list(voxels.shape), "dtype": str(voxels.dtype), "spacing_mm": spacing,
                   "derived_from": args.stack.name if args.stack else SOURCE.name,
                   "voxel_sum": int(voxels.sum(dtype=np.int64)),
                   "derive_s": round(derive_s, 2), "prepare_s": round(prepare_s, 3)},
        "render": {}, "bytes": {}, "mpr_ms": {}, "load_before": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(report, indent=1))
    if not args.views_only:
        from daemons.render.imaging.encode import encode_image

    images: dict[str, dict[str, np.ndarray]] = {}
    for name in args.backends.split(","):
        if name == "vispy" and not probe.ok:
            print(f"vispy skipped: {probe.reason}")
            continue
        start = time.perf_counter()
        caster = select_backend(name)  # an OpenGL context is made here, as a node makes it at start
        if caster.name != name:
            print(f"{name} unavailable, skipped")
            continue
        report.setdefault("backend_start_s", {})[name] = round(time.perf_counter() - start, 3)
        print(f"{name}: back end started in {report['backend_start_s'][name]:.3f} s")
        for label, view in VIEWS.items():
            first, median, cpu, image = timed(partial(caster.render, volume, view), args.repeat)
            images.setdefault(label, {})[name] = image
            report["render"].setdefault(label, {})[name] = {
                "first_s": round(first, 3), "median_ms": round(median * 1000, 1),
                "cpu_ms": round(cpu * 1000, 1), "load": round(os.getloadavg()[0], 1)}
            print(f"{name:6s} {label:45s} median {median * 1000:8.1f} ms  cpu {cpu * 1000:8.1f} ms"
                  f"  first {first:6.2f} s  load {os.getloadavg()[0]:.1f}")
            if name == "cpu" and not args.views_only:
                sizes = {}
                for fmt, quality in (("jpeg", 60), ("webp", 60), ("png", 100), ("webp", 80)):
                    body, _ = encode_image(image, fmt, quality)
                    sizes[f"{fmt}_q{quality}" if fmt != "png" else "png"] = len(body)
                report["bytes"][label] = sizes

    # the back ends must show the same image (the tests hold them to >= 30 dB on a phantom); here on
    # the real volume, and on whatever GPU the OpenGL one ran on
    report["psnr_vispy_vs_cpu_db"] = {label: round(psnr(pair["cpu"], pair["vispy"]), 1)
                                      for label, pair in images.items() if {"cpu", "vispy"} <= pair.keys()}
    if report["psnr_vispy_vs_cpu_db"]:
        print("PSNR of the OpenGL image against the CPU one, dB:", json.dumps(report["psnr_vispy_vs_cpu_db"]))

    box = (512, 512)
    for plane, index in () if args.views_only else (("axial", 277), ("coronal", 256), ("sagittal", 256)):
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
