"""Every element of an uploaded file converted, so that a bad VR or value refuses the file at upload
instead of failing later in the node; each distinct raw element converted once per process.

The files of a series repeat most of their header byte for byte (patient, study, equipment,
acquisition), and converting every element was a third of an uncompressed file's check, paid again
for each instance of a C-STORE or STOW-RS series. pydicom converts a raw element from its tag, its
VR as read, its byte order and VR encoding, its value bytes and the dataset's character set, and
from nothing else except where it looks at the rest of the dataset:

- a private tag read without its VR (implicit VR, or UN) takes the VR its private creator names;
- an ambiguous VR (US or SS, OB or OW...) is decided from Pixel Representation and its neighbours;
- a sequence is its items, datasets of their own (each element of them is remembered as above);
- a deferred value (larger than the reader's defer size) is read from the file when converted.

Those are converted every time. Any other raw element equal in all of the above, and read under the
same pydicom settings (validation mode, wrong lengths, UN replaced: a process-wide switch to lenient
reading, as `suppress_invalid_tags` makes, must not excuse a value at a strict check), to one that
converted before is known to convert; it is left raw, and pydicom converts it (the same way) when
the node reads it. Only conversions that succeeded are remembered: a value that fails is tried, and
refused, every time. What is remembered are short header values of uploads (names, dates, codes):
the process holds them while it stores those files anyway, and never writes them anywhere.
"""

from __future__ import annotations

from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import AMBIGUOUS_VR, VR

#: the largest value remembered, in bytes: headers repeat short values; longer ones are rarely equal
REMEMBERED_VALUE_BYTES = 256
#: the most raw elements remembered (about 4 MB at most); the set starts again when full
REMEMBERED_ELEMENTS = 8192

_converted: set[tuple[Any, ...]] = set()


def convert_every_element(ds: Dataset) -> None:
    """Convert every element of `ds` and of its sequences' items (pydicom raises on a bad one),
    skipping the raw elements known to convert (module doc)."""
    charset = ds.original_character_set
    reading = (charset if isinstance(charset, str) else tuple(charset),
               config.settings.reading_validation_mode, config.convert_wrong_length_to_UN,
               config.replace_un_with_known_vr) if charset else None
    for tag in sorted(ds.keys()):
        element = ds.get_item(tag, keep_deferred=True)
        key = _key(element, reading) if reading and isinstance(element, RawDataElement) else None
        if key is not None and key in _converted:
            continue
        converted = ds[tag]
        if converted.VR == VR.SQ:
            for item in converted.value:
                convert_every_element(item)  # read with its parent's character set, as pydicom reads it
        elif key is not None:
            if len(_converted) >= REMEMBERED_ELEMENTS:
                _converted.clear()
            _converted.add(key)


def _key(raw: RawDataElement, reading: Any) -> tuple[Any, ...] | None:
    """What a raw element's conversion depends on, or None when it depends on more (module doc);
    `reading`: the dataset's character set and pydicom's reading settings."""
    value = raw.value
    if value is None or len(value) > REMEMBERED_VALUE_BYTES or raw.tag.is_private:
        return None
    vr = raw.VR
    if vr is None or vr == VR.UN:
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    if vr in AMBIGUOUS_VR or vr == VR.SQ:
        return None
    return raw.tag, raw.VR, raw.is_implicit_VR, raw.is_little_endian, value, reading
