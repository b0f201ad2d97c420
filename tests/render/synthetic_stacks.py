"""Synthetic enhanced multi-frame files that hold several stacks (field map, DTI, dynamic), and a
classic series that mixes orientations: the inputs of the stack split (daemons/render/ingest/stack_analysis.py).

Every frame's pixels are `value(stack, position, time)` (a constant image), so a test can tell which
frame a reformat or a stack was made of.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from tests.render.synthetic import dataset, new_instance, to_bytes

ROWS, COLS = 12, 10
PIXEL_SPACING = (0.8, 0.5)
SLICE_MM = 2.0


def value(stack: int, position: int, time: int = 0) -> int:
    return 1000 * stack + 10 * position + time


def _item(**attributes) -> Dataset:
    item = Dataset()
    for keyword, attr_value in attributes.items():
        setattr(item, keyword, attr_value)
    return item


def enhanced(frames: Sequence[dict], dimensions: Sequence[str]) -> bytes:
    """An Enhanced MR file of `frames`, each a dict with `stack` (0-based), `position` (0-based),
    optional `time`, `type` (MAGNITUDE/PHASE), `b`, `echo` (ms), `stack_id`; `dimensions` are the keywords the
    Dimension Index Sequence points at (the frames' Dimension Index Values follow them)."""
    ds = new_instance(pydicom.uid.EnhancedMRImageStorage)
    # a study of its own: a study belongs to one patient (the node refuses another patient's series in it)
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "MR", generate_uid(), "1.2.3.1"
    ds.PatientID, ds.PatientName = "STACKS-1", "Stacks^Test"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLS, len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.DimensionIndexSequence = DicomSequence([
        _item(DimensionIndexPointer=Tag(keyword), FunctionalGroupPointer=Tag(
            "MRDiffusionSequence" if keyword == "DiffusionBValue" else "FrameContentSequence"))
        for keyword in dimensions])
    ds.SharedFunctionalGroupsSequence = DicomSequence([_item(
        PlaneOrientationSequence=DicomSequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=DicomSequence([_item(PixelSpacing=list(PIXEL_SPACING), SliceThickness=SLICE_MM)]),
        FrameVOILUTSequence=DicomSequence([_item(WindowCenter=2000, WindowWidth=4000)]),
    )])
    per_frame, pixels = [], []
    for frame in frames:
        stack, position, time = frame["stack"], frame["position"], frame.get("time", 0)
        index_values = {"StackID": stack + 1, "InStackPositionNumber": position + 1,
                        "TemporalPositionIndex": time + 1, "DiffusionBValue": stack + 1}
        content = _item(DimensionIndexValues=[index_values[k] for k in dimensions],
                        InStackPositionNumber=position + 1)
        if "stack_id" in frame:
            content.StackID = frame["stack_id"]
        if "time" in frame:
            content.TemporalPositionIndex = time + 1
        groups = _item(
            FrameContentSequence=DicomSequence([content]),
            PlanePositionSequence=DicomSequence([_item(
                ImagePositionPatient=[-10.0, -20.0, 30.0 + position * SLICE_MM])]),
            MRImageFrameTypeSequence=DicomSequence([_item(
                FrameType=["ORIGINAL", "PRIMARY", frame.get("type", "M"), "NONE"],
                ComplexImageComponent=frame.get("type", "MAGNITUDE"))]),
        )
        if "window" in frame:  # its own Frame VOI LUT, over the shared one
            groups.FrameVOILUTSequence = DicomSequence([_item(WindowCenter=frame["window"][0],
                                                              WindowWidth=frame["window"][1])])
        if "echo" in frame:
            groups.MREchoSequence = DicomSequence([_item(EffectiveEchoTime=frame["echo"])])
        if "b" in frame:
            groups.MRDiffusionSequence = DicomSequence([_item(DiffusionBValue=frame["b"],
                                                              DiffusionDirectionality="NONE")])
        per_frame.append(groups)
        pixels.append(np.full((ROWS, COLS), value(stack, position, time), dtype=np.int16))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.stack(pixels).tobytes()
    return to_bytes(ds)


def field_map(positions: int = 6, phase_window: tuple[float, float] | None = None) -> bytes:
    """Magnitude and phase frames at the same positions, interleaved (magnitude, phase per position);
    `phase_window`: the phase frames' own Frame VOI LUT window."""
    frames = [{"stack": stack, "position": p, "type": kind,
               **({"window": phase_window} if phase_window and kind == "PHASE" else {})}
              for p in range(positions) for stack, kind in enumerate(("MAGNITUDE", "PHASE"))]
    return enhanced(frames, ["InStackPositionNumber"])


def dti(b_values: Sequence[float] = (0, 500, 1000, 2000), positions: int = 8) -> bytes:
    """A DTI-like file: every b-value at every position, ordered by position then b-value."""
    frames = [{"stack": stack, "position": p, "b": b} for p in range(positions) for stack, b in enumerate(b_values)]
    return enhanced(frames, ["DiffusionBValue", "InStackPositionNumber"])


def multi_echo(echoes: Sequence[float] = (5.0, 10.0), positions: int = 6) -> bytes:
    """Two echo times at every position, with no dimension naming the echo (the echo sets them apart)."""
    frames = [{"stack": stack, "position": p, "echo": te} for p in range(positions) for stack, te in enumerate(echoes)]
    return enhanced(frames, ["InStackPositionNumber"])


def dynamic(times: int = 2, positions: int = 6) -> bytes:
    """One stack at `times` temporal positions (time is the outer loop)."""
    frames = [{"stack": 0, "position": p, "time": t} for t in range(times) for p in range(positions)]
    return enhanced(frames, ["TemporalPositionIndex", "InStackPositionNumber"])


def mixed_orientation_series(axial: int = 5, sagittal: int = 4) -> list[tuple[str, bytes]]:
    """A classic series of `axial` axial and `sagittal` sagittal slices (one Series Instance UID)."""
    series, files = generate_uid(), []
    for plane, count, orientation in (("ax", axial, (1, 0, 0, 0, 1, 0)), ("sag", sagittal, (0, 1, 0, 0, 0, -1))):
        normal = np.cross(orientation[:3], orientation[3:])
        for k in range(count):
            ds = dataset(ROWS, COLS, series=series, orientation=orientation, pixels=False)
            ds.ImagePositionPatient = [float(v) for v in np.array([-10.0, -20.0, 30.0]) + normal * k * SLICE_MM]
            ds.PixelSpacing = list(PIXEL_SPACING)
            ds.InstanceNumber = len(files) + 1
            ds.PixelData = np.full((ROWS, COLS), value(0 if plane == "ax" else 1, k), dtype=np.int16).tobytes()
            files.append((f"{plane}{k}.dcm", to_bytes(ds)))
    return files


def oblique_series(count: int = 5) -> list[tuple[str, bytes]]:
    """A classic series whose every slice has its own orientation (a radial acquisition): no volume."""
    series, files = generate_uid(), []
    for k in range(count):
        angle = np.radians(20 * k)
        orientation = (float(np.cos(angle)), float(np.sin(angle)), 0.0, 0.0, 0.0, -1.0)
        ds = dataset(ROWS, COLS, series=series, orientation=orientation, pixels=False)
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.InstanceNumber = k + 1
        ds.PixelData = np.full((ROWS, COLS), value(0, k), dtype=np.int16).tobytes()
        files.append((f"radial{k}.dcm", to_bytes(ds)))
    return files


def classic_cine(positions: int = 4, times: int = 3, clock: str | None = "TriggerTime") -> list[tuple[str, bytes]]:
    """A classic series of `positions` axial positions, each imaged at `times` time points, numbered
    position by position as scanners do. `clock` tells the repeats apart: "TriggerTime" (ms, each
    slice triggered a little later than the one before, as in a multi-slice cardiac cine),
    "TemporalPositionIdentifier", "AcquisitionTime" (HHMMSS.FFFFFF) or None (nothing does)."""
    series, files = generate_uid(), []
    for p in range(positions):
        for t in range(times):
            ds = dataset(ROWS, COLS, series=series, pixels=False)
            ds.Modality = "MR"
            ds.ImagePositionPatient = [-10.0, -20.0, 30.0 + p * SLICE_MM]
            ds.PixelSpacing = list(PIXEL_SPACING)
            ds.InstanceNumber = p * times + t + 1
            if clock == "TriggerTime":
                ds.TriggerTime = 40.0 * t + 3.0 * p
            elif clock == "TemporalPositionIdentifier":
                ds.TemporalPositionIdentifier = t + 1
            elif clock == "AcquisitionTime":
                ds.AcquisitionTime = f"1203{10 * t + p:02d}.250000"
            ds.PixelData = np.full((ROWS, COLS), value(0, p, t), dtype=np.int16).tobytes()
            files.append((f"p{p}t{t}.dcm", to_bytes(ds)))
    return files[::-1]  # uploads come in any order
