"""Which frames of a record form one volume: the record's stacks, written into its manifest.

An enhanced multi-frame file (or a series) may hold several stacks at the same anatomy: a field
map's magnitude and phase frames, DTI's b-values and gradient directions, several Stack IDs, or the
time points of a dynamic acquisition. Stacked as one volume they gave MPR and 3D duplicated anatomy
at twice the extent. Frames are split here by what tells stacks apart (the Dimension Index Values
of dimensions that are neither spatial nor temporal, Stack ID, frame type and complex component,
diffusion b-value and gradient direction, echo time, image type and, for a classic series,
orientation, image size and pixel spacing); temporal positions become a cine axis of their stack
(`phases`: the frames of each time point in spatial order). A classic series (single-frame files)
whose positions each repeat the same number of times is a cine when a clock tells the repeats
apart: Temporal Position Identifier (the standard's own), else Trigger Time (cardiac), else
Acquisition Time as a last resort (the times 3D Slicer's multi-volume import and dcm2niix also
split 4D series by); time point k holds each position's k-th image by that clock (ranks, not equal
values: trigger and acquisition times differ from slice to slice of one time point). One position
over time (a single-slice cardiac cine) is a stack of one slice per time point. Repeats no clock
tells apart stay one stack with no volume. A stack whose frames cannot form a volume (mixed
orientations, duplicated positions, irregular spacing, time points of different lengths) keeps the
reason in `volume`, so MPR and 3D are refused with it while every frame stays viewable. Each stack
carries its frames' size and pixel spacing (`rows`, `columns`, `pixel_spacing`): a classic series
may mix sizes (a localiser at 256x256 between 512x512 slices) and spacings, and each stack is
drawn, measured and reformatted with its own.

The result is the manifest's `render.stacks`; `daemons.render.stacks.stacks_of` is its one reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from daemons.render.ingest.upload_checks import ParsedFile, floats, pixel_spacing

ORIENTATION_TOLERANCE = 1e-3  # cosines: the tolerance a series' slices are called parallel at
SPACING_TOLERANCE = 0.1       # a gap may differ from the median gap by this fraction
DUPLICATE_MM = 1e-3
#: The largest extent along any axis of a stack shown as a volume: no patient, specimen or phantom
#: is larger, and the 3D rays' arithmetic breaks down far beyond it (spacings of 1e300 mm were a 500).
MAX_VOLUME_EXTENT_MM = 10_000.0

_SPATIAL = {Tag("InStackPositionNumber"), Tag("ImagePositionPatient")}
_TEMPORAL = {Tag("TemporalPositionIndex"), Tag("TriggerTime"), Tag("TemporalPositionTimeOffset"),
             Tag("FrameAcquisitionDateTime"), Tag("FrameReferenceDateTime"), Tag("TemporalPositionIdentifier")}
_STACK_ID = Tag("StackID")
#: What tells the repeats of one position of a classic series apart, in the order they are tried.
CLOCKS = ("Temporal Position Identifier", "Trigger Time", "Acquisition Time")


@dataclass(frozen=True)
class FrameFacts:
    """What tells one record frame's stack, time point and place apart."""

    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    in_stack: int | None
    temporal: Any
    stack_id: str | None
    frame_type: str | None
    b_value: float | None
    gradient: tuple[float, ...] | None
    echo_ms: float | None
    dimensions: tuple  # Dimension Index Values of dimensions neither spatial, temporal nor Stack ID
    shape: tuple[int, int]  # (Rows, Columns) of the frame's file
    pixel_spacing: tuple[float, float] | None  # (row, column) mm of the frame's file; None: unknown
    clocks: tuple[float | None, ...] = ()  # a classic file's values of CLOCKS (none for enhanced frames)


def _item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of a functional group of one frame: its own, else the shared one."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > index and items[index].get(sequence):
            return items[index][sequence][0]
    return None


