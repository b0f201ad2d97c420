"""Catalogue queries with DICOM's matching rules (PS3.4 C.2.2.2), for C-FIND, C-GET and C-MOVE (and QIDO-RS).

Supported: universal matching (an empty key is a return key), single value, wildcards `*` and
`?` on text and person names, lists of UIDs (`\\`-separated), date and time ranges (`a-b`, `-b`,
`a-`). Attributes that are not indexed are not matched and not returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import peewee
from pydicom.dataset import Dataset

from daemons.render.catalogue import CatalogueModels

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


class QueryError(Exception):
    """The identifier cannot be answered (unknown level, a key of a level below the query's)."""


@dataclass(frozen=True)
class Key:
    level: str
    table: str
    field: str
    kind: str  # uid, date, time, text, pn, int, count, modalities


KEYS: dict[str, Key] = {
    "PatientID": Key("PATIENT", "Patient", "patient_id", "text"),
    "IssuerOfPatientID": Key("PATIENT", "Patient", "issuer", "text"),
    "PatientName": Key("PATIENT", "Patient", "name", "pn"),
    "PatientBirthDate": Key("PATIENT", "Patient", "birth_date", "date"),
    "PatientSex": Key("PATIENT", "Patient", "sex", "text"),
    "StudyInstanceUID": Key("STUDY", "Study", "study_uid", "uid"),
    "StudyDate": Key("STUDY", "Study", "study_date", "date"),
    "StudyTime": Key("STUDY", "Study", "study_time", "time"),
    "AccessionNumber": Key("STUDY", "Study", "accession_number", "text"),
    "StudyID": Key("STUDY", "Study", "study_id", "text"),
    "StudyDescription": Key("STUDY", "Study", "description", "text"),
    "ReferringPhysicianName": Key("STUDY", "Study", "referring_physician", "pn"),
    "ModalitiesInStudy": Key("STUDY", "Study", "modalities", "modalities"),
    "NumberOfStudyRelatedSeries": Key("STUDY", "Study", "series_count", "count"),
    "NumberOfStudyRelatedInstances": Key("STUDY", "Study", "instance_count", "count"),
    "SeriesInstanceUID": Key("SERIES", "Series", "series_uid", "uid"),
    "Modality": Key("SERIES", "Series", "modality", "text"),
    "SeriesNumber": Key("SERIES", "Series", "series_number", "int"),
    "SeriesDescription": Key("SERIES", "Series", "description", "text"),
    "NumberOfSeriesRelatedInstances": Key("SERIES", "Series", "instance_count", "count"),
    "SOPInstanceUID": Key("IMAGE", "Instance", "sop_instance_uid", "uid"),
    "SOPClassUID": Key("IMAGE", "Instance", "sop_class_uid", "uid"),
    "InstanceNumber": Key("IMAGE", "Instance", "instance_number", "int"),
}
TABLE_OF_LEVEL = {"PATIENT": "Patient", "STUDY": "Study", "SERIES": "Series", "IMAGE": "Instance"}


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _condition(field: peewee.Field, kind: str, value: str) -> peewee.Expression | None:
    """The SQL condition of one matching key; None for universal matching."""
    value = value.strip()
    if not value or value == "*" or kind == "count":
        return None
    if kind == "uid":
        uids = [v.strip() for v in value.split("\\") if v.strip()]
        return field.in_(uids)
    if kind in ("date", "time") and "-" in value:
        low, high = (part.strip() for part in value.split("-", 1))
        condition = None
        if low:
            condition = field >= low
        if high:
            # a time range's upper bound includes everything that starts with it (1200 ≥ 120059)
            upper = field <= high if kind == "date" else field < high + "~"
            condition = upper if condition is None else condition & upper
        return condition
    if kind == "int":
        try:
            return field == int(value)
        except ValueError as exc:
            raise QueryError(f"{value!r} is not a number") from exc
    if kind == "modalities":
        condition = None
        for modality in [v.strip() for v in value.split("\\") if v.strip()]:
            one = field ** f"%{modality}%"
            condition = one if condition is None else condition | one
        return condition
    if "*" in value or "?" in value:
        return field ** _like(value) if kind == "pn" else peewee.Expression(field, "LIKE", _like(value))
    return field == value


def _requested(level: str, identifier: Dataset) -> list[str]:
    """The indexed keys of `identifier`, refused when one belongs to a level below `level`."""
    if level not in LEVELS:
        raise QueryError(f"Query/Retrieve Level {level!r} is not one of {', '.join(LEVELS)}")
    depth = LEVELS.index(level)
    requested = [element.keyword for element in identifier if element.keyword in KEYS]
    for keyword in requested:
        if LEVELS.index(KEYS[keyword].level) > depth:
            raise QueryError(f"{keyword} is a {KEYS[keyword].level} key, below the {level} level asked for")
    return requested


def _matching(cat: CatalogueModels, depth: int, requested: list[str], identifier: Dataset,
              *columns: Any) -> Any:
    """Rows of the level at `depth` (joined to every level above it) that match the identifier's keys."""
    tables = {"Patient": cat.Patient, "Study": cat.Study, "Series": cat.Series, "Instance": cat.Instance}
    chain = [cat.Patient, cat.Study, cat.Series, cat.Instance][:depth + 1]
    query = chain[-1].select(*columns)
    for child, parent in zip(reversed(chain[1:]), reversed(chain[:-1]), strict=True):
        query = query.join_from(child, parent)
    for keyword in requested:
        key = KEYS[keyword]
        condition = _condition(getattr(tables[key.table], key.field), key.kind, str(identifier[keyword].value or ""))
        if condition is not None:
            query = query.where(condition)
    return query


def find(cat: CatalogueModels, level: str, identifier: Dataset) -> Iterator[Dataset]:
    """The answers to a C-FIND identifier at `level`: one dataset per matching entity."""
    requested = _requested(level, identifier)
    tables = {"Patient": cat.Patient, "Study": cat.Study, "Series": cat.Series, "Instance": cat.Instance}
    table = tables[TABLE_OF_LEVEL[level]]
    columns = [getattr(tables[KEYS[k].table], KEYS[k].field).alias(k) for k in requested]
    query = _matching(cat, LEVELS.index(level), requested, identifier,
                      table._meta.primary_key.alias("_row"), *columns)
    for row in query.dicts():
        yield _answer(level, requested, row)


#: The unique key of each level: a retrieval names the entities it wants with it (PS3.4 C.4.2.2.1).
UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
               "IMAGE": "SOPInstanceUID"}


