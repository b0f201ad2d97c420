"""An instance re-encoded in Explicit VR Little Endian, the uncompressed syntax WADO-RS answers by
default: for WADO-RS (the default instance syntax, /metadata, bulk data) and for the C-GET and
C-MOVE sub-operations to a receiver that accepted only uncompressed syntaxes (pynetdicom re-encodes
it in Implicit VR Little Endian, the syntax every DICOM peer takes, where only that was accepted).
One transcoding for both doors, so an instance one of them can send the other can too.

Frames are decoded as the node renders them (`decode.stored_values`), and big-endian word values are
swapped as stored rather than decoded, so that planar and YBR colour stay as their attributes say.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from daemons.render.imaging.decode import IJG_SYNTAXES, WORD_VRS, little_endian_value, stored_values
from daemons.render.store.frame_layout import layout_of

EXPLICIT_LE = str(ExplicitVRLittleEndian)
BIG_ENDIAN = str(ExplicitVRBigEndian)


def stored_syntax(ds: Dataset) -> str:
    """The transfer syntax a data set was read in (a file without one: Explicit VR Little Endian)."""
    return str(ds.file_meta.get("TransferSyntaxUID", "") or EXPLICIT_LE)


def frame_count(ds: Dataset) -> int:
    """Number of Frames, 1 for a single-frame instance."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def to_explicit_le(raw: bytes) -> bytes:
    """The instance in Explicit VR Little Endian: decompressed, or re-encoded from another native syntax.

    The SOP Instance UID is kept: the pixel values are unchanged (lossless decompression). Frames
    are decoded as the node renders them (`decode.stored_values`): pydicom has no decoder for the
    retired JPEG syntaxes the node reads with libjpeg.
    """
    ds = pydicom.dcmread(io.BytesIO(raw))
    syntax = UID(stored_syntax(ds))
    if syntax == EXPLICIT_LE:
        return raw
    if syntax in IJG_SYNTAXES:
        layout = layout_of(ds, float_modality=False)
        frames = np.stack([stored_values(ds, index, layout) for index in range(frame_count(ds))])
        ds.set_pixel_data(frames if "NumberOfFrames" in ds else frames[0],  # kept where the file has it
                          "RGB" if layout.samples == 3 else layout.photometric, layout.bits_stored,
                          generate_instance_uid=False)  # libjpeg gives colour as RGB
    elif syntax.is_compressed:
        ds.decompress(generate_instance_uid=False)
    elif not syntax.is_little_endian:
        swap_to_little_endian(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    # not Dataset.save_as, which refuses to change the byte order: the values pydicom does not
    # convert itself are little-endian now (`swap_to_little_endian`)
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def little_endian_array(array: np.ndarray) -> np.ndarray:
    """`array` with its values in little-endian byte order (a view when they already are)."""
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def little_endian_values(ds: Dataset) -> Dataset:
    """`ds` with its word values in little-endian order (`swap_to_little_endian`) when it was read
    from an Explicit VR Big Endian file, the one big-endian syntax: what /metadata answers."""
    if stored_syntax(ds) == BIG_ENDIAN:
        swap_to_little_endian(ds)
    return ds


def swap_to_little_endian(ds: Dataset) -> None:
    """Put the OW, OF, OL, OD and OV values of a data set read from a big-endian file (sequences'
    items included) in little-endian order, in place (`little_endian_value`): so that it is
    written, or answered in JSON, in little endian as PS3.18 answers are (F.2.7: InlineBinary).
    Once per data set read from the store: a second call would swap the values back."""
    bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                swap_to_little_endian(item)
        elif element.VR in WORD_VRS and isinstance(element.value, bytes):
            element.value = little_endian_value(element, bits_allocated)