def _frame_type(ds: Dataset, frame: int) -> str | None:
    """Frame type of an enhanced frame (with its complex component: MAGNITUDE, PHASE ...), else the
    file's Image Type (classic files)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if not items or len(items) <= index:
            continue
        for element in items[index]:
            if element.keyword.endswith("FrameTypeSequence") and element.value:
                item = element.value[0]
                kind = "\\".join(str(v) for v in (item.get("FrameType") or []))
                component = str(item.get("ComplexImageComponent") or "")
                return f"{kind}|{component}"
    image_type = ds.get("ImageType")
    return "\\".join(str(v) for v in image_type) if image_type else None


def _dimension_roles(ds: Dataset) -> list[str]:
    """The role of each Dimension Index Value: spatial, temporal, stack (Stack ID) or other."""
    roles = []
    for item in ds.get("DimensionIndexSequence") or []:
        pointer = item.get("DimensionIndexPointer")
        tag = Tag(pointer) if pointer is not None else None
        roles.append("spatial" if tag in _SPATIAL else "temporal" if tag in _TEMPORAL
                     else "stack" if tag == _STACK_ID else "other")
    return roles


def _number(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _seconds(value: Any) -> float | None:
    """A DICOM TM (HHMMSS.FFFFFF, or the old HH:MM:SS) as seconds since midnight."""
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?", str(value or "").strip().replace(":", ""))
    if match is None:
        return None
    return int(match[1]) * 3600 + int(match[2] or 0) * 60 + int(match[3] or 0) + float(match[4] or 0)


def _clocks(ds: Dataset) -> tuple[float | None, ...]:
    """The values of CLOCKS of a classic file."""
    return (_number(ds.get("TemporalPositionIdentifier")), _number(ds.get("TriggerTime")),
            _seconds(ds.get("AcquisitionTime")))


def _tuple(value: Any, count: int) -> tuple[float, ...] | None:
    numbers = floats(value or [], count)
    return None if numbers is None else tuple(numbers)


def _frame_facts(parsed: ParsedFile, frame: int, roles: list[str]) -> FrameFacts:
    ds = parsed.dataset
    spacing = pixel_spacing(ds)[0]
    content = _item(ds, frame, "FrameContentSequence") or Dataset()
    plane = _item(ds, frame, "PlaneOrientationSequence")
    orientation = _tuple(plane.get("ImageOrientationPatient") if plane else ds.get("ImageOrientationPatient"), 6)
    position = parsed.frame_positions[frame] if frame < len(parsed.frame_positions) else None
    raw = content.get("DimensionIndexValues")
    values = [] if raw is None else list(raw) if hasattr(raw, "__iter__") else [raw]  # VM 1 reads as a number
    dims = [v for v, role in zip(values, roles, strict=False) if role == "other"]
    temporal_dims = [v for v, role in zip(values, roles, strict=False) if role == "temporal"]
    diffusion = _item(ds, frame, "MRDiffusionSequence")
    gradient = None
    b_value = None
    if diffusion is not None:
        b_value = float(diffusion.DiffusionBValue) if diffusion.get("DiffusionBValue") is not None else None
        direction = diffusion.get("DiffusionGradientDirectionSequence")
        if direction:
            gradient = _tuple(direction[0].get("DiffusionGradientOrientation"), 3)
    echo = _item(ds, frame, "MREchoSequence")
    echo_ms = echo.get("EffectiveEchoTime") if echo is not None else None
    temporal = content.get("TemporalPositionIndex")
    classic = ds.get("PerFrameFunctionalGroupsSequence") is None
    if temporal is None and not classic:
        temporal = tuple(temporal_dims) or ds.get("TemporalPositionIdentifier")
    in_stack = content.get("InStackPositionNumber")
    stack_id = content.get("StackID")
    return FrameFacts(
        position=None if position is None else tuple(float(v) for v in position),
        orientation=orientation, in_stack=None if in_stack is None else int(in_stack),
        temporal=None if temporal in (None, ()) else temporal,
        stack_id=None if stack_id in (None, "") else str(stack_id),
        frame_type=_frame_type(ds, frame), b_value=b_value,
        gradient=None if gradient is None else tuple(round(g, 3) for g in gradient),
        echo_ms=None if echo_ms is None else float(echo_ms),
        dimensions=tuple(int(v) for v in dims), clocks=_clocks(ds) if classic else (),
        shape=(int(ds.Rows), int(ds.Columns)),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])))


def record_frames(files: list[ParsedFile]) -> list[FrameFacts]:
    """Facts of every record frame, in the record's order (files in order, their frames in order)."""
    facts = []
    for parsed in files:
        if "stack_facts" not in parsed.derived:
            roles = _dimension_roles(parsed.dataset)
            parsed.derived["stack_facts"] = [_frame_facts(parsed, frame, roles) for frame in range(parsed.frames)]
        facts.extend(parsed.derived["stack_facts"])
    return facts


