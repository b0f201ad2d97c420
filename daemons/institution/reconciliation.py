"""Whose images are registered for whom: the identity check and audit of a registration (issue 11).

A registration names a SIVR patient (the toplevel's signed patient reference, which states the
patient's names and birth date) and a series (the node's signed receipt, which states the DICOM
patient its images name). With both signed statements in hand, this server compares the two patients
by the viewer's rule (`shared.patient_identity`, identity.js) without calling another backend:

- they agree: registered; audited as `identity=match` (or the work list's `rule` / `chosen`);
- they differ (name or birth date): registered only when the body carries the physician's explicit
  confirmation, `identity.decision` "confirmed_mismatch" (the upload dialog) or "chosen" (the work
  list, where the physician picked the patient beside the images' patient); otherwise 409
  `identity_unconfirmed`, nothing stored. A client that skips the dialog cannot attach another
  patient's images silently;
- the images name no patient that can be compared (neither name nor birth date,
  `Comparison.nothing_compared`): they may be anyone's, so the same explicit decision is required
  (409 `identity_unconfirmed` otherwise), never audited as a `match`.

The audit entry (`record.create`) names the decision, what differs and the DICOM patient as the node
signed it, so "who confirmed which mismatch" is one query. A receipt that states no DICOM patient
(from a render node of a release before this check) leaves the browser's word as the only account,
audited as before.
"""

from __future__ import annotations

from typing import Any

from shared.errors import ApiError
from shared.patient_identity import compare_patients
from shared.shown_text import as_shown
from shared.validation import Field, validate

FIELD = "identity"
DECISIONS = ("match", "confirmed_mismatch", "rule", "chosen")
#: Decisions in which the physician saw both patients and chose this one: they allow a mismatch.
CONFIRMATIONS = ("confirmed_mismatch", "chosen")
#: A DICOM patient value is quoted cut to this many characters: the five fit in an audit detail (2000).
DICOM_VALUE_CHARS = 300
_DECISION = {"decision": Field(str, choices=DECISIONS), "dicom_patient": Field(dict)}
_DICOM_PATIENT = {
    "name": Field(str, required=False, max_len=200),
    "patient_id": Field(str, required=False, max_len=64),
    "issuer": Field(str, required=False, max_len=64),
    "birth_date": Field(str, required=False, max_len=8),
    "sex": Field(str, required=False, max_len=16),
}


def take_identity_decision(body: dict[str, Any]) -> dict[str, Any] | None:
    """Remove the optional `identity` object from a registration body and validate it (None if absent).

    400 for anything but {"decision": one of DECISIONS, "dicom_patient": {name, patient_id, issuer,
    birth_date, sex}} (the DICOM patient the browser showed: bidirectional controls as U+FFFD).
    """
    value = body.pop(FIELD, None)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, "validation_error", f"{FIELD} must be an object: decision and dicom_patient")
    decision = validate(value, _DECISION)
    # the images' own values, which may hold bidirectional controls a typed field refuses: as shown
    shown = {key: as_shown(text) if isinstance(text, str) else text for key, text in decision["dicom_patient"].items()}
    return {"decision": decision["decision"], "dicom_patient": validate(shown, _DICOM_PATIENT)}


def _sivr_line(patient: dict[str, str]) -> str:
    return f"{patient['last_name']}, {patient['first_name']}, born {patient['birth_date']}"


def _dicom_line(dicom: dict[str, str]) -> str:
    return (f"{_quoted(dicom.get('name')) or 'no name'}, ID {_quoted(dicom.get('patient_id')) or 'none'}, "
            f"born {_quoted(dicom.get('birth_date')) or 'unknown'}")


def judge_identity(decision: dict[str, Any] | None, patient: dict[str, str] | None,
                   dicom: dict[str, str] | None) -> str:
    """The audit detail of a registration; 409 `identity_unconfirmed` for an unconfirmed mismatch, or
    for images that name no patient to compare and come without the physician's explicit decision.

    `patient` is what the patient reference states, `dicom` what the receipt states (None: not stated).
    """
    if dicom is None:
        if decision is None:
            return ""
        return f" identity={decision['decision']} dicom_patient: {_named(decision['dicom_patient'])}"
    if patient is None:
        raise ApiError(400, "invalid_patient_reference", "patient_reference states no patient name and birth "
                       "date to compare with the images' patient; get a new one from the toplevel: "
                       "POST /api/v1/patients/{id}/reference")
    found = compare_patients(patient["first_name"], patient["last_name"], patient["birth_date"],
                             dicom["name"], dicom["birth_date"])
    said = decision["decision"] if decision is not None else "match"
    if found.nothing_compared and said not in CONFIRMATIONS:
        raise ApiError(409, "identity_unconfirmed",
                       f"the images name no patient to compare with the one they are registered for (no "
                       f"{' and no '.join(found.unknown)}): in the images {_dicom_line(dicom)}; SIVR patient "
                       f"{_sivr_line(patient)}. Register them for this patient only with the physician's explicit "
                       f"decision after comparing the images with the patient ({FIELD}.decision "
                       "\"confirmed_mismatch\", or \"chosen\" on the work list), or choose the right patient",
                       differs=found.differs, dicom_patient=dicom)
    if found.differs and said not in CONFIRMATIONS:
        what = " and ".join(found.differs)
        raise ApiError(409, "identity_unconfirmed",
                       f"the images name another patient than the one they are registered for ({what} "
                       f"differ{'s' if len(found.differs) == 1 else ''}): in the images {_dicom_line(dicom)}; "
                       f"SIVR patient {_sivr_line(patient)}. Register them for this patient only with the "
                       f"physician's explicit confirmation ({FIELD}.decision \"confirmed_mismatch\"), or "
                       "choose the right patient", differs=found.differs, dicom_patient=dicom)
    return (f" identity={said} differs={','.join(found.differs) or 'none'} "
            f"unknown={','.join(found.unknown) or 'none'} dicom_patient: {_named(dicom)}")


def _quoted(value: str | None) -> str:
    """A DICOM patient value as the audit and the refusal quote it: Python's repr, whose escapes show
    the controls, bidirectional controls and line breaks of the file's text instead of obeying them,
    cut to `DICOM_VALUE_CHARS` with the quoted length noted ("" for none): the escapes count, or a
    name of 400 controls would still push the other values out of the audit detail."""
    if not value:
        return ""
    text = repr(value)
    if len(text) <= DICOM_VALUE_CHARS:
        return text
    return f"{text[:DICOM_VALUE_CHARS]}…({len(text)} chars)"


def _named(dicom: dict[str, str]) -> str:
    """`name='...' patient_id='...' ...`: each value cut (`_quoted`), so that all of them fit in the audit
    entry's detail; a name of thousands of characters cut the detail before the patient id and birth date."""
    return " ".join(f"{key}={_quoted(dicom.get(key)) or repr('')}" for key in _DICOM_PATIENT)
