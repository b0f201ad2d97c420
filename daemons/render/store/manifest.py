"""A record's stored manifest: one typed, versioned structure, read from and written to JSON only here.

The manifest is what the store keeps next to a record's files (`Store.write_record`): the
record's metadata (`meta`, served as RecordMeta), how its frames decode and render (`render`), and
one entry per stored file (`files`, in frame order). Every reader used to walk the JSON by string
keys and patch gaps on the spot (a missing `orientation_known`, a missing `blob`, …), each in its
own way; now `Manifest.from_json` is the one place that knows the stored forms and what a missing
key means, and everything else reads typed fields.

Versions (the number stored as `version`):
- 1: the unversioned form every manifest had before (keys added over time may be missing:
  `frame_vois`, `orientation_known`, `slices`, `stack_direction`, `slice_thickness`, a file's
  `overlays`, `blob` and `sop_instance_uid`, the patient and study texts);
- 2: the same shape with `version` written; `render.stacks` is optional, and so are a stack's
  `rows`, `columns` and `pixel_spacing` (a series may mix sizes: `render.layout` and the meta's
  size and spacing are then the first stack's; `daemons.render.stacks` reads the others);
- 3: a version 2 manifest followed by a `journal`: files appended to a growing series since its
  last analysis (`JournalEntry`; the S3 store keeps them in the manifest object, the local store
  in journal parts of their own, both read here with `with_journal`).

Any version may carry `stored_only`: the files of the series whose pixel data is in a transfer
syntax this node cannot decode (each entry names it as `transfer_syntax`). They are stored, catalogued
and retrieved like every file, but are no frames of the record: `files`, `frames` and the stacks
are the renderable files' only, and `meta.stored_only` counts the others. A manifest without the key
(every one stored before it existed) has none.

A manifest read with journal entries is *pending* (`Manifest.pending`): its files, counts and bad
frames include the appended files, but its order, stacks, slice table and windows are those of
the last analysis. Only the store's raw reads return one; `daemons.render.ingest.service` analyses the
series and stores the result as the new base (`Ingest.settle`) before anything reads it further.
A manifest of a version this node does not know (written by a newer node sharing the store) is
refused with `ManifestVersionError`: it is not damaged, so it is never quarantined.

Any version may carry `lineage` and `generation` (`Commit`, read with it as `Manifest.commit`): which
storing of the series it belongs to and how many commits (the first write, each append, each new
analysis) it has had in it. The store writes them, in the sealed body and each journal part, so
that an older manifest put back is told from the latest (`daemons.render.store.generations`); a
manifest or part written before they existed has neither (lineage "", generation 0). Nodes that do not
know the keys read the manifest as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from daemons.render.store.frame_layout import Layout
from shared.db import storable_text

MANIFEST_VERSION = 2
JOURNAL_VERSION = 3  # a manifest body carrying journal entries (the S3 store's form of a growing series)
DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class ManifestVersionError(Exception):
    """A stored manifest of a version this node cannot read (a newer node wrote it)."""

    def __init__(self, version: Any):
        super().__init__(f"the manifest is of version {version!r}; this node reads versions 1 to "
                         f"{JOURNAL_VERSION} (a newer SIVR node stored it: upgrade this node)")
        self.version = version


def _floats(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class BadFrame:
    """A frame found unshowable at upload (short or undecodable), with its reason."""

    frame: int
    message: str


@dataclass(frozen=True)
class FileEntry:
    """One stored file of a record, in frame order."""

    sha256: str
    size: int
    frames: int
    pixel_offset: int | None  # None: the pixels are not at a fixed offset (compressed, or unknown)
    slope: float
    intercept: float
    frame_rescales: tuple[tuple[float, float], ...] | None  # per frame, where the file varies them
    name: str
    overlays: bool | None  # None: stored before overlays were recorded (look at the file)
    blob: int  # the store's blob index (a grown series stores files in arrival order)
    sop_instance_uid: str | None
    transfer_syntax: str | None = None  # set for a stored-only file only (module doc): its syntax

    @classmethod
    def from_json(cls, data: dict[str, Any], position: int) -> FileEntry:
        rescales = data.get("frame_rescales")
        offset = data.get("pixel_offset")
        return cls(
            sha256=str(data["sha256"]), size=int(data["size"]), frames=int(data["frames"]),
            pixel_offset=None if offset is None else int(offset),
            slope=float(data.get("slope", 1.0)), intercept=float(data.get("intercept", 0.0)),
            frame_rescales=None if rescales is None else tuple((float(s), float(i)) for s, i in rescales),
            name=str(data.get("name") or ""), overlays=data.get("overlays"),
            blob=int(data.get("blob", position)), sop_instance_uid=data.get("sop_instance_uid"),
            transfer_syntax=data.get("transfer_syntax"))

    def to_json(self) -> dict[str, Any]:
        data = {
            "sha256": self.sha256, "size": self.size, "frames": self.frames, "pixel_offset": self.pixel_offset,
            "slope": self.slope, "intercept": self.intercept,
            "frame_rescales": None if self.frame_rescales is None else [list(r) for r in self.frame_rescales],
            "name": self.name, "overlays": self.overlays, "blob": self.blob,
            "sop_instance_uid": self.sop_instance_uid,
        }
        if self.transfer_syntax is not None:
            data["transfer_syntax"] = self.transfer_syntax
        return data

    def rescale(self, frame: int) -> tuple[float, float]:
        """(slope, intercept) of frame `frame` of this file."""
        return self.frame_rescales[frame] if self.frame_rescales else (self.slope, self.intercept)


@dataclass(frozen=True)
class Commit:
    """Where a stored manifest stands (module doc): `lineage` names one storing of the series (a
    series deleted and stored again gets another), `generation` counts its commits (0: written
    before commits were counted)."""

    lineage: str = ""
    generation: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        """The commit a manifest body or journal part names; ValueError for one that is no commit."""
        lineage, generation = data.get("lineage", ""), data.get("generation", 0)
        if not isinstance(lineage, str) or type(generation) is not int or generation < 0:
            raise ValueError(f"damaged commit: lineage {lineage!r}, generation {generation!r}")
        return cls(lineage, generation)

    def to_json(self) -> dict[str, Any]:
        """The keys a body carries: none for a commit of before they were counted."""
        return {"lineage": self.lineage, "generation": self.generation} if self.generation else {}

    def next(self) -> Commit:
        return Commit(self.lineage, self.generation + 1)


@dataclass(frozen=True)
class JournalEntry:
    """A file appended to a series after its last analysis, with the frames of it found
    unshowable at upload (`bad_frames`: frame numbers within this file)."""

    file: FileEntry
    bad_frames: tuple[BadFrame, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JournalEntry:
        return cls(FileEntry.from_json(data, int(data["blob"])),
                   tuple(BadFrame(int(b["frame"]), str(b["message"])) for b in data.get("bad_frames") or ()))

    def to_json(self) -> dict[str, Any]:
        return {**self.file.to_json(),
                "bad_frames": [{"frame": b.frame, "message": b.message} for b in self.bad_frames]}


def encode_journal(entries: list[JournalEntry], commit: Commit) -> bytes:
    """The body of one journal part (what a store seals and keeps for one append), naming the
    commit the append makes."""
    return json.dumps({"version": JOURNAL_VERSION, "journal": [e.to_json() for e in entries], **commit.to_json()},
                      separators=(",", ":")).encode("utf-8")


def decode_journal(body: bytes) -> tuple[list[JournalEntry], Commit]:
    """`encode_journal`'s inverse (a part written before commits were counted names generation 0);
    ManifestVersionError for a part of a version this node does not know."""
    data = json.loads(body)
    if data.get("version") != JOURNAL_VERSION:
        raise ManifestVersionError(data.get("version"))
    return [JournalEntry.from_json(entry) for entry in data["journal"]], Commit.from_json(data)


@dataclass(frozen=True)
class Meta:
    """The record's metadata as RecordMeta (docs/API.md) serves it."""

    id: str
    files: int
    rows: int
    columns: int
    frames: int
    modality: str
    photometric: str
    bits_stored: int
    pixel_spacing: tuple[float, float] | None  # (row, column) mm; None: unknown
    warnings: tuple[str, ...]
    slice_spacing: float | None
    slice_thickness: float | None
    default_window: dict[str, Any] | None  # the file's own window, as daemons.render.imaging.voi stores one
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None  # "" when the files give none; None: stored before it was kept
    patient_name: str
    patient_id_dicom: str
    patient_birth_date: str | None  # None: stored before it was kept
    study_date: str
    description: str
    size_bytes: int
    stack_direction: str | None
    slices: tuple[dict[str, Any], ...] | None  # None: stored before per-slice data existed
    stored_only: int = 0  # instances of the series stored but not rendered (module doc)
    # PixelAspectRatio (vertical, horizontal) of its first file, non-square; None: square, or stored
    # before it was kept (those records were always drawn square). A pixel spacing wins over it.
    pixel_aspect_ratio: tuple[float, float] | None = None

    @property
    def record_modality(self) -> str:
        """The modality as the `stored_record` row keeps it: 16 characters, storable in every database
        (a manifest written before `series_analysis` made its text so may hold a NUL)."""
        return storable_text(self.modality)[:16]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Meta:
        spacing = data.get("pixel_spacing")
        aspect = data.get("pixel_aspect_ratio")
        slices = data.get("slices")
        return cls(
            id=str(data["id"]), files=int(data["files"]), rows=int(data["rows"]), columns=int(data["columns"]),
            frames=int(data["frames"]), modality=str(data.get("modality") or ""),
            photometric=str(data.get("photometric") or ""), bits_stored=int(data.get("bits_stored") or 0),
            pixel_spacing=None if not spacing else (float(spacing[0]), float(spacing[1])),
            warnings=tuple(str(w) for w in data.get("warnings") or ()),
            slice_spacing=_optional_float(data.get("slice_spacing")),
            slice_thickness=_optional_float(data.get("slice_thickness")),
            default_window=data.get("default_window"),
            **{key: str(data.get(key) or "") for key in (
                "study_uid", "series_uid", "patient_name", "patient_id_dicom", "study_date", "description")},
            patient_birth_date=data.get("patient_birth_date"),
            frame_of_reference_uid=data.get("frame_of_reference_uid"),
            size_bytes=int(data.get("size_bytes") or 0), stack_direction=data.get("stack_direction"),
            slices=None if slices is None else tuple(slices), stored_only=int(data.get("stored_only") or 0),
            pixel_aspect_ratio=None if not aspect else (float(aspect[0]), float(aspect[1])))

    def to_json(self) -> dict[str, Any]:
        """The stored (and served) form; `slices` is left out where it is unknown, `pixel_aspect_ratio`
        where the pixels are square."""
        data = {
            "id": self.id, "files": self.files, "rows": self.rows, "columns": self.columns,
            "frames": self.frames, "modality": self.modality, "photometric": self.photometric,
            "bits_stored": self.bits_stored,
            "pixel_spacing": None if self.pixel_spacing is None else list(self.pixel_spacing),
            "warnings": list(self.warnings), "slice_spacing": self.slice_spacing,
            "slice_thickness": self.slice_thickness, "default_window": self.default_window,
            "study_uid": self.study_uid, "series_uid": self.series_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid, "patient_name": self.patient_name,
            "patient_id_dicom": self.patient_id_dicom, "patient_birth_date": self.patient_birth_date,
            "study_date": self.study_date, "description": self.description, "size_bytes": self.size_bytes,
            "stack_direction": self.stack_direction, "stored_only": self.stored_only,
        }
        if self.slices is not None:
            data["slices"] = list(self.slices)
        if self.pixel_aspect_ratio is not None:
            data["pixel_aspect_ratio"] = list(self.pixel_aspect_ratio)
        return data


