"""Tables of an institution server: its render nodes, the records stored on them, findings.

The models are bound to a `DatabaseProxy` so that `create_app` (or `upgrade`) decides which
database they use; SQLite, PostgreSQL and CockroachDB all take the same field types.
Every table carries the institution id even though one server serves one institution, so two
institution servers may share one database cluster without seeing each other's rows.
"""

from __future__ import annotations

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from daemons.institution.access import this_institution
from shared.audit import make_audit_model
from shared.config import Config
from shared.db import (
    Migration,
    bind_models,
    model_base,
    new_id,
    upgrade_from_config,
    utcnow,
)
from shared.db_copy import copy_database
from shared.field_rules import MAX_USERNAME_LENGTH

database_proxy = peewee.DatabaseProxy()
BaseModel = model_base(database_proxy)


class Node(BaseModel):
    """A render node of this institution: where its records are stored and rendered."""

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    name = peewee.CharField(max_length=120)
    url = peewee.CharField(max_length=2048)
    # The shared record store the node declares (e.g. "s3:https://s3.example.org/bucket/north"): nodes
    # with the same non-empty store serve each other's records. Empty: the node's own disk.
    store = peewee.CharField(max_length=512, default="")
    institution_id = peewee.CharField(max_length=36, index=True)
    created_at = peewee.DateTimeField(default=utcnow)
    # the node's Ed25519 public key (raw, base64) that verifies its upload receipts (shared.receipts);
    # empty for a node registered before receipts: no record is registered on it until it is set
    receipt_key = peewee.CharField(max_length=64, default="")

    class Meta:
        table_name = "node"
        indexes = ((("institution_id", "name"), True),)


class Record(BaseModel):
    """Metadata of one record stored on one node; the same content may be stored on several.

    `id` is the SHA-256 of the content, so a surrogate key `pk` keeps (id, node) pairs apart.
    """

    pk = peewee.AutoField()
    id = peewee.CharField(max_length=64)  # looked up through the unique (id, node) index
    node = peewee.ForeignKeyField(Node, column_name="node_id", backref="records",
                                  on_delete="RESTRICT")
    rows = peewee.IntegerField()
    columns = peewee.IntegerField()
    frames = peewee.IntegerField()
    modality = peewee.CharField(max_length=16)
    record_type = peewee.CharField(max_length=64, default="")
    patient_id = peewee.CharField(max_length=36, index=True)
    description = peewee.TextField(default="")
    study_date = peewee.DateField(null=True)
    registered_by = peewee.CharField(max_length=36)
    registered_at = peewee.DateTimeField(default=utcnow, index=True)
    # the series' StudyInstanceUID as its node's receipt states it: a study's series are registered for
    # one patient (`records._refuse_study_of_another_patient`). None: registered before schema 6, or
    # with a receipt stating no study (an older node's); such a registration is not compared.
    study_uid = peewee.CharField(max_length=64, null=True, index=True)

    class Meta:
        table_name = "record"
        indexes = ((("id", "node"), True),)


