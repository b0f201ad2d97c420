"""How many data elements and sequence items an uploaded file may hold, counted before pydicom reads it.

Why: an uncompressed little-endian file is parsed in the node's own process (the process that serves
viewers, `upload_checks._check_native`), and pydicom spends about 20 µs of CPU, with the GIL held,
and over a kilobyte of memory on every element and item it reads and converts: a private sequence of
a million empty items is 8 MB of file, and cost the node 21 s of CPU and 1.5 GB of memory at upload
(it was stored); a 2 GiB upload of them would take the host's memory. A decode worker would only
move the cost: the node parses every file that passes there again for the series analysis.

So every uploaded file is walked once, here, from its bytes (no objects made, a fraction of a
microsecond an element), before any parse, and refused past `MAX_ELEMENTS` plus
`MAX_ELEMENTS_PER_FRAME` for each of its frames (an enhanced multi-frame file describes each frame in
its per-frame functional groups, private ones included). The walk stops as soon as the count is past
what the file's frame count allows (past what any frame count allows until it has read Number of
Frames), so a refusal costs no more than the bound.

The walk counts what pydicom builds, reading the encoding as pydicom does (`pydicom.filereader`: a
data set's first element decides implicit or explicit VR, an item may fall back to implicit, an
element whose VR is no two capitals is read as implicit): every element of the data set and of its
items, every item, sequences of defined and undefined length, and values of VR UN or read without a
VR that hold items (pydicom reads a UN value of a sequence's tag, encoded in Implicit VR Little
Endian, as that sequence). A deflated data set is counted inflated. What it cannot follow (a
malformed structure) it leaves to the parse, which refuses it with its own reason.

Values too: pydicom splits a text value of several values (`1\\1\\1…`, VRs such as IS, DS, CS, UI)
into one object each, about 5 µs and 260 bytes apiece for IS and DS, at the upload's check and at
every WADO-RS metadata answer: a 3.9 MB file whose Referenced Frame Number held 2 million values
cost the node 9.9 s and 530 MB at upload (stored), and 10.6 s at each metadata request. A file may
hold at most `MAX_TEXT_VALUES` of them (counted by their separators; an element read without a VR
is counted as its dictionary VR says, a private one as if it were text).

The bounds of one file multiply by the files of an upload (`limits.max_files`): 4,000 files each just
under them would cost the node over an hour of CPU and hundreds of GB. So the files of one upload (a
browser upload, every part of one STOW-RS request whatever its series, one C-STORE data set)
are counted together too, each file's walk stopping as soon as the upload is past its bound
(`UploadBudget`), before any of them is parsed.
"""

from __future__ import annotations

import struct

from pydicom.datadict import dictionary_VR
from pydicom.filereader import ENCODED_VR
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

#: Elements and items any file may hold, by default (`limits.max_header_elements`): the largest real
#: headers (dose reports, structure sets, waveforms) hold a few thousand to some tens of thousands;
#: a CT or MR slice about 300.
MAX_ELEMENTS = 50_000
#: Elements and items a file may hold beyond that for each of its frames: an enhanced file's
#: per-frame functional groups hold about 50 to 150 a frame (vendors' private groups included).
MAX_ELEMENTS_PER_FRAME = 150
#: Values of text elements of several values a file may hold, by default (`limits.max_header_values`):
#: a structure set's contour points (three Decimal Strings each) are the most real files hold, a few
#: hundred thousand; the largest radiotherapy structure sets hold millions (a site that keeps them
#: raises the key: each value costs the node about 5 µs and 260 bytes at upload and at every
#: metadata answer).
MAX_TEXT_VALUES = 1_000_000

