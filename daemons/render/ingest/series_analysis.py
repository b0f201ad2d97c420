"""Series analysis: what a record of checked files is (slice order, geometry, default windows, stacks).

`daemons.render.ingest.upload_checks` has refused what cannot be rendered; this module orders the files,
refuses what cannot be one record (several series or patients, files that disagree on the pixel
format: samples, bits, sign, photometric interpretation) and writes the manifest the store keeps:
what the loader and the renderer need later (pixel data offsets, rescale, LUTs, the record's and
each frame's VOI, which files carry overlays, the stacks that form volumes) so loading never
re-parses headers. Files of a classic series may differ in image size and pixel spacing: each size and
spacing is a stack of its own (with its own shape and spacing, `stack_analysis`); the record's
`rows`, `columns` and `pixel_spacing` are its first stack's, and its frames are held padded to the
largest size (`decoded_bytes` counts that). Its `pixel_aspect_ratio` is its first file's (the shape
its pixels are drawn with where their spacing is unknown: `planes.record_spacing`).

Stored-only files (`ParsedFile.stored_only`: pixel data this node cannot decode, or no image at all)
belong to their series like the others (same series, patient and study) but are no frames of it:
the analysis is the renderable files' alone, and the manifest lists the stored-only ones apart (`Manifest.stored_only`,
after the renderable ones, by instance number). A series of stored-only files only has a manifest of
no frames and no stacks (its header facts from its first file): it is catalogued and retrieved, never
rendered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from daemons.render.attributes import attribute_text
from daemons.render.imaging.decode import decode_frames, fast_path_possible
from daemons.render.imaging.pixels import LutTable, Modality, auto_window
from daemons.render.imaging.slices import slice_table
from daemons.render.imaging.voi import lut_to_json
from daemons.render.ingest.stack_analysis import MAX_VOLUME_EXTENT_MM, find_stacks, orientation_groups
from daemons.render.ingest.upload_checks import (
    IDENTITY_KEYS,
    IMAGE_KEYS,
    MIB,
    DistinctVois,
    FileChecker,
    Limits,
    ParsedFile,
    UploadError,
    attribute,
    check_upload,
    floats,
    pixel_aspect_ratio,
    pixel_spacing,
    read_lut,
    slice_thickness,
    window_json,
)
from daemons.render.store.frame_layout import Layout, layout_of
from daemons.render.store.manifest import JournalEntry, Manifest
from shared.db import storable_text


@dataclass
class ParsedRecord:
    """A validated record: its id, its files in slice order (then its stored-only files), and the
    manifest the store keeps."""

    record_id: str
    files: list[ParsedFile]
    manifest: Manifest



def record_id_of(hashes: list[str]) -> str:
    """Content id: SHA-256 over the sorted per-file SHA-256 digests (upload order does not matter)."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode("ascii")).hexdigest()



# Image keys a classic series' files may differ in: each size is a stack of its own.
SIZE_KEYS = ("Rows", "Columns")


def check_consistent(files: list[ParsedFile]) -> None:
    """One series of one patient's study; the renderable files (the frames) of one pixel format, and
    a multi-frame one alone (stored-only files are never frames: only their identity must agree)."""
    frames = [f for f in files if f.stored_only is None]
    if any(f.frames > 1 for f in frames) and len(frames) > 1:
        raise UploadError(422, "inconsistent_series",
                          "a multi-frame file must be uploaded alone, not together with other files")
    series = {f.series_uid for f in files}
    if len(series) > 1:
        raise UploadError(422, "inconsistent_series",
                          f"the files belong to {len(series)} different series; upload one series per record")
    for parsed in frames[1:]:
        for keyword, mine, theirs in zip(IMAGE_KEYS, parsed.image_keys, frames[0].image_keys, strict=True):
            if mine != theirs and keyword not in SIZE_KEYS:
                raise UploadError(422, "inconsistent_series",
                                  f"{parsed.name}: {keyword} {mine} differs from "
                                  f"{frames[0].name} ({theirs}); all slices must match")
    reference = files[0]
    for parsed in files[1:]:
        for (_, what), mine, theirs in zip(IDENTITY_KEYS, parsed.identity, reference.identity, strict=True):
            if mine != theirs:
                raise UploadError(422, "inconsistent_series",
                                  f"{parsed.name}: its {what} differs from {reference.name}'s; "
                                  "a record holds the images of one patient's series only")


