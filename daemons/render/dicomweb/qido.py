"""QIDO-RS (PS3.18 10.6): search the node's catalogue for studies, series and instances.

Six resources: /studies, /studies/{study}/series, /series, /studies/{study}/series/{series}/instances,
/studies/{study}/instances and /instances. Matching is `daemons.render.catalogue.matching` (the same rules as
C-FIND), the parameters are checked by `qido_params`, answers are application/dicom+json with the
attributes PS3.18 tables 10.6.3-3..5 require (those the node knows) plus the ones asked for.

Who may search is `shared.access.require_query_scope`: a search that names one study (in the path
or by StudyInstanceUID) is open to any signed-in user of the node, as the study's images are; one
that names a patient by PatientID is for users of the node's institution; listing without either
is for an administrator of the institution. Every search is audited (`dicomweb.search`), one entry
per study (study searches) or per series record shown, like the record list of the node's own API.

Answers come in a stable order: studies newest first (StudyDate, StudyTime), then series by
SeriesNumber, then instances by InstanceNumber, so `limit`/`offset` pages do not overlap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from flask import Response, request
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement

from daemons.render.catalogue.matching import KEYS, LEVELS, ONLINE, QueryError, field_of, select, where
from daemons.render.dicomweb import ROOT, bp, resolve
from daemons.render.dicomweb.accept import asked
from daemons.render.dicomweb.qido_params import COMPUTED, Search, parse
from daemons.render.dicomweb.syntax import json_answer
from daemons.render.node import node
from daemons.render.stacks import frame_stack
from shared.access import require_query_scope
from shared.audit import record_audit_many
from shared.auth import current_identity, require_auth
from shared.errors import ApiError
from shared.roles import ROLES

STUDY_DEFAULTS = ("StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
                  "ReferringPhysicianName", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate",
                  "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances")
SERIES_DEFAULTS = ("StudyInstanceUID", "Modality", "SeriesDescription", "RetrieveURL", "SeriesInstanceUID",
                   "SeriesNumber", "NumberOfSeriesRelatedInstances", "InstanceAvailability")
IMAGE_DEFAULTS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
                  "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames")
DEFAULTS = {"STUDY": STUDY_DEFAULTS, "SERIES": SERIES_DEFAULTS, "IMAGE": IMAGE_DEFAULTS}


@dataclass(frozen=True)
class Resource:
    """A QIDO-RS resource: the level of its answers, the IE levels it may match on (PS3.18
    10.6.1.2.1) and the levels whose required attributes each answer carries (10.6.3.3)."""

    name: str
    level: str
    match_levels: frozenset[str]
    returns: tuple[str, ...]


ALL_STUDIES = Resource("studies", "STUDY", frozenset({"PATIENT", "STUDY"}), ("STUDY",))
STUDY_SERIES = Resource("study's series", "SERIES", frozenset({"PATIENT", "SERIES"}), ("SERIES",))
ALL_SERIES = Resource("series", "SERIES", frozenset({"PATIENT", "STUDY", "SERIES"}), ("STUDY", "SERIES"))
STUDY_INSTANCES = Resource("study's instances", "IMAGE", frozenset({"PATIENT", "SERIES", "IMAGE"}),
                           ("SERIES", "IMAGE"))
SERIES_INSTANCES = Resource("series' instances", "IMAGE", frozenset({"PATIENT", "IMAGE"}), ("IMAGE",))
ALL_INSTANCES = Resource("instances", "IMAGE", frozenset(LEVELS), ("STUDY", "SERIES", "IMAGE"))


@bp.get("/studies")
@require_auth(*ROLES)
def search_studies() -> Response:
    return _search(ALL_STUDIES)


@bp.get("/studies/<study>/series")
@require_auth(*ROLES)
def search_study_series(study: str) -> Response:
    return _search(STUDY_SERIES, study)


@bp.get("/series")
@require_auth(*ROLES)
def search_series() -> Response:
    return _search(ALL_SERIES)


@bp.get("/studies/<study>/series/<series>/instances")
@require_auth(*ROLES)
def search_series_instances(study: str, series: str) -> Response:
    return _search(SERIES_INSTANCES, study, series)


@bp.get("/studies/<study>/instances")
@require_auth(*ROLES)
def search_study_instances(study: str) -> Response:
    return _search(STUDY_INSTANCES, study)


@bp.get("/instances")
@require_auth(*ROLES)
def search_instances() -> Response:
    return _search(ALL_INSTANCES)


def _search(resource: Resource, study_uid: str | None = None, series_uid: str | None = None) -> Response:
    search = parse(request.args.lists(), resource.level, resource.match_levels)
    media_type = json_answer(asked(), "a QIDO-RS answer")
    the_node = node()
    cat = the_node.models.catalogue
    matches = list(search.matches)
    if series_uid is not None and study_uid is not None:
        resolve.series(study_uid, series_uid)
        matches += [("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)]
    elif study_uid is not None:
        resolve.study(study_uid)
        matches.append(("StudyInstanceUID", study_uid))
    require_query_scope(current_identity(), the_node.institution_id, patient_named=search.names("PatientID"),
                        study_named=study_uid is not None or search.names("StudyInstanceUID"),
                        patient_parameter="PatientID", study_parameter="StudyInstanceUID")
    keywords = _returned(resource, search)
    query = select(cat, resource.level, *_columns(cat, resource.level))
    try:
        query = where(query, cat, matches, fuzzy=search.fuzzy)
    except QueryError as exc:
        raise ApiError(400, "validation_error", str(exc)) from exc
    page = query.order_by(*_order(cat, resource.level)).limit(search.limit).offset(search.offset)
    rows = cast(list[dict[str, Any]], list(page.dicts()))
    remaining = 0
    if len(rows) == search.limit:
        remaining = max(0, query.count() - search.offset - len(rows))
    service = the_node.url.rstrip("/") + ROOT  # the public URL (a client's Host header may lack the port)
    answers = [_answer(row, keywords, resource.level, service) for row in rows]
    _audit(resource, rows)
    if answers:
        response = Response(json.dumps(answers), status=200, content_type=media_type)
    else:
        response = Response(status=204)
        del response.headers["Content-Type"]
    warnings = list(search.warnings)
    if remaining:
        warnings.append(f"There are {remaining} additional results that can be requested")
    for text in warnings:
        response.headers.add("Warning", f"299 {service}: {text}")
    return response


def _returned(resource: Resource, search: Search) -> list[str]:
    """The attributes each answer carries: the required ones of its levels, the matched and
    included ones, or every one the node knows at or above its level (`includefield=all`)."""
    depth = LEVELS.index(resource.level)
    keywords = [k for level in resource.returns for k in DEFAULTS[level]]
    if search.include_all:
        keywords += [k for k, key in KEYS.items() if LEVELS.index(key.level) <= depth]
        keywords += [k for k, level in COMPUTED.items() if level is None or LEVELS.index(level) <= depth]
    keywords += sorted(search.include)
    return sorted(set(keywords), key=lambda k: _spec(k)[0])


def _columns(cat, level: str) -> list:
    depth = LEVELS.index(level)
    columns = [field_of(cat, k).alias(k) for k, key in KEYS.items() if LEVELS.index(key.level) <= depth]
    if depth >= LEVELS.index("SERIES"):
        columns.append(cat.Series.id.alias("_record"))
    if depth >= LEVELS.index("IMAGE"):
        columns.append(cat.Instance.blob.alias("_blob"))
    return columns


def _order(cat, level: str) -> list:
    order = [cat.Study.study_date.desc(), cat.Study.study_time.desc(), cat.Study.id]
    if level in ("SERIES", "IMAGE"):
        order += [cat.Series.series_number, cat.Series.id]
    if level == "IMAGE":
        order += [cat.Instance.instance_number, cat.Instance.id]
    return order


def _answer(row: dict[str, Any], keywords: list[str], level: str, service: str) -> dict[str, Any]:
    values = dict(row)
    url = f"{service}/studies/{row['StudyInstanceUID']}"
    if level != "STUDY":
        url += f"/series/{row['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{row['SOPInstanceUID']}"
        values.update(_image_attributes(row["_record"], row["_blob"]))
    values["RetrieveURL"] = url
    values["InstanceAvailability"] = ONLINE
    answer = {}
    if any(isinstance(v, str) and not v.isascii() for v in values.values()):
        answer["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    for keyword in keywords:
        tag, vr = _spec(keyword)
        answer[tag] = _element(keyword, vr, values.get(keyword))
    return answer


def _image_attributes(record_id: str, blob: int) -> dict[str, Any]:
    """Rows, Columns, BitsAllocated and NumberOfFrames of an instance, from its series' manifest.

    Only an instance the node renders has them there (its frames' stack); a stored-only one (a
    report, a presentation state, a video) is not among the series' images, so it gets none of
    them (the series' values would be invented), only its frame count where it has frames."""
    try:
        manifest = node().manifest(record_id)
    except ApiError:  # a damaged series is quarantined by the lookup; its instances just lack these
        return {}
    first = 0  # the instance's first record frame: its stack gives its size
    for entry in manifest.files:
        if entry.blob == blob:
            stack = frame_stack(manifest, first)
            return {"Rows": stack.rows, "Columns": stack.columns,
                    "BitsAllocated": manifest.render.layout.bits_allocated, "NumberOfFrames": entry.frames}
        first += entry.frames
    frames = next((entry.frames for entry in manifest.stored_only if entry.blob == blob), 0)
    return {"NumberOfFrames": frames or None}


@cache
def _spec(keyword: str) -> tuple[str, str]:
    """An attribute's tag as DICOM JSON writes it (`0020000D`) and its VR."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, f"{keyword} is a DICOM keyword"
    return f"{tag:08X}", dictionary_VR(tag)


def _element(keyword: str, vr: str, value: Any) -> dict[str, Any]:
    """One attribute in the DICOM JSON model (PS3.18 F.2); an empty value has no "Value"."""
    if value is None or value == "":
        return {"vr": vr}
    if vr == "PN":  # as /metadata writes it (pydicom): component groups split on "=" (PS3.18 F.2.2)
        return DataElement(keyword, vr, value).to_json_dict(None, 0)
    if vr in ("IS", "US", "UL", "SS", "SL"):
        return {"vr": vr, "Value": [int(value)]}
    if keyword == "ModalitiesInStudy":
        return {"vr": vr, "Value": [m for m in value.split("\\") if m]}
    return {"vr": vr, "Value": [str(value)]}


def _audit(resource: Resource, rows: list[dict[str, Any]]) -> None:
    """One `dicomweb.search` entry per study shown (study searches) or per series record shown."""
    models = node().models
    if resource.level == "STUDY":
        shown = [("study", row["StudyInstanceUID"]) for row in rows]
    else:
        shown = [("record", record_id) for record_id in dict.fromkeys(row["_record"] for row in rows)]
    detail = f"{resource.name}: {request.query_string.decode('utf-8', 'replace')[:1500]} results={len(rows)}"
    record_audit_many(models.AuditEntry, "dicomweb.search", shown or [(resource.level.lower(), None)], detail)
