"""The VOI an image is shown with when a request names no window: one definition for every view.

Each frame has its own default (PS3.3 C.11.2: the Window Center/Width and VOI LUT Function of its
instance, or for an enhanced multi-frame file the Frame VOI LUT of its functional groups; else a
VOI LUT Sequence); a frame without one takes the record's. The record's default (frame 0's VOI,
else the automatic window computed at upload) is what reformats and 3D views use, since their
pixels come from every frame. Manifests stored before per-frame VOIs were recorded have no
`frame_vois`: all their frames take the record's default.

A manifest's VOIs are parsed once and kept with that manifest (`Manifest.derived`): a series keeps
its record id while it grows, so a cache by record id would serve a grown series its old VOIs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from daemons.render.imaging.pixels import LutTable, Voi, Window
from daemons.render.store.manifest import Manifest


@dataclass(frozen=True)
class KeyedVoi:
    """A VOI (None: an automatic window per frame) and a stable text key of it (for ETags, LUT caches)."""

    voi: Voi | None
    key: str


def lut_from_json(data: dict | None) -> LutTable | None:
    return None if data is None else _lut(data)


def _lut(data: dict) -> LutTable:
    return LutTable(int(data["first_mapped"]), int(data["bits"]), np.asarray(data["data"], dtype=np.int64))


def lut_to_json(lut: LutTable | None) -> dict | None:
    if lut is None:
        return None
    return {"first_mapped": lut.first_mapped, "bits": lut.bits, "data": lut.data.tolist()}


def voi_key(voi: Voi | None) -> str:
    if voi is None:
        return "none"
    if isinstance(voi, LutTable):
        digest = hashlib.sha256(np.asarray(voi.data, dtype=np.int64).tobytes())
        digest.update(f"{voi.first_mapped},{voi.bits}".encode())
        return f"lut:{digest.hexdigest()[:16]}"
    return f"{voi.function}:{voi.center!r},{voi.width!r}"


def keyed(voi: Voi | None) -> KeyedVoi:
    return KeyedVoi(voi, voi_key(voi))


def _voi_from_json(data: dict) -> Voi | None:
    if "lut" in data:
        return _lut(data["lut"])
    return Window(float(data["center"]), float(data["width"]), data.get("function", "linear"))


@dataclass(frozen=True)
class RecordVois:
    """A record's default VOI and each frame's (None where the manifest has no per-frame VOIs)."""

    record: KeyedVoi
    frames: tuple[KeyedVoi, ...] | None

    def frame(self, index: int) -> KeyedVoi:
        if self.frames is None or not 0 <= index < len(self.frames):
            return self.record
        return self.frames[index]


def _record_default(manifest: Manifest) -> Voi | None:
    """The file's own window, then its VOI LUT Sequence, then the automatic window of the upload."""
    render = manifest.render
    window = manifest.meta.default_window
    if window is None and render.voi_lut is not None:
        return _lut(render.voi_lut)
    window = window or render.auto_window
    return None if window is None else _voi_from_json(window)


def _parse(manifest: Manifest) -> RecordVois:
    record = keyed(_record_default(manifest))
    stored = manifest.render.frame_vois
    if stored is None:
        return RecordVois(record, None)
    choices = [keyed(_voi_from_json(choice)) for choice in stored["choices"]]
    return RecordVois(record, tuple(record if i is None else choices[i] for i in stored["frames"]))


def record_vois(manifest: Manifest) -> RecordVois:
    """The parsed VOIs of a manifest, parsed once per manifest (kept with it: `Manifest.derived`)."""
    found = manifest.derived.get("vois")
    if found is None:
        found = manifest.derived["vois"] = _parse(manifest)
    return found


def with_function(chosen: KeyedVoi, function: str | None) -> KeyedVoi:
    """A default window with the VOI LUT function a request names instead of its own (a VOI LUT
    has no function and stays as it is)."""
    if function is None or not isinstance(chosen.voi, Window) or chosen.voi.function == function:
        return chosen
    return keyed(replace(chosen.voi, function=function))


def default_voi(manifest: Manifest, function: str | None = None) -> KeyedVoi:
    """The record's default VOI: what reformats and 3D views use without a `window`."""
    return with_function(record_vois(manifest).record, function)


def frame_voi(manifest: Manifest, index: int, function: str | None = None) -> KeyedVoi:
    """Frame `index`'s own default VOI (the record's where the frame has none)."""
    return with_function(record_vois(manifest).frame(index), function)


def stack_voi(manifest: Manifest, frames: tuple[int, ...], function: str | None = None) -> KeyedVoi:
    """The default VOI of a reformat of the stack of `frames` (daemons.render.stacks): the record's
    default when the stack is every frame of the record, else its middle frame's own default, since
    the stacks of one file may carry windows of their own (a field map's phase frames shown in
    the magnitude's window are flat grey)."""
    if len(frames) == manifest.meta.frames:
        return default_voi(manifest, function)
    return frame_voi(manifest, frames[len(frames) // 2], function)