def orientation_groups(orientations: list[tuple[float, ...] | list[float] | None]) -> list[int]:
    """A group number per slice: slices whose orientations agree within the tolerance share one;
    groups are numbered in the order of their first orientation (so not by upload order)."""
    representatives: list[tuple[float, ...] | None] = []
    groups = []
    for orientation in orientations:
        key = None if orientation is None else tuple(orientation)
        for number, known in enumerate(representatives):
            if known == key or (known is not None and key is not None
                                and np.allclose(known, key, atol=ORIENTATION_TOLERANCE)):
                groups.append(number)
                break
        else:
            representatives.append(key)
            groups.append(len(representatives) - 1)
    order = sorted(range(len(representatives)), key=lambda n: (representatives[n] is None, representatives[n] or ()))
    rank = {number: order.index(number) for number in range(len(representatives))}
    return [rank[g] for g in groups]


def _plane_name(orientation: tuple[float, ...] | None) -> str:
    if orientation is None:
        return "no orientation"
    normal = np.cross(orientation[:3], orientation[3:])
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _label_parts(facts: FrameFacts) -> dict[str, str]:
    kind = (facts.frame_type or "").split("|")
    component = kind[1] if len(kind) > 1 and kind[1] else ""
    values = kind[0].split("\\")
    return {
        "stack_id": f"stack {facts.stack_id}" if facts.stack_id is not None else "",
        "frame_type": component or (values[2] if len(values) > 2 else kind[0]),
        "b_value": "" if facts.b_value is None else f"b={facts.b_value:g}",
        "gradient": "" if facts.gradient is None else "dir ({:.2f}, {:.2f}, {:.2f})".format(*facts.gradient),
        "echo": "" if facts.echo_ms is None else f"TE={facts.echo_ms:g}",
        "orientation": _plane_name(facts.orientation),
        "dimensions": "",
        "size": "{1}×{0}".format(*facts.shape),
        "pixel_spacing": _spacing_label(facts.pixel_spacing),
    }


def _spacing_label(spacing: tuple[float, float] | None) -> str:
    """"0.7 mm" (square pixels), "0.5×0.8 mm" (column × row spacing), or "unknown spacing"."""
    if spacing is None:
        return "unknown spacing"
    row_mm, col_mm = spacing
    return f"{row_mm:g} mm" if row_mm == col_mm else f"{col_mm:g}×{row_mm:g} mm"


def _stack_key(facts: FrameFacts, orientation_group: int) -> tuple:
    return (facts.stack_id, facts.frame_type, facts.b_value, facts.gradient, facts.echo_ms, orientation_group,
            facts.dimensions, facts.shape, facts.pixel_spacing)


def _spatial_order(frames: list[int], facts: list[FrameFacts], normal: np.ndarray | None) -> list[int]:
    """Frames of one time point in spatial order: along the normal where every position is known,
    else by In-Stack Position Number where every frame has one, else as stored."""
    if normal is not None and all(facts[i].position is not None for i in frames):
        return sorted(frames, key=lambda i: (float(np.dot(normal, facts[i].position)), i))  # type: ignore[arg-type]
    if all(facts[i].in_stack is not None for i in frames):
        return sorted(frames, key=lambda i: (facts[i].in_stack, i))
    return list(frames)


def _normal(orientation: tuple[float, ...] | None) -> np.ndarray | None:
    if orientation is None:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    length = float(np.linalg.norm(normal))
    return None if length < 1e-6 else normal / length


def _places(frames: list[int], facts: list[FrameFacts], normal: np.ndarray | None) -> list[list[int]] | None:
    """The frames grouped by position (within DUPLICATE_MM along the normal), in spatial order;
    None where a position is unknown."""
    if normal is None or any(facts[i].position is None for i in frames):
        return None
    along = {i: float(np.dot(normal, facts[i].position)) for i in frames}  # type: ignore[arg-type]
    places: list[list[int]] = []
    for i in sorted(frames, key=lambda i: (along[i], i)):
        if places and abs(along[i] - along[places[-1][0]]) < DUPLICATE_MM:
            places[-1].append(i)
        else:
            places.append([i])
    return places


