"""Upload checks: parse every file and refuse what cannot be rendered, before a byte is stored.

A file whose pixel data is in a transfer syntax this node cannot decode is not refused: it is a
*stored-only* file (`ParsedFile.stored_only` names its syntax, decided once, in `_parse_file`). Its
header passes the same checks and limits as any file's; its pixel data is never decoded (no codec
runs on it, so it is checked here, not in a decode worker), and it is kept and retrieved as sent
but never rendered. So is a non-image object (`holds_no_image`: a report, a presentation state, an
encapsulated PDF...; no Pixel Data, no frames), whatever its syntax.

Each refusal is an UploadError whose message names the file and the reason, so the physician can
act on it. A file that passes is known to parse and to decode frame by frame (a multi-frame file
whose other frames are good keeps its short or undecodable frames as `bad_frames`, never shown).
What a series is made of (order, geometry, default windows, stacks) is decided afterwards from
the parsed files by `daemons.render.ingest.series_analysis`; the attribute readers it shares with these
checks (`floats`, `attribute`, `read_lut`, `pixel_spacing`, ...) live here, with the file they read.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator, read_partial
from pydicom.filereader import read_dataset as read_elements
from pydicom.uid import UID

from daemons.render.attributes import attribute_text
from daemons.render.imaging.decode import (
    DEFER_BYTES,
    NATIVE_LITTLE_ENDIAN,
    decode_frames,
    fast_path_possible,
    native_pixel_offset,
    read_dataset,
    syntax_decodable,
)
from daemons.render.imaging.overlays import has_overlays, unshowable_plane
from daemons.render.imaging.pixels import WINDOW_FUNCTIONS, LutTable
from daemons.render.imaging.voi import lut_to_json
from daemons.render.ingest import element_budget
from daemons.render.ingest.element_check import convert_every_element
from daemons.render.store.frame_layout import Layout, layout_of
from daemons.render.uids import uid_of

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    max_files: int
    max_rows: int
    max_columns: int
    max_frames: int
    max_decoded_bytes: int
    max_header_elements: int = element_budget.MAX_ELEMENTS
    max_header_values: int = element_budget.MAX_TEXT_VALUES
    max_upload_header_elements: int = element_budget.MAX_UPLOAD_ELEMENTS
    max_upload_header_values: int = element_budget.MAX_UPLOAD_TEXT_VALUES

    @classmethod
    def from_config(cls, config) -> Limits:
        limits = config["limits"]
        return cls(
            max_upload_bytes=limits["max_upload_mb"] * MIB,
            max_files=limits["max_files"],
            max_rows=limits["max_rows"],
            max_columns=limits["max_columns"],
            max_frames=limits["max_frames"],
            max_decoded_bytes=limits["max_decoded_mb"] * MIB,
            max_header_elements=limits["max_header_elements"],
            max_header_values=limits["max_header_values"],
            max_upload_header_elements=limits["max_upload_header_elements"],
            max_upload_header_values=limits["max_upload_header_values"],
        )


@dataclass
class ParsedFile:
    name: str
    raw: bytes
    sha256: str
    dataset: Dataset
    frames: int
    position: float | None
    instance: int | None
    pixel_offset: int | None
    slope: float
    intercept: float
    frame_rescales: list[tuple[float, float]] | None = None
    frame_positions: list[list[float] | None] = field(default_factory=list)
    bad_frames: dict[int, str] = field(default_factory=dict)  # frame in file -> why it cannot be shown
    # What the series analysis derives from this file's headers (e.g. its frames' stack facts), kept
    # with it: a growing series is re-analysed at every append and must not re-read every header.
    derived: dict[str, Any] = field(default_factory=dict)
    # Where the parse found the dataset's first element, if it met no top-level tag twice (None if
    # it did, or its encoding probe read the first tag before the walk): `_check_no_duplicates`.
    dataset_start: int | None = None
    # The transfer syntax of a file this node keeps without rendering it (module doc); None: renderable.
    stored_only: str | None = None
    # Why its overlay planes are not shown (`overlays.unshowable_plane`: one is larger than any image
    # this node shows); None: they are, if it has any.
    overlay_problem: str | None = None

    def rescale(self, frame: int) -> tuple[float, float]:
        """Slope and intercept of one frame (enhanced files may give each frame its own)."""
        return self.frame_rescales[frame] if self.frame_rescales else (self.slope, self.intercept)

    # What the series analysis reads of each file, read once: a series that grows instance by
    # instance is re-analysed at every append, and re-reading every header made that quadratic.
    @cached_property
    def image_keys(self) -> tuple:
        return tuple(self.dataset.get(keyword) for keyword in IMAGE_KEYS)

    @cached_property
    def identity(self) -> tuple[str, ...]:
        return tuple(attribute_text(self.dataset, keyword) for keyword, _ in IDENTITY_KEYS)

    @cached_property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", ""))

    @cached_property
    def sop_instance_uid(self) -> str:
        return uid_of(self.dataset, "SOPInstanceUID")

    @cached_property
    def spacing(self) -> tuple[list[float] | None, list[str]]:
        return pixel_spacing(self.dataset)

    @cached_property
    def thickness(self) -> float | None:
        return slice_thickness(self.dataset)

    @cached_property
    def orientation(self) -> list[float] | None:
        return floats(self.dataset.get("ImageOrientationPatient") or [], 6)

    @cached_property
    def vois(self) -> list[tuple[str, dict] | None]:
        """Each frame's own VOI (`_own_voi`) with the key that makes equal VOIs one choice; None: none."""
        cache: dict[int, tuple[str, dict] | None] = {}
        distinct = DistinctVois()
        vois = []
        for frame in range(self.frames):
            source = _voi_source(self.dataset, frame)
            if id(source) not in cache:
                voi = _own_voi(source, self.name)
                cache[id(source)] = None if voi is None else distinct.add(voi, self.name)
            vois.append(cache[id(source)])
        return vois

    @cached_property
    def overlays(self) -> bool:
        """Whether the file has overlay planes that are shown (its manifest entry's `overlays`)."""
        return self.overlay_problem is None and has_overlays(self.dataset)



class UploadError(Exception):
    """Refused upload; `status` and `code` become the HTTP error. `file` names the one file the
    refusal is about when it is about one file alone, and `whole_series` says it is about the
    series, whichever of its files are sent: a door that stores what it can, STOW-RS, then refuses
    that file, or all of them, without trying again (and auditing the refusal again)."""

    def __init__(self, status: int, code: str, message: str, file: str | None = None,
                 whole_series: bool = False):
        super().__init__(message)
        self.status, self.code, self.message, self.file = status, code, message, file
        self.whole_series = whole_series


