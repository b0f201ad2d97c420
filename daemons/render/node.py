"""What one render node's requests share: config, store, catalogue, loaded records, latency figures.

Built once by `create_app` and kept in `app.extensions["sivr_node"]`; views reach it through
`node()`. Holding it in one object (not module globals) lets tests run several nodes in a process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app

from daemons.render.catalogue.generation_book import NODE_ACTOR
from daemons.render.catalogue.index import forget_series
from daemons.render.catalogue.record_index import RecordIndex
from daemons.render.imaging.image_cache import ImageCache
from daemons.render.imaging.webp_effort import WebpEffort
from daemons.render.ingest.isolation import DecodePool
from daemons.render.ingest.upload_checks import Limits
from daemons.render.models import Models
from daemons.render.records import RecordRegistry
from daemons.render.store.interface import RecordUnreadable, Store, StoreUnavailable
from daemons.render.store.local import StoreError
from daemons.render.store.manifest import Manifest, ManifestVersionError
from shared.audit import record_audit
from shared.config import Config
from shared.errors import ApiError, not_found

log = logging.getLogger(__name__)
NODE_EXTENSION = "sivr_node"
#: the audit action of a damaged record the node took out of service (`Node.quarantine`)
QUARANTINED = "record.quarantined"
RECORDS_EXTENSION = "sivr_records"


@dataclass
class Node:
    config: Config
    store: Store
    models: Models
    registry: RecordRegistry
    limits: Limits
    images: ImageCache
    webp_effort: WebpEffort
    record_index: RecordIndex
    decoder: DecodePool
    receipt_key: Ed25519PrivateKey  # signs upload receipts (shared.receipts)
    url: str  # this node's public base URL, its token audience
    # analyses a series whose manifest is pending (journal entries after its analysis) and stores
    # the result: (record id, SeriesInstanceUID) -> (manifest, version); `daemons.render.ingest.service` sets it
    settle: Callable[[str, str], tuple[Manifest, str]] | None = None
    # manifest, when last checked, the record's count on the workers' change board then (`daemons.render.runtime`)
    _manifests: dict[str, tuple[Manifest, float, int]] = field(default_factory=dict)
    _manifest_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def institution_id(self) -> str:
        return self.config["node"]["institution_id"]

    def __post_init__(self) -> None:
        self.record_index.on_change(lambda record_id, _version: self._drop_cached(record_id))

    def manifest(self, record_id: str, fresh: bool = False, analysed: bool = True) -> Manifest:
        """The decrypted manifest of a stored record, analysed (a series grown since its last
        analysis is analysed now: `settle`); 404 if the record is not stored. Not `analysed`: an
        append that only follows the store gets a grown series as stored, neither analysed nor
        cached (analysing the whole series at each append of workers taking turns cost each turn
        the series' size).

        Cached, and checked against the store's version every `storage.manifest_refresh_s` (or now,
        with `fresh`): another node sharing the store may have grown the series meanwhile. Another
        worker of this node that changed it says so on the change board: checked at once. While
        the store cannot be reached, a cached manifest keeps serving what is in RAM (checked again
        after the same interval); `fresh` callers (an append) get StoreUnavailable.
        """
        now = time.monotonic()
        changes = self.registry.runtime.change_count(record_id)
        with self._manifest_lock:
            cached = self._manifests.get(record_id)
        if cached is not None:
            manifest, checked, seen_changes = cached
            if (not fresh and seen_changes == changes
                    and now - checked < float(self.config["storage"]["manifest_refresh_s"])):
                return manifest
            try:
                version = self.store.manifest_version(record_id)
            except StoreUnavailable:
                if fresh:
                    raise
                with self._manifest_lock:
                    self._manifests[record_id] = (manifest, now, changes)
                return manifest
            if version is not None and version == self.record_index.seen_version(record_id):
                with self._manifest_lock:
                    self._manifests[record_id] = (manifest, now, changes)
                return manifest
            self._drop_cached(record_id)
        try:
            manifest, version = self.store.read_manifest_versioned(record_id)
        except FileNotFoundError as exc:
            raise not_found("record", record_id) from exc
        except ManifestVersionError as exc:  # not damaged: a newer node wrote it, so it is kept
            raise ApiError(409, "manifest_version", f"record {record_id}: {exc}") from exc
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            raise self.quarantine(record_id, str(exc)) from exc
        self.record_index.observed(record_id, manifest, version)
        if manifest.pending and self.settle is not None:
            if not analysed:
                return manifest
            manifest, version = self.settle(record_id, manifest.meta.series_uid)
        with self._manifest_lock:
            self._manifests[record_id] = (manifest, now, changes)
        return manifest

    def _drop_cached(self, record_id: str) -> None:
        """Forget what this worker holds of a record's old content (it grew or went away
        elsewhere). The node's decoded frames of that content are unlinked by the worker that made
        the change (`RecordRegistry.unload`, `changed`); those of a change made by another node
        sharing the store wait for the budget's eviction (no worker maps them again)."""
        self.forget(record_id)
        self.registry.let_go(record_id)
        self.images.drop_record(record_id)

    def quarantine(self, record_id: str, reason: str) -> ApiError:
        """Take a damaged record out of service: moved aside in the store, dropped from the catalogue,
        and audited `record.quarantined` by the node (`NODE_ACTOR`), saying what failed to verify and
        where the files went: the series leaves every list and answers 404 from then on, and the log
        line alone left an administrator reading the audit log no trace of where it went.

        Audited once, by the request that moved it: one that found it moved meanwhile (`where` None)
        writes nothing. A record the store could not move (a disk error) is audited too, as it stays
        in place and is found damaged again at its next read. The catalogue rows go in both cases: a
        row kept made every list that reads it fail.

        Returns the answer of the request that met the damage (`store_corrupt`), which every reader
        raises, whether the catalogue knew the series (`manifest`) or not (`RecordIndex.find`): a
        series another node stored answered 404, as if it had never been stored."""
        try:
            where = self.store.quarantine(record_id, reason)
        except OSError as exc:
            log.error("record %s is damaged (%s) and could not be moved aside: %s", record_id, reason, exc)
            self._audit_quarantine(record_id, f"damaged: {reason}; it could not be moved aside ({exc}) and stays "
                                              "in the store, refused at each read: free the disk or fix its "
                                              "permissions, or restore the series from a backup")
            where, stuck = None, True
        else:
            stuck = False
            if where is not None:
                self._audit_quarantine(record_id, f"damaged: {reason}; moved aside to {where} (its reason.txt says "
                                                  "why) and no longer served: inspect it, then restore the series "
                                                  "from a backup or send it again, and delete the folder")
        self.models.StoredRecord.delete_by_id(record_id)
        forget_series(self.models.catalogue, record_id)
        self.registry.unload(record_id)
        self.forget(record_id)
        if where is not None:
            log.error("record %s is damaged (%s); quarantined in %s", record_id, reason, where)
        return store_corrupt(record_id, reason, stuck)

    def _audit_quarantine(self, record_id: str, detail: str) -> None:
        record_audit(self.models.AuditEntry, QUARANTINED, "record", record_id, detail=detail,
                     user_id="", username=NODE_ACTOR, client_ip="-")

    def intact(self, record_id: str) -> Manifest | None:
        """The record's manifest, or None when it does not read: a damaged one (quarantined on the
        way), or one deleted since it was listed. A list describes each record from the manifest
        this gave: read again, one deleted meanwhile made the whole list a 404. One this node may not
        read (`RecordUnreadable`, logged with its fix by the store) is left out too: one record's
        file mode made the whole list a 500."""
        try:
            return self.manifest(record_id)
        except (ApiError, RecordUnreadable):
            return None

    def forget(self, record_id: str) -> None:
        with self._manifest_lock:
            self._manifests.pop(record_id, None)

    def note_latency(self, ms: float) -> None:
        self.registry.runtime.note_latency(ms)

    def latency_percentiles(self) -> dict[str, float | None]:
        """The node's render latencies (every live worker's most recent), not the answering worker's."""
        values = self.registry.runtime.latencies()
        if not values.size:
            return {"p50": None, "p95": None}
        p50, p95 = np.percentile(values, [50, 95])
        return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


def store_corrupt(record_id: str, reason: str, stuck: bool = False) -> ApiError:
    """The 422 of a stored record found damaged (`Node.quarantine`), saying whether it was moved aside
    or, the move having failed (`stuck`), stays in the store, refused at each read (why the move failed,
    a path of the node's disk, is for the administrator: the log and the audit entry say it)."""
    if stuck:
        where = "could not be moved aside and is refused at each read"
    else:
        where = "was quarantined (moved aside and no longer served)"
    return ApiError(422, "store_corrupt", f"record {record_id} is damaged and {where}: {reason}; ask an "
                                          "administrator to restore the series from a backup or send it again")


def node() -> Node:
    return current_app.extensions[NODE_EXTENSION]
