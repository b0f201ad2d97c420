"""The one way instances enter a render node, whichever door they came through (upload, C-STORE).

`Ingest.add` validates the files (isolated decode workers, the same rules as every upload),
then stores them into their series: a new series gets a store folder whose id is derived from
(institution, SeriesInstanceUID), so it is the same id however its instances arrive; an existing
series (including one stored before the catalogue existed, which keeps its content-hash id) gets
the new instances appended: their blobs, then one journal part naming them (`Store.append_files`).
A re-sent identical instance is a no-op; a different instance under a stored SOPInstanceUID is
refused (409) and audited, whether that UID is stored in the same series or in another one.

An append costs what the new files cost, not what the series holds: it checks the new files
against what the series keeps for that (`series_analysis.check_append`: the same refusals as an
upload of the grown series), writes their blobs and journal part and their catalogue rows, and
does not analyse the series. The series is analysed when it is next read after a change
(`settle`, through `Node.manifest`: slice order, stacks, slice table, exactly as one upload of the
same files), when its journal reaches JOURNAL_BOUND entries, and at the "series complete" rule;
the analysis is stored as the manifest's new base. The parsed files of a series being received
stay in RAM for that, and the one series-level step that needs a decode (the automatic window,
sampled from the middle frame) is provisional until the series is complete. The "series
complete" rule is a stable age (`dicom.series_complete_s`): once no instance has arrived for that
long, the series is analysed exactly once more (its manifest is then the one a single upload of
the same files gives) and its files leave RAM. Until then the series is viewable as it grows.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn

import peewee
from flask import current_app
from pydicom.dataset import Dataset

from daemons.render.catalogue.index import (
    UID_BATCH,
    InstanceHeader,
    backfill,
    forget_series,
    index_series,
    patient_key,
)
from daemons.render.ingest.isolation import IsolatedFailure, isolated_checker
from daemons.render.ingest.resend import Resent, compare_resent, same_pixels
from daemons.render.ingest.series_analysis import (
    Growth,
    Provisional,
    analyse_files,
    check_append,
    check_consistent,
    journal_entry,
)
from daemons.render.ingest.upload_checks import (
    MIB,
    ParsedFile,
    UploadError,
    check_upload,
    parse_stored_file,
)
from daemons.render.ingest.upload_memory import UploadMemory, UploadsPerUser
from daemons.render.models import KEY_IMAGES_LOCK, remember_deleted
from daemons.render.node import Node
from daemons.render.runtime import FolderLock
from daemons.render.store.interface import StoreUnavailable
from daemons.render.store.local import Precompressed
from daemons.render.store.manifest import Manifest, Meta
from daemons.render.uids import identity_problem, uid_of
from shared.audit import record_audit
from shared.db import exclusive_transaction, utcnow
from shared.errors import ApiError, log_failure, not_found

log = logging.getLogger(__name__)
CACHE_BYTES = 256 * MIB
INGEST_EXTENSION = "sivr_ingest"
JOURNAL_BOUND = 128  # journal entries after which an append analyses the series and stores the base anew
SERIES_LOCKS = 256  # lock files the series' appends share across the node's workers


@dataclass(frozen=True)
class Actor:
    """Who sends: an HTTP user (ids None: taken from the request) or a DICOM peer."""

    user_id: str | None = None
    username: str | None = None
    client_ip: str | None = None


@dataclass(frozen=True)
class IngestResult:
    record_id: str
    created: bool
    added: int
    unchanged: int


def _payloads(files: list[ParsedFile], ahead: dict[str, Precompressed]) -> list[bytes | Precompressed]:
    """What the store writes of each file: its bytes, or their compression started ahead (only
    ever the compression of those very bytes)."""
    return [_payload(f, ahead.get(f.name)) for f in files]


def _payload(file: ParsedFile, ahead: Precompressed | None) -> bytes | Precompressed:
    return ahead if ahead is not None and ahead.raw is file.raw else file.raw


def _named(instances: dict[str, ParsedFile]) -> str:
    """The store's audit entry names a lone instance (a C-STORE's, a one-part STOW-RS), so that the
    entry is the whole record of that transfer: the DICOM door writes no second one."""
    return f" sop_instance_uid={next(iter(instances))}" if len(instances) == 1 else ""


def _uploader(actor: Actor) -> str:
    """What `stored_record.uploaded_by` keeps of the actor who stored a series (its column's length)."""
    return (actor.user_id or "")[:36]


def series_record_id(institution_id: str, series_uid: str) -> str:
    """The record id of a new series: stable for (institution, SeriesInstanceUID), 64 hex digits."""
    return hashlib.sha256(f"sivr-series:{institution_id}:{series_uid}".encode()).hexdigest()


@dataclass
class _Received:
    """A series in RAM while it is received: its parsed files (SOP Instance UID -> file, blob), the
    automatic window of its last analysis (kept by the provisional analysis), the store version
    they were read or written at (an append commits only onto that version), what appends are
    checked against (`growth`) and how many files its journal holds (`pending`). `outdated_at`
    (monotonic time): the series changed behind this worker then; its files are kept only to spare
    the next read parsing them again (`Ingest._received`), for a series-complete delay at most."""

    files: dict[str, tuple[ParsedFile, int]]
    auto_window: dict | None
    version: str
    growth: Growth
    pending: int
    outdated_at: float | None = None
    held_versions: frozenset[str] = frozenset()  # every version this worker held the series at

    @property
    def current(self) -> bool:
        return self.outdated_at is None

    @property
    def next_blob(self) -> int:
        return max((blob for _, blob in self.files.values()), default=-1) + 1


class _Deleted(Exception):
    """The series left the store before its analysis could read it: deleted while the analysis
    waited for its lock (a reader that found it grown), or by another node sharing the store."""


class _ComparePixels(Exception):
    """Files sent again in another transfer syntax than their stored copies (SOP Instance UID ->
    (SHA-256, bytes) of the copy): only their pixels can tell whether they are those instances,
    compared by `Ingest.add` once it has left the node's locks."""

    def __init__(self, record_id: str, stored: dict[str, tuple[str, bytes]]):
        super().__init__(record_id)
        self.record_id, self.stored = record_id, stored


class Ingest:
    """Stores validated instances into series; one per node, shared by all its front doors."""

    def __init__(self, node: Node, memory: UploadMemory, uploads: UploadsPerUser, complete_s: float = 60.0):
        self.node = node
        self.memory = memory  # what the bodies arriving through the three doors hold at once
        self.uploads = uploads  # the HTTP uploads each user sends at once
        self.complete_s = complete_s
        self._locks: dict[int, FolderLock] = {}
        self._identity_lock = node.registry.runtime.lock("identity")
        self._locks_lock = threading.Lock()
        self._parsed: OrderedDict[str, _Received] = OrderedDict()
        self._parsed_lock = threading.Lock()
        # series grown since their last exact analysis: record id -> (SeriesInstanceUID, monotonic time of the append)
        self._growing: dict[str, tuple[str, float]] = {}
        #: why the store could not give each series its final analysis, as last logged (`_tell_unavailable`)
        self._unavailable: dict[str, str] = {}
        self._growing_lock = threading.Lock()
        self._on_complete: list[Callable[[str, dict[str, Dataset]], None]] = []
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        node.record_index.on_change(self._changed_elsewhere)
        node.settle = self.settle

    def _lock_for(self, series_uid: str) -> FolderLock:
        """The lock of one series' appends and analyses, held across the node's workers (re-entrant:
        an append that follows the store reads the manifest through `Node.manifest`, which may
        settle the series). Series share SERIES_LOCKS lock files, so that a node receiving series
        for months keeps a bounded folder; two series of one bucket only take turns."""
        bucket = int(_series_name(series_uid).rpartition("-")[2], 16) % SERIES_LOCKS
        with self._locks_lock:
            lock = self._locks.get(bucket)
            if lock is None:
                lock = self._locks[bucket] = self.node.registry.runtime.lock(f"series-{bucket:03d}")
            return lock

    def _audit(self, actor: Actor, action: str, record_id: str | None, detail: str = "") -> None:
        record_audit(self.node.models.AuditEntry, action, "record", record_id, detail=detail,
                     user_id=actor.user_id, username=actor.username, client_ip=actor.client_ip)

    def add(self, uploads: list[tuple[str, bytes]], actor: Actor, expected_sop_class: str | None = None,
            checked: list[ParsedFile | None] | None = None,
            expected_sop_instance: str | None = None,
            ahead: dict[str, Precompressed] | None = None) -> IngestResult:
        """Validate `uploads` (one series) and store what is new; UploadError names any refusal.

        `expected_sop_class` (C-STORE's Affected SOP Class) must be every file's SOP Class UID, and
        `expected_sop_instance` (its Affected SOP Instance) every file's SOP Instance UID: a data set
        that is another instance than the request named is refused, or the peer would be told that
        the instance it named was stored.
        `checked`: the uploads the caller already checked with `upload_checks.check_native`
        (`check_upload`). `ahead`: their compression for the store, started by the caller (upload
        name -> `Precompressed` of those very bytes) while it checked the next ones.
        """
        node = self.node
        if ahead is None:
            # one file (a C-STORE): its compression for the store runs on another core while it is checked
            # (wasted on a file then refused or sent again, never started for one over the upload limit)
            ahead = ({name: Precompressed.start(raw) for name, raw in uploads}
                     if len(uploads) == 1 and len(uploads[0][1]) <= node.limits.max_upload_bytes else {})
        files = check_upload(uploads, node.limits, isolated_checker(node.decoder), checked)
        by_uid: dict[str, ParsedFile] = {}
        for file in files:
            sop_class = uid_of(file.dataset, "SOPClassUID")
            if expected_sop_class is not None and sop_class != expected_sop_class:
                raise UploadError(422, "sop_class_mismatch", f"{file.name}: its SOP Class UID "
                                  f"{sop_class} is not the one it was sent as ({expected_sop_class})")
            uid = file.sop_instance_uid
            if expected_sop_instance is not None and uid != expected_sop_instance:  # compared first, as dcmtk does
                raise UploadError(422, "sop_instance_mismatch", f"{file.name}: its SOP Instance UID {uid} is not "
                                  f"the one it was sent as ({expected_sop_instance})")
            problem = identity_problem(file.dataset)
            if problem:
                raise UploadError(422, "invalid_attribute", f"{file.name}: {problem}")
            if uid in by_uid:
                raise UploadError(409, "instance_conflict",
                                  f"{file.name}: two different files carry SOP Instance UID {uid}")
            by_uid[uid] = file
        # the files agree on their series and patient first, so that a refusal of the series as a
        # whole (another patient's study) speaks for every file, not for the first one alone
        check_consistent(files)
        series_uid = uid_of(files[0].dataset, "SeriesInstanceUID")
        # the node's identity lock first: the checks against other series (their patient, their
        # instances' UIDs) and the store they allow are one step for the whole node, or two new
        # series sent at once (two associations, two workers) would both pass them: two patients
        # under one study, one SOP Instance UID in two series. A settle holds its series' lock
        # alone and never waits for this one.
        resent: dict[str, str] = {}  # SOP Instance UID -> SHA-256 of the stored copy it was found to be
        while True:
            try:
                with self._identity_lock, self._lock_for(series_uid):
                    self._refuse_other_series(series_uid, by_uid, actor)
                    series = self._existing_series(series_uid)
                    if series is None:
                        self._refuse_new_series_of_another_patient(files[0], actor)
                        return self._create(series_uid, files, by_uid, actor, ahead, resent)
                    return self._append(series.id, series_uid, by_uid, actor, ahead, resent)
            except _ComparePixels as compare:  # outside the locks: decoding takes long
                resent.update(self._same_pixels(compare, by_uid, actor))

    def _same_pixels(self, compare: _ComparePixels, incoming: dict[str, ParsedFile], actor: Actor) -> dict[str, str]:
        """The stored copies that files sent again in another transfer syntax are (`resend`), compared
        in decode workers; 409 `instance_conflict` (audited) for the first that is another instance.
        A comparison the worker could not finish (decoding both files at once ran past its time or
        memory) refuses the file as a failed check does (422), without calling it another instance."""
        for uid, (_, stored) in compare.stored.items():
            name = incoming[uid].name
            try:
                same = self.node.decoder.call(same_pixels, stored, incoming[uid].raw)
            except IsolatedFailure as exc:
                raise UploadError(422, "not_compared", f"{name}: SOP Instance UID {uid} is stored in another transfer "
                                  f"syntax and the two could not be compared ({exc.reason}); nothing was stored",
                                  name) from exc
            if not same:
                self._conflict(actor, compare.record_id, uid, name)
        return {uid: sha256 for uid, (sha256, _) in compare.stored.items()}

    def _conflict(self, actor: Actor, record_id: str, uid: str, name: str) -> NoReturn:
        self._audit(actor, "instance.conflict", record_id, detail=f"sop_instance_uid={uid}")
        raise UploadError(409, "instance_conflict", f"{name}: SOP Instance UID {uid} is already stored with "
                          "different content; an instance is never replaced", name)

    def _refuse_other_series(self, series_uid: str, incoming: dict[str, ParsedFile], actor: Actor) -> None:
        """Refuse an instance whose SOP Instance UID the node holds in another series, as a different
        instance under a stored UID is refused within a series: a SOP Instance UID names one instance
        (PS3.5 9.1), and a C-GET or C-MOVE of that UID would otherwise send two different instances.
        Series stored twice before the catalogue (two records of one Series Instance UID) share
        their instances' UIDs and are not in conflict. The other series is not named: the sender
        may not be allowed to know it exists."""
        cat = self.node.models.catalogue
        uids = list(incoming)
        for start in range(0, len(uids), UID_BATCH):
            row = (cat.Instance.select(cat.Instance.sop_instance_uid, cat.Instance.series)
                   .join(cat.Series)
                   .where(cat.Instance.sop_instance_uid.in_(uids[start:start + UID_BATCH])
                          & (cat.Series.series_uid != series_uid))
                   .first())
            if row is not None:
                uid = row.sop_instance_uid
                self._audit(actor, "instance.conflict", row.series_id,
                            detail=f"sop_instance_uid={uid} sent in series_instance_uid={series_uid}")
                raise UploadError(409, "instance_conflict",
                                  f"{incoming[uid].name}: SOP Instance UID {uid} is already stored in another "
                                  "series; an instance is never replaced or stored twice under one UID",
                                  incoming[uid].name)

    def _refuse_new_series_of_another_patient(self, file: ParsedFile, actor: Actor) -> None:
        """A study belongs to one patient: a series naming a stored study of another DICOM patient
        (PatientID and issuer, as the catalogue keys patients) is refused, or the catalogue would
        file it under that study's patient, and searches by its own patient would not find it.
        (A new series only: the files of one request are checked against each other, and an append
        against its series, as an upload of the grown series is.) The same for a series deleted
        from this node for another patient (`models.remember_deleted`): its record id is this one's, and
        findings keep their links to it. The other patient is not named: the sender may not be
        allowed to know of them."""
        cat = self.node.models.catalogue
        study_uid = uid_of(file.dataset, "StudyInstanceUID")
        series_uid = uid_of(file.dataset, "SeriesInstanceUID")
        gone = self.node.models.DeletedSeries.get_or_none(
            self.node.models.DeletedSeries.id == series_record_id(self.node.institution_id, series_uid))
        if gone is not None and (gone.patient_id, gone.issuer) != patient_key(file.dataset):
            self._audit(actor, "series.conflict", gone.id, detail=f"series_instance_uid={series_uid}")
            raise UploadError(409, "series_conflict",
                              f"{file.name}: Series Instance UID {series_uid} was deleted from this node for another "
                              "patient; a new series under it would take over the links to that one", whole_series=True)
        stored = (cat.Patient.select(cat.Patient.patient_id, cat.Patient.issuer).join_from(cat.Patient, cat.Study)
                  .where(cat.Study.study_uid == study_uid).tuples().first())
        if stored is not None and tuple(stored) != patient_key(file.dataset):
            self._audit(actor, "study.conflict", None,
                        detail=f"study_instance_uid={study_uid} series_instance_uid={series_uid}")
            raise UploadError(409, "study_conflict",
                              f"{file.name}: Study Instance UID {study_uid} is stored for another patient (another "
                              "Patient ID or issuer); a study belongs to one patient", whole_series=True)

    def _existing_series(self, series_uid: str):
        cat, stored = self.node.models.catalogue, self.node.models.StoredRecord
        return (cat.Series.select(cat.Series.id)
                .join(stored, on=(cat.Series.id == stored.id))
                .where(cat.Series.series_uid == series_uid)
                .order_by(stored.stored_at, cat.Series.id).first())

    def _create(self, series_uid: str, files: list[ParsedFile], by_uid: dict[str, ParsedFile], actor: Actor,
                ahead: dict[str, Precompressed], resent: dict[str, str]) -> IngestResult:
        node = self.node
        record_id = series_record_id(node.institution_id, series_uid)
        analysed = analyse_files(files, node.limits)
        files = analysed.files
        blobs = {f.sha256: index for index, f in enumerate(files)}
        manifest = _with_ids(analysed.manifest, record_id, blobs, files)
        models = node.models
        if not node.store.write_record(record_id, _payloads(files, ahead), manifest):
            # the folder is stored but not catalogued (a crash between the two): index it, then append
            backfill(node.store, models.catalogue, [record_id])
            self._index_row(record_id, node.store.read_manifest(record_id).meta, actor)
            return self._append(record_id, series_uid, by_uid, actor, ahead, resent)
        try:
            with models.database.atomic():  # the record row and the catalogue rows: one commit
                if not self._index_row(record_id, manifest.meta, actor):
                    self._claim_adopted_row(record_id, actor)
                index_series(models.catalogue, record_id,
                             [InstanceHeader(f.dataset, f.sha256, blobs[f.sha256]) for f in files])
        except Exception:
            # nothing half-stored: a series the catalogue could not take leaves the store again (else
            # it would be listed as a record that no search finds), and the caller answers the error
            try:
                node.store.delete(record_id)
            except Exception:  # the catalogue's error is the one to answer; the next upload backfills
                log.exception("series %s: its files could not leave the store after its rows failed", record_id)
            raise
        self._audit(actor, "record.upload", record_id, detail=f"instances={len(files)}{_named(by_uid)}")
        return IngestResult(record_id, True, len(files), 0)

    def _index_row(self, record_id: str, meta: Meta, actor: Actor) -> bool:
        """The `stored_record` row of a series folder (kept if it exists: the store is the truth);
        False where it existed."""
        models = self.node.models
        try:  # the row exists already: its INSERT is undone alone (a savepoint), not the caller's transaction
            with models.database.atomic():
                models.StoredRecord.create(
                    id=record_id, files=meta.files, rows=meta.rows, columns=meta.columns,
                    frames=meta.frames, modality=meta.record_modality, size_bytes=meta.size_bytes,
                    uploaded_by=_uploader(actor), stored_at=utcnow())
        except peewee.IntegrityError:
            return False
        return True

    def _claim_adopted_row(self, record_id: str, actor: Actor) -> None:
        """`actor` uploaded the series this call has just written to the store, yet its row exists: a
        request naming the series in between (`RecordIndex.find`, in any worker of the node) adopted
        it as stored by another node, with no uploader. Left so, the uploader's DELETE was refused
        (403) and the work list said nobody sent it. One conditional UPDATE, in the upload's
        transaction: whichever worker adopted it, on SQLite as on PostgreSQL."""
        stored = self.node.models.StoredRecord
        stored.update(uploaded_by=_uploader(actor)).where(
            (stored.id == record_id) & (stored.uploaded_by == "")).execute()

    def _append(self, record_id: str, series_uid: str, incoming: dict[str, ParsedFile], actor: Actor,
                ahead: dict[str, Precompressed], resent: dict[str, str]) -> IngestResult:
        """Store the instances of `incoming` the series does not hold. One it holds under the same
        SOP Instance UID must be that instance (`resend`; `resent` names those already compared by
        their pixels); `_ComparePixels` when some can only be told by their pixels."""
        node, cat = self.node, self.node.models.catalogue
        # the series as the store holds it now: another node may have grown it (the catalogue follows).
        # When the store still holds the version this node last wrote, there is nothing to follow, and
        # re-reading the manifest (which grows with the series) at every C-STORE is skipped.
        with self._parsed_lock:
            held = self._parsed.get(record_id)
        if held is None or node.store.manifest_version(record_id) != held.version:
            node.manifest(record_id, fresh=True, analysed=False)
            self._outdate_parsed(record_id)
        stored = self._stored_copies(record_id, list(incoming))
        new: dict[str, ParsedFile] = {}
        compare: dict[str, tuple[str, bytes]] = {}
        for uid, file in incoming.items():
            if uid not in stored:
                new[uid] = file
                continue
            sha256, blob = stored[uid]
            if sha256 in (file.sha256, resent.get(uid)):
                continue
            copy = node.store.read_file(record_id, blob, sha256)
            verdict = compare_resent(copy, file.raw)
            if verdict is Resent.OTHER:
                self._conflict(actor, record_id, uid, file.name)
            if verdict is Resent.COMPARE_PIXELS:
                compare[uid] = (sha256, copy)
        if compare:
            raise _ComparePixels(record_id, compare)
        unchanged = len(incoming) - len(new)
        if not new:
            self._audit(actor, "record.upload_again", record_id, detail=f"instances={unchanged}{_named(incoming)}")
            return IngestResult(record_id, False, 0, unchanged)
        received = self._received(record_id)
        files = list(new.values())
        check_append(received.growth, files, node.limits)
        first_blob = received.next_blob
        blobs = {uid: first_blob + offset for offset, uid in enumerate(new)}
        version = node.store.append_files(record_id, first_blob, _payloads(files, ahead),
                                          [journal_entry(f, blobs[uid]) for uid, f in new.items()], received.version)
        node.record_index.note_version(record_id, version)
        growth = replace(received.growth, rescales=set(received.growth.rescales))
        growth.add(files)
        with node.models.database.atomic():  # the record row and the catalogue rows: one commit
            stored_record = node.models.StoredRecord
            stored_record.update(files=stored_record.files + sum(f.stored_only is None for f in files),
                                 frames=growth.frames,
                                 size_bytes=stored_record.size_bytes + sum(len(f.raw) for f in files),
                                 ).where(stored_record.id == record_id).execute()
            index_series(cat, record_id, [InstanceHeader(f.dataset, f.sha256, blobs[uid]) for uid, f in new.items()])
        self._drop_views(record_id)
        self._remember(record_id, replace(
            received, version=version, growth=growth, pending=received.pending + len(files),
            files={**received.files, **{uid: (f, blobs[uid]) for uid, f in new.items()}}))
        self._note_growth(record_id, series_uid)
        # outside the transaction: an entry written inside one is exported only after an HTTP view,
        # and a C-STORE has none (shared.audit_export)
        self._audit(actor, "record.append", record_id,
                    detail=f"added={len(new)} unchanged={unchanged}{_named(incoming)}")
        if received.pending + len(files) >= JOURNAL_BOUND:
            try:
                self._settle(record_id, series_uid)
            except Exception as exc:  # the instances are stored: the series is analysed at its next read instead
                log_failure(f"series {record_id}: its analysis at the journal bound failed", exc)
        return IngestResult(record_id, False, len(new), unchanged)

    # --- the series' analysis, stored as the manifest's new base ----------------------------------
    def settle(self, record_id: str, series_uid: str) -> tuple[Manifest, str]:
        """The manifest of a series whose journal holds appended files, analysed (provisionally, as
        while it grows) and stored as its new base: what `Node.manifest` gives every reader. The
        series then counts as growing here, so the series-complete rule analyses it exactly."""
        try:
            with self._lock_for(series_uid):
                return self._settle(record_id, series_uid)
        except _Deleted as exc:
            raise not_found("record", record_id) from exc
        except UploadError as exc:  # files each checked on arrival that cannot be one series: none should
            log.exception("series %s cannot be analysed", record_id)
            raise ApiError(422, "unreadable", f"record {record_id} cannot be analysed: {exc.message}") from exc

    def _settle(self, record_id: str, series_uid: str, exact: bool = False) -> tuple[Manifest, str]:
        """Analyse the series as the store holds it now and store that as its base (the caller
        holds the series' lock); `exact` samples the automatic window again (series complete).
        `_Deleted` for a series gone from the store, which this worker then forgets: its reader's
        analysis, or its completion, failed on the folder gone (a 500, an error logged at every
        stable age for ever, as a failed completion is tried again)."""
        node = self.node
        try:
            stored, version = node.store.read_manifest_versioned(record_id)
        except FileNotFoundError as exc:
            self.forget(record_id)
            raise _Deleted(record_id) from exc
        received = self._received(record_id)
        if received.version != version:  # the store changed behind this worker: read the series again
            self._outdate_parsed(record_id)
            received = self._received(record_id)
        blobs = {file.sha256: blob for file, blob in received.files.values()}
        analysed = analyse_files([f for f, _ in received.files.values()], node.limits,
                                 None if exact else Provisional(received.auto_window))
        manifest = _with_ids(analysed.manifest, record_id, blobs, analysed.files)
        if manifest == stored:
            return stored, version
        version = node.store.replace_manifest(record_id, manifest, received.version)
        node.record_index.note_version(record_id, version)
        meta = manifest.meta
        node.models.StoredRecord.update(files=meta.files, frames=meta.frames, size_bytes=meta.size_bytes,
                                        rows=meta.rows, columns=meta.columns,  # the leading stack's size
                                        ).where(node.models.StoredRecord.id == record_id).execute()
        self._drop_views(record_id, manifest)
        self._remember(record_id, replace(received, version=version, pending=0,
                                          auto_window=manifest.render.auto_window))
        with self._growing_lock:
            self._growing.setdefault(record_id, (series_uid, time.monotonic()))
        return manifest, version

    def _stored_copies(self, record_id: str, uids: list[str]) -> dict[str, tuple[str, int]]:
        """SOP Instance UID -> (SHA-256, blob) of those of `uids` the series holds already."""
        cat = self.node.models.catalogue
        found: dict[str, tuple[str, int]] = {}
        for start in range(0, len(uids), UID_BATCH):
            rows = (cat.Instance.select(cat.Instance.sop_instance_uid, cat.Instance.sha256, cat.Instance.blob)
                    .where((cat.Instance.series == record_id)
                           & cat.Instance.sop_instance_uid.in_(uids[start:start + UID_BATCH])))
            found.update((row.sop_instance_uid, (row.sha256, row.blob)) for row in rows)
        return found

    def _drop_views(self, record_id: str, analysed: Manifest | None = None) -> None:
        """Viewers reload a series whose frames changed (its status says "unloaded" until they ask
        again). A new analysis of the same frames (`analysed`: a new automatic window) keeps the
        node's decoded frames: the workers map them again with the new manifest."""
        node = self.node
        if analysed is None:
            node.registry.unload(record_id)
        else:
            node.registry.changed(record_id, analysed)
        node.forget(record_id)
        node.images.drop_record(record_id)

    def _received(self, record_id: str) -> _Received:
        """The stored files of a series, parsed (kept in RAM while it is being received).

        A series that changed behind this worker is read again from its manifest, but only the
        files this worker does not hold (same blob, same SHA-256) are read and parsed: two workers
        taking turns at one series (STOW-RS requests sent at once) each parsed the whole series
        again at every turn, so 500 instances from 4 clients went at half the rate of one client.
        """
        with self._parsed_lock:
            cached = self._parsed.get(record_id)
            if cached is not None and cached.current:
                self._parsed.move_to_end(record_id)
                return cached
        node = self.node
        manifest, version = node.store.read_manifest_versioned(record_id)
        held = {blob: parsed for parsed, blob in cached.files.values()} if cached is not None else {}
        files: dict[str, tuple[ParsedFile, int]] = {}
        # frames found unshowable when they arrived stay so (record frame index -> reason; files in frame order)
        bad = manifest.render.bad_frame_messages()
        start = 0
        for info in manifest.every_file:
            blob = info.blob
            parsed = held.get(blob)
            if parsed is None or parsed.sha256 != info.sha256:
                raw = node.store.read_file(record_id, blob, info.sha256)
                parsed = parse_stored_file(info.name or f"{blob:06d}", raw, node.limits)
            if info.transfer_syntax is None:  # a stored-only file has no frames in the record's order
                parsed.bad_frames = {frame - start: reason for frame, reason in bad.items()
                                     if start <= frame < start + info.frames}
                start += info.frames
            files[parsed.sop_instance_uid or info.sha256] = (parsed, blob)
        growth = Growth.of([f for f, _ in files.values()])
        received = _Received(files, manifest.render.auto_window, version, growth, manifest.pending)
        self._remember(record_id, received)
        return received

    def _remember(self, record_id: str, received: _Received) -> None:
        with self._parsed_lock:
            before = self._parsed.get(record_id)
            held = before.held_versions if before is not None else frozenset()
            self._parsed[record_id] = replace(received, held_versions=held | {received.version})
            self._parsed.move_to_end(record_id)
            while len(self._parsed) > 1 and _cached_bytes(self._parsed) > CACHE_BYTES:
                self._parsed.popitem(last=False)

    def _forget_parsed(self, record_id: str) -> None:
        with self._parsed_lock:
            self._parsed.pop(record_id, None)

    def _outdate_parsed(self, record_id: str) -> None:
        """The store's series is not what this worker holds: the next read follows it (`_received`)."""
        with self._parsed_lock:
            self._outdate_held(record_id)

    def _outdate_held(self, record_id: str) -> None:
        """`_outdate_parsed` for a caller holding `_parsed_lock`."""
        held = self._parsed.get(record_id)
        if held is not None and held.current:
            self._parsed[record_id] = replace(held, outdated_at=time.monotonic())

    # --- deletion --------------------------------------------------------------------------------
    def delete(self, record_id: str) -> bool:
        """Delete a stored series: its store folder, its record and catalogue rows, its key images and
        what the node holds of it; False when it is gone already (another DELETE took it meanwhile).

        Under the series' lock, as its appends and analyses are. A DELETE that came between an
        append's checks and its writes made the append fail (its folder gone: 503, a C-STORE
        failure) or, once its files were written, file catalogue rows for a series no longer stored
        and acknowledge an instance no one could read; an append that came during a DELETE found
        the series half deleted (404, a C-STORE failure); two DELETEs at once both answered 204.
        Now one waits for the other: an append after a DELETE stores the series anew, and the
        second DELETE is a 404.
        """
        node = self.node
        models = node.models
        with self.series_lock(record_id):
            row = models.StoredRecord.get_or_none(models.StoredRecord.id == record_id)
            if row is None:
                return False
            # the store first: a worker told by `unload` that the series changed must find it gone, not
            # read it once more and map its frames again (and nothing is deleted if it cannot be told)
            node.registry.runtime.check()
            remember_deleted(models, record_id)
            node.store.delete(record_id)
            node.registry.unload(record_id)
            with exclusive_transaction(models.database, KEY_IMAGES_LOCK):  # a key image is marked under it
                row.delete_instance()
                models.KeyImage.delete().where(models.KeyImage.record_id == record_id).execute()
            forget_series(models.catalogue, record_id)
            self.forget(record_id)
            node.forget(record_id)
            node.images.drop_record(record_id)
        return True

    def series_lock(self, record_id: str) -> FolderLock:
        """The lock of a stored series' appends, analyses and deletion (`_lock_for`), by its record id:
        for a change of the series made outside this service that must not interleave with them or
        with itself (filing and unfiling, which set the store's mark and the row together)."""
        return self._lock_for(self._series_uid_of(record_id))

    def _series_uid_of(self, record_id: str) -> str:
        """The Series Instance UID of a stored series, which names its lock: the catalogue's, else its
        manifest's (a series the catalogue could not index)."""
        cat = self.node.models.catalogue
        row = cat.Series.select(cat.Series.series_uid).where(cat.Series.id == record_id).first()
        return row.series_uid if row is not None else self.node.manifest(record_id).meta.series_uid

    def forget(self, record_id: str) -> None:
        self._forget_parsed(record_id)
        with self._growing_lock:
            self._growing.pop(record_id, None)

    def _changed_elsewhere(self, record_id: str, version: str) -> None:
        """Another worker or node grew, analysed or deleted the series: what this worker parsed of it
        is outdated (kept for the next read to reuse), and timing its completion is the other's.

        Not so for a version this worker held the series at (its own append or analysis, or one it
        read and grew from): a reader of this worker may meet it before the writer notes it, and its
        notice may come once the writer holds that version or later ones. Taken for a change made
        elsewhere, it left the series without its exact analysis, as no worker would time its completion.
        """
        with self._parsed_lock:  # one step against the writer's `_remember` then `_note_growth`
            held = self._parsed.get(record_id)
            if held is not None and held.current and version in held.held_versions:
                return
            self._outdate_held(record_id)
            with self._growing_lock:
                self._growing.pop(record_id, None)

    # --- the "series complete" rule ------------------------------------------------------------
    def on_complete(self, listener: Callable[[str, dict[str, Dataset]], None]) -> None:
        """Call `listener(record_id, datasets)` after a series becomes complete: where derived data is
        built. `datasets`: the parsed files this worker holds of the series by SHA-256 (those it
        received or read while the series grew; maybe none), so that a builder need not read and
        parse them from the store again; a builder may take them out of the dict as it uses them."""
        self._on_complete.append(listener)

    def _note_growth(self, record_id: str, series_uid: str) -> None:
        self.node.registry.runtime.grew(_series_name(series_uid))
        with self._growing_lock:
            self._growing[record_id] = (series_uid, time.monotonic())
            if self._watcher is None and not self._closed.is_set():
                self._watcher = threading.Thread(target=self._watch, name="series-complete", daemon=True)
                self._watcher.start()
                atexit.register(self.close)

    def growing(self) -> list[str]:
        """Record ids of the series grown since their last exact analysis (not complete yet)."""
        with self._growing_lock:
            return list(self._growing)

    def _watch(self) -> None:
        """Complete what is due, tick after tick. Each tick gives its database connection back, as a
        request does: kept for the thread's life, one the server dropped (a restart) would fail every
        later completion; taken afresh, it is checked first (`shared.db.ThreadPooledDatabase`)."""
        tick = min(1.0, max(0.05, self.complete_s / 4))
        database = self.node.models.database
        while not self._closed.wait(tick):
            try:
                for record_id in self.complete_due(time.monotonic()):
                    log.info("series %s complete: its exact analysis is stored", record_id)
            finally:
                if not database.is_closed():
                    database.close()

    def complete_due(self, now: float, derive: bool = True) -> list[str]:
        """Complete every series whose last instance arrived `complete_s` or more before `now`, then
        (with `derive`) let the `on_complete` listeners build their derived data. Parsed series
        outdated that long ago are let go: the worker that grew them last completes them."""
        with self._parsed_lock:
            for record_id in [key for key, held in self._parsed.items()
                              if held.outdated_at is not None and now - held.outdated_at >= self.complete_s]:
                del self._parsed[record_id]
        with self._growing_lock:
            due = [(record_id, uid) for record_id, (uid, at) in self._growing.items() if now - at >= self.complete_s]
        done = []
        for record_id, series_uid in due:
            try:
                datasets = self._complete(record_id, series_uid, now)
            except _Deleted:
                log.info("series %s was deleted before it completed", record_id)
                self._unavailable.pop(record_id, None)
                continue
            except StoreUnavailable as exc:  # rolled back, unreadable, unreachable: told once a state
                self._tell_unavailable(record_id, str(exc))
                with self._growing_lock:
                    if record_id in self._growing:
                        self._growing[record_id] = (series_uid, time.monotonic())
                continue
            except Exception as exc:  # a damaged file, the database: log, and try again a stable age later
                log_failure(f"series {record_id}: its final analysis failed; retried later", exc)
                with self._growing_lock:
                    if record_id in self._growing:
                        self._growing[record_id] = (series_uid, time.monotonic())
                continue
            self._unavailable.pop(record_id, None)
            if datasets is None:
                continue
            done.append(record_id)
            if derive:  # one series' datasets at a time: the builders let each go once used
                self._derive(record_id, datasets)
        return done

    def _tell_unavailable(self, record_id: str, reason: str) -> None:
        """Log why the store cannot give a series its final analysis once for each reason, not at
        every retry: a rolled-back or unreadable record stays so until someone acts (its message says
        what to do), and a full traceback each complete_s filled the log with the same lines."""
        if self._unavailable.get(record_id) != reason:
            self._unavailable[record_id] = reason
            log.warning("series %s: its final analysis waits for the store: %s; retried until it can be read",
                        record_id, reason)

    def _derive(self, record_id: str, datasets: dict[str, Dataset]) -> None:
        for listener in self._on_complete:
            try:
                listener(record_id, datasets)
            except Exception as exc:  # derived data is an optimisation: the series itself is complete
                log_failure(f"series {record_id}: building its derived data failed", exc)

    def _complete(self, record_id: str, series_uid: str, now: float) -> dict[str, Dataset] | None:
        """The exact analysis of a complete series (one decode), its manifest replaced if that differs;
        the parsed files by SHA-256 that this worker held of it, or None when it was not complete."""
        with self._lock_for(series_uid):
            with self._growing_lock:
                entry = self._growing.get(record_id)
                if entry is None or now - entry[1] < self.complete_s:
                    return None  # grew again meanwhile (or completed by another call)
                grown_at = self.node.registry.runtime.grown_at(_series_name(series_uid))
                if grown_at is not None:  # the node's last growth of it, on this worker's clock
                    last = time.monotonic() - max(0.0, time.time() - grown_at)
                    if last > entry[1] and now - last < self.complete_s:
                        # another worker took an instance since: the age starts from that one
                        self._growing[record_id] = (series_uid, last)
                        return None
            self._settle(record_id, series_uid, exact=True)
            with self._parsed_lock:
                held = self._parsed.get(record_id)
            datasets = ({f.sha256: f.dataset for f, _ in held.files.values()}
                        if held is not None and held.current else {})
            self.forget(record_id)
            self.node.registry.runtime.forget_growth(_series_name(series_uid))  # grows again: made again
        return datasets

    def close(self) -> None:
        """At shutdown: stop the watcher and complete the series still growing now (safe to call twice).

        A node killed hard leaves those series with their provisional analysis (a valid automatic
        window, sampled from an earlier middle frame) until they grow again.
        """
        self._closed.set()
        self.complete_due(float("inf"), derive=False)  # at shutdown: nothing would use derived data
        atexit.unregister(self.close)


def _series_name(series_uid: str) -> str:
    """A series' name in the node's runtime folder (its growth file; its lock file's bucket)."""
    return "series-" + hashlib.blake2b(series_uid.strip().encode(), digest_size=16).hexdigest()


def _cached_bytes(cache: OrderedDict[str, _Received]) -> int:
    return sum(len(f.raw) for received in cache.values() for f, _ in received.files.values())


def _with_ids(manifest: Manifest, record_id: str, blobs: dict[str, int], files: list[ParsedFile]) -> Manifest:
    """The manifest under the series' record id, each file naming its blob and its SOP Instance UID."""
    return manifest.with_ids(record_id, blobs, {f.sha256: f.sop_instance_uid for f in files})


def ingest_service() -> Ingest:
    """The node's ingest service, for HTTP views."""
    return current_app.extensions[INGEST_EXTENSION]