def _number(ds: Dataset, keyword: str, default: Any, name: str, cast=float) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else default
    try:
        return cast(value)
    except (TypeError, ValueError) as exc:
        raise UploadError(422, "invalid_attribute", f"{name}: {keyword} {value!r} is not a number") from exc


def _number_of_frames(ds: Dataset, name: str) -> int:
    """Number of Frames as written: an integer string (IS), so "1e9" or "NaN" is refused, not rounded."""
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return 1
    written = str(getattr(value, "original_string", value)).strip()
    if not written.lstrip("+").isdigit():
        raise UploadError(422, "invalid_attribute",
                          f"{name}: Number of Frames {written[:40]!r} is not a positive whole number")
    return int(written)


def floats(value: Any, count: int) -> list[float] | None:
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def functional(ds: Dataset, sequence: str, keyword: str) -> Any:
    """An attribute of an enhanced multi-frame file: shared groups first, then the first frame's."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups)
        if items and sequence in items[0] and items[0][sequence].value:
            item = items[0][sequence][0]
            if keyword in item:
                return item[keyword].value
    return None


def attribute(ds: Dataset, keyword: str, sequence: str) -> Any:
    value = ds.get(keyword)
    return value if value not in (None, "") else functional(ds, sequence, keyword)


def _lut_words(item: Dataset) -> np.ndarray:
    """LUT Data as numbers: US values as read, OW (bytes) as 16-bit words in the item's byte order."""
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        little = item.original_encoding[1] is not False
        return np.frombuffer(data, dtype="<u2" if little else ">u2").astype(np.int64)
    return np.asarray(data, dtype=np.int64).ravel()


def read_lut(item: Dataset, name: str, signed: bool) -> LutTable:
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        data = _lut_words(item)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UploadError(422, "invalid_attribute", f"{name}: its LUT descriptor or data is malformed") from exc
    if signed and first >= 1 << 15:
        first -= 1 << 16
    entries = entries or 65536
    if len(data) < entries or bits < 1 or bits > 16:
        raise UploadError(422, "invalid_attribute", f"{name}: the LUT has fewer entries than its descriptor says")
    return LutTable(first, bits, data[:entries])


PHOTOMETRIC_SAMPLES = {
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3,
    "YBR_ICT": 3, "YBR_RCT": 3, "YBR_PARTIAL_420": 3,
}
MAX_MODALITY_MAGNITUDE = 1e12
#: The pixel spacings (mm) a file may give besides 0 (unknown): no microscope resolves a nanometre,
#: and no pixel is wider than the largest body (stack_analysis.MAX_VOLUME_EXTENT_MM). Within them
#: columns x spacing and one spacing over the other stay far from overflow in the geometry
#: (`geometry.output_size`, `planes`, `probe`); 1e308 mm made the image size NaN there.
MIN_PIXEL_SPACING_MM = 1e-6
MAX_PIXEL_SPACING_MM = 1e4
SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
#: How far from the patient coordinate origin (mm, along each axis) a frame may lie: a kilometre is
#: beyond any scanner's table, and within it no gap between two positions (the slice spacing)
#: overflows to infinity as one between -1.7e308 and 1.7e308 did.
MAX_POSITION_MM = 1e6


def _invalid(name: str, message: str) -> UploadError:
    return UploadError(422, "invalid_attribute", f"{name}: {message}")


def _check_complete(ds: Dataset, size: int, name: str) -> None:
    """Every top-level element's value must lie inside the data read: a cut file is refused, even past the pixels.

    `size` is the file's length, or for a deflated file the inflated dataset's (pydicom's offsets are then
    relative to the inflated stream).
    """
    for tag in ds.keys():  # noqa: SIM118 (iterating a pydicom Dataset reads every element)
        element = ds.get_item(tag, keep_deferred=True)
        tell, length = getattr(element, "value_tell", None), getattr(element, "length", None)
        if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > size:
            raise UploadError(422, "truncated", f"{name}: the file ends inside element {tag}; it is truncated")


def _check_numbers(ds: Dataset, keyword: str, count: int | None, name: str) -> list[float] | None:
    """`keyword`'s values as finite numbers (`count` of them, if given); None if the item has none.

    Every display and geometry computation multiplies these: one infinite or NaN value reaches
    the JSON answers (invalid JSON) and the image arithmetic (a 500), so it is refused here.
    """
    if keyword not in ds or ds[keyword].value in (None, ""):
        return None
    value = ds[keyword].value
    values = list(value) if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise _invalid(name, f"{keyword} {str(value)[:60]!r} is not numeric") from exc
    if count is not None and len(numbers) != count:
        raise _invalid(name, f"{keyword} must have {count} values, has {len(numbers)}")
    if not all(np.isfinite(numbers)):
        raise _invalid(name, f"{keyword} {numbers} must be finite numbers")
    return numbers


def _check_image_attributes(ds: Dataset, name: str) -> None:
    """Refuse image attributes that contradict each other or PS3.3 C.7.6.3 (so nothing is guessed)."""
    allocated = _number(ds, "BitsAllocated", 0, name, int)
    stored = _number(ds, "BitsStored", 0, name, int)
    high = _number(ds, "HighBit", stored - 1, name, int)
    if allocated not in (1, 8, 16, 32):
        raise _invalid(name, f"Bits Allocated {allocated} is not 1, 8, 16 or 32")
    if not 1 <= stored <= allocated:
        raise _invalid(name, f"Bits Stored {stored} must be between 1 and Bits Allocated ({allocated})")
    if high != stored - 1:
        raise _invalid(name, f"High Bit {high} must be Bits Stored - 1 ({stored - 1})")
    if _number(ds, "PixelRepresentation", 0, name, int) not in (0, 1):
        raise _invalid(name, "Pixel Representation must be 0 (unsigned) or 1 (signed)")
    photometric = str(ds.PhotometricInterpretation).strip()
    samples = _number(ds, "SamplesPerPixel", 0, name, int)
    if photometric not in PHOTOMETRIC_SAMPLES:
        raise _invalid(name, f"Photometric Interpretation {photometric[:40]!r} is not one this node can show")
    if PHOTOMETRIC_SAMPLES[photometric] != samples:
        raise _invalid(name, f"{photometric} needs {PHOTOMETRIC_SAMPLES[photometric]} samples per pixel, "
                             f"the file says {samples}")
    centers = _check_numbers(ds, "WindowCenter", None, name)
    widths = _check_numbers(ds, "WindowWidth", None, name)
    paired = centers is None or widths is None or len(centers) == len(widths)
    if (centers is None) != (widths is None) or not paired:
        raise _invalid(name, "Window Center and Window Width must come in pairs")
    if widths is not None and not all(w >= 1 for w in widths):
        raise _invalid(name, f"Window Width must be at least 1 (PS3.3 C.11.2.1.2), the file says {widths}")
    _check_frame_numbers(ds, name, allocated)
    _check_functional_groups(ds, name, allocated)


