"""What the node takes as a UID (PS3.5 9.1): digits and dots, at most 64 characters.

One rule for the doors that store and for the searches that match UIDs. An instance stored under
a Study, Series or SOP Instance UID that is not one (a `/`, two values, 65 characters) could be
listed, but never searched for by it (C-FIND and QIDO-RS refuse such a key) nor, with a `/`,
retrieved by WADO-RS: so it is refused at the door. Leading zeros in a component, which PS3.5
forbids but which older modalities write, are accepted, as Orthanc and dcmtk accept them.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_uid(value: str) -> bool:
    """Whether `value` (already stripped of its padding) is a UID by this node's rule."""
    return len(value) <= MAX_LENGTH and _UID.fullmatch(value) is not None
