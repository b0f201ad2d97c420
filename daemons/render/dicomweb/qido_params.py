"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1.2): what a search asks for, checked before it runs.

A parameter is a search parameter (`limit`, `offset`, `fuzzymatching`, `includefield`,
`emptyvaluematching`, `multiplevaluematching`) or a DICOM attribute by keyword or tag
(`PatientID=x`, `00100020=x`). The rules, and where PS3.18 sets them:

* a name that is neither is refused (400, naming it): 8.3.4.1 requires "a Data Element Tag or
  Keyword", and a misspelt key silently ignored would widen the search;
* a real DICOM attribute the catalogue does not hold (`BodyPartExamined`, a sequence path, a
  private tag) is ignored with a `Warning: 299` header naming it: 8.3 "The origin server shall
  ignore any unsupported Query Parameters";
* a catalogue attribute of a level the resource does not allow (e.g. `Modality` on /studies) is
  refused (10.6.1.2.1 lists which IE levels each resource may match on);
* `emptyvaluematching=true` and `multiplevaluematching=true` are not supported: the search runs
  without them, with the Warning 8.3.4.5 and 8.3.4.6 prescribe;
* a bad value of a supported parameter (a limit that is not an unsigned integer, a malformed
  date or UID, `fuzzymatching=maybe`) is refused (8.3: "shall return a 400").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_has_tag, keyword_for_tag, tag_for_keyword

from daemons.render.api.query import single_value
from daemons.render.catalogue.matching import KEYS, LEVELS, is_single_value
from shared.errors import ApiError

#: the most answers one response carries (PS3.18 10.6.5: declared in docs/conformance.md)
MAX_RESULTS = 1000
#: content negotiation parameters (8.3.3) that a search does not use: ignored, with a Warning
IGNORED_PARAMETERS = frozenset({"charset"})
#: the Accept query parameter: read by the content negotiation of every resource (`accept.asked`)
NEGOTIATED_PARAMETERS = frozenset({"accept"})
#: attributes each answer can carry that are not catalogue columns, by the level they describe
COMPUTED = {"RetrieveURL": None, "InstanceAvailability": None, "Rows": "IMAGE", "Columns": "IMAGE",
            "BitsAllocated": "IMAGE", "NumberOfFrames": "IMAGE"}
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_UINT = re.compile(r"[0-9]{1,18}")  # below 2**63: what SQL OFFSET takes
MAX_VALUE_CHARS = 1024
#: the kinds of key whose value may be a list (PS3.4 C.2.2.2.2 UID lists; ModalitiesInStudy, matched
#: by any of its values): comma-separated, or the key repeated, as dicomweb-client sends a list
#: (`search_filters={"ModalitiesInStudy": ["CT", "MR"]}` is `ModalitiesInStudy=CT&ModalitiesInStudy=MR`)
LIST_KINDS = frozenset({"uid", "modalities"})