#: The functional group macros (PS3.3 C.7.6.16.2) whose values stand in for the top-level ones that
#: `_check_frame_numbers` checks: the readers (`attribute`, `_frame_positions`, `_frame_rescales`)
#: take them from a shared or per-frame group item as they take the top-level attributes.
FRAME_NUMBER_MACROS = ("PixelMeasuresSequence", "PlanePositionSequence", "PlaneOrientationSequence",
                       "PixelValueTransformationSequence")


def _check_functional_groups(ds: Dataset, name: str, allocated: int) -> None:
    """Every shared and per-frame functional group item of an enhanced file obeys the top-level rules
    (`_check_frame_numbers`); the refusal names the group, its item and the macro."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for index, group in enumerate(ds.get(groups) or []):
            for macro in FRAME_NUMBER_MACROS:
                for item in group.get(macro) or []:
                    _check_frame_numbers(item, f"{name} ({groups} item {index + 1}, {macro})", allocated)


def _check_frame_numbers(item: Dataset, name: str, allocated: int) -> None:
    """The numbers a frame is shown and measured with, wherever the file writes them (its top level
    or a functional group item): one rule for each, so no reader meets a value another path refused."""
    _check_rescale(item, name, allocated)
    for keyword in SPACING_KEYWORDS:
        _check_spacing(item, keyword, name)
    _check_position(item, name)
    _check_orientation(item, name)


def _check_rescale(item: Dataset, name: str, allocated: int) -> None:
    """Rescale Slope and Intercept turn every stored value into a modality value: a zero slope
    erases the image, and beyond MAX_MODALITY_MAGNITUDE the statistics overflow to infinity."""
    slope = _check_numbers(item, "RescaleSlope", None, name)
    intercept = _check_numbers(item, "RescaleIntercept", None, name)
    if slope is not None and (slope[0] == 0 or abs(slope[0]) * 2.0 ** min(allocated, 32) > MAX_MODALITY_MAGNITUDE):
        raise _invalid(name, f"Rescale Slope {slope[0]} is zero or too large (times the largest stored value "
                             f"it must stay within {MAX_MODALITY_MAGNITUDE:g})")
    if intercept is not None and abs(intercept[0]) > MAX_MODALITY_MAGNITUDE:
        raise _invalid(name, f"Rescale Intercept {intercept[0]} is too large (beyond {MAX_MODALITY_MAGNITUDE:g})")


def _check_spacing(item: Dataset, keyword: str, name: str) -> None:
    """A pixel spacing is 0 (unknown: see `pixel_spacing`) or a size between MIN_PIXEL_SPACING_MM and
    MAX_PIXEL_SPACING_MM; a larger or finer one overflows the geometry's products and ratios."""
    spacing = _check_numbers(item, keyword, 2, name)
    if spacing is not None and not all(s == 0 or MIN_PIXEL_SPACING_MM <= s <= MAX_PIXEL_SPACING_MM for s in spacing):
        raise _invalid(name, f"{keyword} {spacing} must not be negative, and besides 0 (unknown) must lie "
                             f"between {MIN_PIXEL_SPACING_MM:g} and {MAX_PIXEL_SPACING_MM:g} mm")


def _check_position(item: Dataset, name: str) -> None:
    """Image Position (Patient) lies within MAX_POSITION_MM of the origin: the slice order, spacing
    and every plane's location are differences of positions."""
    position = _check_numbers(item, "ImagePositionPatient", 3, name)
    if position is not None and max(abs(v) for v in position) > MAX_POSITION_MM:
        raise _invalid(name, f"ImagePositionPatient {position} must lie within {MAX_POSITION_MM:g} mm "
                             "of the patient coordinate origin")


def _check_orientation(item: Dataset, name: str) -> None:
    """Image Orientation (Patient) is two orthogonal unit vectors: every plane and label is built on them."""
    orientation = _check_numbers(item, "ImageOrientationPatient", 6, name)
    if orientation is not None:
        row, col = np.array(orientation[:3]), np.array(orientation[3:])
        if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
            raise _invalid(name, f"Image Orientation (Patient) {orientation} must be two orthogonal unit vectors")


DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
INFLATE_FLOOR = 32 * MIB
INFLATE_RATIO = 64


def _inflate_limit(raw: bytes) -> int:
    """The most a deflated data set of a file of `raw`'s size may inflate to (`inflate`)."""
    return max(INFLATE_FLOOR, INFLATE_RATIO * len(raw))


def read_file_meta(raw: bytes) -> tuple[str, int]:
    """A Part 10 file's Transfer Syntax UID (from its meta group) and the offset its dataset starts
    at, the dataset left unread.

    Why not pydicom's readers with a `stop_when`: for a deflated transfer syntax they inflate the
    whole dataset before anything stops them (a 1.5 MB file: 3 GB of RAM and 5 s in the node).
    InvalidDicomError, or whatever pydicom raises on a damaged meta group (values are converted when
    read: the syntax is read here, inside the callers' guard), when it cannot be read.
    """
    if len(raw) < 132 or raw[128:132] != b"DICM":
        raise InvalidDicomError("no DICM Part 10 preamble")
    stream = io.BytesIO(raw)
    stream.seek(132)
    meta = read_elements(stream, is_implicit_VR=False, is_little_endian=True,
                         stop_when=lambda tag, *_: tag.group != 2)
    return str(meta.get("TransferSyntaxUID", "")), stream.tell()


def inflate(raw: bytes, name: str) -> tuple[int, bytes] | None:
    """A deflated file's data set inflated, with the offset in `raw` its deflated bytes start at
    (None: not a deflated file, or one whose meta group is unreadable, which the parse refuses); it
    may inflate to at most max(32 MiB, 64x the file's size), or it is refused as a bomb (413).

    pydicom inflates the whole body in memory and then parses it; a small file that inflates to
    hundreds of MiB would hold a thread (and the RAM) for minutes. Every door runs this before any
    pydicom read of a file's dataset, and the upload checks count and parse what it inflated
    (`decode.read_dataset`'s `inflated`): each inflation of a 1 MB file takes about 30 ms.
    """
    try:
        syntax, meta_end = read_file_meta(raw)
    except Exception:  # anything a header parser can raise on foreign bytes: the parse refuses it
        return None
    if syntax != DEFLATED:
        return None
    limit = _inflate_limit(raw)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(raw[meta_end:], limit + 1)
    except zlib.error as exc:
        raise UploadError(400, "not_dicom", f"{name}: the deflated dataset is corrupt ({exc})") from exc
    if len(inflated) > limit:
        raise UploadError(413, "over_limits", f"{name}: the deflated dataset inflates to more than "
                          f"{limit // MIB} MiB; refused as a decompression bomb")
    if not inflater.eof:
        raise UploadError(400, "not_dicom", f"{name}: the deflated dataset is corrupt (it ends before its "
                          "deflate stream does: a truncated file)")
    return meta_end, inflated


