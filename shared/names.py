"""When two names are one: the folding every layer compares names by.

The toplevel searches patients by name and refuses an institution named as another is; an
institution server refuses a render node named as another of its nodes. Each asks
`name_search_key` (one definition), so a name that people read as one is one name everywhere.
"""

from __future__ import annotations

import re
import unicodedata

#: What `name_search_key(..., keep_accents=True)` does not tell apart, for the refusals of a name
#: taken (an institution's at the toplevel, a render node's at its institution).
SAME_NAME_RULE = ("names that differ only in letter case, Unicode form, dashes, invisible characters or spacing "
                  "are the same name")
#: Dashes that are no category Pd character and read as one: MINUS SIGN, HYPHEN BULLET.
_OTHER_DASHES = frozenset("\u2212\u2043")
#: Characters that are no Unicode space yet show as one: BRAILLE PATTERN BLANK, the Hangul fillers.
_BLANKS = frozenset("\u2800\u115f\u1160\u3164\uffa0")
#: A space beside a character that is neither a letter nor a digit ("node - 1", "node -1").
_SPACE_BESIDE_MARK = re.compile(r" ?([^\w ]) ?")


def name_search_key(text: str, keep_accents: bool = False) -> str:
    """Case-insensitive form of a name, the same on every database; accent-insensitive too unless
    `keep_accents`.

    SQL `LOWER`/`LIKE` fold only ASCII on SQLite, so the folding happens here. For the patient
    search: NFKD, drop the combining marks, casefold, collapse spaces — "Šimić" and "simic" meet
    (the key is stored, `Patient.name_key`: this form is kept as it is).
    With `keep_accents`, two names are one when users read them as one (institution and render node
    names; the key is computed where names are compared, never stored): letter case, compatibility
    forms (NFKC: a full-width letter, a ligature), whether an accent is typed precomposed or
    combining, characters that show nothing (Unicode format characters: a zero-width space or
    joiner, a soft hyphen), which dash joins two words (hyphen, non-breaking hyphen, en dash, minus
    sign) and the spaces (how many, which blank shows them, and whether any stand beside a dash or
    another mark) do not tell them apart; an accent does ("Klinik Ä" is not "Klinik A"), and so does
    a space between two words ("node 1" is not "node1").
    """
    if keep_accents:
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
        shown = "".join(_as_read(c) for c in folded if unicodedata.category(c) != "Cf")
        return _SPACE_BESIDE_MARK.sub(r"\1", " ".join(shown.split()))
    decomposed = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(folded.split())


def _as_read(c: str) -> str:
    """One character of a name as it reads: every dash a hyphen-minus, every blank a space."""
    if unicodedata.category(c) == "Pd" or c in _OTHER_DASHES:
        return "-"
    return " " if c in _BLANKS else c
