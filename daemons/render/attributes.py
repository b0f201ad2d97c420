"""A data set attribute as text: one reading for what the node stores, indexes, compares and states
in receipts (a series' patient, study and description)."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


def attribute_text(ds: Dataset, keyword: str) -> str:
    """The value of `keyword` as DICOM writes it, "" when absent: several values joined by `\\`
    (`str()` of pydicom's MultiValue gives a Python list's text, `['A', 'B']`, which a receipt then
    stated as the patient and the identity rule compared as a name)."""
    value = ds.get(keyword, "")
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value or "")


#: What no database column holds: NUL (PostgreSQL refuses it in text; no text VR's repertoire has it,
#: PS3.5 6.1, yet pydicom reads it from a file as it is) and lone surrogates (no database encodes them).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with what no database holds (`UNSTORABLE`) as U+FFFD: what the catalogue indexes of a
    file's names and descriptions, the same on SQLite and PostgreSQL (a NUL in a Study Description
    was stored on SQLite, a 500 on PostgreSQL). The file itself is stored as it came."""
    return UNSTORABLE.sub("\ufffd", text)
