"""What the node takes as a UID (PS3.5 9.1): digits and dots, at most 64 characters.

One rule for the UIDs an instance is stored, found and retrieved by (its Study, Series and SOP
Instance UIDs) and for its SOP Class UID, at every door that stores and in the searches that match
UIDs. (The transfer syntax in a file's meta is checked with pydicom's stricter `UID.is_valid`: it
names one of the standard's syntaxes or a private one, never a modality's own value.) An instance
stored under a Study, Series or SOP Instance UID that is not one (a `/`, two values, 65
characters) could be listed, but never searched for by it (C-FIND and QIDO-RS refuse such a key)
nor, with a `/`, retrieved by WADO-RS: so it is refused at the door. So is one whose SOP Class UID
is missing or not a UID: QIDO-RS and C-FIND would answer an empty or junk UI value, and a C-MOVE or
C-GET sends an instance on only in a presentation context of its SOP Class (PS3.4 B.2 requires the
attribute). The data set's UIDs are the ones checked, not the file meta's Media Storage SOP Class
and Instance UIDs (0002,0002-0003): the node catalogues, compares and sends instances by the data
set's. Leading zeros in a component, which PS3.5 forbids but which older modalities write, are
accepted, as Orthanc and dcmtk accept them (the rule itself: `shared.dicom_uid`, which the
institution applies to the studies it keeps as well).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from daemons.render.attributes import attribute_text
from shared.db import UNSTORABLE
from shared.dicom_uid import MAX_LENGTH, is_uid

# each must be present and a UID; the SOP Class last, so an instance missing its identifying UIDs is
# told about those first
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
PATIENT_KEY = ("PatientID", "IssuerOfPatientID")  # how the catalogue keys patients
LONG_STRING = 64  # characters of an LO value (PS3.5 6.2)


def uid_of(dataset: Dataset, keyword: str) -> str:
    """The UID `dataset` holds in `keyword`, without its padding ("" when absent or empty): the one
    reading of a UID attribute that every door compares, groups and checks instances by."""
    return attribute_text(dataset, keyword).strip()


def identity_problem(dataset: Dataset) -> str | None:
    """Why `dataset` cannot be stored under its identifying UIDs or as its SOP Class (one missing or
    not a UID) or filed under its patient (a Patient ID or issuer longer than a Long String holds, or
    holding a NUL), or None.

    The ingest (upload, C-STORE) and STOW-RS, which reads each part's UIDs before the ingest, give
    the same reason. A longer Patient ID was filed under its first 64 characters: searches for the
    id sent found nothing, and two patients sharing those characters would share a record."""
    for keyword in REQUIRED_UIDS:
        value = uid_of(dataset, keyword)
        if not value:
            return f"{keyword} is missing"
        if not is_uid(value):
            return f"{keyword} {value[:80]!r} is not a UID (digits and dots, at most {MAX_LENGTH} characters)"
    for keyword in PATIENT_KEY:
        value = attribute_text(dataset, keyword).strip()
        if UNSTORABLE.search(value):
            # the catalogue keys the patient by it: kept with U+FFFD, `AB\0CD` would be the patient `AB\uFFFDCD`
            return (f"{keyword} {value[:80]!r} holds a NUL character or invalid Unicode, which no text value "
                    "holds (PS3.5 6.1)")
        if len(value) > LONG_STRING:
            return (f"{keyword} {value[:80]!r} is {len(value)} characters long, over the {LONG_STRING} of its "
                    "value representation (LO)")
    return None