def retrieve(cat: CatalogueModels, level: str, identifier: Dataset) -> list[Any]:
    """The instance rows a C-GET or C-MOVE identifier at `level` retrieves, in series then instance order.

    The same matching as `find`: the entities at `level` that match every key, and all the
    instances below them. The unique key of the level must be given (a single value or a UID list,
    no wildcard), so that an identifier with no key never retrieves the whole archive.
    """
    requested = _requested(level, identifier)
    unique = UNIQUE_KEYS[level]
    value = str(identifier.get(unique, "") or "").strip() if unique in identifier else ""
    if not value or "*" in value or "?" in value:
        raise QueryError(f"a retrieval at the {level} level needs {unique} (a value or a list of UIDs, no wildcard)")
    instance = cat.Instance
    query = _matching(cat, LEVELS.index("IMAGE"), requested, identifier, instance)
    return list(query.order_by(instance.series, instance.instance_number, instance.sop_instance_uid))


def _answer(level: str, requested: list[str], row: dict) -> Dataset:
    """An answer dataset with the keys asked for, in the order asked."""
    answer = Dataset()
    answer.QueryRetrieveLevel = level
    for keyword in requested:
        value = row[keyword]
        if KEYS[keyword].kind in ("int", "count"):
            setattr(answer, keyword, "" if value is None else str(int(value)))
        else:
            setattr(answer, keyword, value or "")
    return answer
