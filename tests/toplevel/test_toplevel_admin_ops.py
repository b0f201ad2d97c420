"""The operations `sivr` runs on the toplevel database directly: schema upgrade and bootstrapping."""

from __future__ import annotations

import uuid

import peewee
import pytest

from daemons.toplevel import admin_ops
from daemons.toplevel.models import MODELS, AuditEntry, Institution, LoginFailure, User, upgrade
from shared.audit import make_audit_model
from shared.db import SchemaVersion, database_from_config, utcnow

from .support import Api


def test_upgrade_is_idempotent(config):
    assert upgrade(config) == 5
    assert upgrade(config) == 5


def test_upgrade_makes_every_schema_1_admin_a_system_admin(config):
    """A database as the code before the role split made it: schema 1, role `admin`, open sessions."""
    db = database_from_config(config)
    with db.bind_ctx([*MODELS, SchemaVersion]), db.connection_context():
        db.create_tables([*MODELS, SchemaVersion])
        SchemaVersion.create(layer="toplevel", version=1)
        inst = Institution.create(name="Old Hospital")
        for name, role in (("old.admin", "admin"), ("old.doc", "physician")):
            User.create(username=name, password_hash="x", role=role, institution=inst)
    db.close()

    assert upgrade(config) == 5
    with db.bind_ctx([*MODELS, SchemaVersion]), db.connection_context():
        assert {u.username: u.role for u in User.select()} == {"old.admin": "sysadmin", "old.doc": "physician"}
    db.close()
    assert admin_ops.set_role(config, "Old.Admin", "instadmin")["role"] == "instadmin"
    with pytest.raises(ValueError, match="role"):
        admin_ops.set_role(config, "old.admin", "admin")
    with pytest.raises(ValueError, match="no user"):
        admin_ops.set_role(config, "nobody", "physician")


def test_create_institution_is_idempotent_by_name(config):
    upgrade(config)
    fixed = str(uuid.uuid4())
    first = admin_ops.create_institution(config, "Hospital", "Street 1", "https://h.example:5002",
                                         institution_id=fixed)
    assert first == {"id": fixed, "name": "Hospital", "address": "Street 1", "server_url": "https://h.example:5002"}
    again = admin_ops.create_institution(config, "Hospital", "elsewhere")
    assert again == first
    assert admin_ops.list_institutions(config) == [first]


@pytest.mark.parametrize("kwargs, message", [
    ({"name": ""}, "name"),
    ({"name": "X", "server_url": "not a url"}, "server_url"),
    ({"name": "X", "institution_id": "nope"}, "institution_id"),
])
def test_create_institution_refuses_bad_input(config, kwargs, message):
    upgrade(config)
    with pytest.raises(ValueError, match=message):
        admin_ops.create_institution(config, **kwargs)
    assert admin_ops.list_institutions(config) == []


def test_create_user_and_log_in(config, app):
    inst = admin_ops.list_institutions(config)[0]
    user = admin_ops.create_user(config, "Second.Admin", "second-admin-pw", "sysadmin", inst["id"], "Second")
    assert user["username"] == "second.admin" and user["role"] == "sysadmin" and "password_hash" not in user
    assert Api(app.test_client()).login("second.admin", "second-admin-pw")["user"]["id"] == user["id"]


