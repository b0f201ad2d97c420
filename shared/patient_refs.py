"""Patient references: the toplevel's signed word that a patient exists, for the institution layer.

Patients live only in the toplevel, and backends never call each other (DESIGN.md), so an
institution server cannot look a patient up before it stores a finding or a record for them.
Instead the viewer asks the toplevel for a reference (`POST /api/v1/patients/{id}/reference`,
audited there) and sends it with the write. The reference is a short-lived EdDSA JWT signed with
the access tokens' key, with its own audience (`AUDIENCE`) so it can never pass as an access token
and no access token can pass as a reference; it names the patient (`sub`) and the user it was
given to (`uid`), so one user's reference cannot vouch for another user's write. It also states
whom the patient is (`pat`: first_name, last_name, birth_date), so that an institution can compare
the patient with the DICOM patient a node's upload receipt states (`shared.patient_identity`)
without asking the toplevel.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from shared.errors import ApiError
from shared.tokens import ALGORITHM, key_id, unverified_header

AUDIENCE = "sivr-patient-reference"
FIELD = "patient_reference"
_REQUIRED = ["iss", "aud", "sub", "uid", "iat", "exp"]
PATIENT_CLAIM = "pat"
PATIENT_KEYS = ("first_name", "last_name", "birth_date")


def issue_patient_reference(key: Ed25519PrivateKey, issuer: str, patient_id: str, user_id: str,
                            ttl_s: int, now: int | None = None, patient: Mapping[str, str] | None = None) -> str:
    """A reference to `patient_id` for `user_id`, valid `ttl_s` seconds (toplevel only: it holds the key),
    stating the patient's names and birth date when given (`PATIENT_KEYS`)."""
    now = int(time.time()) if now is None else now
    claims: dict[str, object] = {"iss": issuer, "aud": AUDIENCE, "sub": patient_id, "uid": user_id,
                                 "iat": now, "exp": now + ttl_s}
    if patient is not None:
        claims[PATIENT_CLAIM] = {name: str(patient.get(name) or "") for name in PATIENT_KEYS}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


def check_patient_reference(value: object, patient_id: str, user_id: str,
                            public_keys: Mapping[str, Ed25519PublicKey], issuer: str,
                            leeway_s: int) -> dict[str, str] | None:
    """Refuse (400 `invalid_patient_reference`) unless `value` is the toplevel's reference to this
    patient for this user; the patient's names and birth date it states (None if it states none)."""

    def refuse(why: str) -> ApiError:
        return ApiError(400, "invalid_patient_reference",
                        f"{FIELD} {why}; get one from the toplevel: POST /api/v1/patients/{{id}}/reference")

    if not isinstance(value, str) or not value or len(value) > 4096:
        raise refuse("is required (the toplevel's signed reference to the patient)")
    try:
        kid = unverified_header(value).get("kid")
    except jwt.PyJWTError as exc:
        raise refuse("is malformed") from exc
    key = public_keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise refuse("is signed by a key this server does not accept")
    try:
        claims = jwt.decode(value, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=issuer,
                            leeway=leeway_s, options={"require": _REQUIRED})
    except jwt.ExpiredSignatureError as exc:
        raise refuse("has expired") from exc
    except jwt.PyJWTError as exc:
        raise refuse(f"was refused: {exc}") from exc
    if claims["sub"] != patient_id:
        raise refuse("names another patient")
    if claims["uid"] != user_id:
        raise refuse("was given to another user")
    stated = claims.get(PATIENT_CLAIM)
    if stated is None:
        return None
    if not isinstance(stated, dict):
        raise refuse("states the patient malformed")
    return {name: str(stated.get(name) or "") for name in PATIENT_KEYS}
