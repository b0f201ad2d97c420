"""The node's record index (the StoredRecord table and the DICOM catalogue) follows its store, which is the truth.

With a shared store other nodes add and delete records behind this node's back, so the catalogue
learns of them three ways: a full sync at start-up, a sync before a record list when the last one
is older than `storage.catalogue_refresh_s`, and a look-up in the store when a request names a
record the catalogue does not know (before answering 404).
"""

from __future__ import annotations

import logging
import threading
import time

import peewee

from daemons.render.catalogue import backfill, forget_series
from daemons.render.models import Models
from daemons.render.storage import StoreError
from daemons.render.stores import Store, StoreUnavailable

log = logging.getLogger(__name__)


class RecordIndex:
    """Keeps the StoredRecord rows and the DICOM catalogue (daemons/render/catalogue.py) in step with the store."""

    def __init__(self, store: Store, models: Models, refresh_s: float):
        self.store = store
        self.models = models
        self.refresh_s = refresh_s
        self._synced_at = float("-inf")
        self._lock = threading.Lock()

    def _add(self, record_id: str) -> peewee.Model | None:
        """Index a stored record; a record whose manifest cannot be read is quarantined (None), so
        one damaged record never stops the node from starting or listing."""
        try:
            meta = self.store.read_manifest(record_id)["meta"]
        except (StoreError, ValueError, KeyError) as exc:
            where = self.store.quarantine(record_id, str(exc))
            log.error("record %s is damaged (%s); quarantined in %s", record_id, exc, where)
            return None
        try:
            row = self.models.StoredRecord.create(
                id=record_id, files=meta["files"], rows=meta["rows"], columns=meta["columns"],
                frames=meta["frames"], modality=meta["modality"][:16], size_bytes=meta["size_bytes"])
        except peewee.IntegrityError:  # added by a concurrent request
            return self.models.StoredRecord.get_by_id(record_id)
        backfill(self.store, self.models.catalogue, [record_id])
        return row

    def _drop(self, record_id: str) -> None:
        """Forget a record another node deleted: its row and its series in the DICOM catalogue."""
        self.models.StoredRecord.delete_by_id(record_id)
        forget_series(self.models.catalogue, record_id)

    def sync(self) -> None:
        """Index records the catalogue misses and drop rows whose record is gone."""
        with self._lock:
            stored = set(self.store.record_ids())
            known = {row.id for row in self.models.StoredRecord.select(self.models.StoredRecord.id)}
            for record_id in known - stored:
                self._drop(record_id)
            for record_id in stored - known:
                self._add(record_id)
            self._synced_at = time.monotonic()

    def sync_at_start(self) -> None:
        """Clean up and sync; a store unreachable at start-up is logged, the node starts anyway."""
        try:
            self.store.cleanup()
            self.sync()
            backfill(self.store, self.models.catalogue, self.store.record_ids())  # records stored before the catalogue
        except StoreUnavailable as exc:
            log.warning("record store unreachable at start-up, catalogue not synced: %s", exc)

    def refresh(self) -> None:
        """Sync when the last sync is older than `refresh_s` (before listing records)."""
        if time.monotonic() - self._synced_at >= self.refresh_s:
            self.sync()

    def find(self, record_id: str) -> peewee.Model | None:
        """The catalogue row of a stored record, looked up in the store on a miss; None if not stored.

        A row whose record another node deleted is dropped here too.
        """
        row = self.models.StoredRecord.get_or_none(self.models.StoredRecord.id == record_id)
        if not self.store.exists(record_id):
            if row is not None:
                self._drop(record_id)
            return None
        return row if row is not None else self._add(record_id)
