"""A record's stacks as the node serves them: the one reader of the manifest's `render.stacks`.

`daemons.render.ingest.stack_analysis` writes the stacks at upload (which frames form each volume, their
order, time points and why a stack forms no volume). MPR and 3D render one stack at a time
(`stack` query parameter, default the first) at one of its time points (`phase`, 0-based, default
the first: each time point is a volume of its own), cut with the same plane geometry the record
metadata publishes for it (`stack_manifest` feeds `daemons.render.imaging.planes`). A manifest stored
before stacks existed has one stack of all its frames, as those records were always rendered.

Each stack has its frames' size and pixel spacing (a classic series may mix them): 2D frames,
readings and DICOMweb take a frame's from `frame_stack`, MPR and 3D a stack's from
`stack_manifest`. Stacks stored before sizes were kept have the record's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from daemons.render.imaging.planes import plane_table
from daemons.render.store.manifest import Manifest
from shared.errors import not_found


@dataclass(frozen=True)
class Stack:
    """One stack at one time point: `frames` (record frame indexes of time point `phase`, in
    spatial order; `find_stack` without a phase gives the first) form its volume; `phases` are every
    time point's frames (the cine axis); `volume` is None when the frames form a volume, else why not."""

    id: str
    label: str
    frames: tuple[int, ...]
    phases: tuple[tuple[int, ...], ...]
    orientation: tuple[float, ...] | None
    slice_spacing: float | None
    volume: str | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None  # (row, column) mm; None: unknown
    phase: int = 0

    @property
    def all_frames(self) -> set[int]:
        return {frame for phase in self.phases for frame in phase}

    def at_phase(self, phase: int) -> Stack:
        """This stack at time point `phase` (an index of `phases`): that time point's frames are its volume."""
        return replace(self, frames=self.phases[phase], phase=phase)


def stacks_of(manifest: Manifest) -> list[Stack]:
    """The record's stacks, in order (the first is the default); read once per manifest."""
    known = manifest.derived.get("stacks")
    if known is None:
        known = manifest.derived["stacks"] = _read_stacks(manifest)
    return known


def _read_stacks(manifest: Manifest) -> list[Stack]:
    meta = manifest.meta
    stored = manifest.render.stacks
    if not stored:
        frames = tuple(range(meta.frames))
        return [Stack("1", "all frames", frames, (frames,), None, None, None, meta.rows, meta.columns,
                      meta.pixel_spacing)]
    stacks = []
    for entry in stored:
        sized = "rows" in entry  # else stored before stacks had sizes: the record's
        spacing = entry["pixel_spacing"] if sized else meta.pixel_spacing
        stacks.append(Stack(
            id=str(entry["id"]), label=str(entry["label"]), frames=tuple(int(i) for i in entry["frames"]),
            phases=tuple(tuple(int(i) for i in phase) for phase in entry["phases"]),
            orientation=None if entry.get("orientation") is None else tuple(float(v) for v in entry["orientation"]),
            slice_spacing=None if entry.get("slice_spacing") is None else float(entry["slice_spacing"]),
            volume=entry.get("volume"),
            rows=int(entry["rows"]) if sized else meta.rows,
            columns=int(entry["columns"]) if sized else meta.columns,
            pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1]))))
    return stacks


def frame_stacks(manifest: Manifest) -> list[Stack]:
    """The stack of each record frame, by frame index (every frame is in exactly one stack)."""
    known = manifest.derived.get("frame_stacks")
    if known is None:
        by_frame: list[Stack | None] = [None] * manifest.meta.frames
        for stack in stacks_of(manifest):
            for frame in stack.all_frames:
                by_frame[frame] = stack
        fallback = stacks_of(manifest)[0]
        known = manifest.derived["frame_stacks"] = [stack or fallback for stack in by_frame]
    return known


def frame_stack(manifest: Manifest, index: int) -> Stack:
    """The stack record frame `index` belongs to: its size and pixel spacing are the frame's."""
    return frame_stacks(manifest)[index]


def find_stack(manifest: Manifest, stack_id: str | None, phase: int = 0) -> Stack:
    """The stack named `stack_id` (None: the first) at time point `phase` (0-based); 404 naming the
    valid ids, or the valid time points, otherwise."""
    stacks = stacks_of(manifest)
    found = stacks[0] if stack_id is None else next((stack for stack in stacks if stack.id == stack_id), None)
    if found is None:
        raise not_found("stack", f"{stack_id} (this record's stacks: {', '.join(s.id for s in stacks)})")
    count = len(found.phases)
    if not 0 <= phase < count:
        raise not_found("time point", f"{phase} (stack {found.id} has {count}: phase 0..{count - 1})")
    return found.at_phase(phase)


def stack_voxels(pixels: np.ndarray, stack: Stack) -> np.ndarray:
    """The stored values of the stack's volume (its `frames`, in order, at its own size) out of the
    record's: a view of the record's own array when the frames follow one another in stored order
    (a whole record, or a time point of a dynamic stored time by time) and fill it (a record of one
    size), else a copy (a record of several sizes is held padded to the largest:
    `records.LoadedRecord`)."""
    first = stack.frames[0]
    if stack.frames == tuple(range(first, first + len(stack.frames))):
        return np.ascontiguousarray(pixels[first:first + len(stack.frames), :stack.rows, :stack.columns])
    return pixels[list(stack.frames), :stack.rows, :stack.columns]


def stack_manifest(manifest: Manifest, stack: Stack) -> Manifest:
    """The manifest as if the record were this stack's volume alone (its frames, their positions,
    its spacing and orientation): what `daemons.render.imaging.planes` computes the stack's geometry from."""
    meta = manifest.meta
    if (stack.frames == tuple(range(meta.frames)) and stack.orientation is None and stack.slice_spacing is None
            and (stack.rows, stack.columns, stack.pixel_spacing) == (meta.rows, meta.columns, meta.pixel_spacing)):
        return manifest
    slices = meta.slices or ()
    stack_meta = replace(
        meta, frames=len(stack.frames), rows=stack.rows, columns=stack.columns, pixel_spacing=stack.pixel_spacing,
        slices=tuple(slices[i] for i in stack.frames) if len(slices) == meta.frames else (),
        slice_spacing=stack.slice_spacing if stack.slice_spacing is not None else meta.slice_spacing)
    render = manifest.render if stack.orientation is None else replace(
        manifest.render, orientation=tuple(stack.orientation), orientation_known=True)
    return replace(manifest, meta=stack_meta, render=render)


def stacks_json(manifest: Manifest, with_planes: bool = True) -> list[dict[str, Any]]:
    """`stacks` of RecordMeta (docs/API.md): each stack's id, label, frames, time points, whether
    it forms a volume, its frames' size and pixel spacing, and (`with_planes`) its PlaneGeometry,
    the one MPR and 3D of it use (its `slices` entry is the size of its frames in the stored plane)."""
    listed = []
    for stack in stacks_of(manifest):
        entry: dict[str, Any] = {
            "id": stack.id, "label": stack.label, "frames": list(stack.frames),
            "phases": [list(phase) for phase in stack.phases], "volume": stack.volume is None,
            "no_volume_reason": stack.volume, "rows": stack.rows, "columns": stack.columns,
            "pixel_spacing": None if stack.pixel_spacing is None else list(stack.pixel_spacing),
        }
        if with_planes:
            entry["planes"] = plane_table(stack_manifest(manifest, stack))
        listed.append(entry)
    return listed
