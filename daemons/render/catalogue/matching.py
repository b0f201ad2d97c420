"""Catalogue queries with DICOM's matching rules (PS3.4 C.2.2.2): one definition for C-FIND, C-GET,
C-MOVE and QIDO-RS.

Supported: universal matching (an empty key, or `*`, is a return key), single value matching,
wildcards `*` and `?` on text and person names, lists of UIDs (`\\`-separated), date and time
ranges (`a-b`, `-b`, `a-`), and, on request, fuzzy matching of person names (`fuzzy_name_match`).
A value that is not valid for its key (a malformed date, a number that is not one, a bad UID)
raises `QueryError` naming the key. Attributes that are not indexed are not matched and not
returned. Matching rules that differ from a plain SQL comparison:

* person names ignore case, in every script (single value and wildcard matching, as PS3.4 leaves
  PN to the SCP);
* a date or time range never matches an entity without a value;
* text wildcards are case-sensitive, except that SQLite's LIKE ignores ASCII case, so on SQLite
  they are matched with GLOB (case-sensitive) instead;
* a single time value matches every time that starts with it (`1200` matches `120015.5`) and the
  same time written shorter (`120000` matches `1200`); a time range's start is compared in its
  shortest form (`shortest_time`: `101500-` takes in `1015`);
* `ModalitiesInStudy` matches a study when any of its modalities matches any value asked for, a
  wildcard within one modality (`C*R` does not match `CT\\MR`);
* a text or name without wildcards longer than its column matches nothing (no value indexed is
  longer), and is sent to no database.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import peewee
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from daemons.render.catalogue.index import CatalogueModels
from daemons.render.catalogue.temporal import is_date, is_time, same_times, shortest_time
from daemons.render.uids import is_uid
from shared.db import UNSTORABLE

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
TABLE_OF_LEVEL = {"PATIENT": "Patient", "STUDY": "Study", "SERIES": "Series", "IMAGE": "Instance"}
LIKE_ESCAPE = "!"
#: An IS value (PS3.5 6.2): ASCII digits with an optional sign, 12 characters at most. `int()` alone
#: also read other scripts' digits and `_` separators, and 30 digits overflowed SQLite's integer (a 500)
_INTEGER_STRING = re.compile(r"[+-]?[0-9]{1,11}|[0-9]{12}")
PN_DELIMITERS = "^="  # a person name's component and group delimiters
_NAME_SEPARATORS = re.compile(r"[\^\s,=]+")
#: Specific Character Set of an answer with text beyond ASCII (`Answers.values`)
UTF8_CHARACTER_SET = "ISO_IR 192"
#: The most names one fuzzy matching may select, and the most UIDs the lists of one query may name:
#: each is one parameter of the statement, and databases bound them per statement (SQLite 250,000,
#: PostgreSQL 65,535: both maxima together, with the other keys, stay under the smaller)
FUZZY_NAMES_MAX = 10_000
UID_LIST_MAX = 50_000
#: The most different lists of modalities (`Study.modalities`) one ModalitiesInStudy wildcard may
#: select (`_lists_with_a_modality_matching`): one parameter each too, within the same budget
MODALITY_LISTS_MAX = 4_096
#: The most modalities one ModalitiesInStudy may list (each one wildcard matching of every study; DICOM
#: defines fewer than a hundred), and the longest wildcard value matched (a value is at most 64
#: characters of PN or LO; SQLite refuses a pattern over 50,000 bytes, and a person name's pattern
#: takes up to four bytes a letter)
MODALITIES_MAX = 128
WILDCARD_MAX = 1024
#: The condition of a value no row can hold: no query sent for it
_NOTHING = peewee.SQL("1 = 0")


class QueryError(Exception):
    """The query cannot be answered: an unknown level, a key below the level asked for, or a value
    that is not valid for its key (`keyword` names that key, when there is one)."""

    def __init__(self, message: str, keyword: str | None = None):
        super().__init__(message)
        self.keyword = keyword


class QueryTooLarge(QueryError):
    """A valid query larger than the node answers in one (a list of more than UID_LIST_MAX UIDs or
    MODALITIES_MAX modalities: the peer may send it again in parts; a wildcard value longer than
    WILDCARD_MAX, or a ModalitiesInStudy wildcard matching more than MODALITY_LISTS_MAX lists of
    modalities), over DIMSE "Out of Resources" (PS3.4 C.4.1.1.4)."""


@dataclass(frozen=True)
class Key:
    level: str
    table: str
    field: str
    kind: str  # uid, date, time, text, pn, int, count, modalities

    @property
    def matchable(self) -> bool:
        """Counts are return keys only: PS3.4 gives no matching for them."""
        return self.kind != "count"


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


#: What every instance on a node is to a retrieval (PS3.4 C.4.1.1.3.2, PS3.18 10.6.3: the node keeps
#: every instance it catalogues on line), the Instance Availability of every answer
ONLINE = "ONLINE"


def given_return_keys(ae_title: str) -> dict[str, str]:
    """The return keys a node with the AE title `ae_title` gives every C-FIND answer itself, not from
    the catalogue (PS3.4 C.4.1.1.3.2: an SCP may return them at every level), for `find`'s `given`:
    the AE title a C-MOVE or C-GET of the entity goes to, and its availability. Viewers that move
    what they found (and dcm4chee, Orthanc) read the first from the answer."""
    return {"RetrieveAETitle": ae_title, "InstanceAvailability": ONLINE}


#: Their keywords: returned when asked for, never matched
GIVEN_RETURN_KEYS = frozenset(given_return_keys(""))


def depth(level: str) -> int:
    """0 for PATIENT ... 3 for IMAGE (QueryError for anything else)."""
    if level not in LEVELS:
        raise QueryError(f"Query/Retrieve Level {level!r} is not one of {', '.join(LEVELS)}")
    return LEVELS.index(level)


def field_of(cat: CatalogueModels, keyword: str) -> peewee.Field:
    key = KEYS[keyword]
    return getattr(getattr(cat, key.table), key.field)


def select(cat: CatalogueModels, level: str, *columns: peewee.Node) -> peewee.ModelSelect:
    """A query over the entities of `level`, joined up to their patient, selecting `columns`."""
    chain = [cat.Patient, cat.Study, cat.Series, cat.Instance][:depth(level) + 1]
    query = chain[-1].select(*columns)
    for child, parent in zip(reversed(chain[1:]), reversed(chain[:-1]), strict=True):
        query = query.join_from(child, parent)
    return query


def where(query: peewee.ModelSelect, cat: CatalogueModels, matches: Iterable[tuple[str, str]],
          fuzzy: bool = False) -> peewee.ModelSelect:
    """`query` restricted by every (keyword, value) matching key (KEYS); universal keys add nothing.
    QueryTooLarge when its UID lists name more than UID_LIST_MAX UIDs together: each is a parameter
    of the one statement, and a database bounds them per statement."""
    matches = list(matches)
    listed = sum(len(uid_list(value)) for keyword, value in matches if KEYS[keyword].kind == "uid")
    if listed > UID_LIST_MAX:
        raise QueryTooLarge(f"UID lists of {listed:,} UIDs in all are more than the {UID_LIST_MAX:,} this node "
                            "matches at once; send them in parts")
    for keyword, value in matches:
        condition = _condition(field_of(cat, keyword), keyword, KEYS[keyword].kind, value, fuzzy)
        if condition is not None:
            query = query.where(condition)
    return query


def is_single_value(keyword: str, value: str) -> bool:
    """The key names one value exactly (no wildcard, range or universal match): e.g. one patient."""
    value = value.strip()
    return bool(value) and not any(c in value for c in "*?") and not (
        KEYS[keyword].kind in ("date", "time") and "-" in value)


def is_universal(value: str, kind: str = "text") -> bool:
    """The value matches every entity (PS3.4 C.2.2.2.3 universal matching): empty, or `*` (any number
    of them: `**` is a wildcard that matches any value, C.2.2.2.4), spaces around it and a person
    name's trailing empty components (`^^^^`, PS3.5 6.2) being no value. One rule for the matching
    and for C-FIND's warning about keys it ignored (`dimse.find_answers`): they disagreed on `**`."""
    value = value.strip()
    if kind == "pn":
        value = value.rstrip(PN_DELIMITERS)
    return not value.strip("*")


