"""Rows to the JSON shapes of docs/API.md; the only place a model becomes a response body.

Keeping one function per shape makes "no endpoint ever returns a hash" checkable in one file:
the password hash is never read here.
"""

from __future__ import annotations

from typing import Any

from daemons.toplevel.models import Institution, Patient, RecordType, User
from shared.validation import iso_utc


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "role": user.role,
        "institution_id": user.institution_id,
        "active": user.active,
        "created_at": iso_utc(user.created_at),
    }


def user_name_json(user: User) -> dict[str, Any]:
    """What a physician may see of other users: who they are, nothing about their account."""
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "institution_id": user.institution_id,
    }


def institution_json(institution: Institution) -> dict[str, Any]:
    return {
        "id": institution.id,
        "name": institution.name,
        "address": institution.address,
        "server_url": institution.server_url,
    }


def record_type_json(record_type: RecordType) -> dict[str, Any]:
    return {"id": record_type.id, "code": record_type.code, "name": record_type.name}


def patient_json(patient: Patient) -> dict[str, Any]:
    return {
        "id": patient.id,
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "sex": patient.sex,
        "birth_date": patient.birth_date.isoformat(),
        "insurance_number": patient.insurance_number,
        "created_at": iso_utc(patient.created_at),
    }