def _sorted(files: list[ParsedFile]) -> list[ParsedFile]:
    """Files in record order: by orientation, then by size (largest first) and pixel spacing (each
    a stack, `stack_analysis`, whose frames thus follow one another), then by position along the
    normal, instance number and name."""
    groups = dict(zip((id(f) for f in files), orientation_groups([f.orientation for f in files]), strict=True))
    return sorted(files, key=lambda parsed: (groups[id(parsed)], *_size_key(parsed), *_sort_key(parsed)))


def _size_key(parsed: ParsedFile) -> tuple:
    rows, columns = int(parsed.dataset.Rows), int(parsed.dataset.Columns)
    spacing = parsed.spacing[0]
    return (-rows * columns, rows, spacing is None, spacing or [])


def _sort_key(parsed: ParsedFile) -> tuple:
    return (
        parsed.position if parsed.position is not None else float("inf"),
        parsed.instance if parsed.instance is not None else 0,
        parsed.name,
    )


def _slice_spacing(files: list[ParsedFile], ds: Dataset) -> float:
    positions = [f.position for f in files if f.position is not None]
    if len(positions) == len(files) and len(files) > 1:
        gaps = np.abs(np.diff(positions))
        gaps = gaps[gaps > 1e-6]
        if gaps.size:
            return float(np.median(gaps))
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = attribute(ds, keyword, "PixelMeasuresSequence")
        try:  # a gap larger than any body (or infinite) is no slice spacing: 3D rays broke on 1e299 mm
            if value is not None and 0 < float(value) <= MAX_VOLUME_EXTENT_MM:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 1.0


def _default_window(ds: Dataset) -> dict | None:
    return window_json(attribute(ds, "WindowCenter", "FrameVOILUTSequence"),
                        attribute(ds, "WindowWidth", "FrameVOILUTSequence"),
                        attribute(ds, "VOILUTFunction", "FrameVOILUTSequence"))


def _frame_vois(files: list[ParsedFile]) -> dict:
    """Each record frame's own VOI: `choices` (distinct VOIs) and `frames` (an index into them per
    frame, or None where the frame has none and takes the record's default)."""
    choices = DistinctVois()
    stored: list[dict] = []
    frames: list[int | None] = []
    for parsed in files:
        for entry in parsed.vois:
            if entry is None:
                frames.append(None)
                continue
            key, voi = entry
            if key not in choices.keys:
                choices.add(voi, parsed.name)
                stored.append(voi)
            frames.append(choices.keys[key])
    return {"choices": stored, "frames": frames}


def _text(ds: Dataset, keyword: str) -> str:
    """A text attribute as the manifest states it (RecordMeta, receipts, the `stored_record` row's
    modality): at most 200 characters, storable in every database (`storable_text`: a NUL as U+FFFD,
    as the catalogue indexes it; a Modality `C\\0T` was a 500 on PostgreSQL)."""
    return storable_text(attribute_text(ds, keyword)[:200])



def parse_upload(uploads: list[tuple[str, bytes]], limits: Limits,
                 check_files: FileChecker | None = None) -> ParsedRecord:
    """Validate an upload and analyse it into a record, or raise UploadError naming the reason."""
    return analyse_files(check_upload(uploads, limits, check_files), limits)



@dataclass(frozen=True)
class Provisional:
    """How a series being received is analysed at each append: its automatic window is kept from its
    last analysis (`auto_window`, as the manifest stores it) instead of being sampled again from the
    new middle frame (a decode per instance). `daemons.render.ingest.service` redoes the exact analysis once
    the series is complete; everything else is exact at every append."""

    auto_window: dict | None


def analyse_files(unique: list[ParsedFile], limits: Limits, provisional: Provisional | None = None) -> ParsedRecord:
    """The record analysis of parsed, distinct files: used for an upload and for a series that grows.

    Any failure is a refusal (UploadError): what the isolated checks missed is still the files' fault.
    """
    try:
        return _analyse_files(unique, limits, provisional)
    except UploadError:
        raise
    except Exception as exc:  # no upload may give a 5xx
        raise UploadError(422, "unreadable",
                          f"the files cannot be analysed ({type(exc).__name__}: {exc})"[:400]) from exc


