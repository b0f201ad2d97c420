"""Who may do what on this institution server, decided from the verified token only.

Each server serves one institution (config `institution.id`); "of this institution" therefore
means the token's `inst` claim equals that id. Reads of findings, records and the node registry
are open to every role, because seeing a patient's findings and images across institutions is
the point; every change needs a physician of this institution or an administrator of it
(`shared.roles`: its institution admins, or a system admin), and relabelling or deleting a record
its uploader or such an administrator (`shared.roles.may_change_record`); editing a finding its
author while a physician here, deleting it also such an administrator (`shared.roles.may_change_finding`).
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from shared.auth import (
    VERIFIER_EXTENSION,
    current_identity,
    require_admin_of,
    require_institution,
)
from shared.errors import ApiError
from shared.patient_refs import FIELD, check_patient_reference
from shared.roles import may_change_finding, may_change_record
from shared.tokens import Identity


def this_institution() -> str:
    """The id of the institution this server belongs to."""
    return current_app.config["SIVR"]["institution"]["id"]


def require_member() -> Identity:
    """The caller must belong to this institution (any role)."""
    identity = current_identity()
    require_institution(identity, this_institution(), "this institution server")
    return identity


def require_admin_here(what: str) -> Identity:
    identity = current_identity()
    require_admin_of(identity, this_institution(), what)
    return identity


def may_change_record_here(identity: Identity, registered_by: str) -> bool:
    """Whether the caller may relabel or delete a record of this institution registered by `registered_by`."""
    return may_change_record(identity, identity.user_id, registered_by, this_institution())


def require_record_change(registered_by: str, what: str) -> Identity:
    """403 unless the caller registered the record (as a physician here) or administers this institution."""
    identity = current_identity()
    if not may_change_record_here(identity, registered_by):
        raise ApiError(403, "forbidden",
                       f"only the physician who registered the record or an administrator of this institution "
                       f"may {what}")
    return identity


def require_finding_change(author_id: str, *, deleting: bool = False) -> Identity:
    """403 unless the caller may change (or, `deleting`, delete) a finding of this institution
    written by `author_id` (`shared.roles.may_change_finding`)."""
    identity = current_identity()
    if not may_change_finding(identity, identity.user_id, author_id, this_institution(), deleting=deleting):
        raise ApiError(403, "forbidden",
                       "only the author of a finding, while a physician of this institution, "
                       + ("or an administrator of this institution may delete it" if deleting else "may change it"))
    return identity


def take_patient_reference(body: dict[str, Any]) -> object:
    """Remove and return the body's patient reference (the other fields are validated as before)."""
    return body.pop(FIELD, None)


def require_patient_reference(reference: object, patient_id: str) -> dict[str, str] | None:
    """The toplevel vouches that `patient_id` exists, for this caller (`shared.patient_refs`); the
    patient's names and birth date it states.

    Checked with the toplevel's public key this server already holds: no call to another backend.
    """
    verifier = current_app.extensions[VERIFIER_EXTENSION]
    return check_patient_reference(reference, patient_id, current_identity().user_id,
                                   verifier.public_keys, verifier.issuer, verifier.leeway_s)
