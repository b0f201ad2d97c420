"""Who may page through patient data across patients: one rule for every layer that lists records.

Reading a named patient's data is open to physicians and admins (seeing a patient's findings and
images across institutions is the point, and every read is audited); listing everyone's records
is for an administrator of the institution that holds them. Layers call these functions instead
of comparing roles themselves, so a change of the role model changes every layer at once.

A render node's catalogue is also searched by DICOM identifiers (QIDO-RS): there a study named by
its StudyInstanceUID (long, unguessable, and what a shared link or a finding carries) is as open
as its images are, while a DICOM PatientID is short and guessable, so naming one is kept to the
users of the node's own institution (`require_query_scope`).
"""

from __future__ import annotations

from shared.errors import ApiError
from shared.roles import may_administer_institution
from shared.tokens import Identity


def require_own_institution(identity: Identity, institution_id: str, what: str) -> None:
    """Refuse storing or deleting on an institution's servers unless the caller belongs to it or
    administers it (`shared.roles`: its institution admins and system admins).

    Reading images is open across institutions (audited); putting data into another
    institution's store, by whatever door (browser upload, STOW-RS), is not.
    """
    if identity.institution_id != institution_id and not may_administer_institution(identity, institution_id):
        raise ApiError(403, "forbidden", f"{what} is only for users of this node's institution")


def is_institution_admin(identity: Identity, institution_id: str) -> bool:
    """The caller administers `institution_id` (the institution that holds the data asked for)."""
    return may_administer_institution(identity, institution_id)


def require_patient_named(identity: Identity, institution_id: str, patient_named: bool, parameter: str) -> None:
    """A listing must name its patient (`parameter`) unless the caller administers the data's institution."""
    if not patient_named and not is_institution_admin(identity, institution_id):
        raise ApiError(400, "validation_error",
                       f"{parameter} is required: name the patient whose records you need "
                       "(only an administrator of this institution lists every patient's records)")


def require_query_scope(identity: Identity, institution_id: str, *, patient_named: bool, study_named: bool,
                        patient_parameter: str, study_parameter: str | None) -> None:
    """A search of a node's catalogue (institution `institution_id`) by DICOM identifiers must name
    one study (`study_parameter`; None for a list that has no such parameter), or one patient
    (`patient_parameter`: for users of that institution only), unless the caller administers the
    institution: then it may list every patient's studies."""
    if study_named or is_institution_admin(identity, institution_id):
        return
    alternative = f" (or {study_parameter})" if study_parameter else ""
    require_own_institution(identity, institution_id, f"searching by {patient_parameter}")
    require_patient_named(identity, institution_id, patient_named, f"{patient_parameter}{alternative}")