@dataclass(frozen=True)
class Render:
    """How the record's frames decode and render (from the upload's analysis)."""

    layout: Layout
    orientation: tuple[float, ...]  # ImageOrientationPatient, or the axial default where unknown
    orientation_known: bool  # manifests stored before this existed count as known, as 3D always took them
    rescale_slope: float
    rescale_intercept: float
    modality_lut: dict[str, Any] | None
    voi_lut: dict[str, Any] | None
    frame_vois: dict[str, Any] | None  # None: stored before per-frame VOIs (the record's default serves)
    bad_frames: tuple[BadFrame, ...]
    auto_window: dict[str, Any] | None
    decoded_bytes: int | None
    stacks: tuple[dict[str, Any], ...] | None = None  # carried as stored (the series analysis owns it)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Render:
        stacks = data.get("stacks")
        decoded = data.get("decoded_bytes")
        return cls(
            layout=Layout(**data["layout"]),
            orientation=_floats(data.get("orientation")) or DEFAULT_ORIENTATION,
            orientation_known=bool(data.get("orientation_known", True)),
            rescale_slope=float(data.get("rescale_slope", 1.0)),
            rescale_intercept=float(data.get("rescale_intercept", 0.0)),
            modality_lut=data.get("modality_lut"), voi_lut=data.get("voi_lut"), frame_vois=data.get("frame_vois"),
            bad_frames=tuple(BadFrame(int(b["frame"]), str(b["message"])) for b in data.get("bad_frames") or ()),
            auto_window=data.get("auto_window"), decoded_bytes=None if decoded is None else int(decoded),
            stacks=None if stacks is None else tuple(stacks))

    def to_json(self) -> dict[str, Any]:
        data = {
            "layout": self.layout.to_json(), "orientation": list(self.orientation),
            "orientation_known": self.orientation_known, "rescale_slope": self.rescale_slope,
            "rescale_intercept": self.rescale_intercept, "modality_lut": self.modality_lut,
            "voi_lut": self.voi_lut, "frame_vois": self.frame_vois,
            "bad_frames": [{"frame": b.frame, "message": b.message} for b in self.bad_frames],
            "auto_window": self.auto_window, "decoded_bytes": self.decoded_bytes,
        }
        if self.stacks is not None:
            data["stacks"] = list(self.stacks)
        return data

    @property
    def known_orientation(self) -> tuple[float, ...] | None:
        """The record's ImageOrientationPatient, None when its files had none."""
        return self.orientation if self.orientation_known else None

    def bad_frame_messages(self) -> dict[int, str]:
        """Record frame index -> why it cannot be shown, for the frames found bad at upload."""
        return {b.frame: b.message for b in self.bad_frames}