def _condition(field: peewee.Field, keyword: str, kind: str, value: str, fuzzy: bool) -> peewee.Node | None:
    """The SQL condition of one matching key; None for universal matching. QueryError for a value
    holding what no database holds (`UNSTORABLE`): on PostgreSQL a C-FIND for `Doe\\0*` was the node's
    failure (0xC000, logged with a trace), on SQLite it matched every name beginning `Doe`."""
    if UNSTORABLE.search(value):  # no indexed value holds it (`storable_text`)
        raise QueryError(f"{keyword}: a value cannot hold a NUL character or invalid Unicode (PS3.5 6.1)", keyword)
    if kind == "count" or is_universal(value, kind):
        return None
    value = value.strip()
    if kind == "pn":  # trailing empty components are no components (PS3.5 6.2)
        value = value.rstrip(PN_DELIMITERS)
    if kind == "uid":
        uids = uid_list(value)  # UID_LIST_MAX is checked by `where`, over every key of the query
        for uid in uids:
            if not is_uid(uid):
                raise QueryError(f"{keyword}: {uid!r} is not a UID (digits and dots, at most 64 characters)", keyword)
        return field.in_(uids)
    if kind in ("date", "time"):
        return _range(field, keyword, kind, value)
    if kind == "int":
        if not _INTEGER_STRING.fullmatch(value):
            raise QueryError(f"{keyword}: {value!r} is not an integer (IS: an optional sign and at most 12 "
                             "characters)", keyword)
        return field == int(value)
    if kind == "modalities":
        return _modalities(field, keyword, value)
    if _is_wildcard(value) and len(value) > WILDCARD_MAX:
        raise QueryTooLarge(f"{keyword}: a wildcard value of {len(value):,} characters is longer than the "
                            f"{WILDCARD_MAX:,} this node matches", keyword)
    if kind == "pn" and fuzzy:
        return _fuzzy(field, keyword, value)
    if not _is_wildcard(value) and len(value) > cast(peewee.CharField, field).max_length:
        # longer than any value indexed (`catalogue.index` keeps at most the column's length): it
        # matches nothing, and is not made a pattern; a name beyond ASCII is matched as one, and
        # 10,000 letters made SQLite refuse it (0xC000) and 70,000 kept PostgreSQL busy past the
        # peer's timeout
        return _NOTHING
    if kind == "pn":
        return _person_name(field, value)
    if _is_wildcard(value):
        return _wildcard(field, value)
    return field == value


