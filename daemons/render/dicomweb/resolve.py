"""Finding what a DICOMweb path names: a study, a series or an instance of the node's catalogue.

Every service resolves its path here, so an unknown UID is the same 404 everywhere and an
instance's frames map to the same frames of its series' record (the record the 2D, MPR and 3D
renderers load). Series of a study come in SeriesNumber order, instances in InstanceNumber order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from daemons.render.api.query import bad
from daemons.render.node import Node, node
from daemons.render.store.local import StoreError
from daemons.render.stored_only import require_renderable, stored_only_error
from daemons.render.uids import is_uid
from shared.errors import ApiError

#: a `/frames/{list}` path segment: frame numbers from 1 (ASCII digits, at most 9), comma-separated
FRAME_LIST_PATTERN = r"[1-9][0-9]{0,8}(?:,[1-9][0-9]{0,8})*"
_FRAME_LIST = re.compile(FRAME_LIST_PATTERN)


def frame_numbers(text: str, limit: int) -> list[int]:
    """The frame numbers of a `/frames/{list}` segment (`1,3,5` -> [1, 3, 5]), at most `limit`;
    400 `validation_error` otherwise. One rule for WADO-RS frames and rendered frames alike.

    Matched with an ASCII pattern, not `str.isdigit`: that also takes `²` or `१`, which `int()`
    refuses or reads as another number, and a number of thousands of digits `int()` refuses too.
    A number past the instance's last frame is 404 (`FrameSpan.record_frame`). A number listed
    twice is refused: a 4 kB path of `1,1,1,...` asked for 1,800 copies of one rendered frame,
    2.4 GB of answer for one request.
    """
    numbers = [int(item) for item in text.split(",")] if _FRAME_LIST.fullmatch(text) else []
    if not numbers or len(numbers) > limit:
        raise bad(f"the frame list {text[:80]!r} must be frame numbers from 1, separated by commas (at most {limit})")
    seen: set[int] = set()
    for number in numbers:
        if number in seen:
            raise bad(f"the frame list names frame {number} more than once: each frame is listed once (PS3.18 "
                      "frame lists have no duplicates)")
        seen.add(number)
    return numbers


def _not_found(what: str, uid: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} with UID {uid} is stored on this node")


def _require_uids(*named: tuple[str, str]) -> None:
    """404 for a path naming a study, series or instance by what is no UID, before any query: the
    node stores instances only under UIDs (`daemons.render.uids`), so none is found, and PostgreSQL
    refuses a NUL in a text parameter outright (`/studies/1%00` was a 500 there, a 404 on SQLite)."""
    for what, uid in named:
        if not is_uid(uid):
            raise ApiError(404, "not_found", f"no {what} with UID {uid[:80]!r} is stored on this node: it is not "
                           "a UID (digits and dots, at most 64 characters)")


def _catalogue():
    return node().models.catalogue


def study(study_uid: str) -> Any:
    """The catalogue row of a study (404 when unknown)."""
    _require_uids(("study", study_uid))
    cat = _catalogue()
    row = cat.Study.get_or_none(cat.Study.study_uid == study_uid)
    if row is None:
        raise _not_found("study", study_uid)
    return row


def series_of_study(study_uid: str) -> list[Any]:
    """The series rows of a study (404 when the study is unknown)."""
    cat = _catalogue()
    return list(cat.Series.select().where(cat.Series.study == study(study_uid))
                .order_by(cat.Series.series_number, cat.Series.id))


def _series_row(study_uid: str, series_uid: str) -> Any:
    """The series row of a series within a study, None when unknown (both must be UIDs)."""
    cat = _catalogue()
    return (cat.Series.select().join(cat.Study)
            .where(cat.Study.study_uid == study_uid, cat.Series.series_uid == series_uid).first())


def series(study_uid: str, series_uid: str) -> Any:
    """The series row (its `id` is the record id) of a series within a study (404 when unknown)."""
    _require_uids(("study", study_uid), ("series", series_uid))
    row = _series_row(study_uid, series_uid)
    if row is None:
        raise _not_found("series", series_uid)
    return row


def instances_of_series(series_row: Any) -> list[Any]:
    cat = _catalogue()
    return list(cat.Instance.select().where(cat.Instance.series == series_row)
                .order_by(cat.Instance.instance_number, cat.Instance.sop_instance_uid))


def renderable_instances(series_row: Any) -> list[Any]:
    """The instances of a series that have frames (its stored-only ones left out: they are never
    rendered); 415 `stored_only` when the series has instances but all are stored only."""
    rows = instances_of_series(series_row)
    manifest = node().manifest(series_row.id)
    if not manifest.stored_only:
        return rows
    require_renderable(manifest)
    return [row for row in rows if manifest.stored_only_blob(row.blob) is None]


def image_series(series_rows: list[Any]) -> list[Any]:
    """The series of `series_rows` that have frames, in their order: a series stored only (a report,
    key objects, presentation states) has nothing to show, so a study's rendered resources pass over
    it rather than answer 415 for a study that does hold images. 415 `stored_only` when every series
    is such; 404 when none has frames for another reason."""
    shown = [row for row in series_rows if node().manifest(row.id).meta.frames > 0]
    if not shown:
        for row in series_rows:
            require_renderable(node().manifest(row.id))
        raise ApiError(404, "not_found", "the study has no series with frames")
    return shown


def instance(study_uid: str, series_uid: str, sop_uid: str) -> Any:
    """The instance row within its series and study (404 when unknown)."""
    _require_uids(("study", study_uid), ("series", series_uid), ("instance", sop_uid))
    cat = _catalogue()
    row = (cat.Instance.select().join(cat.Series).join(cat.Study)
           .where(cat.Study.study_uid == study_uid, cat.Series.series_uid == series_uid,
                  cat.Instance.sop_instance_uid == sop_uid).first())
    if row is None:
        raise _not_found("instance", sop_uid)
    return row


def audited_object(view_args: dict[str, Any]) -> tuple[str, str] | None:
    """What a DICOMweb path names, for the `access.denied` entry of a refused request
    (`shared.audit.OBJECT_NAMER_EXTENSION`): its series' record, as the reads of that series are
    audited (`record.view` of the record id), else its study by UID, as QIDO-RS audits studies;
    None for a path naming neither (a search of every study). Only the audit sees it, so the
    refusal answered says no more about what the node holds than before."""
    study_uid = view_args.get("study", view_args.get("study_uid"))
    if not isinstance(study_uid, str):
        return None
    series_uid = view_args.get("series", view_args.get("series_uid"))
    if isinstance(series_uid, str) and is_uid(study_uid) and is_uid(series_uid):  # no query of a NUL
        row = _series_row(study_uid, series_uid)
        if row is not None:
            return "record", row.id
    return "study", study_uid[:64]


def read_instance(the_node: Node, instance_row: Any) -> bytes:
    """The stored file of an instance, bit-exact (decrypted and checked against its SHA-256); 422 when
    the store's copy fails that check, 404 when its series was deleted since it was looked up. `the_node`
    is passed, not looked up: worker threads read too."""
    try:
        return the_node.store.read_file(instance_row.series_id, instance_row.blob, instance_row.sha256)
    except FileNotFoundError as exc:
        raise ApiError(404, "not_found", f"instance {instance_row.sop_instance_uid} is no longer stored "
                       "(its series was deleted)") from exc
    except StoreError as exc:
        raise ApiError(422, "store_corrupt", f"instance {instance_row.sop_instance_uid} failed verification: "
                       f"{exc}") from exc


@dataclass(frozen=True)
class FrameSpan:
    """Where an instance's frames sit in its series' record: record frames first .. first+count-1."""

    record_id: str
    first: int
    count: int

    def record_frame(self, number: int) -> int:
        """The record frame index of DICOM frame `number` (1-based, as in a `/frames/{n}` path)."""
        if not 1 <= number <= self.count:
            raise ApiError(404, "not_found", f"frame {number} does not exist: the instance has frames 1..{self.count}")
        return self.first + number - 1


def frame_span(instance_row: Any) -> FrameSpan:
    """The record frames of an instance, from its series' manifest (files are in frame order);
    415 `stored_only` for an instance that has none because it is stored only."""
    record_id = instance_row.series_id
    manifest = node().manifest(record_id)
    kept = manifest.stored_only_blob(instance_row.blob)
    if kept is not None:
        raise stored_only_error(f"instance {instance_row.sop_instance_uid}", kept)
    start = 0
    for entry in manifest.files:
        if entry.blob == instance_row.blob:
            return FrameSpan(record_id, start, entry.frames)
        start += entry.frames
    raise ApiError(404, "not_found", f"instance {instance_row.sop_instance_uid} has no frames in its series")