def _classic_times(frames: list[int], facts: list[FrameFacts],
                   normal: np.ndarray | None) -> tuple[dict[int, int] | None, str]:
    """(The time point of each frame, "") of a classic series whose every position repeats equally
    often: its rank at its position by the first of CLOCKS that tells every position's repeats
    apart. (None, "") where positions do not repeat (or are unknown); (None, why the repeats are no
    time points) where they repeat unequally or no clock tells them apart."""
    places = _places(frames, facts, normal)
    if not places or len(places) == len(frames) or not all(facts[i].clocks for i in frames):
        return None, ""
    counts = sorted({len(place) for place in places})
    if len(counts) > 1:
        return None, (f", repeated {counts[0]} to {counts[-1]} times (time points need every position "
                      "equally often)")
    for clock in range(len(CLOCKS)):
        readings = [{i: facts[i].clocks[clock] for i in place} for place in places]
        if all(None not in read.values() and len(set(read.values())) == len(read) for read in readings):
            return {i: rank for read in readings
                    for rank, i in enumerate(sorted(read, key=lambda i: read[i] or 0.0))}, ""
    return None, f", and no {', '.join(CLOCKS[:-1])} or {CLOCKS[-1]} tells the repeats apart as time points"


def _spacing(frames: list[int], facts: list[FrameFacts], normal: np.ndarray | None,
             untold: str = "") -> tuple[float | None, str | None]:
    """(median gap in mm, None) of frames in spatial order, or (None, why they are no volume;
    `untold`: why repeated positions are no time points, `_classic_times`)."""
    if normal is None or len(frames) < 2 or any(facts[i].position is None for i in frames):
        return None, None
    along = np.array([float(np.dot(normal, facts[i].position)) for i in frames])  # type: ignore[arg-type]
    gaps = np.diff(along)
    duplicated = int(np.sum(np.abs(gaps) < DUPLICATE_MM))
    if duplicated:
        return None, (f"its {len(frames)} slices lie at {len(frames) - duplicated} positions{untold}; "
                      "they cannot form one volume")
    median = float(np.median(gaps))
    if float(np.max(np.abs(gaps - median))) > SPACING_TOLERANCE * abs(median):
        return None, (f"the slice spacing varies from {float(np.min(gaps)):.3g} to {float(np.max(gaps)):.3g} mm "
                      f"(more than {SPACING_TOLERANCE:.0%} of the median {median:.3g} mm); "
                      "the slices cannot form one volume")
    return abs(median), _sheared(frames, facts, normal)


def _sheared(frames: list[int], facts: list[FrameFacts], normal: np.ndarray) -> str | None:
    """Why slices in spatial order are no volume when each lies shifted in its own plane from the one
    before (a CT's gantry tilt: the table steps along the body, the slices are tilted), by more than
    a pixel over the stack; None otherwise.

    A volume's slice axis is its normal (`volume.geometry`): a stack whose slices drift sideways was
    shown sheared in every reformat and 3D view, its rows spaced and measured along the normal (6 % off
    at a 20 degree tilt). Such a series is read as slices until reformats resample it."""
    first = np.asarray(facts[frames[0]].position, dtype=float)
    offsets = np.array([np.asarray(facts[i].position, dtype=float) - first for i in frames])
    along = offsets @ normal
    sideways = offsets - along[:, None] * normal
    drift = float(np.max(np.linalg.norm(sideways, axis=1)))
    row_mm, column_mm = facts[frames[0]].pixel_spacing or (1.0, 1.0)
    if drift <= max(row_mm, column_mm):
        return None
    tilt = float(np.degrees(np.arctan2(float(np.linalg.norm(sideways[-1])), abs(float(along[-1])))))
    return (f"each slice lies shifted in its plane from the one before ({drift:.3g} mm over the stack, a tilt of "
            f"{tilt:.3g} degrees from the slices' normal, as a CT's gantry tilt makes): reformats and 3D of it "
            "would be sheared, so it is shown as slices only")


