"""The forms of names an administrator types: one rule for the server that enforces it and the
console that checks it before sending (`admin_gui.form_checks`), so the console never accepts what
the server refuses nor refuses what it accepts.

Each rule takes the value as typed and gives the form the server stores (usernames lower-case,
record type codes upper-case), or None when the value does not have the form; `*_RULE` says the
form in words, for either side's message.
"""

from __future__ import annotations

import re

#: The longest username, at creation and at login.
MAX_USERNAME_LENGTH = 150
USERNAME_RULE = (f"3-{MAX_USERNAME_LENGTH} characters: letters, digits and . _ @ - "
                 "(starting with a letter or digit)")
_USERNAME = re.compile(rf"[a-z0-9][a-z0-9._@-]{{2,{MAX_USERNAME_LENGTH - 1}}}")

MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

MAX_RECORD_TYPE_CODE_LENGTH = 16
RECORD_TYPE_CODE_RULE = f"1-{MAX_RECORD_TYPE_CODE_LENGTH} letters, digits, _ or - (e.g. CT, MR, US)"
_RECORD_TYPE_CODE = re.compile(rf"[A-Z0-9][A-Z0-9_-]{{0,{MAX_RECORD_TYPE_CODE_LENGTH - 1}}}")


def username(value: str) -> str | None:
    """Usernames are compared lower-case, so `Admin` and `admin` cannot be two accounts. ASCII as
    typed: Unicode lower-casing would store the Kelvin sign (U+212A) as a `k`."""
    name = value.lower()
    return name if value.isascii() and _USERNAME.fullmatch(name) else None


def email(value: str) -> bool:
    """Whether `value` looks like an e-mail address (one `@`, a dot in the domain, no spaces)."""
    return bool(_EMAIL.fullmatch(value))


def record_type_code(value: str) -> str | None:
    """Codes are upper-case (DICOM modality style), so `ct` and `CT` are one type; ASCII as typed
    (Unicode upper-casing makes `ſ` an `S`)."""
    code = value.upper()
    return code if value.isascii() and _RECORD_TYPE_CODE.fullmatch(code) else None
