"""The node's work list (issue 11, patient identity): unfiled series with their DICOM patient,
receipts for series that arrived without an upload, the filed flag, and its schema migration."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from daemons.render.models import upgrade
from daemons.render.settings import KEYS
from shared.config import build_config
from shared.receipts import Expected, verify_receipt
from tests.render.conftest import close_node
from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive
from tests.render.synthetic import dataset, to_bytes


def _patient(ds, name="DOE^JANE", patient_id="INS-0042", birth="19610412"):
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, patient_id, birth, "F"
    ds.IssuerOfPatientID = "SIVR-TEST"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study of", patient_id])  # a study belongs to one patient
    ds.StudyDate, ds.StudyDescription, ds.AccessionNumber = "20260101", "CT chest", "ACC1"
    ds.SeriesDescription = "axial 1 mm"
    return ds


@pytest.fixture
def archive(make_node):
    harness = open_archive(make_node)
    yield harness
    if not getattr(harness, "closed", False):
        close_archive(harness)


def store_statuses(port: int, datasets) -> list[int]:
    """The C-STORE status of each of `datasets`, sent in one association."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def c_store(port: int, datasets) -> None:
    assert store_statuses(port, datasets) == [0] * len(datasets)


def received_series(harness, series_uid="1.2.826.0.1.91", count=3) -> str:
    """A series sent by C-STORE; returns its record id."""
    c_store(harness.dicom_port, [_patient(dataset(series=series_uid, position=float(i))) for i in range(count)])
    the_node = harness.app.extensions["sivr_node"]
    return the_node.models.catalogue.Series.get(the_node.models.catalogue.Series.series_uid == series_uid).id


def test_cstore_series_is_listed_with_its_dicom_patient_until_filed(archive):
    record_id = received_series(archive)
    uploaded = archive.upload([("a.dcm", to_bytes(_patient(dataset(series="1.2.826.0.1.92"), name="ROE^RICHARD")))])
    assert uploaded.status_code == 201
    answer = archive.client.get("/api/v1/worklist", headers=archive.headers())
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["total"] == 2  # the upload is not filed until the browser says it registered it
    item = next(i for i in body["items"] if i["id"] == record_id)
    assert item["patient"] == {"name": "DOE^JANE", "patient_id": "INS-0042", "issuer": "SIVR-TEST",
                               "birth_date": "19610412", "sex": "F"}
    assert item["study"]["date"] == "20260101" and item["study"]["description"] == "CT chest"
    assert item["study"]["accession_number"] == "ACC1"
    assert item["series"]["modality"] == "CT" and item["series"]["count"] == 3
    assert item["series"]["description"] == "axial 1 mm"
    assert item["frames"] == 3 and item["rows"] == 8 and item["received_from"] == f"dicom:{CALLER}"
    paged = archive.client.get("/api/v1/worklist?limit=1&offset=1", headers=archive.headers()).get_json()
    assert paged["total"] == 2 and len(paged["items"]) == 1

    filed = archive.client.post(f"/api/v1/records/{record_id}/filed", headers=archive.headers())
    assert filed.status_code == 200 and filed.get_json() == {"id": record_id, "filed": True}
    assert archive.client.post(f"/api/v1/records/{record_id}/filed", headers=archive.headers()).status_code == 200
    left = archive.client.get("/api/v1/worklist", headers=archive.headers()).get_json()
    assert [i["id"] for i in left["items"]] == [uploaded.get_json()["id"]]

    audit = archive.app.extensions["sivr_node"].models.AuditEntry
    actions = [e.action for e in audit.select().where(audit.object_id == record_id)]
    # shown twice (the whole list, then the second page), filed once though marked twice
    assert actions.count("worklist.read") == 2 and actions.count("record.filed") == 1


def test_receipt_for_a_received_series_is_the_nodes_signature_for_the_caller(archive):
    record_id = received_series(archive)
    user = str(uuid.uuid4())
    answer = archive.client.post(f"/api/v1/records/{record_id}/receipt", headers=archive.headers(user_id=user))
    assert answer.status_code == 200
    the_node = archive.app.extensions["sivr_node"]
    stated = verify_receipt(answer.get_json()["receipt"], the_node.receipt_key.public_key(),
                            Expected(the_node.url, record_id, archive.institution_id, user)).dicom
    # the DICOM patient, which the institution compares with the SIVR patient (issue 11)
    assert stated == {"name": "DOE^JANE", "patient_id": "INS-0042", "issuer": "SIVR-TEST",
                      "birth_date": "19610412", "sex": "F"}
    archive.client.post(f"/api/v1/records/{record_id}/filed", headers=archive.headers())
    again = archive.client.post(f"/api/v1/records/{record_id}/receipt", headers=archive.headers(user_id=user))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_filed"


@pytest.mark.parametrize("role", ["physician", "instadmin", "sysadmin"])
def test_worklist_is_for_the_institution(archive, role):
    received_series(archive)
    other = str(uuid.uuid4())
    refused = archive.client.get("/api/v1/worklist", headers=archive.headers(role, institution_id=other))
    if role == "sysadmin":  # a system administrator administers every institution
        assert refused.status_code == 200
    else:
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert archive.client.get("/api/v1/worklist", headers=archive.headers(role)).status_code == 200


def test_filing_and_receipts_are_for_physicians_of_the_institution(archive):
    record_id = received_series(archive)
    other = str(uuid.uuid4())
    for action in ("receipt", "filed"):
        url = f"/api/v1/records/{record_id}/{action}"
        assert archive.client.post(url, headers=archive.headers(institution_id=other)).status_code == 403
        assert archive.client.post(url, headers=archive.headers("instadmin")).status_code == 403
        assert archive.client.post(url).status_code == 401
        missing = archive.client.post(f"/api/v1/records/{'0' * 64}/{action}", headers=archive.headers())
        assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
        bad = archive.client.post(f"/api/v1/records/not-an-id/{action}", headers=archive.headers())
        assert bad.status_code == 400 and "error" in bad.get_json()
    assert archive.client.get("/api/v1/worklist?limit=0", headers=archive.headers()).status_code == 400


