"""Who may do what on this institution server, decided from the verified token only.

Each server serves one institution (config `institution.id`); "of this institution" therefore
means the token's `inst` claim equals that id. Reads of findings, records and the node registry
are open to every physician and admin, because seeing a patient's findings and images across
institutions is the point; every change needs a role of this institution.
"""

from __future__ import annotations

from flask import current_app

from shared.access import is_institution_admin
from shared.auth import current_identity, require_institution
from shared.errors import ApiError
from shared.tokens import Identity


def this_institution() -> str:
    """The id of the institution this server belongs to."""
    return current_app.config["SIVR"]["institution"]["id"]


def require_member() -> Identity:
    """The caller must belong to this institution (any role)."""
    identity = current_identity()
    require_institution(identity, this_institution(), "this institution server")
    return identity


def require_role_here(*roles: str) -> Identity:
    """The caller must belong to this institution and have one of `roles`."""
    identity = require_member()
    if identity.role not in roles:
        raise ApiError(403, "forbidden",
                       f"this action needs the role {' or '.join(roles)} of this institution; "
                       f"you are {identity.role}")
    return identity


def is_admin_here(identity: Identity) -> bool:
    return is_institution_admin(identity, this_institution())
