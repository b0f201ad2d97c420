"""Upload receipts: a render node's signed statement "I store record R, uploaded by U of institution I".

An institution server registers a record only with a receipt from the node it names, so it never
lists records that exist on no node. No backend calls another (DESIGN.md): each render node signs
with its own Ed25519 key (`node.receipt_key`), the institution's node registry holds that node's
public key, and the viewer carries the receipt from the upload answer to the registration.

A receipt is an EdDSA JWT. It binds the record id, the node (its public URL and key id), the
institution, the uploading user and an expiry; a receipt from another node, for another record,
another user or institution, or an old one is refused. It also states the series' DICOM patient
(`dicom`: name, patient_id, issuer, birth_date, sex, as the node read them from the files), so
that the institution can see whose images it registers without asking the node (issue 11: a
registration for another patient than the images name needs the physician's confirmation), and the
record's image facts (`facts`: rows, columns, frames, modality, study date and the study the series
belongs to, as the node's manifest holds them), which the institution keeps instead of what the request
says: a browser that stated them itself registered a 1-frame CT as a million-frame MR of 1900; the study
is what keeps a study's series on one patient at the institution. A receipt of a node of an older
release states no facts (`Receipt.facts` None), or no study; the institution says how it takes those.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from shared.db import storable_text
from shared.files import require_owner_only
from shared.tokens import (
    ALGORITHM,
    key_id,
    load_private_key,
    normalize_audience,
    unverified_header,
    write_private_key,
)

#: How long a receipt may be presented for registration after the upload.
RECEIPT_TTL_S = 900
#: The longest receipt taken: a signed token's size, with room for a DICOM patient of ordinary length.
MAX_RECEIPT_CHARS = 4096
RECEIPT_TYPE = "sivr-upload-receipt"
_REQUIRED = ["typ", "rid", "node", "inst", "sub", "iat", "exp"]
#: The receipt's statement of the series' DICOM patient, and what it names.
DICOM_CLAIM = "dicom"
DICOM_PATIENT_KEYS = ("name", "patient_id", "issuer", "birth_date", "sex")
#: The receipt's statement of the record's image facts, and what it names (an institution record's
#: columns; `study_date` ISO YYYY-MM-DD or null where the files state no date; `study_uid` the
#: series' StudyInstanceUID, null where the files state no UID).
FACTS_CLAIM = "facts"
RECORD_FACT_KEYS = ("rows", "columns", "frames", "modality", "study_date", "study_uid")
#: The JSON names of what a DICOM patient value may wrongly be, for the refusal.
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


class ReceiptError(Exception):
    """A receipt that must be refused; `code` is the API error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def load_or_create_node_key(path: Path) -> Ed25519PrivateKey:
    """The node's receipt signing key; created (0600) when the file does not exist yet.

    An existing key readable by others is refused, as the store key is: anyone holding it could
    make an institution register records this node never received.
    """
    path = Path(path)
    if not path.exists():
        write_private_key(path, Ed25519PrivateKey.generate())
    require_owner_only(path, "the receipt key")
    return load_private_key(path)


def public_key_text(key: Ed25519PublicKey) -> str:
    """The form a node publishes and an institution stores: the raw 32 bytes, base64 (44 characters)."""
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from `public_key_text`'s form; ValueError for anything else."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a receipt key is the node's raw Ed25519 public key in base64 (44 characters)") from exc
    if len(raw) != 32:
        raise ValueError("a receipt key is the node's raw Ed25519 public key in base64 (32 bytes, 44 characters)")
    return Ed25519PublicKey.from_public_bytes(raw)


def issue_receipt(key: Ed25519PrivateKey, node_url: str, record_id: str, institution_id: str, user_id: str,
                  now: int | None = None, ttl_s: int = RECEIPT_TTL_S,
                  dicom_patient: dict[str, str] | None = None, facts: dict[str, object] | None = None) -> str:
    """The receipt a node hands the uploader of `record_id` (stored, or already stored), stating the
    series' DICOM patient (`DICOM_PATIENT_KEYS`) and the record's image facts (`RECORD_FACT_KEYS`)
    when given. Nodes of this release give both; tests play older nodes without them."""
    now = int(time.time()) if now is None else now
    claims: dict[str, object] = {"typ": RECEIPT_TYPE, "rid": record_id, "node": normalize_audience(node_url),
                                 "inst": institution_id, "sub": user_id, "iat": now, "exp": now + ttl_s}
    if dicom_patient is not None:
        claims[DICOM_CLAIM] = {name: str(dicom_patient.get(name) or "") for name in DICOM_PATIENT_KEYS}
    if facts is not None:
        claims[FACTS_CLAIM] = {name: facts.get(name) for name in RECORD_FACT_KEYS}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