@pytest.mark.parametrize("kwargs, message", [
    ({"username": "admin"}, "already taken"),
    ({"password": "short"}, "at least 10"),
    ({"role": "root"}, "role"),
    ({"institution_id": str(uuid.uuid4())}, "does not exist"),
    ({"institution_id": "x"}, "institution_id"),
    ({"username": "a b"}, "username"),
])
def test_create_user_raises_clear_value_errors(config, seed, kwargs, message):
    args = {"username": "new.user", "password": "long-enough-pw", "role": "physician",
            "institution_id": seed.institution_a["id"]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        admin_ops.create_user(config, **args)


def test_ensure_record_types_adds_only_missing(config, seed):
    first = admin_ops.ensure_record_types(config, [("CT", "Computed tomography"), ("mr", "Magnetic resonance")])
    assert [(t["code"], t["name"]) for t in first] == [("CT", "Computed tomography"), ("MR", "Magnetic resonance")]
    second = admin_ops.ensure_record_types(config, [("CT", "renamed"), ("US", "Ultrasound")])
    assert [(t["code"], t["name"]) for t in second] == [
        ("CT", "Computed tomography"), ("MR", "Magnetic resonance"), ("US", "Ultrasound")]
    with pytest.raises(ValueError, match="code"):
        admin_ops.ensure_record_types(config, [("bad code", "x")])


def test_upgrade_keeps_schema_2_login_failures_as_failures(config):
    """Schema 2's login_failure had no `settled`: its rows were failures, and stay counted as such."""

    class OldLoginFailure(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=36)
        at = peewee.DateTimeField()
        username = peewee.CharField(max_length=150)
        client_ip = peewee.CharField(max_length=64)

        class Meta:
            table_name = "login_failure"

    db = database_from_config(config)
    others = [model for model in MODELS if model is not LoginFailure]
    with db.bind_ctx([*others, OldLoginFailure, SchemaVersion]), db.connection_context():
        db.create_tables([*others, OldLoginFailure, SchemaVersion])
        SchemaVersion.create(layer="toplevel", version=2)
        OldLoginFailure.create(id="f1", at=utcnow(), username="dr.house", client_ip="10.0.0.1")
    db.close()

    assert upgrade(config) == 5
    with db.bind_ctx([LoginFailure]), db.connection_context():
        assert [(row.id, row.settled) for row in LoginFailure.select()] == [("f1", True)]
    db.close()


def test_upgrade_gives_schema_3_audit_entries_no_actor_and_new_ones_theirs(config):
    """Schema 4 keeps the actor's institution and role on each audit entry; older entries keep
    their rows and have none (the audit scope then follows the user's membership, as before)."""
    OldAuditEntry = make_audit_model(peewee.DatabaseProxy())  # schema 3's table: no actor columns
    db = database_from_config(config)
    others = [model for model in MODELS if model is not AuditEntry]
    with db.bind_ctx([*others, OldAuditEntry, SchemaVersion]), db.connection_context():
        db.create_tables([*others, OldAuditEntry, SchemaVersion])
        SchemaVersion.create(layer="toplevel", version=3)
        OldAuditEntry.create(id="e1", user_id="u1", username="dr.old", action="patient.read", object_type="patient",
                             client_ip="10.0.0.1")
    db.close()

    assert upgrade(config) == 5
    with db.bind_ctx([AuditEntry]), db.connection_context():
        assert [(e.id, e.username, e.actor_institution_id, e.actor_role) for e in AuditEntry.select()] == [
            ("e1", "dr.old", None, None)]
        AuditEntry.create(user_id="u2", username="dr.new", action="patient.read", object_type="patient",
                          client_ip="10.0.0.2", actor_institution_id="i1", actor_role="physician")
        assert AuditEntry.select().where(AuditEntry.actor_institution_id == "i1").count() == 1
        upgraded_indexes = sorted(index.name for index in db.get_indexes("audit_entry"))
    db.close()
    assert upgrade(config) == 5  # again: nothing to do
    fresh = database_from_config(config)
    with fresh.bind_ctx([AuditEntry]), fresh.connection_context():
        fresh.drop_tables([AuditEntry])
        fresh.create_tables([AuditEntry])
        assert upgraded_indexes == sorted(index.name for index in fresh.get_indexes("audit_entry"))  # as installed
    fresh.close()


def test_upgrade_stores_every_insurance_number_in_its_searched_form_and_merges_no_patients(config, caplog):
    """Schema 5 stores insurance numbers as they are searched for (NFKC, one space between words):
    a number stored in full-width letters before could no longer be found by typing it, and its
    ASCII form could be created beside it. One whose form another patient's number has already is
    kept as it was, and logged."""
    from daemons.toplevel.models import Patient

    db = database_from_config(config)
    with db.bind_ctx([*MODELS, SchemaVersion]), db.connection_context():
        db.create_tables([*MODELS, SchemaVersion])
        SchemaVersion.create(layer="toplevel", version=4)
        for ident, number in (("p1", "ＨＲ-１２３"), ("p2", "AT  77"), ("p3", "DE-9"), ("p4", "ＤＥ-９")):
            Patient.create(id=ident, first_name="Ana", last_name="Horvat", sex="F", birth_date="1970-01-01",
                           insurance_number=number)
    db.close()

    assert upgrade(config) == 5
    with db.bind_ctx([Patient]), db.connection_context():
        assert {p.id: p.insurance_number for p in Patient.select()} == {
            "p1": "HR-123", "p2": "AT 77", "p3": "DE-9", "p4": "ＤＥ-９"}
    db.close()
    assert "p4" in caplog.text and "another patient's number" in caplog.text