def _bad(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


@dataclass
class Search:
    """A parsed QIDO-RS request: matching keys, extra return keys, paging and the Warnings it earns."""

    matches: list[tuple[str, str]] = field(default_factory=list)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    fields_named: bool = False  # includefield named attributes (not `all`): matching keys are not fields
    fuzzy: bool = False
    limit: int = MAX_RESULTS
    offset: int = 0
    warnings: list[str] = field(default_factory=list)

    def value_of(self, keyword: str) -> str | None:
        return next((value for key, value in self.matches if key == keyword), None)

    def names(self, keyword: str) -> bool:
        """The search names one value of `keyword` (a patient, a study), not a pattern or a range."""
        value = self.value_of(keyword)
        return value is not None and is_single_value(keyword, value)


def attribute_keyword(name: str) -> str | None:
    """The DICOM keyword a query parameter names (`PatientID` or `00100020`); None when it names a
    real attribute SIVR cannot use (a sequence path, a private or unknown-to-pydicom tag). Raises
    a 400 when `name` is no DICOM attribute at all."""
    parts = name.split(".")
    for part in parts:
        if _TAG.fullmatch(part):
            continue
        if not _KEYWORD.fullmatch(part) or tag_for_keyword(part) is None:
            raise _bad(f"{name!r} is not a query parameter of QIDO-RS nor a DICOM attribute (keyword or "
                       "8-digit tag); see docs/conformance.md, 'DICOMweb: QIDO-RS', for the keys SIVR supports")
    if len(parts) > 1:
        return None
    if _TAG.fullmatch(name):
        tag = int(name, 16)
        return keyword_for_tag(tag) or None if dictionary_has_tag(tag) else None
    return name


def _uint(name: str, values: list[str]) -> int:
    value = _single(name, values)
    if not _UINT.fullmatch(value):
        raise _bad(f"{name} must be an unsigned integer, not {value!r}")
    return int(value)


def _boolean(name: str, values: list[str]) -> bool:
    value = _single(name, values)
    if value not in ("true", "false"):
        raise _bad(f"{name} must be true or false, not {value!r}")
    return value == "true"


def _single(name: str, values: list[str]) -> str:
    return single_value(name, values) or ""  # parse() reads only the parameters given


def parse(arguments: Iterable[tuple[str, list[str]]], level: str, match_levels: frozenset[str]) -> Search:
    """Check and collect a search's parameters (`request.args.lists()`) for a resource of `level`
    that may match on the IE levels `match_levels`."""
    search = Search()
    unsupported: list[str] = []
    for name, values in arguments:
        if any(len(v) > MAX_VALUE_CHARS for v in values):
            raise _bad(f"the value of {name} is longer than {MAX_VALUE_CHARS} characters")
        if "\x00" in name or any("\x00" in v for v in values):
            raise _bad(f"{name!r}: query parameters cannot contain NUL characters (PS3.18 8.3.1)")
        if name == "limit":
            search.limit = min(_uint(name, values), MAX_RESULTS)
        elif name == "offset":
            search.offset = _uint(name, values)
        elif name == "fuzzymatching":
            search.fuzzy = _boolean(name, values)
        elif name in ("emptyvaluematching", "multiplevaluematching"):
            if _boolean(name, values):
                kind = "Empty" if name.startswith("empty") else "Multiple"
                search.warnings.append(f"The {name} parameter is not supported. {kind} Value Matching has not "
                                       "been performed.")
        elif name == "includefield":
            _includefields(search, values, level, unsupported)
        elif name in NEGOTIATED_PARAMETERS:
            continue
        elif name in IGNORED_PARAMETERS:
            search.warnings.append(f"The {name} parameter is not supported by searches and was ignored.")
        else:
            _match(search, name, values, level, match_levels, unsupported)
    if unsupported:
        search.warnings.append("The following attributes are not supported by this origin server and were "
                               f"ignored: {', '.join(unsupported)}.")
    return search


def _includefields(search: Search, values: list[str], level: str, unsupported: list[str]) -> None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if "all" in names:
        if len(names) > 1 or search.fields_named:
            raise _bad("includefield=all cannot be combined with other includefield values")
        search.include_all = True
        return
    if search.include_all:
        raise _bad("includefield=all cannot be combined with other includefield values")
    search.fields_named = search.fields_named or bool(names)
    for name in names:
        keyword = attribute_keyword(name)
        if keyword is None or (keyword not in KEYS and keyword not in COMPUTED):
            unsupported.append(name)
        elif _level_of(keyword, level) <= LEVELS.index(level):  # lower levels' attributes are not returned
            search.include.add(keyword)


def _level_of(keyword: str, level: str) -> int:
    """The IE level an attribute describes (computed ones describe each answer's own level)."""
    if keyword in KEYS:
        return LEVELS.index(KEYS[keyword].level)
    return LEVELS.index(COMPUTED[keyword] or level)


def _match(search: Search, name: str, values: list[str], level: str, match_levels: frozenset[str],
           unsupported: list[str]) -> None:
    keyword = attribute_keyword(name)
    if keyword is None or keyword not in KEYS:
        unsupported.append(name)
        return
    key = KEYS[keyword]
    listed = key.kind in LIST_KINDS
    if search.value_of(keyword) is not None or (len(values) > 1 and not listed):
        raise _bad(f"{name} is given more than once; give it once (a list of UIDs or modalities is comma-separated)")
    value = "\\".join(v.replace(",", "\\") for v in values) if listed else values[0]
    if not value.strip():
        search.include.add(keyword)  # an empty value is a return key (universal matching)
        return
    if key.level not in match_levels:
        where = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}[key.level]
        raise _bad(f"{name} is a {where}-level attribute: this resource cannot match on it (PS3.18 10.6.1.2.1); "
                   "search the resource of that level instead")
    if not key.matchable:
        unsupported.append(name)
        return
    search.matches.append((keyword, value))
    if _level_of(keyword, level) <= LEVELS.index(level):
        search.include.add(keyword)