@dataclass(frozen=True)
class Expected:
    """What the registration says, which the receipt must confirm."""

    node_url: str
    record_id: str
    institution_id: str
    user_id: str


@dataclass(frozen=True)
class Receipt:
    """What a verified receipt states besides what registration says (`Expected`)."""

    #: the series' DICOM patient; None from a node of a release before issue 11's identity check
    dicom: dict[str, str] | None
    #: the record's image facts by `RECORD_FACT_KEYS`, as signed (the institution checks their values
    #: with its own field rules); None from a node of a release before the facts were signed
    facts: dict[str, object] | None


def verify_receipt(receipt: object, public_key: Ed25519PublicKey, expected: Expected,
                   leeway_s: int = 5) -> Receipt:
    """Raise ReceiptError unless `receipt` is the registered node's signature over exactly `expected`;
    what else it states."""
    if not isinstance(receipt, str) or not receipt:
        raise ReceiptError("receipt_missing", "send the upload receipt the render node answered the upload with "
                                              "(field 'receipt'); upload the record to the node again to get one")
    if len(receipt) > MAX_RECEIPT_CHARS:
        # it was sent: the node signed a DICOM patient as long as the files stated it, so sending it
        # again, or uploading again, cannot help
        raise ReceiptError("invalid_receipt", f"the upload receipt is {len(receipt)} characters long, more than the "
                                              f"{MAX_RECEIPT_CHARS} taken: the DICOM patient its files state is too "
                                              "long to register; correct the files' patient data and upload them again")
    try:
        header = unverified_header(receipt)
    except jwt.PyJWTError as exc:
        raise ReceiptError("invalid_receipt", f"the upload receipt is malformed: {exc}") from exc
    if header.get("alg") != ALGORITHM or header.get("kid") != key_id(public_key):
        raise ReceiptError("invalid_receipt", "the upload receipt is not signed with the key registered for this "
                                              "node (another node's, or the node's key changed: ask an administrator "
                                              "to register the node's current receipt key)")
    try:
        claims = jwt.decode(receipt, public_key, algorithms=[ALGORITHM], leeway=leeway_s,
                            options={"require": _REQUIRED, "verify_aud": False})
    except jwt.ExpiredSignatureError as exc:
        raise ReceiptError("receipt_expired",
                           "the upload receipt has expired; upload the record to the node again "
                           "(it is stored only once) and register it with the new one") from exc
    except jwt.PyJWTError as exc:
        raise ReceiptError("invalid_receipt", f"the upload receipt was refused: {exc}") from exc
    mismatches = [name for name, claim, value in (
        ("type", claims["typ"], RECEIPT_TYPE),
        ("record id", claims["rid"], expected.record_id),
        ("node", claims["node"], normalize_audience(expected.node_url)),
        ("institution", claims["inst"], expected.institution_id),
        ("uploader", claims["sub"], expected.user_id),
    ) if claim != value]
    if mismatches:
        raise ReceiptError("invalid_receipt", f"the upload receipt is for another {', '.join(mismatches)}")
    return Receipt(_stated_patient(claims.get(DICOM_CLAIM)), _stated_facts(claims.get(FACTS_CLAIM)))


def _stated_patient(stated: object) -> dict[str, str] | None:
    """The receipt's DICOM patient, each value as `_stated_text` reads it (None: not stated)."""
    if stated is None:
        return None
    if not isinstance(stated, dict):
        raise ReceiptError("invalid_receipt", "the upload receipt's DICOM patient is malformed")
    return {key: _stated_text(stated, key) for key in DICOM_PATIENT_KEYS}


def _stated_facts(stated: object) -> dict[str, object] | None:
    """The receipt's record facts, the keys this release knows (None: not stated). A key missing is
    left out, so the institution's field rules name it as required rather than take a default."""
    if stated is None:
        return None
    if not isinstance(stated, dict):
        raise ReceiptError("invalid_receipt", "the upload receipt's record facts are malformed: not a JSON object")
    return {key: stated[key] for key in RECORD_FACT_KEYS if key in stated}


def _stated_text(stated: dict[str, object], key: str) -> str:
    """One value of the receipt's DICOM patient: "" where not stated (null, or missing from an older
    node's), with what no database holds as U+FFFD (`shared.db.storable_text`: a node of a release
    before it replaced NUL still sends it), as the nodes of this release state it.

    ReceiptError for a value that is not text: str() made a list ["DOE", "JANE"] the text
    "['DOE', 'JANE']", a match for Jane Doe, and the number 0 no value at all."""
    value = stated.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReceiptError("invalid_receipt", f"the upload receipt's DICOM patient is malformed: its {key} is "
                                              f"a JSON {_JSON_TYPES.get(type(value), type(value).__name__)}, "
                                              "not a text")
    return storable_text(value)
