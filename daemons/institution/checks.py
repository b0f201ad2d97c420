"""Field checks for request bodies and query strings that `shared.validation` does not cover."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from shared.errors import ApiError
from shared.validation import parse_date, parse_record_id, parse_uuid

_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")
def int_between(low: int, high: int) -> Callable[[Any, str], int]:
    """A check for `Field(int, check=...)` refusing values outside `low..high`."""

    def check(value: int, field: str) -> int:
        if not low <= value <= high:
            raise ApiError(400, "validation_error", f"{field} must be between {low} and {high}")
        return value

    return check


def modality(value: str, field: str) -> str:
    """A DICOM modality code such as CT or MR (upper-case letters, digits, underscore)."""
    if not _MODALITY.fullmatch(value):
        raise ApiError(400, "validation_error",
                       f"{field} must be a DICOM modality code such as CT, MR or US")
    return value


def date_value(value: str, field: str) -> dt.date:
    return dt.date.fromisoformat(parse_date(value, field))


def uuid_value(value: str, field: str) -> str:
    return parse_uuid(value, field)


def record_id_value(value: str, field: str) -> str:
    return parse_record_id(value, field)


def iso_date(value: dt.date | str | None) -> str | None:
    """Dates leave the database as `date` (PostgreSQL) or text (SQLite); answer `YYYY-MM-DD`."""
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.date) else str(value)
