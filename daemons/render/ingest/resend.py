"""An instance sent again: whether a file under a SOP Instance UID the node holds is that instance.

A SOP Instance UID names one instance (PS3.5 9.1), so a different file under a stored UID is
refused, never stored beside it or in its place. But the same instance arrives in other bytes: a
sender writes the data set anew (group lengths, item and padding encodings, its own file meta),
and a PACS forwarding, a router decompressing or a client re-sending what SIVR's own WADO-RS gave
it transcoded (`imaging.transcode.to_explicit_le` keeps the UID) sends it in another transfer syntax.

`compare_resent` reads both files' attributes; when they agree but the transfer syntaxes differ,
only the pixels can tell, and `same_pixels` decodes them in a decode worker (`isolation`: it runs
codecs on untrusted bytes), outside the node's locks. The comparison is of the values as stored,
never of what is displayed: a native file's words as they are (pydicom masks the bits above Bits
Stored of what it returns), a lossless codec's output without colour conversion, frame by frame.
Anything else is another instance: a lossy, retired (Explicit VR Big Endian, whose OW byte swapping
reorders 8-bit values) or unknown syntax on either side, Pixel Data on one side only, a bit-packed
or subsampled (YBR_FULL_422) layout, a frame count or a value that differs. A refusal costs a sender
a 409 / 0xA900 it can look into; a wrong "same" would answer "stored" for pixels that never were.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Iterator
from itertools import zip_longest
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import iter_pixels
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from daemons.render.imaging.decode import read_dataset

DATASET_TRAILING_PADDING = 0xFFFCFFFC
#: The elements whose encoding is the transfer syntax's: compared as decoded pixels, not as bytes.
PIXEL_ENCODING = (0x7FE00010, 0x7FE00001, 0x7FE00002)  # Pixel Data, Extended Offset Table (+ Lengths)
#: The syntaxes compared by their values: native little endian ones, and compressed ones whose
#: decoded values are exactly the values encoded. An allow-list: any other is another instance.
LOSSLESS = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                      RLELossless, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless,
                      HTJ2KLossless, HTJ2KLosslessRPCL})


class Resent(enum.Enum):
    """What a file under a stored SOP Instance UID is, as far as its attributes tell."""

    SAME = "same"  # the stored instance (same syntax, same values)
    OTHER = "other"  # another instance under that UID
    COMPARE_PIXELS = "compare pixels"  # the same attributes in another lossless syntax: `same_pixels` decides


def compare_resent(stored: bytes, incoming: bytes) -> Resent:
    """Compare a file with the stored copy of its SOP Instance UID (both already checked)."""
    first, second = read_dataset(stored), read_dataset(incoming)
    if _syntax(first) == _syntax(second):
        return Resent.SAME if _attributes(first, ()) == _attributes(second, ()) else Resent.OTHER
    if (_syntax(first) not in LOSSLESS or _syntax(second) not in LOSSLESS
            or ("PixelData" in first) != ("PixelData" in second)
            or _attributes(first, PIXEL_ENCODING) != _attributes(second, PIXEL_ENCODING)):
        return Resent.OTHER
    if "PixelData" not in first:
        return Resent.SAME
    return Resent.COMPARE_PIXELS if _compared_layout(first) else Resent.OTHER


def same_pixels(stored: bytes, incoming: bytes) -> bool:
    """Whether two files of one instance in two lossless syntaxes hold the same stored values in
    every frame. Decodes untrusted pixel data: run it in a decode worker (`DecodePool.call`)."""
    frames = 0
    for first, second in zip_longest(_stored_values(stored), _stored_values(incoming)):
        if first is None or second is None or first.shape != second.shape or not np.array_equal(first, second):
            return False
        frames += 1
    return frames > 0  # nothing compared is no evidence of sameness


def _syntax(ds: Dataset) -> UID:
    return UID(str(ds.file_meta.get("TransferSyntaxUID", "")))


def _compared_layout(ds: Dataset) -> bool:
    """Whether the values of `ds`'s pixels can be compared word by word: whole bytes or words per
    sample, no subsampling (whose stored form depends on the syntax)."""
    return (int(ds.get("BitsAllocated", 0)) in (8, 16, 32)
            and str(ds.get("PhotometricInterpretation", "")) != "YBR_FULL_422")


def _attributes(ds: Dataset, skipped: tuple[int, ...]) -> dict[int, Any]:
    return {element.tag: element.value for element in ds
            if element.tag.element != 0 and element.tag != DATASET_TRAILING_PADDING and element.tag not in skipped}


def _stored_values(raw: bytes) -> Iterator[np.ndarray]:
    """The frames' values as stored, as unsigned words (rows, columns[, samples]); nothing for a
    layout or syntax that is not compared (then the files never compare the same)."""
    ds = dcmread(io.BytesIO(raw))
    syntax = _syntax(ds)
    if syntax not in LOSSLESS or "PixelData" not in ds or not _compared_layout(ds):
        return
    words = np.dtype(f"u{int(ds.BitsAllocated) // 8}")
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples, frames = int(ds.get("SamplesPerPixel", 1)), int(ds.get("NumberOfFrames", 1) or 1)
    if syntax.is_compressed:
        for frame in iter_pixels(ds, raw=True):
            if frame.dtype.itemsize > words.itemsize:  # a codestream wider than Bits Allocated: never narrowed,
                yield frame  # so values beyond the stored words differ (12-bit 256 + x is not 8-bit x)
            else:
                yield frame.view(words) if frame.dtype.itemsize == words.itemsize else frame.astype(words)
        return
    per_frame = rows * columns * samples
    values = np.frombuffer(ds.PixelData, words.newbyteorder("<"), count=min(
        frames * per_frame, len(ds.PixelData) // words.itemsize)).astype(words)
    planar = samples > 1 and int(ds.get("PlanarConfiguration", 0)) == 1
    for start in range(0, len(values) - per_frame + 1, per_frame):
        frame = values[start:start + per_frame]
        if samples == 1:
            yield frame.reshape(rows, columns)
        elif planar:
            yield frame.reshape(samples, rows, columns).transpose(1, 2, 0)
        else:
            yield frame.reshape(rows, columns, samples)
