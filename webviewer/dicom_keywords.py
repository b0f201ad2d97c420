"""The DICOM keyword of every tag, for the viewer's tag browser (webviewer/static/dicom-keywords.json).

DICOMweb metadata (DICOM JSON, PS3.18 F.2) names attributes by tag only; a reader looks for
"PatientID", not "00100020". The browser loads this table once, when the tag browser first opens.
It is made from pydicom's data dictionary (the standard's PS3.6) by this module, and a test checks
that the file in the repository is what this module makes:

    python -m webviewer.dicom_keywords     # rewrites the file
"""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.datadict import DicomDictionary, RepeatersDictionary

FILE = Path(__file__).resolve().parent / "static" / "dicom-keywords.json"


def keywords() -> dict[str, dict[str, str]]:
    """`tags`: "GGGGEEEE" -> keyword; `repeating`: masks such as "60xx3000" (x: any hex digit) -> keyword."""
    return {
        "tags": {f"{tag:08X}": entry[4] for tag, entry in sorted(DicomDictionary.items()) if entry[4]},
        "repeating": {mask.upper().replace("X", "x"): entry[4]
                      for mask, entry in sorted(RepeatersDictionary.items()) if entry[4]},
    }


def text() -> str:
    return json.dumps(keywords(), separators=(",", ":"), sort_keys=True) + "\n"


if __name__ == "__main__":
    FILE.write_text(text(), encoding="utf-8")