class Finding(BaseModel):
    """A radiological finding written by a physician of this institution about one patient."""

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    institution_id = peewee.CharField(max_length=36, index=True)
    patient_id = peewee.CharField(max_length=36, index=True)
    author_id = peewee.CharField(max_length=36, index=True)
    author_name = peewee.CharField(max_length=150)
    description = peewee.TextField()
    findings = peewee.TextField()
    conclusion = peewee.TextField()
    recommendation = peewee.TextField(default="")
    date = peewee.DateField(index=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "finding"


class FindingRecord(BaseModel):
    """Link from a finding to a record that may be stored in any institution."""

    pk = peewee.AutoField()
    finding = peewee.ForeignKeyField(Finding, column_name="finding_id", backref="links",
                                     on_delete="CASCADE")
    record_id = peewee.CharField(max_length=64, index=True)
    institution_id = peewee.CharField(max_length=36)
    node_id = peewee.CharField(max_length=36, null=True)

    class Meta:
        table_name = "finding_record"
        indexes = ((("finding", "record_id", "institution_id"), True),)


class FindingVersion(BaseModel):
    """A finding's text as it stood before one change, or before its deletion.

    A finding once read is part of the patient's record: a reader must be able to learn what it said
    when a colleague acted on it, and who changed it since (`finding_history`). Keyed by the finding's
    id without a foreign key, so the versions outlive a deleted finding. Changes made before schema 5
    left none: a finding's history starts at its first change after the upgrade.
    """

    pk = peewee.AutoField()
    finding_id = peewee.CharField(max_length=36)
    version = peewee.IntegerField()  # 1 for the text as created; the finding itself is the next one
    institution_id = peewee.CharField(max_length=36, index=True)
    patient_id = peewee.CharField(max_length=36, index=True)
    author_id = peewee.CharField(max_length=36)
    author_name = peewee.CharField(max_length=150)
    description = peewee.TextField()
    findings = peewee.TextField()
    conclusion = peewee.TextField()
    recommendation = peewee.TextField()
    date = peewee.DateField()
    records = peewee.TextField()  # the links as a JSON list of RecordLink objects
    written_at = peewee.DateTimeField()  # when this text was saved (the finding's updated_at then)
    change = peewee.CharField(max_length=16)  # what ended it: update, link, unlink or delete
    changed_at = peewee.DateTimeField(default=utcnow)
    changed_by_id = peewee.CharField(max_length=36)
    changed_by_name = peewee.CharField(max_length=150)

    class Meta:
        table_name = "finding_version"
        indexes = ((("finding_id", "version"), True),)


class AuditEntry(make_audit_model(database_proxy)):  # type: ignore[misc]
    """The shared audit table, plus the institution whose server wrote the entry (this server's, as
    every other table carries it): two institution servers sharing one database each show their
    administrators only their own log (`app.entries_of_this_institution`); without it, an admin of A
    read who at B had read which patient's findings. Entries written before schema 4 have none (NULL)."""

    institution_id = peewee.CharField(max_length=36, null=True, index=True, default=this_institution)

    class Meta:
        table_name = "audit_entry"

class RevokedReceiptKey(BaseModel):
    """A node's receipt key an administrator removed from the registry (suspected stolen): it is never
    registered again, on that node or another of this institution (`daemons.institution.nodes`). Had
    it been, a receipt the thief signed with it, which the removal was meant to stop, would register
    again. No link to the node: the node may be deleted, the key stays refused."""

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    institution_id = peewee.CharField(max_length=36, default=this_institution)
    public_key = peewee.CharField(max_length=64)
    node_id = peewee.CharField(max_length=36)
    node_name = peewee.CharField(max_length=120)
    revoked_at = peewee.DateTimeField(default=utcnow)
    revoked_by = peewee.CharField(max_length=MAX_USERNAME_LENGTH)

    class Meta:
        table_name = "revoked_receipt_key"
        indexes = ((("institution_id", "public_key"), True),)


MODELS: tuple[type[peewee.Model], ...] = (Node, Record, Finding, FindingRecord, FindingVersion, RevokedReceiptKey,
                                          AuditEntry)


def _add_node_receipt_key(db: peewee.Database) -> None:
    """Schema 1 -> 2: nodes carry the public key of their upload receipts.

    Existing nodes get none: records are no longer registered on them (422 node_receipt_key_missing)
    until an administrator sets the key the node shows at `GET /api/v1/node` (console: Nodes, or
    `PUT /api/v1/nodes/{id} {"receipt_key": ...}`). Records registered before stay as they are.
    """
    migrate(SchemaMigrator.from_database(db).add_column("node", "receipt_key",
                                                        peewee.CharField(max_length=64, default="")))


def _add_node_store(db: peewee.Database) -> None:
    """Schema 2 -> 3: render nodes declare the shared record store they use (empty: their own disk)."""
    migrate(SchemaMigrator.from_database(db).add_column("node", "store", peewee.CharField(max_length=512, default="")))


def _add_audit_institution(db: peewee.Database) -> None:
    """Schema 3 -> 4: audit entries name the institution whose server wrote them (NULL before).

    A database that has no audit table yet gets it, column included, from `create_tables`, as does
    the column's index (named as a new install names it)."""
    if not db.table_exists("audit_entry"):
        return
    if "institution_id" not in {column.name for column in db.get_columns("audit_entry")}:
        migrate(SchemaMigrator.from_database(db).add_column("audit_entry", "institution_id",
                                                            peewee.CharField(max_length=36, null=True)))


def _add_finding_versions(db: peewee.Database) -> None:
    """Schema 4 -> 5: the earlier texts of findings are kept (`FindingVersion`); none exist before."""
    db.create_tables([FindingVersion], safe=True)


def _add_record_study(db: peewee.Database) -> None:
    """Schema 5 -> 6: registrations keep the study their node's receipt states (`Record.study_uid`).

    Registrations made before have none (NULL) and are not compared with the study's other series.
    A database that has no record table yet gets it, column included, from `create_tables`, as does
    the column's index (named as a new install names it)."""
    if db.table_exists("record") and "study_uid" not in {column.name for column in db.get_columns("record")}:
        migrate(SchemaMigrator.from_database(db).add_column("record", "study_uid",
                                                            peewee.CharField(max_length=64, null=True)))


def _add_revoked_receipt_keys(db: peewee.Database) -> None:
    """Schema 6 -> 7: receipt keys removed from the registry are kept, and refused if set again
    (`RevokedReceiptKey`). Keys removed before are not known: one of them can still be set again."""
    db.create_tables([RevokedReceiptKey], safe=True)


# Schema upgrades, oldest first (shared.db.upgrade_schema); readiness expects schema_target(MIGRATIONS).
MIGRATIONS: tuple[Migration, ...] = (_add_node_receipt_key, _add_node_store, _add_audit_institution,
                                     _add_finding_versions, _add_record_study, _add_revoked_receipt_keys)


def bind_database(config: Config) -> peewee.Database:
    """Connect to the configured database and point every model of this layer at it."""
    return bind_models(database_proxy, config)


def upgrade(config: Config) -> int:
    """Create or upgrade the institution schema; returns the schema version now in place."""
    return upgrade_from_config(config, "institution", MODELS, MIGRATIONS)


def copy(config: Config, url: str) -> dict[str, int]:
    """Copy the institution server's rows into the empty database at `url` (`sivr db copy`); rows
    per table. The copy's audit entry names this institution, as the server's own entries do."""
    return copy_database(config, url, "institution", MODELS, MIGRATIONS, AuditEntry,
                         {"institution_id": config["institution"]["id"]})