#: Elements and items all the files of one upload may hold together, by default
#: (`limits.max_upload_header_elements`): a 2,000-slice CT holds 260,000 (132 a slice, TCIA's
#: CMB-CRC) to 600,000, a series of 4,000 slices of 500 as many as this; at about 20 µs and a
#: kilobyte each, 40 s and 2 GB at most.
MAX_UPLOAD_ELEMENTS = 2_000_000
#: Text values all the files of one upload may hold together, by default
#: (`limits.max_upload_header_values`): a CT slice holds a few dozen; at 5 µs and 260 bytes each,
#: 20 s and 1 GB at most.
MAX_UPLOAD_TEXT_VALUES = 4_000_000

#: The most values a Specific Character Set (0008,0005) may hold, in a data set or any of its items:
#: PS3.3 C.12.1.1.2 defines fewer terms than this, each named at most once. pydicom converts every
#: value as it reads the element, and for every text element it decodes, logging three warnings for
#: each term it does not know: a C-FIND identifier naming 100,000 unknown terms (489 KB) held its
#: association's thread 12 s and wrote 300,000 log lines, a STOW-RS part of 20,000 took 1.9 s and
#: 40,000 lines and was stored. One rule for every door (`character_sets_problem`).
CHARACTER_SETS_MAX = 16
SPECIFIC_CHARACTER_SET = 0x00080005

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA, NUMBER_OF_FRAMES = 0x7FE00010, 0x00280008
LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
#: The VRs whose values pydicom splits at each backslash (PS3.5 6.2: the others hold one value each,
#: or numbers in binary, which it converts at a fraction of the cost).
SPLIT_VRS = frozenset(vr.encode() for vr in ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM",
                                             "UC", "UI"))


def allowed_elements(frames: int, max_elements: int = MAX_ELEMENTS) -> int:
    """The elements and items a file of `frames` frames (0 or 1 for a single image) may hold."""
    return max_elements + MAX_ELEMENTS_PER_FRAME * max(frames, 1)


class UploadBudget:
    """The elements and items, and the text values, the files of one upload hold together so far,
    against the node's bounds for a whole upload (`limits.max_upload_header_elements`,
    `limits.max_upload_header_values`): `excess` adds each file to it as it counts it."""

    def __init__(self, max_elements: int = MAX_UPLOAD_ELEMENTS, max_values: int = MAX_UPLOAD_TEXT_VALUES):
        self.max_elements, self.max_values = max_elements, max_values
        self.elements = 0
        self.values = 0

    def refusal(self) -> str | None:
        """Why the upload holds too much, or None while it does not."""
        if self.elements > self.max_elements:
            return (f"the upload's files hold more than {self.max_elements:,} data elements and sequence items "
                    "together, over this node's limit for one upload (limits.max_upload_header_elements); send "
                    "the files in several uploads, or without the private or repeated data that fills their headers")
        if self.values > self.max_values:
            return (f"the upload's files hold more than {self.max_values:,} values in their text elements together, "
                    "over this node's limit for one upload (limits.max_upload_header_values); send the files in "
                    "several uploads, or without the private or repeated data that fills their headers")
        return None


def excess(data: bytes, start: int, implicit: bool, little: bool, max_frames: int,
           max_elements: int = MAX_ELEMENTS, max_values: int = MAX_TEXT_VALUES,
           upload: UploadBudget | None = None) -> str | None:
    """Why the data set at `start` of `data` (an inflated one for a deflated syntax) holds too many
    elements and items for its frames, or too many text values, or None when it does not. `implicit`
    and `little`: its transfer syntax's encoding; `max_frames`: the most frames this node takes in a
    file; `max_elements` and `max_values`: the node's `limits.max_header_elements` and
    `limits.max_header_values`. With `upload`, the file is counted into it, and the walk stops as
    soon as the upload is past its bounds (its `refusal` is then the answer)."""
    ceiling, value_ceiling = allowed_elements(max_frames, max_elements), max_values
    if upload is not None:
        ceiling = min(ceiling, upload.max_elements - upload.elements)
        value_ceiling = min(value_ceiling, upload.max_values - upload.values)
    walk = _Walk(data, little, ceiling, value_ceiling, max_elements)
    walk.run(start, implicit)
    if upload is not None:
        upload.elements += walk.count
        upload.values += walk.values
    frames = min(walk.frames or 1, max_frames)
    if (problem := character_sets_problem(walk.character_sets)) is not None:
        return f"the file's {problem}"
    if walk.values > max_values:
        return (f"the file holds more than {max_values:,} values in its text elements (values separated by "
                "backslashes), over this node's limit (limits.max_header_values); send it without the private "
                "or repeated data that fills its header")
    if walk.count <= allowed_elements(frames, max_elements):
        return upload.refusal() if upload is not None else None
    counted = f"more than {walk.ceiling:,}" if walk.count > walk.ceiling else f"{walk.count:,}"
    return (f"the file holds {counted} data elements and sequence items, over this node's limit of "
            f"{max_elements:,} plus {MAX_ELEMENTS_PER_FRAME} a frame ({allowed_elements(frames, max_elements):,} "
            f"for its {frames} frame{'s' if frames > 1 else ''}, limits.max_header_elements); send it without "
            "the private or repeated data that fills its header")