def uid_list(value: str) -> list[str]:
    """The UIDs of a list of UIDs (PS3.4 C.2.2.2.2, `\\`-separated), empty entries left out."""
    return [v.strip() for v in value.split("\\") if v.strip()]


def _check(keyword: str, kind: str, part: str, value: str) -> None:
    """Refuse `part` of the key's `value` (the value itself, or a range's start or end) unless it is a
    date or a time; the error names the whole value, as the peer sent it."""
    if kind == "date" and not is_date(part):
        raise QueryError(f"{keyword}: {value!r} is not a calendar date (YYYYMMDD) or a range of dates "
                         "(YYYYMMDD-YYYYMMDD)", keyword)
    if kind == "time" and not is_time(part):
        raise QueryError(f"{keyword}: {value!r} is not a time (HH, HHMM, HHMMSS or HHMMSS.FFFFFF) or a range of times",
                         keyword)


def _range(field: peewee.Field, keyword: str, kind: str, value: str) -> peewee.Node | None:
    """Single value or range matching of a date or time. A time matches every time it begins and
    the same time written shorter (`1015` matches `101530`, `101500` matches `1015`); a range's start
    is compared in its shortest form (`101500-` takes in `1015`)."""
    if "-" not in value:
        _check(keyword, kind, value, value)
        if kind == "date":
            return field == value
        begun = (field >= value) & (field < value + "~")
        shorter = same_times(value)
        return (begun | field.in_(shorter)) if shorter else begun
    if value.count("-") > 1:  # `2026-01-01`: no part of it is the date the peer meant
        _check(keyword, kind, value, value)
    low, high = (part.strip() for part in value.split("-", 1))
    if not low and not high:
        raise QueryError(f"{keyword}: a range needs a start, an end or both", keyword)
    # an entity without a value is not in any range ("" sorts before every date): only universal
    # matching returns it (PS3.4 C.2.2.2.5)
    condition = field != ""
    if low:
        _check(keyword, kind, low, value)
        condition &= field >= (low if kind == "date" else shortest_time(low))
    if high:
        _check(keyword, kind, high, value)
        # a time range's upper bound includes everything that starts with it (1200 ≥ 120059)
        condition &= field <= high if kind == "date" else field < high + "~"
    if low and high and _after(kind, low, high):
        # PS3.4 C.2.2.2.5 defines a range from its start to its end; one ending before it starts is
        # the peer's mistake (dates swapped), refused rather than answered with nothing
        across = "" if kind == "date" else (f"; PS3.4 C.2.2.2.5.2 matches no time range across midnight: send "
                                            f"'{low}-' and '-{high}' as two queries")
        raise QueryError(f"{keyword}: the range {value!r} ends before it starts{across}", keyword)
    return condition


