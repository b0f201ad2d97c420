"""How a series was attached to its SIVR patient, for the audit trail of a registration (issue 11).

The decision is taken in the physician's browser (the matching rule is webviewer/static/js/
patient_match.js: the institution never calls a render node, docs/architecture.md); the browser
says here which DICOM patient the series names and whether the patient was the rule's proposal
("rule", confirmed by one click) or chosen by the physician ("chosen"). Registration stays what it
was (the receipt proves the series, the patient reference the patient); this only makes
"who attached whose images to whom, and how" answerable from the audit log.
"""

from __future__ import annotations

from typing import Any

from shared.errors import ApiError
from shared.validation import Field, validate

FIELD = "identity"
DECISIONS = ("rule", "chosen")
_DECISION = {"decision": Field(str, choices=DECISIONS), "dicom_patient": Field(dict)}
_DICOM_PATIENT = {
    "name": Field(str, required=False, max_len=200),
    "patient_id": Field(str, required=False, max_len=64),
    "issuer": Field(str, required=False, max_len=64),
    "birth_date": Field(str, required=False, max_len=8),
    "sex": Field(str, required=False, max_len=16),
}


def take_identity_decision(body: dict[str, Any]) -> str:
    """Remove the optional `identity` object from a registration body; its audit detail ("" if absent).

    400 for anything but {"decision": "rule"|"chosen", "dicom_patient": {name, patient_id, issuer,
    birth_date, sex}}.
    """
    value = body.pop(FIELD, None)
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise ApiError(400, "validation_error", f"{FIELD} must be an object: decision and dicom_patient")
    decision = validate(value, _DECISION)
    patient = validate(decision["dicom_patient"], _DICOM_PATIENT)
    named = " ".join(f"{key}={patient.get(key, '')!r}" for key in _DICOM_PATIENT)
    return f" identity={decision['decision']} dicom_patient: {named}"
