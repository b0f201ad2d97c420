"""The node's book of each record's latest commit (`store.generations.GenerationBook`), in its database.

The database, not the store: whoever can put an older manifest back into the store cannot, by that
alone, lower what the node remembers. Writes are single conditional statements, so the node's workers
(and a reader racing a writer) never lower a noted generation.
"""

from __future__ import annotations

import threading

from flask import has_app_context

from daemons.render.models import Models
from daemons.render.store.manifest import Commit
from shared.audit import record_audit

#: who the audit log names for what the node refuses on its own (no user asked for it)
NODE_ACTOR = "sivr-render-node"


class CatalogueGenerationBook:
    """`GenerationBook` on the catalogue's `store_generation` table, refusals audited once per worker."""

    def __init__(self, models: Models):
        self.models = models
        self.table = models.catalogue.StoreGeneration
        self._audited: set[tuple[str, Commit, Commit | None]] = set()
        self._audited_lock = threading.Lock()

    def latest(self, record_id: str) -> Commit | None:
        row = self.table.get_or_none(self.table.id == record_id)
        return None if row is None else Commit(row.lineage, int(row.generation))

    def advance(self, record_id: str, commit: Commit, new_lineage: bool) -> None:
        """One upsert (an append's only extra statement): a row noted meanwhile by another worker
        is raised, never lowered, and is replaced only by a new lineage."""
        table = self.table
        later = None if new_lineage else ((table.lineage == commit.lineage) & (table.generation < commit.generation))
        table.insert(id=record_id, lineage=commit.lineage, generation=commit.generation).on_conflict(
            conflict_target=[table.id], update={table.lineage: commit.lineage, table.generation: commit.generation},
            where=later).execute()

    def forget(self, record_id: str) -> None:
        self.table.delete_by_id(record_id)

    def bury(self, record_id: str, lineage: str) -> None:
        """One insert, a tombstone already there kept as it is (workers may bury the same storing)."""
        tombstones = self.models.catalogue.StoreTombstone
        tombstones.insert(record_id=record_id, lineage=lineage).on_conflict_ignore().execute()

    def buried(self, record_id: str, lineage: str) -> bool:
        tombstones = self.models.catalogue.StoreTombstone
        return tombstones.select().where((tombstones.record_id == record_id)
                                         & (tombstones.lineage == lineage)).exists()

    def refused(self, record_id: str, read: Commit, latest: Commit | None, message: str) -> None:
        """One audit entry per record and refusal in this worker (every request for the record is
        refused again: the log has each, the audit log the fact). Outside the app (the series-complete
        watcher's thread) it is logged only: the audit log's export needs the app, and the next
        request for the record, refused the same way, writes the entry."""
        if not has_app_context():
            return
        with self._audited_lock:
            if (record_id, read, latest) in self._audited:
                return
            self._audited.add((record_id, read, latest))
        record_audit(self.models.AuditEntry, "record.rolled_back", "record", record_id, detail=message,
                     user_id="", username=NODE_ACTOR, client_ip="-")
