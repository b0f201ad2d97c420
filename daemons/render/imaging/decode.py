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
import struct
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any, NamedTuple

import imagecodecs
import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.encaps import encapsulate, generate_fragmented_frames, generate_fragments, get_frame, parse_basic_offsets
from pydicom.filereader import read_dataset as read_elements
from pydicom.filereader import read_partial
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID
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


def read_dataset(raw: bytes, observe: Callable[[int, int], None] | None = None,
                 inflated: tuple[int, bytes] | None = None) -> Dataset:
    """Parse a Part 10 file, leaving large values (the pixel data) unread until needed.

    `observe(tag, offset)` is called for each top-level element of the dataset as the reader meets
    it, with the offset of the element in `raw` (in the inflated data set for a deflated file), so
    the upload checks see repeated tags without walking the file a second time. `inflated`: a
    deflated file's data set inflated already, with the offset in `raw` its deflated bytes start at
    (the upload checks inflate it once, to bound it: pydicom would inflate it whole again).
    """
    stream = io.BytesIO(raw if inflated is None else inflated[1])
    stop_when: Callable[[int, str | None, int], bool] | None = None
    if observe is not None:
        callback = observe

        def stop_when(tag: int, vr: str | None, length: int) -> bool:  # never stops: it watches
            # called with the stream at the value, after a 12-byte header for explicit long VRs, else 8
            callback(tag, stream.tell() - (12 if vr in EXPLICIT_VR_LENGTH_32 else 8))
            return False

    if inflated is None:
        return read_partial(stream, stop_when=stop_when, defer_size=DEFER_BYTES)
    # what pydicom's read_partial does with a deflated file once it has inflated its data set
    head = read_partial(io.BytesIO(raw[:inflated[0]]))  # the preamble and file meta, no data set
    dataset = read_elements(stream, is_implicit_VR=False, is_little_endian=True, stop_when=stop_when,
                            defer_size=DEFER_BYTES)
    ds = FileDataset(stream, dataset, head.preamble, head.file_meta, is_implicit_VR=False, is_little_endian=True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


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


#: Segments, and levels of indirect segments within indirect segments, that a segmented palette's
#: expansion may go through (`segmented_entries`): a table of 65,536 entries needs no more.
MAX_PALETTE_SEGMENTS = 65536
MAX_INDIRECT_DEPTH = 8


def segmented_entries(words: tuple[int, ...], entries: int, eight_bit: bool) -> int:
    """How many entries pydicom's expansion of segmented palette data (PS3.3 C.7.9.2, `words` as
    pydicom unpacks them) makes, counted without expanding; ValueError as soon as it is more than
    the table's `entries` (its descriptor's), or the segments run past MAX_PALETTE_SEGMENTS or nest
    indirect segments deeper than MAX_INDIRECT_DEPTH.

    Why: pydicom expands every segment into a Python list before it looks at the descriptor, and a
    linear segment is two words for up to 65,535 entries: a 20 KB file expanded to 120 million
    entries, 4.5 s and 1 GB for each frame, in the decode worker at upload and again in the node's
    own process at every load of the record (an indirect segment repeating others multiplies it).
    """
    steps = 0

    def walk(start: int, segments: int | None, depth: int) -> int:
        nonlocal steps
        if depth > MAX_INDIRECT_DEPTH:
            raise ValueError(f"the segmented palette nests indirect segments deeper than {MAX_INDIRECT_DEPTH}")
        count, offset, read = 0, start, 0
        while offset + 1 < len(words) and read != segments:
            steps += 1
            if steps > MAX_PALETTE_SEGMENTS:
                raise ValueError(f"the segmented palette has more than {MAX_PALETTE_SEGMENTS} segments")
            opcode, length = words[offset], words[offset + 1]
            offset += 2
            if opcode == 0:  # discrete: `length` values
                count, offset = count + length, offset + length
            elif opcode == 1:  # linear: `length` values up to the next word
                count, offset = count + length, offset + 1
            elif opcode == 2:  # indirect: `length` segments from a word offset (two 16-bit words or four 8-bit)
                at = (words[offset + 3] << 24 | words[offset + 2] << 16 | words[offset + 1] << 8 | words[offset]
                      if eight_bit else words[offset + 1] << 16 | words[offset])
                offset += 4 if eight_bit else 2
                count += walk(at, length, depth + 1)
            else:
                return count  # pydicom refuses the segment itself
            if count > entries:
                raise ValueError(f"the segmented palette expands to more than the {entries} entries its "
                                 "descriptor gives")
            read += 1
        return count

    return walk(0, None, 0)


def _check_segmented_palette(ds: Dataset) -> None:
    """`segmented_entries` for each colour's segmented data of a palette source (`_palette_source`)."""
    little = ds.original_encoding[1] is not False
    for colour in ("Red", "Green", "Blue", "Alpha"):
        data = ds.get(f"Segmented{colour}PaletteColorLookupTableData")
        if data is None:
            continue
        entries, _, bits = (int(v) for v in ds[f"{colour}PaletteColorLookupTableDescriptor"].value)
        size = 1 if bits <= 8 else 2
        words = struct.unpack(f"{'<' if little else '>'}{len(data) // size}{'B' if size == 1 else 'H'}",
                              data[:len(data) // size * size])
        segmented_entries(words, entries or 65536, eight_bit=size == 1)


def _palette_source(ds: Dataset) -> Dataset:
    """The palette attributes as little endian for `apply_color_lut`, a segmented palette checked
    to expand to no more than its entries (`segmented_entries`).

    pydicom 3.0 reads palette LUT data (plain and segmented) as little endian whatever the transfer
    syntax, so a big-endian file's palette comes out byte-swapped; hand it swapped words instead.
    """
    if ds.original_encoding[1] is not False:
        _check_segmented_palette(ds)
        return ds
    fixed = Dataset()
    fixed.file_meta = pydicom.dataset.FileMetaDataset()
    fixed.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for colour in ("Red", "Green", "Blue"):
        fixed[f"{colour}PaletteColorLookupTableDescriptor"] = ds[f"{colour}PaletteColorLookupTableDescriptor"]
        for keyword in (f"{colour}PaletteColorLookupTableData", f"Segmented{colour}PaletteColorLookupTableData"):
            if keyword in ds:
                setattr(fixed, keyword, little_endian_value(ds[keyword], int(ds.BitsAllocated)))
    _check_segmented_palette(fixed)
    return fixed


def _ijg_frame(ds: Dataset, index: int, frames: int, layout: Layout) -> np.ndarray:
    """One frame of an IJG_SYNTAXES file, as the stored values pydicom would give (signed data
    sign-extended from Bits Stored)."""
    array = imagecodecs.jpeg8_decode(encoded_frame(ds, index, frames))
    expected = (layout.rows, layout.columns, 3) if layout.samples == 3 else (layout.rows, layout.columns)
    if array.shape != expected:
        raise ValueError(f"the JPEG frame is {array.shape}, the header says {expected}")
    if layout.samples == 3:
        return array
    unsigned = np.dtype(f"u{layout.file_dtype.itemsize}")
    return _fix_bits(array.astype(unsigned).view(layout.file_dtype), layout)


#: Where `_frame_table` keeps what it found (with the frame count it looked for) on the data set it
#: read it from, so each frame's decode of one file finds it without another pass.
_FRAMES = "_sivr_frame_table"


class _FrameTable(NamedTuple):
    """Where the frames of encapsulated pixel data without offset tables lie, as pydicom groups the
    fragments into frames (`generate_fragmented_frames`): `bounds` is the offset of each frame's first
    item tag, then the end of the last frame, measured as offset tables measure (from the item tag of
    the first fragment); `single` says every frame is one fragment; `error` is pydicom's reason it
    cannot group them (the frames are then all refused)."""

    bounds: list[int]
    single: bool
    error: str | None


def _frame_table(ds: Dataset, frames: int) -> _FrameTable | None:
    """The `_FrameTable` of a multi-frame data set, found once (one pass over its fragments) and kept
    on it; None where pydicom finds each frame directly: an Extended or a Basic Offset Table."""
    if frames < 2 or ("ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds):
        return None
    kept = getattr(ds, _FRAMES, None)
    if kept is None or kept[0] != frames:
        kept = (frames, _group_fragments(ds.PixelData, frames))
        object.__setattr__(ds, _FRAMES, kept)
    table: _FrameTable | None = kept[1]
    return table


def _group_fragments(data: bytes, frames: int) -> _FrameTable | None:
    """`_frame_table` of encapsulated pixel data (None if it has a Basic Offset Table)."""
    try:
        if parse_basic_offsets(data):
            return None
        bounds, single = [0], True
        for fragments in generate_fragmented_frames(data, number_of_frames=frames):
            bounds.append(bounds[-1] + sum(8 + len(fragment) for fragment in fragments))
            single = single and len(fragments) == 1
    except (ValueError, struct.error) as exc:
        return _FrameTable([], False, f"the encapsulated pixel data cannot be split into frames ({exc})")
    return _FrameTable(bounds, single, None)


def frame_offsets(ds: Dataset, frames: int) -> tuple[Any, Any] | None:
    """Where each frame of an encapsulated data set's pixel data begins and how long it is, for
    pydicom's frame lookup (`get_frame`'s `extended_offsets`): its Extended Offset Table, or, for a
    multi-frame file of one fragment per frame without a Basic Offset Table, the offsets its
    `_frame_table` found; None where pydicom finds the frames itself (a Basic Offset Table, which it
    reads directly) or they are several fragments (`encoded_frame` joins those).

    Why: without an offset table pydicom walks the fragments from the first to find one frame, at
    every frame: a 412 KB RLE file of 4,000 8 x 8 frames took 11 s of a decode worker at upload and
    then 11.8 s of the node's own process at every load of the record.
    """
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths
    table = _frame_table(ds, frames)
    if table is None or not table.single:
        return None
    bounds = table.bounds
    return bounds[:-1], [end - start - 8 for start, end in pairwise(bounds)]


def encoded_frame(ds: Dataset, index: int, frames: int) -> bytes:
    """Frame `index` of an encapsulated data set as its encoded bytes (its fragments joined), found
    by its offset table or its `_frame_table`, never by a walk from the first fragment.

    Why: pydicom finds a frame of several fragments without a Basic Offset Table by walking every
    fragment before it, looking for the JPEG end marker, at every frame: 2,000 frames of two
    fragments held a decode worker 16 s at upload and the node's own process 10.8 s at every load.
    """
    table = _frame_table(ds, frames)
    if table is None or table.single:
        return get_frame(ds.PixelData, index, number_of_frames=frames, extended_offsets=frame_offsets(ds, frames))
    if table.error is not None:
        raise ValueError(table.error)
    if index + 1 >= len(table.bounds):
        raise ValueError(f"the encapsulated pixel data holds {len(table.bounds) - 1} frames, not {index + 1}")
    # 8: the empty Basic Offset Table's item, which the bounds are measured after
    return b"".join(generate_fragments(ds.PixelData[8 + table.bounds[index]:8 + table.bounds[index + 1]]))


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
    plugin = jpeg2000.plugin_for(syntax)
    if not UID(syntax).is_encapsulated:
        return pixel_array(ds, index=index if frames > 1 else None, decoding_plugin=plugin)
    table = _frame_table(ds, frames)
    if table is not None and not table.single:  # pydicom would walk the fragments: decode the frame found
        options = as_pixel_options(ds, number_of_frames=1)
        array: np.ndarray = get_decoder(syntax).as_array(encapsulate([encoded_frame(ds, index, frames)]),
                                                         validate=True, raw=False, decoding_plugin=plugin,
                                                         **options)[0]
        return array
    offsets = frame_offsets(ds, frames)
    found: dict[str, Any] = {} if offsets is None else {"extended_offsets": offsets}
    return pixel_array(ds, index=index if frames > 1 else None, decoding_plugin=plugin, **found)