def test_migration_from_the_previous_schema_keeps_every_series(archive, make_node):
    """A store of the schema before the filed flag: uploads count as filed, C-STOREd series wait."""
    received = received_series(archive)
    uploaded = archive.upload([("a.dcm", to_bytes(dataset(series="1.2.826.0.1.93")))]).get_json()["id"]
    root, institution = archive.root, archive.institution_id
    close_archive(archive)
    archive.closed = True
    with sqlite3.connect(root / "render.db") as db:  # back to schema 1, as the previous release made it
        for (index,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%filed%'"):
            db.execute(f'DROP INDEX "{index}"')
        db.execute("ALTER TABLE stored_record DROP COLUMN filed")
        db.execute("ALTER TABLE stored_record ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0")
        db.execute("DROP TABLE deleted_series")
        db.execute("UPDATE schema_version SET version = 1 WHERE layer = 'render'")
    config = build_config("render", KEYS, {
        "database": {"url": f"sqlite:///{root}/render.db"}, "node": {"institution_id": institution},
        "storage": {"dir": str(root / "store"), "key_file": str(root / "store.key")}}, None)
    assert upgrade(config) == 7   # later migrations run too (key images: tests/render/test_key_images.py)
    with sqlite3.connect(root / "render.db") as db:  # schema 3: the never-used stored_bytes column is gone
        assert "stored_bytes" not in {row[1] for row in db.execute("PRAGMA table_info(stored_record)")}
        # schema 6: the deleted series' patients (empty)
        assert db.execute("SELECT COUNT(*) FROM deleted_series").fetchone() == (0,)
    harness = make_node(root=root, institution_id=institution)
    try:
        rows = {r.id: r.filed for r in harness.app.extensions["sivr_node"].models.StoredRecord.select()}
        assert rows == {received: False, uploaded: True}
        # series filed before the store kept the mark get it at start-up
        assert harness.app.extensions["sivr_node"].store.filed_among([received, uploaded]) == {uploaded}
        listed = harness.client.get("/api/v1/worklist", headers=harness.headers()).get_json()
        assert [i["id"] for i in listed["items"]] == [received]
        assert harness.client.get(f"/api/v1/records/{uploaded}", headers=harness.headers()).status_code == 200
    finally:
        close_node(harness)


def test_each_series_shows_the_patient_its_own_images_name(archive):
    """Two series under one PatientID naming different people: the second must not borrow the first's
    name from the catalogue's patient row, or the physician would never see the disagreement."""
    first = received_series(archive, "1.2.826.0.1.94")
    c_store(archive.dicom_port, [_patient(dataset(series="1.2.826.0.1.95"), name="SOMEONE^ELSE")])
    items = archive.client.get("/api/v1/worklist", headers=archive.headers()).get_json()["items"]
    names = {i["id"]: i["patient"]["name"] for i in items}
    assert names[first] == "DOE^JANE"
    assert sorted(names.values()) == ["DOE^JANE", "SOMEONE^ELSE"]


def test_the_filed_mark_is_kept_in_the_store(archive):
    """A node sharing the store that never saw the series filed (its catalogue row says unfiled)
    follows the store's mark: off the work list, no second receipt. With S3, two real nodes:
    tests/s3/test_shared_store.py."""
    record_id = received_series(archive)
    the_node = archive.app.extensions["sivr_node"]
    assert the_node.store.filed_among([record_id]) == set()
    archive.client.post(f"/api/v1/records/{record_id}/filed", headers=archive.headers())
    assert the_node.store.filed_among([record_id]) == {record_id}
    stored = the_node.models.StoredRecord
    stored.update(filed=False).where(stored.id == record_id).execute()  # as on a node that took it over
    listed = archive.client.get("/api/v1/worklist", headers=archive.headers()).get_json()
    assert record_id not in [i["id"] for i in listed["items"]]
    assert stored.get_by_id(record_id).filed
    stored.update(filed=False).where(stored.id == record_id).execute()
    again = archive.client.post(f"/api/v1/records/{record_id}/receipt", headers=archive.headers())
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_filed"


def test_a_deleted_series_cannot_come_back_as_another_patients(archive):
    """A series' record id comes from its Series Instance UID, and findings keep their links to a
    deleted series: the same UID sent again for another patient took the record id, so the first
    patient's findings opened the other's images. Refused (0xA900, audited); the same patient's
    series may come back."""
    record_id = received_series(archive, "1.2.826.0.1.93", count=2)
    admin = archive.headers("instadmin")
    assert archive.client.delete(f"/api/v1/records/{record_id}", headers=admin).status_code == 204
    stranger = _patient(dataset(series="1.2.826.0.1.93", position=0.0), name="ROE^RICHARD", patient_id="INS-9999")
    assert store_statuses(archive.dicom_port, [stranger]) == [0xA900]
    upload = archive.upload([("roe.dcm", to_bytes(stranger))])
    assert upload.status_code == 409 and upload.get_json()["error"]["code"] == "series_conflict"
    the_node = archive.app.extensions["sivr_node"]
    series = the_node.models.catalogue.Series
    assert not series.select().where(series.id == record_id).exists()
    audit = the_node.models.AuditEntry
    assert audit.select().where((audit.action == "series.conflict") & (audit.object_id == record_id)).count() == 2
    assert received_series(archive, "1.2.826.0.1.93", count=1) == record_id  # Jane's again: accepted
