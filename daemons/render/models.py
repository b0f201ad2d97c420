"""The render node's own tables: the catalogue of stored records, the DICOM
catalogue (patient → study → series → instance, `daemons.render.catalogue.index`) and the audit log.

The models are made per database by `make_models` rather than bound to a module-level proxy, so
several nodes (tests, benchmarks) can live in one process without sharing a connection. The
`stored_record` table holds no patient-identifying fields; the DICOM catalogue does, for queries
(docs/architecture.md says how it is protected at rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from daemons.render.catalogue.index import CatalogueModels, backfill, make_catalogue_models
from daemons.render.catalogue.temporal import is_date, is_time
from daemons.render.store.interface import open_store
from shared.audit import make_audit_model
from shared.config import Config
from shared.db import Migration, close_database, open_database, protect_database_file, upgrade_schema, utcnow


@dataclass(frozen=True)
class Models:
    database: peewee.Database
    # classes made per database by make_models: their fields are invisible to a type checker
    StoredRecord: Any
    AuditEntry: Any
    catalogue: CatalogueModels
    KeyImage: Any
    DeletedSeries: Any

    @property
    def all(self) -> list[type[peewee.Model]]:
        return [self.StoredRecord, self.AuditEntry, *self.catalogue.all, self.KeyImage, self.DeletedSeries]


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
        uploaded_by = peewee.CharField(max_length=36, default="")
        stored_at = peewee.DateTimeField(default=utcnow, index=True)
        # registered at the institution (for a SIVR patient) and so off the work list (api_worklist)
        filed = peewee.BooleanField(default=False, index=True)

        class Meta:
            table_name = "stored_record"

    StoredRecord._meta.database = database
    return Models(database, StoredRecord, make_audit_model(database), make_catalogue_models(database),
                  make_key_image_model(database), make_deleted_series_model(database))


def make_deleted_series_model(database: peewee.Database) -> Any:
    """The series deleted from this node and whose DICOM patient they were. A series' record id
    comes from its Series Instance UID, and findings keep their links to a deleted series: a new
    series under that UID for another patient would take the old one's links and show its images
    as the first patient's, so the ingest refuses it (`Ingest._refuse_new_series_of_another_patient`)."""

    class DeletedSeries(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=64)  # the record id
        patient_id = peewee.CharField(max_length=64)
        issuer = peewee.CharField(max_length=64, default="")
        deleted_at = peewee.DateTimeField(default=utcnow)

        class Meta:
            table_name = "deleted_series"

    DeletedSeries._meta.database = database
    return DeletedSeries


def remember_deleted(models: Models, record_id: str) -> None:
    """Keep whose series `record_id` was, before it leaves the catalogue: deleted on this node, or
    found deleted by another node sharing the store (`RecordIndex`)."""
    cat, deleted = models.catalogue, models.DeletedSeries
    patient = (cat.Patient.select(cat.Patient.patient_id, cat.Patient.issuer)
               .join_from(cat.Patient, cat.Study).join_from(cat.Study, cat.Series)
               .where(cat.Series.id == record_id).tuples().first())
    if patient is not None:
        values = {deleted.patient_id: patient[0], deleted.issuer: patient[1], deleted.deleted_at: utcnow()}
        deleted.insert({deleted.id: record_id, **values}).on_conflict(
            conflict_target=[deleted.id], update=values).execute()


#: The lock under which a key image is marked, and a record's row and marks are deleted
#: (`shared.db.exclusive_transaction`): a mark is written only for a record still stored.
KEY_IMAGES_LOCK = "sivr-key-images"


def make_key_image_model(database: peewee.Database) -> Any:
    """The key images of the records on this node (daemons.render.api.key_images): an image a
    physician marked as the one that matters, kept with the record so every viewer lists it."""

    class KeyImage(peewee.Model):
        record_id = peewee.CharField(max_length=64, index=True)
        plane = peewee.CharField(max_length=16)   # the viewer's view: native (the stored slices) or a reformat
        image_index = peewee.IntegerField()   # of that view (`index` would hide peewee.Model.index)
        # the stack a reformat cuts (daemons.render.stacks; None on the stored slices, whose index
        # names the frame whatever its stack) and the time point shown, when the stack has several
        stack = peewee.CharField(max_length=16, null=True)
        phase = peewee.IntegerField(null=True)
        marked_by = peewee.CharField(max_length=36)
        marked_by_name = peewee.CharField(max_length=150, default="")
        marked_at = peewee.DateTimeField(default=utcnow)

        class Meta:
            table_name = "key_image"

    KeyImage._meta.database = database
    return KeyImage


#: `uploaded_by` of a series a DICOM peer sent (daemons.render.dimse.listener: "dicom:" + its AE title).
DIMSE_SENDER_PREFIX = "dicom:"


