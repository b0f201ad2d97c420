"""Manifests for tests that need one without an upload (store round trips, the 3D endpoints' stand-in).

Each is a real `daemons.render.store.manifest.Manifest` of the current version, built from the same
JSON parts the series analysis writes, so a test cannot drift from the stored form.
"""

from __future__ import annotations

import hashlib
from typing import Any

from daemons.render.store.manifest import Manifest

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def sample_manifest(frames: int = 1, rows: int = 4, columns: int = 4, *, files: list[bytes] | None = None,
                    spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0),
                    orientation: tuple[float, ...] | None = AXIAL, modality: str = "CT",
                    photometric: str = "MONOCHROME2", patient_name: str = "Doe^Jane",
                    record_id: str = "ab" * 32, **render: Any) -> Manifest:
    """A manifest of `frames` greyscale 16-bit frames (`spacing`: slice, row, column mm; None: unknown),
    one stored file per entry of `files` (default: one file holding every frame). `render` overrides
    keys of the `render` part (e.g. `rescale_intercept`)."""
    stored = files if files is not None else [b"\x00" * (frames * rows * columns * 2)]
    per_file = [frames // len(stored)] * len(stored)
    per_file[-1] += frames - sum(per_file)
    meta = {
        "id": record_id, "files": len(stored), "rows": rows, "columns": columns, "frames": frames,
        "modality": modality, "photometric": photometric, "bits_stored": 12,
        "pixel_spacing": None if spacing is None else list(spacing[1:]), "warnings": [],
        "slice_spacing": None if spacing is None else spacing[0], "slice_thickness": None,
        "default_window": None, "study_uid": "1.2.3", "series_uid": "1.2.3.4", "patient_name": patient_name,
        "patient_id_dicom": "P1", "patient_birth_date": "", "study_date": "20260101", "description": "",
        "size_bytes": sum(len(f) for f in stored), "stack_direction": None,
        "slices": [{"instance": i + 1, "position": None, "location_mm": None, "thickness_mm": None}
                   for i in range(frames)],
    }
    layout = {"rows": rows, "columns": columns, "samples": 3 if photometric == "RGB" else 1,
              "bits_allocated": 8 if photometric == "RGB" else 16, "bits_stored": 12,
              "pixel_representation": 0, "photometric": photometric, "float_modality": False}
    render_part = {
        "layout": layout, "orientation": list(orientation or AXIAL), "orientation_known": orientation is not None,
        "rescale_slope": 1.0, "rescale_intercept": 0.0, "modality_lut": None, "voi_lut": None,
        "frame_vois": None, "bad_frames": [], "auto_window": None, "decoded_bytes": frames * rows * columns * 2,
        **render,
    }
    entries = [{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "frames": count,
                "pixel_offset": None, "slope": 1.0, "intercept": 0.0, "frame_rescales": None,
                "name": f"{index}.dcm", "overlays": False, "blob": index, "sop_instance_uid": f"1.2.3.4.{index}"}
               for index, (data, count) in enumerate(zip(stored, per_file, strict=True))]
    return Manifest.build(meta, render_part, entries)