def _parse_upload(name: str, raw: bytes, limits: Limits, counted: bool = False) -> ParsedFile:
    """An uploaded file parsed, once its elements and items are known to be within the bound that
    keeps its parse cheap (`element_budget`: counted from its bytes, before pydicom reads them;
    `counted`: `check_upload` counted them already, with the upload's other files)."""
    inflated = inflate(raw, name)  # once: the count and the parse read what it inflated
    if not counted:
        _check_element_count(name, raw, limits, inflated)
    if inflated is None:  # not a deflated file
        return _parse_file(name, raw, limits)
    return _parse_file(name, raw, limits, inflated)


def check_headers(uploads: list[tuple[str, bytes]], limits: Limits) -> element_budget.UploadBudget:
    """Count the elements, items and text values of every file of an upload before any is parsed,
    each file against the bounds of one file and all together against those of one upload
    (`element_budget.UploadBudget`); 413 over_limits past either, nothing parsed or stored. A
    deflated file is counted into the returned count when the node parses it (`check_upload`), from
    the data set that parse inflates: inflated here too, it would be inflated once more."""
    upload = element_budget.UploadBudget(limits.max_upload_header_elements, limits.max_upload_header_values)
    for name, raw in uploads:
        if not _deflated(raw):
            _check_element_count(name, raw, limits, None, upload)
    return upload


def check_parts(uploads: list[tuple[str, bytes]], limits: Limits) -> list[UploadError | None]:
    """`check_headers` for a request that stores what it can (STOW-RS): every file counted before any
    is parsed, a deflated one too (from its data set `inflate`d, a bomb refused as one), each against
    the bounds of one file and all together against those of one upload. One file's refusal is its
    own (in the returned list, None for a file within the bounds: the others are still stored); past
    the upload's bounds the whole request is refused (raised, `whole_series`). A file refused here is
    still counted into the upload: its count was walked, and a request of many such files is one
    sender's bulk all the same."""
    upload = element_budget.UploadBudget(limits.max_upload_header_elements, limits.max_upload_header_values)
    refusals: list[UploadError | None] = []
    for name, raw in uploads:
        try:
            _check_element_count(name, raw, limits, inflate(raw, name) if _deflated(raw) else None, upload)
        except UploadError as exc:
            if exc.whole_series:
                raise
            refusals.append(exc)
        else:
            refusals.append(None)
    return refusals


def _deflated(raw: bytes) -> bool:
    try:
        return read_file_meta(raw)[0] == DEFLATED
    except Exception:  # an unreadable meta group: the parse refuses it
        return False


def _check_element_count(name: str, raw: bytes, limits: Limits, inflated: tuple[int, bytes] | None,
                         upload: element_budget.UploadBudget | None = None) -> None:
    """Refuse (413 over_limits) a file whose data set holds more elements and items than its frames
    allow (`element_budget.excess`), or that takes `upload`, its upload's count, past that upload's
    bounds (refused as a whole: `whole_series`, so STOW-RS refuses every instance of it rather than
    trying them again in halves); a file whose meta group or deflated data set cannot be read is
    left to the parse, which refuses it with its reason. `inflated`: a deflated file's data set
    (`inflate`, which refused a bomb as one before its zeros are counted)."""
    try:
        syntax, start = read_file_meta(raw)
    except Exception:  # anything a header parser can raise on foreign bytes: the parse refuses it
        return
    data = raw
    if inflated is not None:
        data, start = inflated[1], 0
    problem = element_budget.excess(data, start, implicit=syntax == IMPLICIT_LITTLE_ENDIAN,
                                    little=syntax != EXPLICIT_BIG_ENDIAN, max_frames=limits.max_frames,
                                    max_elements=limits.max_header_elements, max_values=limits.max_header_values,
                                    upload=upload)
    if problem is not None and upload is not None and upload.refusal() == problem:
        raise UploadError(413, "over_limits", problem, whole_series=True)
    if problem is not None:
        raise UploadError(413, "over_limits", f"{name}: {problem}")