def character_sets_problem(count: int) -> str | None:
    """Why `count` values of a Specific Character Set are too many (CHARACTER_SETS_MAX), or None."""
    if count <= CHARACTER_SETS_MAX:
        return None
    return (f"Specific Character Set holds {count:,} values: name at most {CHARACTER_SETS_MAX}, each character "
            "set once (PS3.3 C.12.1.1.2)")


def character_sets_in(data: bytes, start: int, implicit: bool, little: bool) -> int:
    """The most values any Specific Character Set of the data set at `start` holds (its own or an
    item's), read from its bytes as `excess` reads them: before pydicom converts a single one."""
    walk = _Walk(data, little, ceiling=len(data), max_values=len(data))
    walk.run(start, implicit)
    return walk.character_sets


def _split(vr: bytes, tag: int) -> bool:
    """Whether pydicom splits the value of an element of `vr` at each backslash. Read without a VR
    (b"") or as UN, it takes its tag's dictionary VR (`config.replace_un_with_known_vr`); a private
    tag read without one is counted as text (its creator's dictionary may name one), a private UN
    is left as bytes."""
    if vr and vr != b"UN":
        return vr in SPLIT_VRS
    try:
        return dictionary_VR(tag).encode() in SPLIT_VRS
    except KeyError:
        return not vr


