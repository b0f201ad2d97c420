"""A data set attribute as text: one reading for what the node stores, indexes, compares and states
in receipts (a series' patient, study and description)."""

from __future__ import annotations

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