def _parse_file(name: str, raw: bytes, limits: Limits, inflated: tuple[int, bytes] | None = None) -> ParsedFile:
    """A file parsed and its header checked; `inflated`: a deflated file's data set as `inflate` gave
    it, which the parse reads instead of inflating it again (None: `inflate` runs here)."""
    if len(raw) < 132 or raw[128:132] != b"DICM":
        raise UploadError(400, "not_dicom", f"{name}: not a DICOM file (no DICM Part 10 preamble)")
    inflated = inflated or inflate(raw, name)
    seen: set[int] = set()
    starts: list[int] = []  # the first element's offset, then one per tag met again

    def observe(tag: int, offset: int) -> None:
        if tag in seen or not starts:
            starts.append(offset)
        seen.add(tag)

    try:
        ds = read_dataset(raw, observe, inflated)
    except (InvalidDicomError, EOFError) as exc:
        raise UploadError(400, "not_dicom", f"{name}: not a readable DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many kinds on malformed data; all mean "unreadable"
        raise UploadError(400, "not_dicom", f"{name}: the DICOM file cannot be parsed ({exc})") from exc
    image = "PixelData" in ds
    if not image and not holds_no_image(ds):
        raise UploadError(422, "no_pixel_data", f"{name}: the file holds no image (no Pixel Data)")
    _check_complete(ds, len(raw) if inflated is None else len(inflated[1]), name)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if not syntax:
        raise UploadError(415, "undecodable_syntax", f"{name}: the file meta names no transfer syntax")
    if not UID(syntax).is_valid:  # any valid one is kept (stored only if undecodable); this is no syntax
        raise UploadError(415, "undecodable_syntax",
                          f"{name}: the file meta's transfer syntax {syntax[:64]!r} is not a UID")
    if not image:  # stored only (module doc): a report, a presentation state, a document...
        return ParsedFile(name=name, raw=raw, sha256=hashlib.sha256(raw).hexdigest(), dataset=ds, frames=0,
                          position=None, instance=_number(ds, "InstanceNumber", None, name, int),
                          pixel_offset=None, slope=1.0, intercept=0.0,
                          dataset_start=starts[0] if len(starts) == 1 else None, stored_only=syntax)
    rows = _number(ds, "Rows", 0, name, int)
    cols = _number(ds, "Columns", 0, name, int)
    frames = _number_of_frames(ds, name)
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise UploadError(422, "invalid_attribute", f"{name}: Rows, Columns and Number of Frames must be positive")
    if rows > limits.max_rows or cols > limits.max_columns or frames > limits.max_frames:
        raise UploadError(413, "over_limits",
                          f"{name}: {cols}x{rows} pixels x {frames} frames is over this node's limits "
                          f"({limits.max_columns}x{limits.max_rows} x {limits.max_frames})")
    for keyword in ("BitsAllocated", "BitsStored", "SamplesPerPixel", "PhotometricInterpretation"):
        if keyword not in ds:
            raise UploadError(422, "invalid_attribute", f"{name}: {keyword} is missing")
    _check_image_attributes(ds, name)
    orientation = floats(attribute(ds, "ImageOrientationPatient", "PlaneOrientationSequence") or [], 6)
    position = floats(attribute(ds, "ImagePositionPatient", "PlanePositionSequence") or [], 3)
    along = None
    if orientation and position:
        normal = np.cross(orientation[:3], orientation[3:])
        along = float(np.dot(normal, position))
    slope = _number(ds, "RescaleSlope", None, name) if "RescaleSlope" in ds else None
    if slope is None:
        slope = float(functional(ds, "PixelValueTransformationSequence", "RescaleSlope") or 1.0)
        intercept = float(functional(ds, "PixelValueTransformationSequence", "RescaleIntercept") or 0.0)
    else:
        intercept = _number(ds, "RescaleIntercept", 0.0, name)
    return ParsedFile(
        name=name, raw=raw, sha256=hashlib.sha256(raw).hexdigest(), dataset=ds, frames=frames,
        position=along, instance=_number(ds, "InstanceNumber", None, name, int),
        pixel_offset=native_pixel_offset(ds), slope=slope, intercept=intercept,
        frame_rescales=_frame_rescales(ds, frames, name),
        frame_positions=_frame_positions(ds, frames, position),
        dataset_start=starts[0] if len(starts) == 1 else None,
        stored_only=None if syntax_decodable(syntax) else syntax,
        overlay_problem=unshowable_plane(ds, limits.max_rows, limits.max_columns, frames),
    )


def check_encoding(name: str, raw: bytes) -> None:
    """Refuse a received data set not encoded in the VR encoding (implicit or explicit) of the
    transfer syntax its file meta names: for C-STORE, the meta names the presentation context's
    syntax, and PS3.8 has a data set travel in it. pydicom reads one all the same (it guesses the
    encoding from the first element, and warns), but the node keeps a file as received and sends it
    on under that syntax (C-GET, C-MOVE, WADO-RS), where a strict receiver cannot read it.

    Only the DICOM door asks this. A file uploaded or sent by STOW-RS is the sender's own file, kept
    bit-exact with its own meta, and read as leniently as dcmtk and Orthanc read such files (pydicom's
    test file SC_rgb_jpeg.dcm is one: implicit VR under JPEG Baseline, shown by every viewer).
    Reads the meta and the first element only; a file that cannot be read that far is left to the
    ingest's checks, which refuse it with their reason. A deflated data set is inflated once
    (`inflate`, a bomb refused as one) and its first element read from that: pydicom's partial read
    would inflate it whole again, after the bomb check had inflated it once already.
    """
    inflated = inflate(raw, name)
    met: set[int] = set()

    def after_first(tag: int, vr: str | None, length: int) -> bool:
        # the reader may meet the first element twice: read in the syntax's encoding, then again in the
        # other one when its VR made no sense; it stops at the next element, the first one read
        met.add(tag)
        return len(met) > 1

    ds: Dataset
    try:
        if inflated is None:
            ds = read_partial(io.BytesIO(raw), stop_when=after_first, defer_size=DEFER_BYTES)
            syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
        else:  # what pydicom's partial read does with the data set it inflated (explicit VR little endian)
            ds = read_elements(io.BytesIO(inflated[1]), is_implicit_VR=False, is_little_endian=True,
                               stop_when=after_first, defer_size=DEFER_BYTES)
            syntax = UID(DEFLATED)
    except Exception:  # unreadable: the ingest's own parse refuses it with its reason
        return
    first = next(iter(ds.keys()), None)
    if first is None or not syntax.is_transfer_syntax:  # nothing to compare (the ingest checks the rest)
        return
    implicit = getattr(ds.get_item(first, keep_deferred=True), "is_implicit_VR", None)
    if implicit is not None and implicit != syntax.is_implicit_VR:
        found = "implicit" if implicit else "explicit"
        raise UploadError(400, "not_dicom", f"{name}: the data set is encoded in {found} VR, "
                          f"not as its transfer syntax {syntax.name} says")


def holds_no_image(ds: Dataset) -> bool:
    """Whether a file without Pixel Data is of a storage SOP class that holds none (a structured report,
    key object selection, presentation state, encapsulated document, waveform, RT object...): it is
    stored only. An image storage SOP class (its name says "Image Storage") without Pixel Data, or a
    file that names no SOP class, is refused instead: it is a broken image."""
    sop_class = uid_of(ds, "SOPClassUID")
    return bool(sop_class) and "Image Storage" not in UID(sop_class).name


def _frame_positions(ds: Dataset, frames: int, position: list[float] | None) -> list[list[float] | None]:
    """ImagePositionPatient of each frame: an enhanced file's per-frame values, else the file's own
    (which names the first frame only when there are several)."""
    items = ds.get("PerFrameFunctionalGroupsSequence")
    if frames > 1 and items and len(items) == frames:
        return [floats(item.PlanePositionSequence[0].get("ImagePositionPatient") or [], 3)
                if item.get("PlanePositionSequence") else None for item in items]
    return [position] + [None] * (frames - 1)


def _frame_rescales(ds: Dataset, frames: int, name: str) -> list[tuple[float, float]] | None:
    """Per-frame rescale of an enhanced multi-frame file, when its frames carry their own (each
    checked as a top-level one is: `_check_functional_groups`)."""
    items = ds.get("PerFrameFunctionalGroupsSequence")
    if not items or len(items) != frames or not all("PixelValueTransformationSequence" in i for i in items):
        return None
    rescales = []
    for item in items:
        transform = item.PixelValueTransformationSequence[0]
        rescales.append((_number(transform, "RescaleSlope", 1.0, name),
                         _number(transform, "RescaleIntercept", 0.0, name)))
    return rescales


IMAGE_KEYS = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
              "PhotometricInterpretation")
