"""Roles and the one rule of who may administer what, used by every layer and the console.

Three roles:

* `sysadmin` (system administrator): institutions, record types, every user of every
  institution, and the render nodes of every institution.
* `instadmin` (institution administrator): the users and render nodes of their OWN institution
  only. They cannot create or touch a system administrator, move anyone to another institution,
  or change institutions or record types.
* `physician`: reads and writes patient data; administers nothing. A physician may correct or
  delete the records they registered (`may_change_record`) and edit or delete the findings they
  wrote (`may_change_finding`), while a physician of that institution.

The functions below take only what a verified token says (`Identity`) and the target's
institution/role, so the toplevel, the institution servers, the render nodes and the console all
decide alike. Before schema version 2 the toplevel knew one role `admin`; `sivr db upgrade
toplevel` turns every such user into a `sysadmin` (see `LEGACY_ADMIN`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SYSTEM_ADMIN = "sysadmin"
INSTITUTION_ADMIN = "instadmin"
PHYSICIAN = "physician"

ROLES: tuple[str, ...] = (SYSTEM_ADMIN, INSTITUTION_ADMIN, PHYSICIAN)
ADMIN_ROLES: tuple[str, ...] = (SYSTEM_ADMIN, INSTITUTION_ADMIN)
#: Who may take a render node's stored DICOM file objects out as stored, by any HTTP door (`GET
#: /api/v1/records/{id}/original`, WADO-RS retrieve of studies, series and instances): physicians,
#: who read them. Administrators, who manage the data, keep what every signed-in user reads (the
#: rendered images, WADO-RS metadata, frames and bulk data); the stored objects themselves, ready
#: to be archived or imported elsewhere, are not theirs to export. DIMSE retrieval is governed by
#: the node's calling-AE allow-list instead.
ORIGINAL_FILE_READERS: tuple[str, ...] = (PHYSICIAN,)
#: Who may put DICOM instances onto a render node of their own institution, by any HTTP door (the
#: browser upload `POST /api/v1/records`, STOW-RS): physicians, who write patient data.
#: Administrators manage users and nodes, not patient data; STOW-RS took their instances (also a
#: system administrator's of another institution) while the upload refused them. DIMSE C-STORE is
#: governed by the node's calling-AE allow-list instead.
INSTANCE_STORERS: tuple[str, ...] = (PHYSICIAN,)
#: Who may file a series under a patient at their institution (`POST /api/v1/records` of the
#: institution server) and ask its node for what filing takes or tell it that it is done (`POST
#: /api/v1/records/{id}/receipt` and `/filed` of the render node): physicians, who vouch for which
#: patient a series belongs to. One rule, or the institution and its nodes could disagree on who files.
SERIES_FILERS: tuple[str, ...] = (PHYSICIAN,)

# The single administrative role of schema version 1; the upgrade migrates it to SYSTEM_ADMIN.
LEGACY_ADMIN = "admin"

ROLE_LABELS = {
    SYSTEM_ADMIN: "System administrator",
    INSTITUTION_ADMIN: "Institution administrator",
    PHYSICIAN: "Physician",
}


class Caller(Protocol):
    """What the rules need of a caller: a verified token's `Identity` has it.

    Read-only members, so that frozen dataclasses (`Identity`, `Principal`) match.
    """

    @property
    def role(self) -> str: ...

    @property
    def institution_id(self) -> str: ...


@dataclass(frozen=True)
class Principal:
    """A caller known by role and institution alone (the console, from the logged-in user's record)."""

    role: str
    institution_id: str


def is_system_admin(caller: Caller) -> bool:
    return caller.role == SYSTEM_ADMIN


def is_admin(caller: Caller) -> bool:
    """Any administrative role (what one may administer is decided by the functions below)."""
    return caller.role in ADMIN_ROLES


def may_administer_institution(caller: Caller, institution_id: str) -> bool:
    """Users and render nodes of `institution_id`: its own institution admins and system admins."""
    if caller.role == SYSTEM_ADMIN:
        return True
    return caller.role == INSTITUTION_ADMIN and caller.institution_id == institution_id


def grantable_roles(caller: Caller) -> tuple[str, ...]:
    """The roles a caller may give (and so administer users of): only a system administrator makes
    system administrators."""
    if caller.role == SYSTEM_ADMIN:
        return ROLES
    return (INSTITUTION_ADMIN, PHYSICIAN) if caller.role == INSTITUTION_ADMIN else ()


def may_grant_role(caller: Caller, role: str) -> bool:
    return role in grantable_roles(caller)


def may_administer_user(caller: Caller, user_role: str, user_institution_id: str) -> bool:
    """Read the full record of, change, reset the password of or delete a user with this role/institution."""
    return may_administer_institution(caller, user_institution_id) and may_grant_role(caller, user_role)


def may_change_record(caller: Caller, caller_id: str, registered_by: str, institution_id: str) -> bool:
    """Correct the description or type of, or delete, a record registered at `institution_id`.

    The physician who registered it (while a physician of that institution: whoever uploaded a
    series knows best what it is) or an administrator of that institution. Other physicians read
    it but may not relabel or remove what a colleague uploaded.
    """
    return may_administer_institution(caller, institution_id) or _is_author_there(
        caller, caller_id, registered_by, institution_id)


def may_change_finding(caller: Caller, caller_id: str, author_id: str, institution_id: str,
                       *, deleting: bool = False) -> bool:
    """Edit, relink or (with `deleting`) delete a finding written at `institution_id`.

    Editing: only its author, while a physician of that institution. A finding is its author's
    signed opinion, so nobody else rewrites it in their name, and a physician moved to another
    institution (or made an admin) no longer writes findings there, as they no longer create them.
    Deleting: also an administrator of that institution (who cleans up, but never rewrites).
    """
    if deleting and may_administer_institution(caller, institution_id):
        return True
    return _is_author_there(caller, caller_id, author_id, institution_id)


def _is_author_there(caller: Caller, caller_id: str, author_id: str, institution_id: str) -> bool:
    """The caller wrote or registered it (`author_id`) and is a physician of `institution_id` now: the
    token says where they work today, and what they did elsewhere stays that institution's."""
    return (caller.role == PHYSICIAN and caller.institution_id == institution_id
            and bool(author_id) and caller_id == author_id)


def assignable_roles(caller: Caller) -> tuple[str, ...]:
    """The roles `caller` may give (the console offers exactly these)."""
    return tuple(role for role in ROLES if may_grant_role(caller, role))
