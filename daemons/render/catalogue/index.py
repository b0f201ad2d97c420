"""The node's DICOM catalogue: patient → study → series → instance, the index queries run on.

The store stays the truth (instances encrypted and bit-exact, one folder per series); these
tables are derived from it and rebuilt from it (`backfill`) for any series they miss. A series
row's `id` is the record id of its store folder, so findings and the institution registry keep
pointing at the same id while the series grows.

At rest the catalogue holds what a C-FIND must match (patient names, ids, birth dates) in plain
columns of the node's own database: see docs/architecture.md ("The query index at rest") for why,
and `shared.db.protect_database_file` for the file permissions that go with it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import peewee
from pydicom import dcmread
from pydicom.dataset import Dataset

from daemons.render.attributes import attribute_text
from daemons.render.catalogue.temporal import is_date, is_time
from daemons.render.store.manifest import Manifest
from shared.db import exclusive_transaction, storable_text, utcnow

log = logging.getLogger(__name__)
#: SQL parameters per query when looking SOP Instance UIDs up (below SQLite's oldest limit of 999).
UID_BATCH = 500
INSERT_BATCH = 100  # instance rows per INSERT (6 values each: well under SQLite's variable limit)


def _text(ds: Dataset, keyword: str, size: int = 64) -> str:
    """A text attribute as indexed: cut to its column's `size` and storable in every database
    (`storable_text`: a NUL as U+FFFD). The ingest refuses a Patient ID or issuer with one
    (`uids.identity_problem`): this keeps a catalogue built from files stored before that rule whole."""
    return storable_text(attribute_text(ds, keyword).strip()[:size])


def _date(ds: Dataset, keyword: str) -> str:
    """A DA attribute as indexed: a value that is no date (`2024-01-05`) is not indexed, as a number
    that is no IS (searches do not match it, and answers do not show it cut to the column's size)."""
    text = _text(ds, keyword, 10)
    return text if is_date(text) else ""


def _time(ds: Dataset, keyword: str) -> str:
    """A TM attribute as indexed (`_date`'s rule)."""
    text = _text(ds, keyword, 16)
    return text if is_time(text) else ""


def patient_key(ds: Dataset) -> tuple[str, str]:
    """The DICOM patient a data set names, as the catalogue keys patients: (PatientID, its issuer)."""
    return _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")


#: The range of an Integer String (PS3.5 6.2), and of the catalogue's integer columns (32 bits on
#: PostgreSQL). A value outside it is not a valid IS: it is not indexed (searches do not match it),
#: as a value that is no number at all; the file itself is stored as it came.
IS_MIN, IS_MAX = -(2 ** 31), 2 ** 31 - 1


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        number = None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None
    return number if number is not None and IS_MIN <= number <= IS_MAX else None


@dataclass(frozen=True)
class CatalogueModels:
    # classes made per database by make_catalogue_models: their fields are invisible to a type
    # checker (the same convention as `daemons.render.models.Models`)
    Patient: Any
    Study: Any
    Series: Any
    Instance: Any
    StoreGeneration: Any  # the latest commit of each record (`catalogue.generation_book`)
    StoreTombstone: Any  # each storing of a record deleted or replaced (`catalogue.generation_book`)

    @property
    def all(self) -> list[type[peewee.Model]]:
        return [self.Patient, self.Study, self.Series, self.Instance, self.StoreGeneration, self.StoreTombstone]


def make_catalogue_models(database: peewee.Database) -> CatalogueModels:
    class Patient(peewee.Model):
        """A DICOM patient as the images name it (PatientID within its issuer), not a SIVR patient."""

        patient_id = peewee.CharField(max_length=64, index=True)
        issuer = peewee.CharField(max_length=64, default="")
        name = peewee.CharField(max_length=200, default="", index=True)
        birth_date = peewee.CharField(max_length=8, default="", index=True)
        sex = peewee.CharField(max_length=16, default="", index=True)

        class Meta:
            table_name = "dicom_patient"
            indexes = ((("patient_id", "issuer"), True),)

    class Study(peewee.Model):
        study_uid = peewee.CharField(max_length=64, unique=True)
        patient = peewee.ForeignKeyField(Patient, backref="studies", on_delete="CASCADE")
        study_date = peewee.CharField(max_length=8, default="", index=True)
        study_time = peewee.CharField(max_length=16, default="", index=True)
        accession_number = peewee.CharField(max_length=16, default="", index=True)
        study_id = peewee.CharField(max_length=16, default="")
        description = peewee.CharField(max_length=64, default="", index=True)
        referring_physician = peewee.CharField(max_length=200, default="", index=True)
        modalities = peewee.CharField(max_length=64, default="", index=True)
        series_count = peewee.IntegerField(default=0)
        instance_count = peewee.IntegerField(default=0)

        class Meta:
            table_name = "dicom_study"

    class Series(peewee.Model):
        """One series; `id` is the record id of its store folder (stable while it grows)."""

        id = peewee.CharField(primary_key=True, max_length=64)
        series_uid = peewee.CharField(max_length=64, index=True)
        study = peewee.ForeignKeyField(Study, backref="series", on_delete="CASCADE")
        modality = peewee.CharField(max_length=16, default="", index=True)
        series_number = peewee.IntegerField(null=True, index=True)
        description = peewee.CharField(max_length=64, default="", index=True)
        instance_count = peewee.IntegerField(default=0)
        updated_at = peewee.DateTimeField(default=utcnow, index=True)

        class Meta:
            table_name = "dicom_series"

    class Instance(peewee.Model):
        sop_instance_uid = peewee.CharField(max_length=64, index=True)
        series = peewee.ForeignKeyField(Series, backref="instances", on_delete="CASCADE")
        sop_class_uid = peewee.CharField(max_length=64, index=True)
        instance_number = peewee.IntegerField(null=True, index=True)
        sha256 = peewee.CharField(max_length=64)
        blob = peewee.IntegerField()

        class Meta:
            table_name = "dicom_instance"
            indexes = ((("series", "sop_instance_uid"), True),)

    class StoreGeneration(peewee.Model):
        """The latest commit (`store.manifest.Commit`) of each record this node wrote or read: kept in
        the node's database, apart from the store, so that an older manifest put back into the store
        is refused (`store.generations`). A new table, made empty where the schema is older (the
        schema upgrade makes missing tables): each record's next read is taken as its latest."""

        id = peewee.CharField(primary_key=True, max_length=64)  # the record id
        lineage = peewee.CharField(max_length=64, default="")
        generation = peewee.BigIntegerField(default=0)

        class Meta:
            table_name = "store_generation"

    class StoreTombstone(peewee.Model):
        """Each storing (`Commit.lineage`) of a record that was deleted through this node or replaced
        by another storing: never served again when put back into the store (`store.generations`).
        Kept for good (a row per deletion); a new table, made empty where the schema is older (the
        schema upgrade makes missing tables): series deleted before it are not known."""

        record_id = peewee.CharField(max_length=64)
        lineage = peewee.CharField(max_length=64)
        buried_at = peewee.DateTimeField(default=utcnow)

        class Meta:
            table_name = "store_tombstone"
            primary_key = peewee.CompositeKey("record_id", "lineage")

    models = CatalogueModels(Patient, Study, Series, Instance, StoreGeneration, StoreTombstone)
    for model in models.all:
        model._meta.database = database
    return models


@dataclass(frozen=True)
class InstanceHeader:
    """What the catalogue keeps of one stored file: its header, its checksum and its blob index."""

    dataset: Dataset
    sha256: str
    blob: int


def index_series(cat: CatalogueModels, record_id: str, headers: list[InstanceHeader]) -> None:
    """Insert or update the patient, study, series and instance rows of one stored series (the
    patient and study rows made with a new series; those of a catalogued series only counted again).

    Idempotent: indexing the same series again (after it grew) adds the new instances and
    refreshes the counts. Runs in one transaction, so a query never sees half a series; one that
    holds the write lock from its start (`exclusive_transaction`), because it reads rows, then writes:
    on SQLite a deferred transaction that another worker's commit overtakes between the two fails at
    once with "database is locked" (the busy timeout does not apply), a 500 for that upload.
    """
    if not headers:
        return
    first = headers[0].dataset
    database = cat.Patient._meta.database
    with exclusive_transaction(database, "sivr-catalogue"):
        # a series that grows has its study and patient already: one C-STORE costs no lookup of them
        series = cat.Series.get_or_none(cat.Series.id == record_id)
        if series is None:
            series = cat.Series.create(
                id=record_id, series_uid=_text(first, "SeriesInstanceUID"), study=_study_row(cat, first),
                modality=_text(first, "Modality", 16), series_number=_int(first, "SeriesNumber"),
                description=_text(first, "SeriesDescription"))
        # only the headers' own UIDs are looked up: one instance added to a large series costs one instance
        uids = [_text(header.dataset, "SOPInstanceUID") for header in headers]
        known: set[str] = set()
        for start in range(0, len(uids), UID_BATCH):
            known.update(row.sop_instance_uid for row in cat.Instance.select(cat.Instance.sop_instance_uid)
                         .where((cat.Instance.series == series) & cat.Instance.sop_instance_uid.in_(
                             uids[start:start + UID_BATCH])))
        rows = []
        for uid, header in zip(uids, headers, strict=True):
            if uid in known:
                continue
            known.add(uid)
            rows.append({"sop_instance_uid": uid, "series": series,
                         "sop_class_uid": _text(header.dataset, "SOPClassUID"),
                         "instance_number": _int(header.dataset, "InstanceNumber"),
                         "sha256": header.sha256, "blob": header.blob})
        # one INSERT per batch, not one per instance (peewee building each INSERT cost more than SQLite)
        for start in range(0, len(rows), INSERT_BATCH):
            cat.Instance.insert_many(rows[start:start + INSERT_BATCH]).execute()
        series.instance_count = cat.Instance.select().where(cat.Instance.series == series).count()
        series.updated_at = utcnow()
        series.save()
        _refresh_study(cat, series.study_id)


def _study_row(cat: CatalogueModels, first: Dataset):
    """The study (and its patient) a new series is filed under, made from its first file if new."""
    patient_id, issuer = patient_key(first)
    patient, _ = cat.Patient.get_or_create(
        patient_id=patient_id, issuer=issuer,
        defaults={"name": _text(first, "PatientName", 200), "birth_date": _date(first, "PatientBirthDate"),
                  "sex": _text(first, "PatientSex", 16)})
    study, _ = cat.Study.get_or_create(study_uid=_text(first, "StudyInstanceUID"), defaults={
        "patient": patient, "study_date": _date(first, "StudyDate"), "study_time": _time(first, "StudyTime"),
        "accession_number": _text(first, "AccessionNumber", 16), "study_id": _text(first, "StudyID", 16),
        "description": _text(first, "StudyDescription"),
        "referring_physician": _text(first, "ReferringPhysicianName", 200)})
    return study


def _refresh_study(cat: CatalogueModels, study_id: int) -> None:
    """Counts and ModalitiesInStudy of a study, from its series."""
    rows = list(cat.Series.select(cat.Series.modality, cat.Series.instance_count).where(cat.Series.study == study_id))
    cat.Study.update(series_count=len(rows), instance_count=sum(r.instance_count for r in rows),
                     modalities="\\".join(sorted({r.modality for r in rows if r.modality}))[:64],
                     ).where(cat.Study.id == study_id).execute()


def forget_series(cat: CatalogueModels, record_id: str) -> None:
    """Drop a series (deleted or quarantined record) and any study or patient left empty."""
    series = cat.Series.get_or_none(cat.Series.id == record_id)
    if series is None:
        return
    with cat.Patient._meta.database.atomic():
        study = series.study
        cat.Instance.delete().where(cat.Instance.series == series).execute()
        series.delete_instance()
        if cat.Series.select().where(cat.Series.study == study).exists():
            _refresh_study(cat, study.id)
            return
        patient = study.patient
        study.delete_instance()
        if not cat.Study.select().where(cat.Study.patient == patient).exists():
            patient.delete_instance()


def stored_headers(store, record_id: str, manifest: Manifest) -> list[InstanceHeader]:
    """Headers of every file of a stored record, read back from the store (for records whose
    manifest predates the catalogue), stored-only ones included. Pixel data is not parsed."""
    headers = []
    for info in manifest.every_file:
        raw = store.read_file(record_id, info.blob, info.sha256, verify=False)
        headers.append(InstanceHeader(dcmread(io.BytesIO(raw), stop_before_pixels=True, force=True),
                                      info.sha256, info.blob))
    return headers


def refresh_series(store, cat: CatalogueModels, record_id: str, manifest: Manifest) -> int:
    """Index the instances of a grown series that the catalogue lacks (another node appended them to a
    shared store); only their headers are read. Returns how many files were read."""
    known = {row.blob for row in cat.Instance.select(cat.Instance.blob).where(cat.Instance.series == record_id)}
    headers = []
    for info in manifest.every_file:
        if info.blob in known:
            continue
        raw = store.read_file(record_id, info.blob, info.sha256, verify=False)
        headers.append(InstanceHeader(dcmread(io.BytesIO(raw), stop_before_pixels=True, force=True),
                                      info.sha256, info.blob))
    index_series(cat, record_id, headers)
    return len(headers)


def backfill(store, cat: CatalogueModels, record_ids: Iterable[str]) -> int:
    """Index every stored record the catalogue does not know yet; returns how many were indexed.

    A record that cannot be read is left to the caller's quarantine rule (it is skipped here
    and logged), so one damaged record never stops an upgrade.
    """
    known = {row.id for row in cat.Series.select(cat.Series.id)}
    indexed = 0
    for record_id in record_ids:
        if record_id in known:
            continue
        try:
            manifest = store.read_manifest(record_id)
            index_series(cat, record_id, stored_headers(store, record_id, manifest))
        except Exception as exc:
            log.error("record %s could not be indexed in the catalogue: %s", record_id, exc)
            continue
        indexed += 1
    return indexed