#: What all files of one series agree on (an upload's files, and an append with its series): one
#: patient (as the catalogue keys it, PatientID and its issuer, and as the institution's identity
#: rule compares it, name and birth date) and one study.
IDENTITY_KEYS = (("PatientID", "patient id"), ("IssuerOfPatientID", "issuer of patient id"),
                 ("PatientName", "patient name"), ("PatientBirthDate", "patient birth date"),
                 ("StudyInstanceUID", "study"))


def pixel_spacing(ds: Dataset) -> tuple[list[float] | None, list[str]]:
    """Row and column spacing in mm, or None when the file gives none that is usable (missing, or
    `0\\0` as some secondary captures write): the image is then shown with square pixels and
    distances cannot be measured in mm. The second value is the warnings to publish."""
    for keyword in SPACING_KEYWORDS:
        value = floats(attribute(ds, keyword, "PixelMeasuresSequence") or [], 2)
        if value and value[0] > 0 and value[1] > 0:
            return value, []
        if value:
            return None, [(f"{keyword} {value} is not a usable spacing: the pixel size is unknown, "
                           "so distances cannot be measured in mm")]
    return None, [("the files give no pixel spacing: the pixel size is unknown, so distances cannot "
                   "be measured in mm")]


#: The most one side of a pixel may be longer than the other by Pixel Aspect Ratio: no imaging device
#: makes pixels a hundred times taller than wide, and a ratio beyond (as 1\2147483647) is a writer's
#: error that would draw the image as a line. Such a ratio is ignored (square pixels), as dcmtk
#: ignores one it cannot use, rather than refusing an image every other viewer shows.
MAX_PIXEL_ASPECT_RATIO = 100.0


def pixel_aspect_ratio(ds: Dataset) -> tuple[list[float] | None, list[str]]:
    """Pixel Aspect Ratio (PS3.3 C.7.6.3.1.7): (vertical, horizontal) size of a pixel, or None when the
    file gives none, a square one, or one that is no pixel shape (not two positive numbers, or beyond
    MAX_PIXEL_ASPECT_RATIO); the second value is the warnings to publish. The image is drawn with
    this shape where its pixel spacing is unknown; a pixel spacing wins wherever both are given
    (`planes.record_spacing`: the ratio is then Type 1C, absent, in a conforming file)."""
    if "PixelAspectRatio" not in ds or ds["PixelAspectRatio"].value in (None, ""):
        return None, []
    try:
        value = floats(ds.PixelAspectRatio, 2)
    except (TypeError, ValueError):  # an IS pydicom cannot convert raises on access: no usable ratio
        value = None
    if (value is None or not all(np.isfinite(v) and v > 0 for v in value)
            or max(value) / min(value) > MAX_PIXEL_ASPECT_RATIO):
        shown = str(value if value is not None else "unreadable")[:60]
        return None, [(f"PixelAspectRatio {shown} is not a usable pixel shape (two positive numbers, one at most "
                       f"{MAX_PIXEL_ASPECT_RATIO:g} times the other): the pixels are shown square")]
    if value[0] == value[1]:
        return None, []
    return value, []


def slice_thickness(ds: Dataset) -> float | None:
    try:
        value = float(attribute(ds, "SliceThickness", "PixelMeasuresSequence"))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def window_json(center: Any, width: Any, function: Any) -> dict | None:
    """The first window of Window Center/Width values as the manifest stores it; None if unusable."""
    try:
        center = float(center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center)
        width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(function or "LINEAR").strip().lower()
    if function not in WINDOW_FUNCTIONS:
        function = "linear"
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        return None
    return {"center": center, "width": width, "function": function}



def _voi_source(ds: Dataset, frame: int) -> Dataset:
    """The dataset holding one frame's VOI: for an enhanced multi-frame file its own Frame VOI LUT
    item, else the shared one; for any other file the file itself."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > index and items[index].get("FrameVOILUTSequence"):
            return items[index].FrameVOILUTSequence[0]
    return ds


def _own_voi(source: Dataset, name: str) -> dict | None:
    """One frame's VOI as the manifest stores it (daemons.render.imaging.voi): its window, else its VOI LUT."""
    window = window_json(source.get("WindowCenter"), source.get("WindowWidth"), source.get("VOILUTFunction"))
    if window is not None:
        return window
    luts = source.get("VOILUTSequence")
    if luts and "LUTDescriptor" in luts[0]:
        return {"lut": lut_to_json(read_lut(luts[0], name, False))}
    return None


#: The values the distinct VOI LUTs of one record's frames may hold together (sixteen LUTs of the
#: most a LUT Descriptor can give, 65,536): each is kept in the record's manifest (as JSON), which
#: every load reads. A file of 200 frames of 8 x 8 pixels, each frame with a VOI LUT of its own,
#: wrote a 33 MB manifest after 6.7 s and 1.7 GB in the node; 4,000 such frames would take tens of GB.
MAX_VOI_LUT_VALUES = 16 * 65536


class DistinctVois:
    """The distinct VOIs of frames, each with the key that makes equal VOIs one choice, counting the
    values of their LUTs: past MAX_VOI_LUT_VALUES the upload is refused (413 over_limits), as soon as
    the LUT that crosses it is read (one file's frames, and a whole record's: `series_analysis`)."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.values = 0

    def add(self, voi: dict, name: str) -> tuple[str, dict]:
        """`voi` with its key; refuses it naming the file `name` if its LUT is one too many."""
        key = repr(sorted(voi.items()))
        if key not in self.keys:
            self.keys[key] = len(self.keys)
            self.values += len(voi["lut"]["data"]) if "lut" in voi else 0
            if self.values > MAX_VOI_LUT_VALUES:
                raise UploadError(413, "over_limits", f"{name}: the frames' own VOI LUTs hold more than "
                                  f"{MAX_VOI_LUT_VALUES:,} values together (sixteen LUTs of 65,536), over this "
                                  "node's limit; send the images with a window, or with fewer distinct VOI LUTs")
        return key, voi


Refusal = tuple[int, str, str]
"""An UploadError as plain values (status, code, message), so it crosses a process boundary."""


@dataclass(frozen=True)
class FileCheck:
    """What `check_file` found, as plain values (it crosses a process boundary): a refusal, or
    else the file's frames that cannot be shown (frame in file -> reason; the others can)."""

    refusal: Refusal | None = None
    bad_frames: dict[int, str] = field(default_factory=dict)