def _after(kind: str, low: str, high: str) -> bool:
    """The range's start lies after its end, by the same comparisons the range's condition makes."""
    if kind == "date":
        return low > high
    return not shortest_time(low) < high + "~"


def _like(value: str) -> str:
    """A LIKE pattern (escape character `LIKE_ESCAPE`) for a DICOM wildcard value."""
    escaped = "".join(LIKE_ESCAPE + c if c in ("%", "_", LIKE_ESCAPE) else c for c in value)
    return escaped.replace("*", "%").replace("?", "_")


def _like_node(lhs: peewee.Node, pattern: str) -> peewee.Node:
    return peewee.NodeList((lhs, peewee.SQL("LIKE"), pattern, peewee.SQL(f"ESCAPE '{LIKE_ESCAPE}'")))


def _is_sqlite(field: peewee.Field) -> bool:
    database = field.model._meta.database
    return isinstance(getattr(database, "obj", database), peewee.SqliteDatabase)


def _wildcard(field: peewee.Field, value: str, lhs: peewee.Node | None = None) -> peewee.Node:
    """Case-sensitive wildcard matching of text: of `field`, or of `lhs`, an expression of it."""
    lhs = field if lhs is None else lhs
    if _is_sqlite(field):  # SQLite's LIKE ignores ASCII case; GLOB does not ("[" is GLOB's only other special)
        return peewee.NodeList((lhs, peewee.SQL("GLOB"), value.replace("[", "[[]")))
    return _like_node(lhs, _like(value))


def _person_name(field: peewee.Field, value: str) -> peewee.Node:
    """Single value or wildcard matching of a person name, ignoring case in every script.

    A database's LOWER folds ASCII letters the same way everywhere, but not the others: SQLite's
    folds ASCII only and PostgreSQL's follows the database's locale (ASCII only under C). So a value
    with other letters names both cases of each of its letters (`[Üü]`) in a case-sensitive pattern,
    GLOB on SQLite and a regular expression elsewhere, and no database decides what `Ü` matches.

    Trailing empty components and groups are left out on both sides (PS3.5 6.2: `Doe^John^^^` and
    `Doe^John` are one name, as senders write either; `_condition` strips the value)."""
    name = peewee.fn.RTRIM(field, PN_DELIMITERS)
    if value.isascii():
        if _is_wildcard(value):
            return _like_node(peewee.fn.LOWER(name), _like(value.lower()))
        return peewee.fn.LOWER(name) == value.lower()
    if _is_sqlite(field):
        return peewee.NodeList((name, peewee.SQL("GLOB"), "".join(_glob_character(c) for c in value)))
    return name.regexp("^" + "".join(_regex_character(c) for c in value) + "$")


CASED_PLANES_END = 0x20000  # every cased letter of Unicode is in its first two planes