@dataclass(frozen=True)
class Manifest:
    """A record's manifest (see the module doc); equal manifests store equal JSON."""

    version: int  # the version it was stored at (what `to_json` writes is always MANIFEST_VERSION)
    meta: Meta
    render: Render
    files: tuple[FileEntry, ...]
    pending: int = 0  # how many of the last `files` were appended after the analysis (module doc)
    stored_only: tuple[FileEntry, ...] = ()  # the files that are no frames of the record (module doc)
    # the commit it was read at (module doc); not its content: an analysis equal to the stored one is equal
    commit: Commit = field(default=Commit(), compare=False)
    # What readers compute from this manifest once (e.g. daemons.render.imaging.voi's parsed VOIs), kept with
    # it: a series keeps its record id while it grows, so nothing parsed may be keyed by the id alone.
    derived: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def every_file(self) -> tuple[FileEntry, ...]:
        """The renderable files, then the stored-only ones: every instance the series holds."""
        return (*self.files, *self.stored_only)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Read any stored version (the unversioned form is version 1) into the current form.

        ManifestVersionError for a version this node does not know; KeyError/ValueError/TypeError
        for a manifest that lacks what every version has (a damaged one)."""
        version = data.get("version", 1)
        if type(version) is not int or not 1 <= version <= JOURNAL_VERSION:
            raise ManifestVersionError(version)
        base = cls(version, Meta.from_json(data["meta"]), Render.from_json(data["render"]),
                   tuple(FileEntry.from_json(entry, position) for position, entry in enumerate(data["files"])),
                   stored_only=tuple(FileEntry.from_json(entry, int(entry["blob"]))
                                     for entry in data.get("stored_only") or ()),
                   commit=Commit.from_json(data))
        return base.with_journal([JournalEntry.from_json(entry) for entry in data.get("journal") or ()])

    def with_journal(self, entries: list[JournalEntry]) -> Manifest:
        """This manifest with `entries` appended after its files (a pending manifest, module doc).

        An entry naming a blob the manifest lists already is skipped: a journal part left behind
        by an interrupted compaction holds files the new base has taken in."""
        known = {entry.blob for entry in self.every_file}
        entries = [entry for entry in entries if entry.file.blob not in known]
        if not entries:
            return self
        files, bad, kept = list(self.files), list(self.render.bad_frames), list(self.stored_only)
        frames, size = self.meta.frames, self.meta.size_bytes
        for entry in entries:
            size += entry.file.size
            if entry.file.transfer_syntax is not None:  # stored only: no frames of the record
                kept.append(entry.file)
                continue
            bad.extend(BadFrame(frames + b.frame, b.message) for b in entry.bad_frames)
            files.append(entry.file)
            frames += entry.file.frames
        return replace(self, meta=replace(self.meta, files=len(files), frames=frames, size_bytes=size,
                                          stored_only=len(kept)),
                       render=replace(self.render, bad_frames=tuple(bad)), files=tuple(files),
                       pending=self.pending + len(entries), stored_only=tuple(kept))

    @classmethod
    def build(cls, meta: dict[str, Any], render: dict[str, Any], files: list[dict[str, Any]],
              stored_only: list[dict[str, Any]] | None = None) -> Manifest:
        """A new manifest from the parts an analysis computes, exactly as it will read back from the
        store (passed through JSON once, so a fresh manifest and a stored one compare equal).
        `stored_only` entries name their blob (-1 until `with_ids` names the real one)."""
        body: dict[str, Any] = {"version": MANIFEST_VERSION, "meta": meta, "render": render, "files": files}
        if stored_only:
            body["stored_only"] = stored_only
        return cls.from_json(json.loads(json.dumps(body)))

    @classmethod
    def decode(cls, body: bytes) -> Manifest:
        """The manifest a store's decrypted body holds (`encode`'s inverse)."""
        return cls.from_json(json.loads(body))

    def encode(self) -> bytes:
        """The body a store encrypts and keeps (never a pending manifest: its journal is stored apart),
        its commit with it (`to_json` is the content alone: two nodes' analyses of a series compare equal)."""
        if self.pending:
            raise ValueError("a pending manifest is analysed before it is stored as a base")
        return json.dumps({**self.to_json(), **self.commit.to_json()}, separators=(",", ":")).encode("utf-8")

    def to_json(self) -> dict[str, Any]:
        data = {"version": MANIFEST_VERSION, "meta": self.meta.to_json(), "render": self.render.to_json(),
                "files": [entry.to_json() for entry in self.files]}
        if self.stored_only:
            data["stored_only"] = [entry.to_json() for entry in self.stored_only]
        return data

    def with_ids(self, record_id: str, blobs: dict[str, int], uids: dict[str, str | None]) -> Manifest:
        """This manifest under `record_id`, each file naming its blob and its SOP Instance UID
        (both looked up by the file's SHA-256)."""
        def named(entries: tuple[FileEntry, ...]) -> tuple[FileEntry, ...]:
            return tuple(replace(entry, blob=blobs[entry.sha256], sop_instance_uid=uids[entry.sha256])
                         for entry in entries)

        return replace(self, meta=replace(self.meta, id=record_id), files=named(self.files),
                       stored_only=named(self.stored_only))

    def stored_only_blob(self, blob: int) -> FileEntry | None:
        """The stored-only file kept as blob `blob`, None if that blob is a renderable one (or none)."""
        return next((entry for entry in self.stored_only if entry.blob == blob), None)

    def bad_frame(self, index: int) -> BadFrame | None:
        return next((b for b in self.render.bad_frames if b.frame == index), None)
