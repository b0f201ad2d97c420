"""The DICOM status codes the node answers with, one definition each, and what an ingest refusal
becomes: C-STORE answers it as the status, STOW-RS as the instance's FailureReason (PS3.18
10.5.3 takes its codes from the storage service), so the same file gets the same code either way.

Codes: PS3.7 Annex C (general), PS3.4 B.2.3 (storage) and C.4 (query/retrieve).
"""

from __future__ import annotations

from daemons.render.ingest.upload_checks import UploadError

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WITH_WARNING = 0xFF01  # a C-FIND match whose optional keys were not all supported
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
#: storage: "Data Set does not match SOP Class"; query/retrieve: "Identifier does not match SOP Class"
DOES_NOT_MATCH_SOP_CLASS = 0xA900
#: storage: "Cannot understand"; query/retrieve: "Unable to process"
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
#: "Refused: SOP Class not supported": a request whose Affected SOP Class is not its context's
SOP_CLASS_NOT_SUPPORTED = 0x0122


def status_of(error: UploadError) -> int:
    """The storage failure status of an ingest refusal (the same refusals as an upload's HTTP answers)."""
    if error.status in (413, 507):
        return OUT_OF_RESOURCES
    if error.status == 409 or error.code in ("sop_class_mismatch", "sop_instance_mismatch", "no_pixel_data"):
        return DOES_NOT_MATCH_SOP_CLASS
    return CANNOT_UNDERSTAND