@functools.cache
def _case_classes() -> dict[str, str]:
    """Each cased character -> every character of its case class (those of one `casefold()`).

    Lower- and upper-casing alone miss the one-way pairs: `ς` upper-cases to `Σ`, which lower-cases
    to `σ`, so a stored `Οδυσσέας` was not found by `ΟΔΥΣΣΈΑΣ`; nor `Straße` by `STRAẞE`."""
    classes: dict[str, set[str]] = {}
    for point in range(CASED_PLANES_END):
        character = chr(point)
        folded = character.casefold()
        if folded != character:
            classes.setdefault(folded, {folded} if len(folded) == 1 else set()).add(character)
    return {member: "".join(sorted(members)) for members in classes.values() for member in members}


def _cases(character: str) -> str:
    """`character` and every other character of its case class."""
    return _case_classes().get(character, character)


def _glob_character(character: str) -> str:
    cases = _cases(character)
    if character in "*?":  # DICOM's wildcards are GLOB's
        return character
    return f"[{cases}]" if len(cases) > 1 else "[[]" if character == "[" else character


def _regex_character(character: str) -> str:
    cases = _cases(character)
    if character in "*?":
        return ".*" if character == "*" else "."
    return f"[{cases}]" if len(cases) > 1 else re.escape(character)


def _fuzzy(field: peewee.Field, keyword: str, value: str) -> peewee.Node | None:
    """Fuzzy matching of a person name (`fuzzy_name_match`), which no database can do (it ignores
    accents): the distinct names are matched here and the rows selected by the names that match.
    A query without a word matches every name; one that matches more than FUZZY_NAMES_MAX names
    is refused rather than sent as a list longer than a database takes (PostgreSQL: 65,535)."""
    if not _fuzzy_words(value):
        return None
    names = [row[0] for row in field.model.select(field).distinct().tuples() if fuzzy_name_match(row[0], value)]
    if len(names) > FUZZY_NAMES_MAX:
        raise QueryError(f"{keyword}: fuzzy matching of {value!r} matches more than {FUZZY_NAMES_MAX:,} names; "
                         "give more of the name", keyword)
    return field.in_(names)


def _modalities(field: peewee.Field, keyword: str, value: str) -> peewee.Node | None:
    """Any of the study's `\\`-separated modalities equals (or matches) any value asked for, case
    and all, as `Modality` is matched (SQLite's LIKE would have `ct` match CT there only). The
    alternatives are one flat OR: nested one level per value, about a hundred overflowed Python's
    stack while peewee wrote the statement. QueryTooLarge beyond MODALITIES_MAX values or WILDCARD_MAX
    characters in one. A value of `*` alone matches every study: universal matching."""
    modalities = list(dict.fromkeys(v.strip() for v in re.split(r"[\\,]", value) if v.strip()))
    if len(modalities) > MODALITIES_MAX:
        raise QueryTooLarge(f"{keyword}: {len(modalities):,} modalities are more than the {MODALITIES_MAX} this "
                            "node matches at once; send them in parts", keyword)
    longest = max(modalities, key=len, default="")
    if len(longest) > WILDCARD_MAX:
        raise QueryTooLarge(f"{keyword}: a value of {len(longest):,} characters is longer than the "
                            f"{WILDCARD_MAX:,} this node matches", keyword)
    if not modalities or any(not modality.strip("*") for modality in modalities):
        return None
    patterns = [modality for modality in modalities if _is_wildcard(modality)]
    conditions = [_contains_modality(field, modality) for modality in modalities if modality not in patterns]
    if patterns:
        conditions.append(_lists_with_a_modality_matching(field, keyword, patterns))
    return peewee.NodeList(conditions, glue=" OR ", parens=True)


def _is_wildcard(value: str) -> bool:
    """Whether `value` holds one of DICOM's wildcards (PS3.4 C.2.2.2.4), `*` or `?`."""
    return "*" in value or "?" in value


def _contains_modality(field: peewee.Field, pattern: str) -> peewee.Node:
    """The study's list of modalities (`CT\\MR`) holds one that `pattern` matches, or, where
    `pattern` has a wildcard, a run of them: the database's `*` and `?` match a `\\` too."""
    bounded = peewee.NodeList((peewee.Value("\\"), peewee.SQL("||"), field, peewee.SQL("||"), peewee.Value("\\")),
                              parens=True)
    return _wildcard(field, f"*\\{pattern}\\*", bounded)


