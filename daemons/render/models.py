"""The render node's own tables: the catalogue of stored records and the audit log.

The models are made per database by `make_models` rather than bound to a module-level proxy, so
several nodes (tests, benchmarks) can live in one process without sharing a connection. The
catalogue holds no patient-identifying fields: names and DICOM patient ids stay in the encrypted
manifest in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee

from shared.audit import make_audit_model
from shared.config import Config
from shared.db import Migration, database_from_config, upgrade_schema, utcnow


@dataclass(frozen=True)
class Models:
    database: peewee.Database
    # classes made per database by make_models: their fields are invisible to a type checker
    StoredRecord: Any
    AuditEntry: Any

    @property
    def all(self) -> list[type[peewee.Model]]:
        return [self.StoredRecord, self.AuditEntry]


def make_models(database: peewee.Database) -> Models:
    class StoredRecord(peewee.Model):
        """One record in this node's store (the store is the truth; this is its index)."""

        id = peewee.CharField(primary_key=True, max_length=64)
        files = peewee.IntegerField()
        rows = peewee.IntegerField()
        columns = peewee.IntegerField()
        frames = peewee.IntegerField()
        modality = peewee.CharField(max_length=16, default="")
        size_bytes = peewee.BigIntegerField()
        stored_bytes = peewee.BigIntegerField(default=0)
        uploaded_by = peewee.CharField(max_length=36, default="")
        stored_at = peewee.DateTimeField(default=utcnow, index=True)

        class Meta:
            table_name = "stored_record"

    StoredRecord._meta.database = database
    return Models(database, StoredRecord, make_audit_model(database))


# Schema upgrades, oldest first (shared.db.upgrade_schema); readiness expects schema_target(MIGRATIONS).
MIGRATIONS: tuple[Migration, ...] = ()


def upgrade(config: Config) -> int:
    """Create or upgrade the node's tables; returns the schema version."""
    database = database_from_config(config)
    models = make_models(database)
    try:
        return upgrade_schema(database, "render", models.all, MIGRATIONS)
    finally:
        database.close()