def _add_record_filed(db: peewee.Database) -> None:
    """Schema 1 -> 2: a series carries whether it is filed at the institution (the work list).

    Before this schema, a browser upload was registered at the institution right after it was
    stored, and nothing else could be registered; so every existing series counts as filed except
    those DICOM peers sent (C-STORE), which no one could register and which now wait on the work list.
    """
    migrate(SchemaMigrator.from_database(db).add_column("stored_record", "filed",
                                                        peewee.BooleanField(default=False)),
            SchemaMigrator.from_database(db).add_index("stored_record", ("filed",)))
    db.execute_sql(f"UPDATE stored_record SET filed = {db.param} WHERE uploaded_by NOT LIKE {db.param}",
                   (True, DIMSE_SENDER_PREFIX + "%"))


def _drop_stored_bytes(db: peewee.Database) -> None:
    """Schema 2 -> 3: `stored_record.stored_bytes` was never written or read (the store reports its
    own size), so it goes rather than mislead."""
    migrate(SchemaMigrator.from_database(db).drop_column("stored_record", "stored_bytes"))


def _add_key_images(db: peewee.Database) -> None:
    """Schema 3 -> 4: the key images of each record (a new table, empty)."""
    db.create_tables([make_key_image_model(db)], safe=True)


def _key_image_stack_and_phase(db: peewee.Database) -> None:
    """Schema 4 -> 5: a key image names the stack of its reformat and its time point; schema 4
    recorded neither, so its marks keep both empty (the viewer shows them on the record's first
    stack). The unique index of (record, plane, index) goes: empty stacks and phases (NULL) would
    not be told apart by an index, so api_keyimages marks under a lock instead. Migration 3 makes
    the table from the current model, so a store older than schema 4 may have nothing left to do."""
    migrator = SchemaMigrator.from_database(db)
    index = "keyimage_record_id_plane_image_index"
    columns = {column.name for column in db.get_columns("key_image")}
    indexes = {each.name for each in db.get_indexes("key_image")}
    operations = [migrator.drop_index("key_image", index)] if index in indexes else []
    if "stack" not in columns:
        operations.append(migrator.add_column("key_image", "stack", peewee.CharField(max_length=16, null=True)))
    if "phase" not in columns:
        operations.append(migrator.add_column("key_image", "phase", peewee.IntegerField(null=True)))
    migrate(*operations)


def _add_deleted_series(db: peewee.Database) -> None:
    """Schema 5 -> 6: the series deleted from now on and their DICOM patients (a new table, empty:
    series deleted before it are not known)."""
    db.create_tables([make_deleted_series_model(db)], safe=True)


#: The catalogue's DA and TM columns, by table, with what a value of each is (`catalogue.temporal`).
TEMPORAL_COLUMNS = {"dicom_patient": {"birth_date": is_date},
                    "dicom_study": {"study_date": is_date, "study_time": is_time}}


def _clear_dates_that_are_none(db: peewee.Database) -> None:
    """Schema 6 -> 7: a stored date or time that is none (`2024-01-05`, kept cut to `2024-01-`) was
    indexed before schema 7, and answered so by C-FIND and QIDO-RS; the index now leaves such a value
    out (`catalogue.index`), and this clears the ones indexed before that are no date or time (a
    value cut to a valid one, `20240105` from `20240105XY`, cannot be told from it and stays). The
    store keeps every file as it came. Distinct values only: a catalogue holds few dates. A store older
    than the catalogue has its tables made afterwards, empty."""
    for table, columns in TEMPORAL_COLUMNS.items():
        if not db.table_exists(table):
            continue
        for column, valid in columns.items():
            values = db.execute_sql(f'SELECT DISTINCT "{column}" FROM "{table}"').fetchall()
            for (value,) in values:
                if value and not valid(value):
                    db.execute_sql(f'UPDATE "{table}" SET "{column}" = {db.param} WHERE "{column}" = {db.param}',
                                   ("", value))


# Schema upgrades, oldest first (shared.db.upgrade_schema); readiness expects schema_target(MIGRATIONS).
MIGRATIONS: tuple[Migration, ...] = (_add_record_filed, _drop_stored_bytes, _add_key_images,
                                     _key_image_stack_and_phase, _add_deleted_series, _clear_dates_that_are_none)


def upgrade(config: Config) -> int:
    """Create or upgrade the node's tables, then index stored records the DICOM catalogue misses.

    The catalogue tables are new tables (created by `upgrade_schema`); filling them needs the
    store, so it is done here, by `sivr db upgrade render` and again at every start-up.
    """
    database = open_database(config)
    models = make_models(database)
    try:
        version = upgrade_schema(database, "render", models.all, MIGRATIONS)
        store = open_store(config, records_expected=models.StoredRecord.select().exists())
        backfill(store, models.catalogue, store.record_ids())
        protect_database_file(database)
        return version
    finally:
        close_database(database)