def _beyond_reach(first: FrameFacts, slice_spacing: float | None, slices: int) -> str | None:
    """Why a stack of `slices` is no volume when its spacings make it larger than `MAX_VOLUME_EXTENT_MM`."""
    row_mm, column_mm = first.pixel_spacing or (1.0, 1.0)
    extent = max(first.shape[0] * row_mm, first.shape[1] * column_mm, (slices - 1) * (slice_spacing or 0.0))
    if extent <= MAX_VOLUME_EXTENT_MM:
        return None
    return (f"its pixel and slice spacings make it {extent:.3g} mm across, more than any body "
            f"({MAX_VOLUME_EXTENT_MM:g} mm); it cannot be shown as a volume")


def _one_stack(frames: list[int], facts: list[FrameFacts], several: bool) -> dict[str, Any]:
    """The manifest entry of one stack (without id and label)."""
    first = facts[frames[0]]
    orientation = first.orientation
    normal = _normal(orientation)
    classic, untold = (_classic_times(frames, facts, normal) if all(facts[i].temporal is None for i in frames)
                       else (None, ""))
    time_of = {i: facts[i].temporal if classic is None else classic[i] for i in frames}
    times = sorted(set(time_of.values()), key=lambda t: (t is None, str(t) if t is not None else ""))
    if all(isinstance(t, (int, float)) for t in times):
        times = sorted(times)
    phases = [_spatial_order([i for i in frames if time_of[i] == t], facts, normal) for t in times]
    spacing, reason = _spacing(phases[0], facts, normal, untold)
    orientations = orientation_groups([facts[i].orientation for i in frames])
    if max(orientations) > 0:
        reason = (f"its slices have {max(orientations) + 1} different orientations; "
                  "they cannot form one volume")
    elif len({len(p) for p in phases}) > 1:
        reason = "its time points hold different numbers of slices; they cannot form one volume"
    elif several and len(phases[0]) < 2:
        reason = reason or "a single slice cannot form a volume"
    if reason is None:
        reason = _beyond_reach(first, spacing, len(phases[0]))
    return {
        "frames": phases[0],
        "phases": phases,
        "orientation": None if orientation is None else [float(v) for v in orientation],
        "slice_spacing": spacing,
        "volume": reason,
        "rows": first.shape[0],
        "columns": first.shape[1],
        "pixel_spacing": None if first.pixel_spacing is None else list(first.pixel_spacing),
    }


def find_stacks(files: list[ParsedFile]) -> list[dict[str, Any]]:
    """The stacks of a record of `files` (in record order), as the manifest's `render.stacks` stores
    them: id ("1", "2", ... in the order of their first frame), label (what sets it apart: "b=500",
    "PHASE", "stack 2", "sagittal 2", "256×256 1 mm"), frames (record frame indexes of its first time
    point in spatial order: the volume MPR and 3D use), phases (every time point's frames; one for a stack
    without time), orientation, slice_spacing (None: the record's), volume (None, or why its
    frames form no volume), rows and columns (its frames' size) and pixel_spacing ((row, column)
    mm, None: unknown)."""
    facts = record_frames(files)
    groups = orientation_groups([f.orientation for f in facts])
    sizes = np.bincount(groups)
    if len(sizes) > 1 and sizes.max() == 1:  # every slice its own orientation: one mixed stack, no volume
        groups = [0] * len(groups)
    keys: dict[tuple, list[int]] = {}
    for index, (fact, group) in enumerate(zip(facts, groups, strict=True)):
        keys.setdefault(_stack_key(fact, group), []).append(index)
    several = len(keys) > 1
    stacks = []
    parts = [_label_parts(facts[frames[0]]) for frames in keys.values()]
    differing = [name for name in parts[0] if len({p[name] for p in parts}) > 1]
    labels = [" ".join(part[name] for name in differing if part[name]) for part in parts]
    for number, (frames, label) in enumerate(zip(keys.values(), labels, strict=True), start=1):
        if not label or labels.count(label) > 1:  # e.g. two axial stacks: their numbers tell them apart
            label = f"{label} (stack {number})" if label else f"stack {number}"
        stacks.append({"id": str(number), "label": label, **_one_stack(frames, facts, several)})
    return stacks
