"""Decoding stored DICOM bytes into frame arrays, the fast way where the syntax allows.

Uncompressed little-endian greyscale (most CT and MR series) is read with `numpy.frombuffer` at the
pixel data offset found once at upload time: no dataset parsing per slice at load time, which is
what makes loading hundreds of slices take a fraction of a second. JPEG Extended and the retired
spectral-selection and progressive JPEG processes (IJG_SYNTAXES) are decoded with imagecodecs'
libjpeg-turbo, the IJG code dcmtk also uses: pylibjpeg-libjpeg rejects the scans of some 12-bit
files (NEMA WG04 NM1_JPLY) and pydicom has no decoder for the retired ones. Every other syntax
(JPEG baseline and lossless, JPEG-LS, JPEG 2000, RLE, deflate, big endian) and every colour image
goes through pydicom's pixel handlers with the pylibjpeg plugins, except JPEG 2000, which goes
through this node's imagecodecs plugin for pydicom (`jpeg2000`: the same OpenJPEG with the GIL
released). Colour images come out as 8-bit RGB (YBR converted by the decoder, PALETTE COLOR
expanded through its LUTs).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import imagecodecs
import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.filereader import read_partial
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from daemons.render.imaging import jpeg2000
from daemons.render.imaging.pixels import color_to_uint8
from daemons.render.store.frame_layout import Layout

NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
PIXEL_DATA = 0x7FE00010
DEFER_BYTES = 4096  # values this long (the pixel data) are read only when asked for
IJG_SYNTAXES = (
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 and 4), 8 and 12 bit
    "1.2.840.10008.1.2.4.53",  # retired: spectral selection, non-hierarchical (Process 6 and 8)
    "1.2.840.10008.1.2.4.55",  # retired: full progression, non-hierarchical (Process 10 and 12)
)


def syntax_decodable(syntax: str) -> bool:
    """Whether this node can decode pixel data of a transfer syntax."""
    if syntax in IJG_SYNTAXES:
        return True
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def read_dataset(raw: bytes, observe: Callable[[int, int], None] | None = None) -> Dataset:
    """Parse a Part 10 file, leaving large values (the pixel data) unread until needed.

    `observe(tag, offset)` is called for each top-level element of the dataset as the reader meets
    it, with the offset of the element in `raw` (so the upload checks see repeated tags without
    walking the file a second time).
    """
    if observe is None:
        return read_partial(io.BytesIO(raw), defer_size=DEFER_BYTES)
    callback, stream = observe, io.BytesIO(raw)

    def stop_when(tag: int, vr: str | None, length: int) -> bool:  # never stops: it watches
        # called with the stream at the value, after a 12-byte header for explicit long VRs, else 8
        callback(tag, stream.tell() - (12 if vr in EXPLICIT_VR_LENGTH_32 else 8))
        return False

    return read_partial(stream, stop_when=stop_when, defer_size=DEFER_BYTES)


def native_pixel_offset(ds: Dataset) -> int | None:
    """Byte offset of the pixel data value in the file, for uncompressed little-endian files."""
    if str(ds.file_meta.get("TransferSyntaxUID", "")) not in NATIVE_LITTLE_ENDIAN:
        return None
    element = ds.get_item(PIXEL_DATA, keep_deferred=True)
    return getattr(element, "value_tell", None)


def fast_path_possible(layout: Layout) -> bool:
    return layout.samples == 1 and not layout.is_color and layout.bits_allocated in (8, 16, 32)


def _fix_bits(frame: np.ndarray, layout: Layout) -> np.ndarray:
    """Clear bits above Bits Stored, sign-extending signed data (as PS3.5 8.1.1 requires)."""
    unused = layout.bits_allocated - layout.bits_stored
    if unused <= 0:
        return frame
    if layout.pixel_representation == 1:
        return (frame << unused) >> unused
    return frame & np.array((1 << layout.bits_stored) - 1, dtype=frame.dtype)


def native_frame(raw: bytes, offset: int, layout: Layout, index: int) -> np.ndarray:
    """Frame `index` of an uncompressed little-endian file, straight from its bytes."""
    dtype = layout.file_dtype.newbyteorder("<")
    count = layout.rows * layout.columns
    start = offset + index * count * dtype.itemsize
    if start + count * dtype.itemsize > len(raw):
        raise ValueError("the pixel data is shorter than Rows x Columns x Frames requires (truncated file)")
    frame = np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(layout.rows, layout.columns)
    return _fix_bits(frame, layout)


#: The byte size of the numbers in values of the VRs pydicom leaves as bytes when it reads or writes
#: another byte order (dcmwrite's warning: their endianness must be converted by hand)
WORD_VRS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def word_size(element: DataElement, bits_allocated: int) -> int | None:
    """The byte size of the numbers of an element's value, which a change of byte order swaps (None:
    a value of bytes or text). Pixel Data of 32-bit samples is swapped by sample, as pydicom reads it."""
    size = WORD_VRS.get(element.VR)
    if size is not None and element.tag == PIXEL_DATA and bits_allocated == 32:
        return 4
    return size


def swap_words(value: bytes, size: int) -> bytes:
    """`value`'s numbers of `size` bytes in the other byte order (a trailing part of one kept as is)."""
    whole = len(value) // size * size
    return np.frombuffer(value, dtype=f">u{size}", count=whole // size).astype(f"<u{size}").tobytes() + value[whole:]


def little_endian_value(element: DataElement, bits_allocated: int) -> bytes:
    """The value of an element read from a big-endian file, in little-endian order: the numbers of
    an OW, OF, OL, OD or OV value swapped, any other value as it is. Pixel Data is swapped, not
    decoded: decoding would also interleave planar colour and turn YBR into RGB, which its
    attributes would then not say."""
    size = word_size(element, bits_allocated)
    if size is None or not isinstance(element.value, bytes):
        return element.value
    return swap_words(element.value, size)


def _palette_source(ds: Dataset) -> Dataset:
    """The palette attributes as little endian for `apply_color_lut`.

    pydicom 3.0 reads palette LUT data (plain and segmented) as little endian whatever the transfer
    syntax, so a big-endian file's palette comes out byte-swapped; hand it swapped words instead.
    """
    if ds.original_encoding[1] is not False:
        return ds
    fixed = Dataset()
    fixed.file_meta = pydicom.dataset.FileMetaDataset()
    fixed.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for colour in ("Red", "Green", "Blue"):
        fixed[f"{colour}PaletteColorLookupTableDescriptor"] = ds[f"{colour}PaletteColorLookupTableDescriptor"]
        for keyword in (f"{colour}PaletteColorLookupTableData", f"Segmented{colour}PaletteColorLookupTableData"):
            if keyword in ds:
                setattr(fixed, keyword, little_endian_value(ds[keyword], int(ds.BitsAllocated)))
    return fixed


def _ijg_frame(ds: Dataset, index: int, frames: int, layout: Layout) -> np.ndarray:
    """One frame of an IJG_SYNTAXES file, as the stored values pydicom would give (signed data
    sign-extended from Bits Stored)."""
    fragment = get_frame(ds.PixelData, index, number_of_frames=frames,
                         extended_offsets=_extended_offsets(ds))
    array = imagecodecs.jpeg8_decode(fragment)
    expected = (layout.rows, layout.columns, 3) if layout.samples == 3 else (layout.rows, layout.columns)
    if array.shape != expected:
        raise ValueError(f"the JPEG frame is {array.shape}, the header says {expected}")
    if layout.samples == 3:
        return array
    unsigned = np.dtype(f"u{layout.file_dtype.itemsize}")
    return _fix_bits(array.astype(unsigned).view(layout.file_dtype), layout)


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths
    return None


def _as_layout(array: np.ndarray, ds: Dataset, layout: Layout, slope: float, intercept: float) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, _palette_source(ds))
        bits = 16 if rgb.dtype.itemsize > 1 else 8
        return color_to_uint8(rgb, bits)
    if layout.is_color:
        return color_to_uint8(array, layout.bits_stored)
    if layout.float_modality:
        return (array.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    return array.astype(layout.stored_dtype.newbyteorder("="), copy=False)


def decode_frames(
    raw: bytes,
    layout: Layout,
    indices: list[int],
    offset: int | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    dataset: Dataset | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(index, frame)` for frames of one file, in the layout the record keeps in RAM.

    `slope`/`intercept` are this file's rescale, applied only when the record keeps float modality
    values (its files disagree on rescale).
    """
    if offset is not None and fast_path_possible(layout):
        for index in indices:
            frame = native_frame(raw, offset, layout, index)
            if layout.float_modality:
                frame = frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)
            yield index, frame
        return
    ds = dataset if dataset is not None else read_dataset(raw)
    for index in indices:
        yield index, _as_layout(stored_values(ds, index, layout), ds, layout, slope, intercept)


def stored_values(ds: Dataset, index: int, layout: Layout) -> np.ndarray:
    """Frame `index` of a file as its stored values, what pydicom's `pixel_array` gives, decoded as
    the node decodes it: libjpeg for the IJG_SYNTAXES pydicom has no decoder for, OpenJPEG's
    threads for JPEG 2000 (`jpeg2000`), pydicom's decoders for the rest. One rule for what the node
    can decode, whether it renders a frame or sends it decoded (WADO-RS)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if syntax in IJG_SYNTAXES:
        return _ijg_frame(ds, index, frames, layout)
    return pixel_array(ds, index=index if frames > 1 else None, decoding_plugin=jpeg2000.plugin_for(syntax))