class _Walk:
    """One pass over a data set's bytes counting its elements and items (module doc). No recursion:
    a stack holds the containers being walked (data sets, sequences, encapsulated pixel data)."""

    def __init__(self, data: bytes, little: bool, ceiling: int, max_values: int = MAX_TEXT_VALUES,
                 max_elements: int = MAX_ELEMENTS):
        self.data, self.little, self.ceiling, self.max_values = data, little, ceiling, max_values
        self.max_elements = max_elements
        self.count = 0
        self.values = 0
        self.character_sets = 0  # the most values of any Specific Character Set met
        self.frames: int | None = None

    def run(self, start: int, implicit: bool) -> None:
        """Count from `start` to the end of the data, or until the count passes `ceiling`."""
        data, size = self.data, len(self.data)
        # (kind, end or None for an undefined length, implicit VR, little endian, first element read)
        stack: list[tuple[str, int | None, bool, bool, bool]] = []
        kind, little, begun = "dataset", self.little, False
        end: int | None = size
        implicit = self._implicit_at(start, implicit, little, top=True)
        pos = start
        while self.count <= self.ceiling and self.values <= self.max_values:
            if pos + 8 > (size if end is None else min(end, size)):
                if not stack or end is None:
                    return  # the data ends (or an undefined length runs off it: the parse refuses it)
                pos, (kind, end, implicit, little, begun) = end, stack.pop()
                continue
            group, element = struct.unpack_from("<HH" if little else ">HH", data, pos)
            tag = group << 16 | element
            if kind != "dataset":  # a sequence's items, or encapsulated pixel data's fragments
                if tag == SEQUENCE_END:
                    pos, (kind, end, implicit, little, begun) = pos + 8, stack.pop()
                    continue
                if tag != ITEM:
                    return  # malformed: the parse refuses it
                length = struct.unpack_from("<I" if little else ">I", data, pos + 4)[0]
                pos += 8
                if kind == "fragments":
                    if length == UNDEFINED:
                        return
                    pos += length
                    continue
                self.count += 1
                stack.append((kind, end, implicit, little, begun))
                kind, end, begun = "dataset", None if length == UNDEFINED else pos + length, False
                continue
            if tag == ITEM_END:
                if not stack:
                    return
                pos, (kind, end, implicit, little, begun) = pos + 8, stack.pop()
                continue
            if group == 0xFFFE:
                return
            if not begun and stack:  # an item's first element: pydicom may read it as implicit VR
                implicit = self._implicit_at(pos, implicit, little, top=False)
            begun = True
            vr = data[pos + 4:pos + 6]
            if implicit or (vr not in ENCODED_VR and not (b"AA" <= vr <= b"ZZ")):
                vr = b""
                length, value = struct.unpack_from("<I" if little else ">I", data, pos + 4)[0], pos + 8
            elif vr in LONG_VRS:
                if pos + 12 > size:
                    return
                length, value = struct.unpack_from("<I" if little else ">I", data, pos + 8)[0], pos + 12
            else:
                length, value = struct.unpack_from("<H" if little else ">H", data, pos + 6)[0], pos + 8
            self.count += 1
            if not stack:
                self._top_level(tag, value, length)
            holds_items = data[value:value + 4] == (b"\xfe\xff\x00\xe0" if little else b"\xff\xfe\xe0\x00")
            if tag == PIXEL_DATA and length == UNDEFINED and not stack:
                stack.append((kind, end, implicit, little, begun))
                kind, end, pos = "fragments", None, value
            elif vr == b"SQ" or (vr in (b"UN", b"") and holds_items):
                stack.append((kind, end, implicit, little, begun))
                if vr == b"UN":  # PS3.5 6.2.2: a UN value is encoded in Implicit VR Little Endian
                    implicit, little = True, True
                kind, end, pos = "sequence", None if length == UNDEFINED else value + length, value
            elif length == UNDEFINED:
                delimiter = data.find(b"\xfe\xff\xdd\xe0" if little else b"\xff\xfe\xe0\xdd", value)
                if delimiter < 0:
                    return
                pos = delimiter + 8
            else:
                if length > 1 and _split(vr, tag):
                    self.values += data.count(b"\\", value, value + length)
                if tag == SPECIFIC_CHARACTER_SET and length:
                    self.character_sets = max(self.character_sets, data.count(b"\\", value, value + length) + 1)
                pos = value + length

    def _implicit_at(self, pos: int, implicit: bool, little: bool, top: bool) -> bool:
        """Whether pydicom reads the data set beginning at `pos` in implicit VR: its first element's VR
        bytes decide; a top-level data set may switch either way, an item only from explicit to implicit."""
        if not top and implicit:
            return True
        vr = self.data[pos + 4:pos + 6]
        if len(vr) < 2:
            return implicit
        looks_implicit = not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B)
        return looks_implicit if top or looks_implicit else implicit

    def _top_level(self, tag: int, value: int, length: int) -> None:
        """Learn the file's frame count from its top level (Number of Frames, or its absence once a
        later tag is met), and with it the count the walk may stop at."""
        if self.frames is not None or tag < NUMBER_OF_FRAMES:
            return
        self.frames = 1
        if tag == NUMBER_OF_FRAMES and length != UNDEFINED:
            written = self.data[value:value + min(length, 16)].strip(b" \0").decode("ascii", "replace")
            self.frames = int(written) if written.isdigit() and int(written) > 0 else 1
        self.ceiling = min(self.ceiling, allowed_elements(self.frames, self.max_elements))
