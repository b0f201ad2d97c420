"""A record's stacks as the node serves them: the one reader of the manifest's `render.stacks`.

`daemons.render.stack_analysis` writes the stacks at upload (which frames form each volume, their
order, time points and why a stack forms no volume). MPR and 3D render one stack at a time
(`stack` query parameter, default the first) at one of its time points (`phase`, 0-based, default
the first: each time point is a volume of its own), cut with the same plane geometry the record
metadata publishes for it (`stack_manifest` feeds `daemons.render.planes`). A manifest stored
before stacks existed has one stack of all its frames, as those records were always rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from daemons.render.manifest import Manifest
from daemons.render.planes import plane_table
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
    phase: int = 0

    @property
    def all_frames(self) -> set[int]:
        return {frame for phase in self.phases for frame in phase}

    def at_phase(self, phase: int) -> Stack:
        """This stack at time point `phase` (an index of `phases`): that time point's frames are its volume."""
        return replace(self, frames=self.phases[phase], phase=phase)


def stacks_of(manifest: Manifest) -> list[Stack]:
    """The record's stacks, in order (the first is the default)."""
    stored = manifest.render.stacks
    if not stored:
        frames = tuple(range(manifest.meta.frames))
        return [Stack("1", "all frames", frames, (frames,), None, None, None)]
    return [Stack(
        id=str(entry["id"]), label=str(entry["label"]), frames=tuple(int(i) for i in entry["frames"]),
        phases=tuple(tuple(int(i) for i in phase) for phase in entry["phases"]),
        orientation=None if entry.get("orientation") is None else tuple(float(v) for v in entry["orientation"]),
        slice_spacing=None if entry.get("slice_spacing") is None else float(entry["slice_spacing"]),
        volume=entry.get("volume"),
    ) for entry in stored]


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
    """The stored values of the stack's volume (its `frames`, in order) out of the record's: a view
    of the record's own array when the frames follow one another in stored order (a whole record,
    or a time point of a dynamic stored time by time), else a copy."""
    first = stack.frames[0]
    if stack.frames == tuple(range(first, first + len(stack.frames))):
        return pixels[first:first + len(stack.frames)]
    return pixels[list(stack.frames)]


def stack_manifest(manifest: Manifest, stack: Stack) -> Manifest:
    """The manifest as if the record were this stack's volume alone (its frames, their positions,
    its spacing and orientation): what `daemons.render.planes` computes the stack's geometry from."""
    meta = manifest.meta
    if stack.frames == tuple(range(meta.frames)) and stack.orientation is None and stack.slice_spacing is None:
        return manifest
    slices = meta.slices or ()
    stack_meta = replace(
        meta, frames=len(stack.frames),
        slices=tuple(slices[i] for i in stack.frames) if len(slices) == meta.frames else (),
        slice_spacing=stack.slice_spacing if stack.slice_spacing is not None else meta.slice_spacing)
    render = manifest.render if stack.orientation is None else replace(
        manifest.render, orientation=tuple(stack.orientation), orientation_known=True)
    return replace(manifest, meta=stack_meta, render=render)


def stacks_json(manifest: Manifest, with_planes: bool = True) -> list[dict[str, Any]]:
    """`stacks` of RecordMeta (docs/API.md): each stack's id, label, frames, time points, whether
    it forms a volume, and (`with_planes`) its PlaneGeometry, the one MPR and 3D of it use."""
    listed = []
    for stack in stacks_of(manifest):
        entry: dict[str, Any] = {
            "id": stack.id, "label": stack.label, "frames": list(stack.frames),
            "phases": [list(phase) for phase in stack.phases], "volume": stack.volume is None,
            "no_volume_reason": stack.volume,
        }
        if with_planes:
            entry["planes"] = plane_table(stack_manifest(manifest, stack))
        listed.append(entry)
    return listed
