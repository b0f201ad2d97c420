"""The forms of names an administrator types: one rule for the server that enforces it and the
console that checks it before sending (`admin_gui.form_checks`), so the console never accepts what
the server refuses nor refuses what it accepts.

Each rule takes the value as typed and gives the form the server stores (usernames lower-case,
record type codes upper-case), or None when the value does not have the form; `*_RULE` says the
form in words, for either side's message.
"""

from __future__ import annotations

import re
import unicodedata

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

#: Characters that show nothing though no Unicode format character: the Hangul fillers, the blank
#: Braille pattern.
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


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


def invisible_character(value: str) -> str | None:
    """The first character of a person's name that shows nothing, or None: a Unicode format
    character (category Cf: zero-width space, non-joiner and joiner, word joiner, direction marks,
    byte order mark, soft hyphen, tags) or a filler.

    A name holding one is listed as the name without it, yet is another name to every comparison:
    "Hor<U+200B>vat" was not found by a search for "horvat", was "name differs" from the patient's
    own CT ("HORVAT^ANA"), and let one patient be created again and again, each listed alike.
    Refused, never removed: what is stored is what was sent."""
    return next((c for c in value if shows_nothing(c)), None)


def shows_nothing(char: str) -> bool:
    """Whether a character shows nothing: a Unicode format character (category Cf) or a filler.
    One definition for names (`invisible_character`) and for blank texts (`validation.is_blank`)."""
    return char in _FILLERS or unicodedata.category(char) == "Cf"


def describe_character(char: str) -> str:
    """`U+200B ZERO WIDTH SPACE`: a character that does not show, named so a person can find it."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"
