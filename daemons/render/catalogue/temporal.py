"""DA and TM values (PS3.5 6.2) as the catalogue indexes and matches them: one definition of what
a date and a time are, for the index (a stored value that is neither is not indexed) and for the
matching of C-FIND and QIDO-RS keys (a key that is neither is refused)."""

from __future__ import annotations

import datetime as dt
import re

DATE = re.compile(r"[0-9]{8}")
TIME = re.compile(r"([01][0-9]|2[0-3])([0-5][0-9](([0-5][0-9]|60)(\.[0-9]{1,6})?)?)?")  # 60: a leap second


def is_date(text: str) -> bool:
    """A DA value: YYYYMMDD, a day of the calendar."""
    if not DATE.fullmatch(text):
        return False
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def is_time(text: str) -> bool:
    """A TM value: HH, HHMM, HHMMSS or HHMMSS.FFFFFF."""
    return TIME.fullmatch(text) is not None


def shortest_time(value: str) -> str:
    """A TM value written as briefly as the same time can be: without the trailing zeros of its
    fraction, then without zero seconds and minutes (`101500.000` -> `1015`; PS3.5 6.2 lets a TM
    leave off its trailing components). Times in that form compare as text in their order in the day."""
    whole, _, fraction = value.partition(".")
    fraction = fraction.rstrip("0")
    shortest = f"{whole}.{fraction}" if fraction else whole
    while "." not in shortest and len(shortest) > 2 and shortest.endswith("00"):
        shortest = shortest[:-2]
    return shortest


def same_times(value: str) -> list[str]:
    """The ways of writing `value`'s time that are shorter than it (its prefixes that name the same
    time): `101500.0` is also written `101500` and `1015`."""
    shortest = shortest_time(value)
    return [value[:end] for end in range(2, len(value)) if is_time(value[:end])
            and shortest_time(value[:end]) == shortest]