def _analyse_files(unique: list[ParsedFile], limits: Limits, provisional: Provisional | None) -> ParsedRecord:
    total = sum(len(f.raw) for f in unique)
    stored_only = sorted((f for f in unique if f.stored_only is not None), key=_sort_key)
    renderable = [f for f in unique if f.stored_only is None]
    if not renderable:
        return _stored_only_record(stored_only, total)
    files = _sorted(renderable)
    check_consistent([*files, *stored_only])
    first = files[0].dataset
    frames_total = sum(f.frames for f in files)
    if frames_total > limits.max_frames:
        raise UploadError(413, "over_limits",
                          f"{frames_total} frames is more than this node's limit of {limits.max_frames}")
    rescales = {r for f in files for r in (f.frame_rescales or [(f.slope, f.intercept)])}
    modality_seq = first.get("ModalityLUTSequence")
    layout = layout_of(first, float_modality=len(rescales) > 1 and not modality_seq)
    if layout.samples not in (1, 3) or layout.bits_allocated not in (1, 8, 16, 32):
        raise UploadError(422, "unsupported_image",
                          f"{files[0].name}: {layout.samples} samples of {layout.bits_allocated} bits "
                          "are not supported")
    stacks = find_stacks(files)
    padded = layout.padded_to((stack["rows"], stack["columns"]) for stack in stacks)
    decoded_bytes = frames_total * int(np.prod(padded.frame_shape)) * layout.stored_dtype.itemsize
    if decoded_bytes > limits.max_decoded_bytes:
        raise UploadError(413, "over_limits",
                          f"the record decodes to {decoded_bytes // MIB} MiB, "
                          f"over the limit of {limits.max_decoded_bytes // MIB} MiB")
    signed = layout.pixel_representation == 1
    modality_lut = read_lut(modality_seq[0], files[0].name, signed) if modality_seq else None
    voi_seq = attribute(first, "VOILUTSequence", "FrameVOILUTSequence")
    voi_lut = read_lut(voi_seq[0], files[0].name, False) if voi_seq and "LUTDescriptor" in voi_seq[0] else None
    bad_frames = _bad_frames(files)
    auto = (_auto_window(files, layout, modality_lut, bad_frames) if provisional is None
            else provisional.auto_window)
    record_id = record_id_of([f.sha256 for f in unique])
    spacing = pixel_spacing(first)[0]
    aspect, aspect_warnings = pixel_aspect_ratio(first)
    warnings = list(dict.fromkeys(w for f in files for w in f.spacing[1]))  # a stack of unknown spacing says so
    warnings += aspect_warnings
    unshown = [f"{f.name}: {f.overlay_problem}" for f in files if f.overlay_problem]
    if unshown:
        warnings.append(f"{len(unshown)} of {len(files)} files have overlays too large to show, not shown (the "
                        f"files are kept, their images shown): {unshown[0]}" + (" …" if len(unshown) > 1 else ""))
    if bad_frames:
        listed = ", ".join(str(i) for i in sorted(bad_frames)[:20]) + (" …" if len(bad_frames) > 20 else "")
        warnings.append(f"{len(bad_frames)} of {frames_total} frames cannot be shown (frames {listed}); "
                        "the others can. GET /status lists each with its reason")
    orientation = floats(attribute(first, "ImageOrientationPatient", "PlaneOrientationSequence") or [], 6)
    meta = {
        "id": record_id,
        "files": len(files),
        "rows": layout.rows,
        "columns": layout.columns,
        "frames": frames_total,
        "modality": _text(first, "Modality"),
        "photometric": layout.photometric,
        "bits_stored": layout.bits_stored,
        "pixel_spacing": spacing,
        "pixel_aspect_ratio": aspect,
        "warnings": warnings,
        "slice_spacing": _slice_spacing(files, first),
        "slice_thickness": slice_thickness(first),
        "default_window": None if layout.is_color else _default_window(first),
        **_header_meta(first),
        "size_bytes": total,
        **slice_table(orientation, [(f.instance, p, f.thickness) for f in files for p in f.frame_positions]),
        "stored_only": len(stored_only),
    }
    render = {
        "layout": layout.to_json(),
        "orientation": orientation or [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "orientation_known": orientation is not None,
        "rescale_slope": 1.0 if layout.float_modality else files[0].rescale(0)[0],
        "rescale_intercept": 0.0 if layout.float_modality else files[0].rescale(0)[1],
        "modality_lut": lut_to_json(modality_lut),
        "voi_lut": lut_to_json(voi_lut),
        "frame_vois": None if layout.is_color else _frame_vois(files),
        "bad_frames": [{"frame": i, "message": m} for i, m in sorted(bad_frames.items())],
        "auto_window": auto,
        "decoded_bytes": decoded_bytes,
        "stacks": stacks,
    }
    return ParsedRecord(record_id, [*files, *stored_only], Manifest.build(
        meta, render, [_file_json(f) for f in files], [_file_json(f) for f in stored_only]))


def _header_meta(first: Dataset) -> dict[str, str]:
    """RecordMeta's facts read from the series' first file: its study, series and patient."""
    return {
        "study_uid": _text(first, "StudyInstanceUID"),
        "series_uid": _text(first, "SeriesInstanceUID"),
        "frame_of_reference_uid": _text(first, "FrameOfReferenceUID"),
        "patient_name": _text(first, "PatientName"),
        "patient_id_dicom": _text(first, "PatientID"),
        "patient_birth_date": _text(first, "PatientBirthDate"),
        "study_date": _text(first, "StudyDate"),
        "description": _text(first, "SeriesDescription") or _text(first, "StudyDescription"),
    }


NO_IMAGE = Layout(rows=0, columns=0, samples=1, bits_allocated=8, bits_stored=8, pixel_representation=0,
                  photometric="", float_modality=False)  # the layout of a series of non-image objects only


def _stored_only_record(files: list[ParsedFile], total: int) -> ParsedRecord:
    """The record of a series whose files are all stored only: no frames, no stacks; what the
    catalogue and RecordMeta show of it read from its first file's header (module doc)."""
    check_consistent(files)
    first = files[0].dataset
    imaged = next((f for f in files if f.frames), None)  # non-image objects have no pixel format
    layout = layout_of(imaged.dataset, float_modality=False) if imaged is not None else NO_IMAGE
    record_id = record_id_of([f.sha256 for f in files])
    meta = {
        "id": record_id, "files": 0, "rows": layout.rows, "columns": layout.columns,
        "frames": 0, "modality": _text(first, "Modality"), "photometric": layout.photometric,
        "bits_stored": layout.bits_stored, "pixel_spacing": pixel_spacing(first)[0], "warnings": [],
        "slice_spacing": None, "slice_thickness": None, "default_window": None,
        **_header_meta(first),
        "size_bytes": total, "stack_direction": None, "stored_only": len(files),
    }
    render = {
        "layout": layout.to_json(), "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "orientation_known": False,
        "rescale_slope": 1.0, "rescale_intercept": 0.0, "modality_lut": None, "voi_lut": None, "frame_vois": None,
        "bad_frames": [], "auto_window": None, "decoded_bytes": 0, "stacks": [],
    }
    return ParsedRecord(record_id, files, Manifest.build(meta, render, [], [_file_json(f) for f in files]))


def _file_json(f: ParsedFile) -> dict:
    """A file's manifest entry, before its blob and SOP Instance UID are named (a stored-only
    file's names its transfer syntax, and blob -1 until then)."""
    entry = {"sha256": f.sha256, "size": len(f.raw), "frames": f.frames, "pixel_offset": f.pixel_offset,
             "slope": f.slope, "intercept": f.intercept, "frame_rescales": f.frame_rescales, "name": f.name[:200],
             "overlays": f.overlays}
    if f.stored_only is not None:
        entry.update(transfer_syntax=f.stored_only, blob=-1)
    return entry


def journal_entry(parsed: ParsedFile, blob: int) -> JournalEntry:
    """The journal entry of a file appended to a series as blob `blob`: its manifest entry exactly
    as the series' analysis will write it (passed through JSON once, as `Manifest.build` does)."""
    data = {**_file_json(parsed), "blob": blob, "sop_instance_uid": parsed.sop_instance_uid,
            "bad_frames": [{"frame": i, "message": m} for i, m in sorted(parsed.bad_frames.items())]}
    return JournalEntry.from_json(json.loads(json.dumps(data)))


@dataclass
class Growth:
    """What an append to a growing series is checked against, updated per appended file (never by
    walking the series): one stored file (every stored file agrees with it on what must agree),
    the frame count, the largest image size and the distinct rescales (`check_append`)."""

    reference: ParsedFile
    frames: int = 0
    rows: int = 0
    columns: int = 0
    rescales: set[tuple[float, float]] = field(default_factory=set)

    @classmethod
    def of(cls, files: list[ParsedFile]) -> Growth:
        growth = cls(files[0])
        growth.add(files)
        return growth

    def add(self, files: list[ParsedFile]) -> None:
        for parsed in files:
            if parsed.stored_only is not None:
                continue  # no frames of the series: nothing an append is checked against
            if self.reference.stored_only is not None:  # the series' first renderable file
                self.reference = parsed
            self.frames += parsed.frames
            self.rows = max(self.rows, int(parsed.dataset.Rows))
            self.columns = max(self.columns, int(parsed.dataset.Columns))
            self.rescales.update(parsed.frame_rescales or [(parsed.slope, parsed.intercept)])


def check_append(growth: Growth, new: list[ParsedFile], limits: Limits) -> None:
    """Refuse (UploadError) new files that `analyse_files` of the grown series would refuse, at the
    cost of the new files only: their own analysis (formats, LUTs, their mutual consistency), their
    consistency with the series, and the series' frame and decoded-size limits once grown."""
    analyse_files(new, limits, Provisional(None))
    check_consistent([growth.reference, *new])
    if growth.reference.stored_only is not None:  # no renderable file stored yet: `new`'s analysis was the check
        return
    frames_total = growth.frames + sum(f.frames for f in new)
    if frames_total > limits.max_frames:
        raise UploadError(413, "over_limits",
                          f"{frames_total} frames is more than this node's limit of {limits.max_frames}")
    rescales = growth.rescales.union(*(f.frame_rescales or [(f.slope, f.intercept)] for f in new))
    first = growth.reference.dataset
    layout = layout_of(first, float_modality=len(rescales) > 1 and not first.get("ModalityLUTSequence"))
    padded = layout.sized(max([growth.rows, *(int(f.dataset.Rows) for f in new)]),
                          max([growth.columns, *(int(f.dataset.Columns) for f in new)]))
    decoded_bytes = frames_total * int(np.prod(padded.frame_shape)) * layout.stored_dtype.itemsize
    if decoded_bytes > limits.max_decoded_bytes:
        raise UploadError(413, "over_limits",
                          f"the record decodes to {decoded_bytes // MIB} MiB, "
                          f"over the limit of {limits.max_decoded_bytes // MIB} MiB")


def _auto_window(files: list[ParsedFile], layout: Layout, modality_lut: LutTable | None,
                 bad_frames: dict[int, str]) -> dict | None:
    """The window of the series' middle frame that can be shown (None for colour): one decode."""
    if layout.is_color:
        return None
    sample_file, sample_index = _sample_frame(files, bad_frames)
    sample = files[sample_file]
    sample_frame = _trial_decode(sample, layout.sized(int(sample.dataset.Rows), int(sample.dataset.Columns)),
                                 sample_index)
    if layout.float_modality or modality_lut is None:
        slope, intercept = (1.0, 0.0) if layout.float_modality else files[0].rescale(0)
        modality = Modality(slope, intercept)
    else:
        modality = Modality(lut=modality_lut)
    window = auto_window(sample_frame, modality)
    return {"center": window.center, "width": window.width}


def _sample_frame(files: list[ParsedFile], bad_frames: dict[int, str]) -> tuple[int, int]:
    """(file, frame in file) of the middle frame that can be shown: the automatic window's sample."""
    good = [(i, frame) for i, parsed in enumerate(files) for frame in range(parsed.frames)]
    good = [where for index, where in enumerate(good) if index not in bad_frames]
    return good[len(good) // 2]


def _bad_frames(files: list[ParsedFile]) -> dict[int, str]:
    """Record frame index -> reason, from each file's frames that cannot be shown."""
    bad, start = {}, 0
    for parsed in files:
        bad.update({start + frame: reason for frame, reason in parsed.bad_frames.items()})
        start += parsed.frames
    return bad


def _trial_decode(parsed: ParsedFile, layout: Layout, frame: int) -> np.ndarray:
    """Decode one frame now, so a file whose pixels cannot be decoded is refused at upload."""
    offset = parsed.pixel_offset if fast_path_possible(layout) else None
    try:
        _, array = next(decode_frames(parsed.raw, layout, [frame], offset, *parsed.rescale(frame), parsed.dataset))
    except Exception as exc:  # decoders raise many kinds; all mean "cannot show this image"
        raise UploadError(422, "undecodable_pixels",
                          f"{parsed.name}: the pixel data cannot be decoded ({exc})") from exc
    return array
