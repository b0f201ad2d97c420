"""Is a series' DICOM patient the SIVR patient it is registered for? The server's reading of the rule.

The rule is the viewer's (webviewer/static/js/identity.js `comparePatients`): the name (same family
name and first given name, accents, case and punctuation ignored; a name without "^" compared whole
in either order) and the birth date. The browser applies it to warn and to ask for a confirmation;
an institution server applies it here to refuse a registration whose confirmation is missing, so that
a client that skips the browser's dialog cannot attach another patient's images silently. This is
the same rule in the server's language, not a second one: tests/shared/test_patient_identity.py runs
identity.js and this module on one table of cases and requires the same answers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from shared.db import UNSTORABLE

_ISO = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})")
#: What the rule compares of the DICOM patient (a Comparison's `differs` and `unknown` name these).
COMPARED = ("name", "birth date")


@dataclass(frozen=True)
class Comparison:
    """What differs between the two patients, and what the DICOM patient lacks (["name", "birth date"])."""

    differs: list[str]
    unknown: list[str]

    @property
    def nothing_compared(self) -> bool:
        """Whether the DICOM patient has none of what the rule compares (no name, no birth date).

        Then nothing differs, yet nothing agrees either: such a series (a CT sent with an empty
        PatientName and PatientBirthDate) may be any patient's, so it is no match. Its PatientID is no
        help here, as the SIVR patient this is compared with states no insurance number."""
        return all(part in self.unknown for part in COMPARED)


def _folded(text: str | None) -> str:
    """Letters and digits only, lower case, accents dropped: "Müller-Lüdenscheidt" ~ "MULLER LUDENSCHEIDT".

    U+FFFD is kept as a letter that equals no other, and so is what a node of an older release sent
    in its place (`shared.db.UNSTORABLE`): it stands for a character of the file that could not be
    kept, maybe a letter ("DOE\ufffd" may be "DOEN"), so folded away as punctuation it made another
    family's name a match."""
    decomposed = unicodedata.normalize("NFD", str(text or ""))
    plain = "".join(c for c in decomposed if not unicodedata.category(c).startswith("M"))
    kept = (c if c.isalnum() or c == "\ufffd" or UNSTORABLE.match(c) else " " for c in plain.lower())
    return " ".join("".join(kept).split())


def dicom_person_name(value: str | None) -> tuple[str, str]:
    """(family, given) of a DICOM person name (PS3.5 6.2: family^given^middle^..., first "=" group)."""
    parts = str(value or "").split("=")[0].split("^")
    family = parts[0].strip()
    given = " ".join(p.strip() for p in parts[1:3] if p.strip())
    return family, given


def iso_date(value: str | None) -> str | None:
    """A DICOM DA (YYYYMMDD) or ISO date as ISO, else None."""
    match = _ISO.fullmatch(str(value or ""))
    return f"{match[1]}-{match[2]}-{match[3]}" if match else None


def _same_name(first_name: str, last_name: str, dicom_name: str) -> bool:
    family, given = dicom_person_name(dicom_name)
    last, first = _folded(last_name), _folded(first_name)
    if not given:
        whole = _folded(family)
        return whole in (f"{last} {first}", f"{first} {last}")
    return _folded(family) == last and _folded(given).split(" ")[0] == first.split(" ")[0]


def compare_patients(first_name: str, last_name: str, birth_date: str | None,
                     dicom_name: str | None, dicom_birth_date: str | None) -> Comparison:
    """Compare the SIVR patient (names, ISO birth date) with a series' DICOM PatientName and PatientBirthDate."""
    differs: list[str] = []
    unknown: list[str] = []
    if not str(dicom_name or "").replace("^", "").strip():
        unknown.append("name")
    elif not _same_name(first_name, last_name, str(dicom_name)):
        differs.append("name")
    born = iso_date(dicom_birth_date)
    if not born:
        unknown.append("birth date")
    elif born != birth_date:
        differs.append("birth date")
    return Comparison(differs, unknown)