def _lists_with_a_modality_matching(field: peewee.Field, keyword: str, patterns: list[str]) -> peewee.Node:
    """The studies with a modality that one of the wildcard `patterns` matches, within that modality.

    No database matches a wildcard one `\\`-separated part at a time (SQLite has neither regular
    expressions nor a split), and matched on the whole list `C*R` took in `CT\\MR`. So the database
    selects the distinct lists that may match (`_contains_modality`: every list that does is among
    them), each of their modalities is matched here, and the studies are selected by the lists that
    matched: one parameter each, QueryTooLarge beyond MODALITY_LISTS_MAX of them."""
    may_match = peewee.NodeList([_contains_modality(field, pattern) for pattern in patterns], glue=" OR ", parens=True)
    matchers = [_modality_matcher(pattern) for pattern in patterns]
    lists = [row[0] for row in field.model.select(field).distinct().where(may_match).tuples()
             if any(matcher(modality) for modality in row[0].split("\\") for matcher in matchers)]
    if len(lists) > MODALITY_LISTS_MAX:
        raise QueryTooLarge(f"{keyword}: the wildcards of {', '.join(patterns)[:200]!r} match more than the "
                            f"{MODALITY_LISTS_MAX:,} different lists of modalities this node selects at once; "
                            "send narrower values", keyword)
    return field.in_(lists) if lists else _NOTHING


def _modality_matcher(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """DICOM wildcard matching of one modality, case-sensitive: `*` any run of characters, `?` one
    (PS3.4 C.2.2.2.4). `fnmatch.translate`, with its one other special, `[`, escaped: it makes each
    star an atomic group, so a pattern of many stars takes no exponential time; compiled here, not
    by `fnmatchcase`, whose cache keeps up to 32,768 patterns of a peer's choosing."""
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]"))).match