FileChecker = Callable[[list[tuple[str, bytes]], Limits], list[FileCheck | None]]
"""Runs `check_file` over every upload; None for a file left unchecked after another's refusal."""


def check_upload(uploads: list[tuple[str, bytes]], limits: Limits,
                 check_files: FileChecker | None = None,
                 checked: list[ParsedFile | None] | None = None) -> list[ParsedFile]:
    """The distinct files of an upload, each checked and parsed (not yet analysed as a series).

    A file whose pixels no codec touches (uncompressed little-endian, single-sample 8/16/32-bit
    frames: `_check_native`) is checked here, parsed once: its check is parsing and length
    arithmetic, nothing a decode worker would shield the node from. Every other file goes through
    `check_files`, which runs `check_file` on it; a node passes its decode worker pool
    (`daemons.render.ingest.isolation`), so decoding untrusted bytes first happens where a codec crash,
    hang or memory blow-up cannot hurt the node. Only files that passed there are parsed again
    here (the same code on the same bytes), for the record's analysis. The default checks in this
    process, for trusted files (tools, tests).

    `checked` (one entry per upload) gives the files the caller already passed through `check_native`
    (STOW-RS reads each part's UIDs from that parse): they are not parsed again.
    """
    _check_sizes(uploads, limits)
    upload = check_headers(uploads, limits)
    local = [(FileCheck(bad_frames=done.bad_frames), done) if done is not None
             else _check_native(name, raw, limits, counted=True)
             for (name, raw), done in zip(uploads, checked or [None] * len(uploads), strict=True)]
    refusal = next((check.refusal for check, _ in filter(None, local) if check.refusal is not None), None)
    if refusal is not None:
        raise UploadError(*refusal)
    isolated = [upload for upload, here in zip(uploads, local, strict=True) if here is None]
    remote = iter((check_files or check_files_here)(isolated, limits) if isolated else [])
    checks = [here if here is not None else (next(remote), None) for here in local]
    refusal = next((c.refusal for c, _ in checks if c is not None and c.refusal is not None), None)
    if refusal is not None:
        raise UploadError(*refusal)
    try:
        unique: dict[str, ParsedFile] = {}
        for (name, raw), (check, parsed) in zip(uploads, checks, strict=True):
            assert check is not None, "a file is left unchecked only after another file's refusal (raised above)"
            if parsed is None:
                inflated = inflate(raw, name)
                if inflated is not None:  # counted into the upload here (`check_headers`), before it is parsed
                    _check_element_count(name, raw, limits, inflated, upload)
                parsed = _parse_file(name, raw, limits, inflated)
            parsed.bad_frames = check.bad_frames
            unique.setdefault(parsed.sha256, parsed)
        return list(unique.values())
    except UploadError:
        raise
    except Exception as exc:  # no upload may give a 5xx: what the checks missed is still the file's fault
        raise UploadError(422, "unreadable",
                          f"the files cannot be analysed ({type(exc).__name__}: {exc})"[:400]) from exc


def _checked_here(raw: bytes) -> bool:
    """Whether the file meta names a transfer syntax whose pixels no codec touches (read alone, no
    dataset): uncompressed little endian, or one this node cannot decode (a stored-only file)."""
    try:
        syntax, _ = read_file_meta(raw)
    except Exception:  # an unreadable meta group: the isolated check refuses it with its reason
        return False
    return syntax in NATIVE_LITTLE_ENDIAN or bool(syntax) and not syntax_decodable(syntax)


def check_native(name: str, raw: bytes, limits: Limits, counted: bool = False) -> ParsedFile | None:
    """The file parsed and checked in this process (`_check_native`) if it passed there; None if it
    needs a decode worker's check. Refused there, it raises the refusal (UploadError): the caller
    reads nothing more of it. `counted`: its elements were counted already (`check_parts`)."""
    local = _check_native(name, raw, limits, counted)
    if local is not None and local[0].refusal is not None:
        raise UploadError(*local[0].refusal)
    if local is None or local[1] is None:
        return None
    parsed = local[1]
    parsed.bad_frames = local[0].bad_frames
    return parsed


def _check_native(name: str, raw: bytes, limits: Limits,
                  counted: bool = False) -> tuple[FileCheck, ParsedFile | None] | None:
    """`check_file` in this process for a file whose frames are read straight from its bytes; None for
    any other file (its check needs a decoder: a worker runs it).

    The same steps and refusals as `check_file` (parse, duplicates, layout, pixel data length, every
    element converted); no frame is decoded, as `_decode_every_frame` decodes none of such a file.
    A stored-only file gets the same header checks; its pixel data is kept as sent, unchecked.
    """
    if not _checked_here(raw):
        return None
    try:
        parsed = _parse_upload(name, raw, limits, counted)
        _check_no_duplicates(parsed)
        if parsed.stored_only is not None:
            convert_every_element(parsed.dataset)
            return FileCheck(), parsed
        layout = layout_of(parsed.dataset, float_modality=False)
        if parsed.pixel_offset is None or not fast_path_possible(layout):
            return None
        short = _check_pixel_length(parsed, layout)
        convert_every_element(parsed.dataset)
    except UploadError as exc:
        return FileCheck((exc.status, exc.code, exc.message)), None
    except Exception as exc:  # pydicom raises many kinds (NotImplementedError for an unknown VR...)
        return FileCheck(_unreadable(name, exc)), None
    return FileCheck(bad_frames=short), parsed


def _check_sizes(uploads: list[tuple[str, bytes]], limits: Limits) -> None:
    if not any(raw for _, raw in uploads):
        raise UploadError(400, "empty_upload", "no file was sent: attach one or more DICOM files as `files`")
    empty = [name for name, raw in uploads if not raw]
    if empty:
        raise UploadError(400, "empty_file", f"{', '.join(empty[:5])}: empty file(s) in the upload; "
                          "send the record's files only")
    if len(uploads) > limits.max_files:
        raise UploadError(413, "over_limits",
                          f"{len(uploads)} files is more than this node's limit of {limits.max_files}")
    total = sum(len(raw) for _, raw in uploads)
    if total > limits.max_upload_bytes:
        raise UploadError(413, "over_limits",
                          f"the upload is {total // MIB} MiB, over the limit of {limits.max_upload_bytes // MIB} MiB")


def parse_stored_file(name: str, raw: bytes, limits: Limits) -> ParsedFile:
    """Parse a file already in the store (checked in isolation when it arrived), for re-analysis."""
    return _parse_file(name, raw, limits)


