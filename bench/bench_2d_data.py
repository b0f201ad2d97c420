"""Benchmark data for the 2D render node: the real 100-slice CT and a derived 555-slice series.

The 555-slice record (the paper's record C size, 512x512x555) is DERIVED from the real CT
../shared/data/dicom/tcia-cmb-crc-ct-100: its slices repeated in order, each copy with a new SOP
Instance UID, one new Series Instance UID, and positions continuing along the slice normal at the
series' spacing. Pixel data and every other attribute are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO.parent / "shared" / "data" / "dicom" / "tcia-cmb-crc-ct-100"


def real_ct_files() -> list[Path]:
    files = sorted(REAL_CT.glob("*.dcm"))
    if not files:
        raise SystemExit(f"benchmark data absent: {REAL_CT}")
    return files


def derived_series(target: Path, slices: int = 555, source: list[Path] | None = None,
                   uncompressed: bool = False) -> list[Path]:
    """Write (once) a `slices`-long series derived from the real CT (or the files of `source`);
    returns its files. `uncompressed`: written in Explicit VR Little Endian, as modalities send."""
    target.mkdir(parents=True, exist_ok=True)
    existing = sorted(target.glob("*.dcm"))
    if len(existing) == slices:
        return existing
    for stale in existing:
        stale.unlink()
    sources = [pydicom.dcmread(p) for p in (source or real_ct_files())]
    if uncompressed:
        for ds in sources:
            ds.decompress()
    normal = np.cross([float(v) for v in sources[0].ImageOrientationPatient[:3]],
                      [float(v) for v in sources[0].ImageOrientationPatient[3:]])
    sources.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    first = np.array([float(v) for v in sources[0].ImagePositionPatient])
    spacing = abs(float(np.dot(normal, [float(v) for v in sources[1].ImagePositionPatient]) - np.dot(normal, first)))
    series_uid = generate_uid()
    paths = []
    for index in range(slices):
        ds = sources[index % len(sources)].copy()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [f"{v:.4f}" for v in first + normal * spacing * index]
        ds.SeriesDescription = f"DERIVED {slices} slices from {'the source' if source else 'TCIA CMB-CRC lung'} series"
        path = target / f"{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
