"""Attacks on the newest render-node routes and their neighbours (session 61).

`GET /api/v1/records/{id}` audited `record.read` before it read the series: a series the node
refused on the way (422, damaged and quarantined; 503, an older storing put back into the store)
left an entry saying the caller read it, although nothing of it was served, so "who saw this
record" named people who saw nothing. It is audited once its RecordMeta is made, as images are.

The rest holds and is kept as a guard: unfiling, filing and deleting a series while a modality is
still sending it (C-STORE on one association) answer 200/204/404/409 only, and leave the series
either whole or gone.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive
from tests.render.synthetic import dataset
from tests.render.test_put_back_delete import SLICES
from tests.render.test_worklist import _patient, received_series


def _reads(harness, record_id: str) -> int:
    audit = harness.app.extensions["sivr_node"].models.AuditEntry
    return audit.select().where((audit.object_id == record_id) & (audit.action == "record.read")).count()


def test_a_damaged_series_refused_is_not_audited_as_read(make_node):
    harness = make_node(storage__manifest_refresh_s=0)
    record_id = harness.upload(SLICES).json["id"]
    manifest = harness.root / "store" / record_id / "manifest.bin"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # its authentication fails: quarantined at its next read
    manifest.write_bytes(bytes(data))
    harness.app.extensions["sivr_node"].forget(record_id)

    reply = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
    assert reply.status_code == 422 and reply.json["error"]["code"] == "store_corrupt", reply.json
    assert _reads(harness, record_id) == 0


def test_an_older_storing_put_back_refused_is_not_audited_as_read(make_node):
    harness = make_node(storage__manifest_refresh_s=0)
    record_id = harness.upload(SLICES[:2]).json["id"]
    folder, aside = harness.root / "store" / record_id, harness.root / "older"
    shutil.copytree(folder, aside)
    assert harness.upload(SLICES).status_code == 201  # the series grows: a later commit
    shutil.rmtree(folder)
    shutil.copytree(aside, folder)  # its older copy put back in its place

    reply = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
    assert reply.status_code == 503 and reply.json["error"]["code"] == "store_unavailable", reply.json
    assert _reads(harness, record_id) == 0


def test_a_served_record_is_audited_as_read_once(make_node):
    harness = make_node()
    record_id = harness.upload(SLICES).json["id"]
    assert harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers()).status_code == 200
    assert _reads(harness, record_id) == 1


@pytest.fixture
def archive(make_node):
    harness = open_archive(make_node)
    yield harness
    close_archive(harness)


def test_unfiling_filing_and_deleting_while_a_modality_still_sends_the_series(archive):
    series_uid = "1.2.826.0.1.77"
    record_id = received_series(archive, series_uid=series_uid, count=2)
    statuses: list[int | None] = []

    def send() -> None:
        ae = AE(ae_title=CALLER)
        ae.add_requested_context(CTImageStorage)
        association = ae.associate("127.0.0.1", archive.dicom_port, ae_title=SCP)
        for i in range(30):
            status = association.send_c_store(_patient(dataset(series=series_uid, position=float(10 + i))))
            statuses.append(status.Status if status else None)
        association.release()

    sender = threading.Thread(target=send)
    sender.start()
    codes: Counter[int] = Counter()
    url = f"/api/v1/records/{record_id}"
    while sender.is_alive():
        codes[archive.client.delete(url, headers=archive.headers("instadmin")).status_code] += 1
        codes[archive.client.post(f"{url}/filed", headers=archive.headers()).status_code] += 1
        codes[archive.client.delete(f"{url}/filed", headers=archive.headers()).status_code] += 1
    sender.join()
    assert set(codes) <= {200, 204, 404, 409}, codes
    assert statuses == [0x0000] * 30
    reply = archive.client.get(f"/api/v1/records/{record_id}", headers=archive.headers())
    the_node = archive.app.extensions["sivr_node"]
    if reply.status_code == 200:  # stored again after the last delete: whole, as its manifest says
        assert the_node.store.exists(record_id) and reply.json["files"] >= 1
    else:
        assert reply.status_code == 404 and not the_node.store.exists(record_id)