def _check_pixel_length(parsed: ParsedFile, layout: Layout) -> dict[int, str]:
    """Uncompressed pixel data must be the frames the dimensions describe (PS3.5 8.1.1: frames of
    Rows x Columns x samples x bits back to back, padded to an even length).

    More data than that, or an odd length, cannot be any frame layout: the dimensions are wrong and
    the file would be stored with a wrong shape, so it is refused. Less data is a cut file: one
    with no complete frame is refused as truncated; a multi-frame file keeps its complete frames,
    and the short ones are returned (frame in file -> reason) to be reported, not shown.
    """
    if parsed.pixel_offset is None:
        return {}
    element = parsed.dataset.get_item("PixelData", keep_deferred=True)
    length: int = element.length  # type: ignore[attr-defined]  # set by pydicom's reader, not declared
    bits = layout.native_frame_bits
    packed = layout.bits_allocated == 1  # frames are bit-packed back to back: only the whole counts
    frame_bytes = (bits * parsed.frames + 7) // 8 if packed else bits // 8
    if length % 2:
        raise UploadError(422, "invalid_attribute", f"{parsed.name}: the pixel data has an odd length "
                          f"({length}); DICOM values always have an even length")
    expected = frame_bytes if packed else frame_bytes * parsed.frames
    if length > expected + expected % 2:
        raise UploadError(422, "invalid_attribute",
                          f"{parsed.name}: the pixel data has {length} bytes, but Rows x Columns x frames x "
                          f"samples x bits ({layout.rows} x {layout.columns} x {parsed.frames} x {layout.samples} x "
                          f"{layout.bits_allocated} bits) need {expected}; the image's dimensions are wrong")
    available = min(length, len(parsed.raw) - parsed.pixel_offset)
    complete = (1 if available >= frame_bytes else 0) * parsed.frames if packed else available // frame_bytes
    if complete == 0:
        raise UploadError(422, "truncated",
                          f"{parsed.name}: the pixel data has {available} bytes but {expected} are needed; "
                          "the file is truncated")
    reason = (f"the pixel data ends before this frame ({available} of {expected} bytes); "
              "the file is truncated")
    return dict.fromkeys(range(complete, parsed.frames), reason)


def check_file(name: str, raw: bytes, limits: Limits) -> FileCheck:
    """Everything about one file that runs parsing or codec code on its bytes.

    Run in a decode worker process. Parses the file, converts every element (a bad VR or value
    fails here, not later in the node), refuses duplicated elements, checks the pixel data length
    against the dimensions and decodes every frame, so what is stored is known decodable or known
    bad frame by frame. Any exception of the parser or a codec becomes a refusal: no upload may
    give a 5xx. A multi-frame file with short or undecodable frames passes with those frames
    listed, as long as one frame can be shown.
    """
    try:
        parsed = _parse_upload(name, raw, limits)
        _check_no_duplicates(parsed)
        if parsed.stored_only is not None:  # checked in the node (`_check_native`); the same rule here
            convert_every_element(parsed.dataset)
            return FileCheck()
        layout = layout_of(parsed.dataset, float_modality=False)
        short = _check_pixel_length(parsed, layout)
        convert_every_element(parsed.dataset)
        undecodable = _decode_every_frame(parsed, layout, short)
    except UploadError as exc:
        return FileCheck((exc.status, exc.code, exc.message))
    except Exception as exc:  # pydicom raises many kinds (NotImplementedError for an unknown VR...)
        return FileCheck(_unreadable(name, exc))
    return FileCheck(bad_frames={**short, **undecodable})


def _unreadable(name: str, exc: Exception) -> Refusal:
    return (422, "unreadable", f"{name}: the DICOM file cannot be read ({type(exc).__name__}: {exc})"[:400])


def check_files_here(uploads: list[tuple[str, bytes]], limits: Limits) -> list[FileCheck]:
    """`check_file` over every file in this process: for trusted files only (a codec panic would escape)."""
    return [check_file(name, raw, limits) for name, raw in uploads]


def _check_no_duplicates(parsed: ParsedFile) -> None:
    """Refuse a top-level element written twice (pydicom silently keeps the last: which one is meant?).

    The parse met every top-level element this walk would (the same reader and encoding): when it
    started where this walk starts and met no tag twice, the file needs no second walk.
    """
    raw, ds = parsed.raw, parsed.dataset
    implicit, little = ds.original_encoding
    if raw[132:136] != b"\x02\x00\x00\x00" or implicit is None or little is None or \
            str(ds.file_meta.get("TransferSyntaxUID", "")) == DEFLATED:
        return  # no meta group length to find the dataset by, or a deflated body
    start = 144 + int.from_bytes(raw[140:144], "little")
    if parsed.dataset_start == start:
        return
    stream = io.BytesIO(raw)
    stream.seek(start)
    seen: set[int] = set()
    for element in data_element_generator(stream, implicit, little, defer_size=256):
        if element.tag in seen:
            raise _invalid(parsed.name, f"element {element.tag} appears twice; which value holds is ambiguous")
        seen.add(element.tag)


def _decode_every_frame(parsed: ParsedFile, layout: Layout, short: dict[int, str]) -> dict[int, str]:
    """Decode every frame that is not plain uncompressed data, so no stored slice fails at load.

    Uncompressed frames need no trial: their length was checked, and any bytes are valid values.
    A file none of whose frames can be shown is refused; otherwise the frames that fail to decode
    (or decode to another shape) are returned (frame in file -> reason), like the short frames in
    `short`, to be reported. Running out of memory refuses the file (a bomb), as does a codec panic
    (a BaseException, left to the decode worker).
    """
    if parsed.pixel_offset is not None and fast_path_possible(layout):
        return {}
    failed: dict[int, str] = {}
    first: Exception | None = None
    for index in range(parsed.frames):
        if index in short:
            continue
        try:
            _, frame = next(decode_frames(parsed.raw, layout, [index], None, *parsed.rescale(index), parsed.dataset))
            if frame.shape != layout.frame_shape:
                raise ValueError(f"it decodes to {frame.shape}, not {layout.frame_shape}")
        except MemoryError as exc:  # a bomb: the whole file is refused, not one frame
            raise UploadError(422, "undecodable_pixels",
                              f"{parsed.name}: the pixel data cannot be decoded ({exc})"[:400]) from exc
        except Exception as exc:  # decoders raise many kinds; all mean "cannot show this image"
            first = first or exc
            failed[index] = f"the pixel data of this frame cannot be decoded ({exc})"[:400]
    if len(failed) + len(short) >= parsed.frames:
        raise UploadError(422, "undecodable_pixels",
                          f"{parsed.name}: the pixel data cannot be decoded ({first})"[:400]) from first
    return failed


