"""What SIVR takes as a DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters.

One rule for every layer that keeps a UID: the render node stores, finds and retrieves instances by
their UIDs (`daemons.render.uids`), and the institution keeps the study a registered series belongs
to (`daemons.institution.records`). Leading zeros in a component, which PS3.5 forbids but which older
modalities write, are accepted, as Orthanc and dcmtk accept them.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_uid(value: str) -> bool:
    """Whether `value` (already stripped of its padding) is a UID by this rule."""
    return len(value) <= MAX_LENGTH and _UID.fullmatch(value) is not None
