"""Where each stored slice lies, published with the record so the viewer can label it as the PACS does.

The viewer numbers slices in the node's order (ascending position along the slice normal), which
is often the reverse of the scanner's: "slice 1 of 248" may be the scanner's instance 248. A
report cites the instance number, the table position and the thickness, so the node publishes
them per frame, and the direction in which the frame index runs (e.g. "S": frame 0 is the most inferior slice,
a feet-first order) so the viewer can say which way it pages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daemons.render.volume.geometry import direction_label

DECIMALS = 3


def _normal(orientation: list[float] | None) -> np.ndarray | None:
    if orientation is None or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    length = float(np.linalg.norm(normal))
    return None if length < 1e-6 else normal / length


def stack_direction(positions: list[list[float] | None]) -> str | None:
    """Patient direction letters in which the frame index increases, from the first and last
    positions (None when they are unknown or coincide)."""
    if len(positions) < 2 or positions[0] is None or positions[-1] is None:
        return None
    step = np.asarray(positions[-1], float) - np.asarray(positions[0], float)
    length = float(np.linalg.norm(step))
    return direction_label(step / length) if length > 1e-6 else None


def slice_table(orientation: list[float] | None,
                frames: list[tuple[int | None, list[float] | None, float | None]]) -> dict[str, Any]:
    """`stack_direction` and per-frame `slices` ({instance, position, location_mm, thickness_mm})
    of a record.

    `frames` is (InstanceNumber, ImagePositionPatient, SliceThickness) of every frame in the
    record's order. `location_mm` is the position's coordinate on the patient axis closest to the
    slice normal (LPS, as in ImagePositionPatient: the table position of an axial slice), None
    where the orientation or the position is unknown; `thickness_mm` is None where the file gives
    none (a report cites each slice's own, which a series may vary).
    """
    normal = _normal(orientation)
    axis = None if normal is None else int(np.argmax(np.abs(normal)))
    slices = []
    for instance, position, thickness in frames:
        slices.append({
            "instance": instance,
            "position": None if position is None else [round(float(v), DECIMALS) for v in position],
            "location_mm": (round(float(position[axis]), DECIMALS)
                            if position is not None and axis is not None else None),
            "thickness_mm": None if thickness is None else round(float(thickness), DECIMALS),
        })
    return {"stack_direction": stack_direction([p for _, p, _ in frames]), "slices": slices}
