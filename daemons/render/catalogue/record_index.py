"""The node's record index (the StoredRecord table and the DICOM catalogue) follows its store, which is the truth.

With a shared store other nodes add, grow and delete records behind this node's back, so the
catalogue learns of them three ways: a full sync at start-up, a sync before a record list when the
last one is older than `storage.catalogue_refresh_s`, and a look-up in the store when a request
names a record the catalogue does not know (before answering 404).

A series another node grew is noticed by its manifest's version (`Store.manifest_version`): by
the sync, or by `Node.manifest` rechecking a cached manifest every `storage.manifest_refresh_s`.
`changed` then updates the row and the catalogue and tells the caches that hold the old series
(manifest, decoded record, encoded images, ingest's parsed files) to drop it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import peewee

from daemons.render.catalogue.generation_book import CatalogueGenerationBook
from daemons.render.catalogue.index import backfill, forget_series, refresh_series
from daemons.render.models import Models, remember_deleted
from daemons.render.store.interface import RecordUnreadable, Store, StoreUnavailable
from daemons.render.store.local import StoreError
from daemons.render.store.manifest import Manifest, ManifestVersionError

log = logging.getLogger(__name__)


class RecordIndex:
    """Keeps the StoredRecord rows and the DICOM catalogue (`catalogue.index`) in step with the store.

    A damaged record it meets is taken out of service by `quarantine(record_id, reason)`, the node's
    one rule (`Node.quarantine`: moved aside, audited once, a failed move caught and audited): its
    own call of the store's left no audit entry, and a move that failed went up as a 500, or
    stopped the node at start-up. That rule also gives the answer of a request that met the damage
    (422 `store_corrupt`, as for a series the catalogue knew), which `find` raises."""

    def __init__(self, store: Store, models: Models, refresh_s: float,
                 quarantine: Callable[[str, str], Exception]):
        self.store = store
        self.models = models
        self.quarantine = quarantine
        self.refresh_s = refresh_s
        self._synced_at = float("-inf")
        self._lock = threading.Lock()
        self._versions: dict[str, str] = {}
        self._versions_lock = threading.Lock()
        self._listeners: list[Callable[[str, str], None]] = []
        # the store refuses a manifest older than the latest this node noted here (`store.generations`)
        store.track_generations(CatalogueGenerationBook(models))

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """Call `listener(record_id, version)` when this worker meets a version of a record it had not
        noted (to drop caches): a change made elsewhere, or one of its own met by a reader before
        the writer noted it (the listener tells them apart by the version)."""
        self._listeners.append(listener)

    def note_version(self, record_id: str, version: str) -> bool:
        """Remember the manifest version this node has seen; True if it had seen another one."""
        with self._versions_lock:
            previous = self._versions.get(record_id)
            self._versions[record_id] = version
        return previous is not None and previous != version

    def seen_version(self, record_id: str) -> str | None:
        with self._versions_lock:
            return self._versions.get(record_id)

    def observed(self, record_id: str, manifest: Manifest, version: str) -> None:
        """This node read `manifest` at `version`: follow it if it is not what the catalogue holds
        (grown since last seen, or — first read since start-up — grown while this node was down)."""
        first = self.seen_version(record_id) is None
        if self.note_version(record_id, version):
            self.changed(record_id, manifest, version)
            return
        series = self.models.catalogue.Series
        row = series.get_or_none(series.id == record_id)
        if first and row is not None and row.instance_count < len(manifest.every_file):
            self.changed(record_id, manifest, version)

    def changed(self, record_id: str, manifest: Manifest, version: str) -> None:
        """A record grew on another node: its row and catalogue series follow, the caches drop it."""
        meta = manifest.meta
        self.models.StoredRecord.update(files=meta.files, frames=meta.frames, size_bytes=meta.size_bytes
                                        ).where(self.models.StoredRecord.id == record_id).execute()
        refresh_series(self.store, self.models.catalogue, record_id, manifest)
        for listener in self._listeners:
            listener(record_id, version)

    def _add(self, record_id: str, asked: bool = False) -> peewee.Model | None:
        """Index a stored record; a record whose manifest cannot be read is quarantined (None), so
        one damaged record never stops the node from starting or listing. One this node may not read
        or refuses (`RecordUnreadable`: its mode, a rolled-back or deleted storing put back) is left
        alone (None). Either is raised when a request `asked` for it (the quarantine's 422, the 503):
        each says why and what to do, where a 404 said the record did not exist."""
        try:
            meta = self.store.read_manifest(record_id).meta
        except (ManifestVersionError, RecordUnreadable) as exc:  # not damaged: left alone, indexed once readable
            log.error("record %s is not indexed: %s", record_id, exc)
            if asked and isinstance(exc, RecordUnreadable):
                raise
            return None
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            refused = self.quarantine(record_id, str(exc))
            if asked:
                raise refused from exc
            return None
        try:
            row = self.models.StoredRecord.create(
                id=record_id, files=meta.files, rows=meta.rows, columns=meta.columns,
                frames=meta.frames, modality=meta.record_modality, size_bytes=meta.size_bytes)
        except peewee.IntegrityError:  # added by a concurrent request
            return self.models.StoredRecord.get_by_id(record_id)
        backfill(self.store, self.models.catalogue, [record_id])
        return row

    def _drop(self, record_id: str) -> None:
        """Forget a record another node deleted: its row and its series in the DICOM catalogue (whose
        patient it was is kept, as the deleting node keeps it)."""
        remember_deleted(self.models, record_id)
        self.models.StoredRecord.delete_by_id(record_id)
        forget_series(self.models.catalogue, record_id)

    def sync(self) -> None:
        """Index records the catalogue misses and drop rows whose record is gone."""
        with self._lock:
            versions = self.store.manifest_versions()
            stored = set(versions)
            known = {row.id for row in self.models.StoredRecord.select(self.models.StoredRecord.id)}
            for record_id in known - stored:
                self._drop(record_id)
            for record_id in stored - known:
                self._add(record_id)
            for record_id in stored & known:
                if self.note_version(record_id, versions[record_id]):
                    self._reread(record_id)
            self._synced_at = time.monotonic()

    def _reread(self, record_id: str) -> None:
        try:
            manifest, version = self.store.read_manifest_versioned(record_id)
        except FileNotFoundError:  # deleted since the listing: the next sync drops it
            return
        except (ManifestVersionError, RecordUnreadable) as exc:  # grown by a newer node, or not readable now
            log.error("record %s is not followed: %s", record_id, exc)
            return
        self.note_version(record_id, version)
        self.changed(record_id, manifest, version)

    def sync_at_start(self) -> None:
        """Clean up and sync; a store unreachable at start-up is logged, the node starts anyway."""
        try:
            self.store.cleanup()
            self.sync()
            backfill(self.store, self.models.catalogue, self.store.record_ids())  # records stored before the catalogue
            self._mark_filed_in_store()
        except StoreUnavailable as exc:
            log.warning("record store unreachable at start-up, catalogue not synced: %s", exc)

    def follow_filed(self, record_ids: list[str]) -> set[str]:
        """Of these series unfiled in this node's catalogue, those the store says are filed (by
        another node sharing it, which took the decision): marked filed here too, and returned."""
        filed = self.store.filed_among(record_ids) if record_ids else set()
        if filed:
            stored = self.models.StoredRecord
            stored.update(filed=True).where(stored.id.in_(sorted(filed))).execute()
        return filed

    def _mark_filed_in_store(self) -> None:
        """Series this catalogue says are filed and the store does not: another node sharing the store
        took the mark off (`unfiled_among`: followed here, so the series is back on this node's work
        list too), or they were filed before the store kept the mark (an upgraded node: marked). Marking
        every one, as before, filed again at each start a series another node had put back on the work
        list."""
        stored = self.models.StoredRecord
        filed = [row.id for row in stored.select(stored.id).where(stored.filed)]
        missing = set(filed) - self.store.filed_among(filed)
        unfiled = self.store.unfiled_among(sorted(missing))
        if unfiled:
            stored.update(filed=False).where(stored.id.in_(sorted(unfiled))).execute()
        for record_id in missing - unfiled:
            try:
                self.store.mark_filed(record_id)
            except FileNotFoundError:  # deleted meanwhile
                continue
            except RecordUnreadable as exc:  # marked once it is readable (logged with the fix by the store)
                log.error("record %s is not marked filed in the store: %s", record_id, exc)

    def refresh(self) -> None:
        """Sync when the last sync is older than `refresh_s` (before listing records)."""
        if time.monotonic() - self._synced_at >= self.refresh_s:
            self.sync()

    def find(self, record_id: str) -> peewee.Model | None:
        """The catalogue row of a stored record, looked up in the store on a miss; None if not stored,
        RecordUnreadable for one stored that cannot be served, the quarantine's error for one damaged (`_add`).

        A row whose record another node deleted is dropped here too.
        """
        row = self.models.StoredRecord.get_or_none(self.models.StoredRecord.id == record_id)
        if not self.store.exists(record_id):
            if row is not None:
                self._drop(record_id)
            return None
        return row if row is not None else self._add(record_id, asked=True)
