"""A record's stacks as the node serves them: the one reader of `manifest["render"]["stacks"]`.

`daemons.render.stack_analysis` writes the stacks at upload (which frames form each volume, their
order, time points and why a stack forms no volume). MPR and 3D render one stack at a time
(`stack` query parameter, default the first), cut with the same plane geometry the record
metadata publishes for it (`stack_manifest` feeds `daemons.render.planes`). A manifest stored
before stacks existed has one stack of all its frames, as those records were always rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemons.render.planes import plane_table
from shared.errors import not_found


@dataclass(frozen=True)
class Stack:
    """One stack: `frames` (record frame indexes of its first time point, in spatial order) form
    its volume; `phases` are every time point's frames (the cine axis); `volume` is None when the
    frames form a volume, else why not."""

    id: str
    label: str
    frames: tuple[int, ...]
    phases: tuple[tuple[int, ...], ...]
    orientation: tuple[float, ...] | None
    slice_spacing: float | None
    volume: str | None

    @property
    def all_frames(self) -> set[int]:
        return {frame for phase in self.phases for frame in phase}


def stacks_of(manifest: dict[str, Any]) -> list[Stack]:
    """The record's stacks, in order (the first is the default)."""
    stored = manifest["render"].get("stacks")
    if not stored:
        frames = tuple(range(int(manifest["meta"]["frames"])))
        return [Stack("1", "all frames", frames, (frames,), None, None, None)]
    return [Stack(
        id=str(entry["id"]), label=str(entry["label"]), frames=tuple(int(i) for i in entry["frames"]),
        phases=tuple(tuple(int(i) for i in phase) for phase in entry["phases"]),
        orientation=None if entry.get("orientation") is None else tuple(float(v) for v in entry["orientation"]),
        slice_spacing=None if entry.get("slice_spacing") is None else float(entry["slice_spacing"]),
        volume=entry.get("volume"),
    ) for entry in stored]


def find_stack(manifest: dict[str, Any], stack_id: str | None) -> Stack:
    """The stack named `stack_id` (None: the first); 404 naming the valid ids otherwise."""
    stacks = stacks_of(manifest)
    if stack_id is None:
        return stacks[0]
    for stack in stacks:
        if stack.id == stack_id:
            return stack
    raise not_found("stack", f"{stack_id} (this record's stacks: {', '.join(s.id for s in stacks)})")


def stack_manifest(manifest: dict[str, Any], stack: Stack) -> dict[str, Any]:
    """The manifest as if the record were this stack's volume alone (its frames, their positions,
    its spacing and orientation): what `daemons.render.planes` computes the stack's geometry from."""
    meta, render = manifest["meta"], manifest["render"]
    if stack.frames == tuple(range(int(meta["frames"]))) and stack.orientation is None \
            and stack.slice_spacing is None:
        return manifest
    slices = meta.get("slices") or []
    stack_meta = {
        **meta, "frames": len(stack.frames),
        "slices": [slices[i] for i in stack.frames] if len(slices) == int(meta["frames"]) else [],
        "slice_spacing": stack.slice_spacing if stack.slice_spacing is not None else meta.get("slice_spacing"),
    }
    stack_render = dict(render)
    if stack.orientation is not None:
        stack_render["orientation"] = list(stack.orientation)
    return {**manifest, "meta": stack_meta, "render": stack_render}


def stacks_json(manifest: dict[str, Any], with_planes: bool = True) -> list[dict[str, Any]]:
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