def fold(text: str) -> str:
    """Case- and accent-free form of a name: `Müller^Zoë` -> `muller^zoe`."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _fuzzy_words(query: str) -> list[str]:
    return [w for w in _NAME_SEPARATORS.split(fold(query).replace("*", " ").replace("?", " ")) if w]


def fuzzy_name_match(name: str, query: str) -> bool:
    """Fuzzy matching of a person name (PS3.4 C.2.2.2.1.1, SIVR's rule): case and accents are
    ignored, wildcards are dropped, and every word of the query must begin some component of the
    name, in any order (`joh do` and `DOE` match `Doe^John`)."""
    wanted = _fuzzy_words(query)
    words = [w for w in _NAME_SEPARATORS.split(fold(name)) if w]
    return all(any(word.startswith(w) for word in words) for w in wanted)


def _requested(level: str, identifier: Dataset) -> list[str]:
    """The indexed keys of a DIMSE identifier, refused when one belongs to a level below `level`."""
    level_depth = depth(level)
    requested = [element.keyword for element in identifier if element.keyword in KEYS]
    for keyword in requested:
        sent, expected = identifier[keyword].VR, dictionary_VR(keyword)
        if sent != expected:  # a UID sent as US 0 read as an empty key: a universal match
            raise QueryError(f"{keyword} is sent as {sent}; its VR is {expected} (PS3.6)", keyword)
        if LEVELS.index(KEYS[keyword].level) > level_depth:
            raise QueryError(f"{keyword} is a {KEYS[keyword].level} key, below the {level} level asked for", keyword)
    return requested


def _identifier_matches(identifier: Dataset, requested: list[str]) -> list[tuple[str, str]]:
    return [(keyword, _identifier_value(identifier[keyword].value)) for keyword in requested]


@dataclass(frozen=True)
class Answers:
    """The matches of a C-FIND identifier at `level`: the indexed keys asked for, in the order asked,
    one catalogue row per matching entity (each key's value under its keyword), and the node's own
    return keys asked for with their values (`given`: RetrieveAETitle, InstanceAvailability)."""

    level: str
    requested: list[str]
    rows: list[dict[str, Any]]
    given: tuple[tuple[str, str], ...] = ()

    def values(self, row: dict[str, Any]) -> list[tuple[str, str]]:
        """The answer for `row` as (keyword, value) pairs, the one definition of what a C-FIND answer
        holds: Query/Retrieve Level, the node's own return keys asked for (`given`), then the keys
        asked for. One with a value that is not ASCII names its character set, UTF-8 (PS3.4
        C.4.1.1.3.1: an answer is encoded in the character set it names; without one, the default
        repertoire would lose every other letter)."""
        values = [("QueryRetrieveLevel", self.level), *self.given]
        wide = False
        for keyword in self.requested:
            value = row[keyword]
            if KEYS[keyword].kind in ("int", "count"):
                values.append((keyword, "" if value is None else str(int(value))))
            else:
                values.append((keyword, value or ""))
                wide = wide or not (value or "").isascii()
        return [("SpecificCharacterSet", UTF8_CHARACTER_SET)] + values if wide else values

    def dataset(self, row: dict[str, Any]) -> Dataset:
        """The answer for `row` as a dataset (`values`), for an encoder that needs one."""
        answer = Dataset()
        for keyword, value in self.values(row):
            setattr(answer, keyword, value)
        return answer


def find(cat: CatalogueModels, level: str, identifier: Dataset, max_matches: int,
         given: Mapping[str, str] | None = None) -> Answers:
    """The answers to a C-FIND identifier at `level`: one row per matching entity, each with the
    values of `given` (GIVEN_RETURN_KEYS) the identifier asks for. QueryTooLarge when more than
    `max_matches` entities match (`dicom.max_find_matches`): read one row past it, so the refusal
    costs no more than the bound (an IMAGE query with no key matched the whole archive, every row
    held before the first answer)."""
    requested = _requested(level, identifier)
    returned = tuple((keyword, value) for keyword, value in (given or {}).items() if keyword in identifier)
    deepest = getattr(cat, TABLE_OF_LEVEL[level])
    query = select(cat, level, deepest._meta.primary_key.alias("_row"),
                   *[field_of(cat, keyword).alias(keyword) for keyword in requested])
    query = where(query, cat, _identifier_matches(identifier, requested))
    rows = list(cast(Iterable[dict], query.limit(max_matches + 1).dicts()))
    if len(rows) > max_matches:
        raise QueryTooLarge(f"the query matches more than {max_matches:,} entities at the {level} level, more than "
                            "this node answers at once (dicom.max_find_matches): add keys to narrow it")
    return Answers(level, requested, rows, returned)


#: The unique key of each level: a retrieval names the entities it wants with it (PS3.4 C.4.2.2.1).
UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
               "IMAGE": "SOPInstanceUID"}


def retrieve(cat: CatalogueModels, level: str, identifier: Dataset) -> list[Any]:
    """The instance rows a C-GET or C-MOVE identifier at `level` retrieves, in series then instance order:
    named tuples of their series_id, sop_instance_uid, sop_class_uid, sha256 and blob.

    The same matching as `find`: the entities at `level` that match every key, and all the
    instances below them. The unique key of the level must be given (a single value or a UID list,
    no wildcard), so that an identifier with no key never retrieves the whole archive.
    """
    requested = _requested(level, identifier)
    unique = UNIQUE_KEYS[level]
    value = _identifier_value(identifier[unique].value).strip() if unique in identifier else ""
    if not uid_list(value) or _is_wildcard(value):  # `\\` is a list of no UID
        raise QueryError(f"a retrieval at the {level} level needs {unique} (a value or a list of UIDs, no wildcard)",
                         unique)
    instance = cat.Instance
    # what the sub-operations and their audit read, as tuples: held for the whole retrieval, a model
    # object each took twice the memory (107 MiB for 100,000 instances)
    columns = (instance.series.alias("series_id"), instance.sop_instance_uid, instance.sop_class_uid,
               instance.sha256, instance.blob)
    query = where(select(cat, "IMAGE", *columns), cat, _identifier_matches(identifier, requested))
    return list(query.order_by(instance.series, instance.instance_number, instance.sop_instance_uid).namedtuples())


def _identifier_value(value: object) -> str:
    """A C-FIND key's value as one string (a list of UIDs `\\`-separated, as PS3.4 writes it)."""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value or "")
