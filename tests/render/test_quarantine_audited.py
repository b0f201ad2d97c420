"""A damaged series the node quarantines leaves one entry in the audit log (session 61).

A series whose manifest fails to verify is moved to the store's `.quarantine` and dropped from the
catalogue at the read that finds it (`Node.quarantine`). Only a log line was written: the series
left every list and answered 404 from then on, and an administrator reading the audit log (the
console's audit screen, `GET /api/v1/audit`) found no trace of it. Now the quarantine is audited
`record.quarantined` by the node's own actor (`sivr-render-node`, as a put-back storing refused is),
with what failed to verify and where the files went, once: a later request for the series (404)
adds nothing. A series the store could not move aside (a disk error) is audited too, saying so.
"""

from __future__ import annotations

import pytest

from daemons.render.catalogue.generation_book import NODE_ACTOR
from tests.render.test_put_back_delete import SLICES

ANY_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def _damaged(harness) -> tuple[str, str]:
    """A stored series whose manifest no longer authenticates (one byte flipped on disk): its record
    id and its DICOMweb URL (named while the catalogue still holds it)."""
    record_id = harness.upload(SLICES).json["id"]
    series = harness.app.extensions["sivr_node"].models.catalogue.Series.get_by_id(record_id)
    url = f"/dicomweb/studies/{series.study.study_uid}/series/{series.series_uid}"
    manifest = harness.root / "store" / record_id / "manifest.bin"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    harness.app.extensions["sivr_node"].forget(record_id)
    return record_id, url


def _audited(harness, record_id: str) -> list[dict]:
    reply = harness.client.get("/api/v1/audit", headers=harness.headers(role="instadmin"),
                               query_string={"object_id": record_id, "action": "record.quarantined"})
    assert reply.status_code == 200, reply.json
    return reply.json["items"]


ROUTES = {
    "read": lambda h, record_id, _url: h.client.get(f"/api/v1/records/{record_id}", headers=h.headers()),
    "frame": lambda h, record_id, _url: h.client.get(f"/api/v1/records/{record_id}/frames/0", headers=h.headers()),
    "load": lambda h, record_id, _url: h.client.post(f"/api/v1/records/{record_id}/load", headers=h.headers()),
    "dicomweb": lambda h, _record_id, url: h.client.get(url, headers={**h.headers(), **ANY_DICOM}),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_series_quarantined_is_audited_once_by_the_node(make_node, route):
    harness = make_node(storage__manifest_refresh_s=0)
    record_id, url = _damaged(harness)

    reply = ROUTES[route](harness, record_id, url)
    assert reply.status_code == 422 and reply.json["error"]["code"] == "store_corrupt", reply.json
    aside = list((harness.root / "store" / ".quarantine").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(record_id)

    entries = _audited(harness, record_id)
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["username"] == NODE_ACTOR and entry["user_id"] == "", entry
    assert "damaged" in entry["detail"] and "authentication" in entry["detail"], entry["detail"]
    assert str(aside[0]) in entry["detail"], entry["detail"]  # where IT finds the files

    again = ROUTES[route](harness, record_id, url)  # it is gone now: nothing more to audit
    assert again.status_code == 404, again.json
    assert harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers()).status_code == 404
    assert len(_audited(harness, record_id)) == 1


def test_a_series_that_cannot_be_moved_aside_is_audited_with_what_to_do(make_node):
    harness = make_node(storage__manifest_refresh_s=0)
    record_id, _url = _damaged(harness)
    (harness.root / "store" / ".quarantine").write_text("in the way")  # the move aside fails (an OSError)

    reply = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
    assert reply.status_code == 422 and reply.json["error"]["code"] == "store_corrupt", reply.json
    assert (harness.root / "store" / record_id / "manifest.bin").is_file()
    entries = _audited(harness, record_id)
    assert len(entries) == 1 and entries[0]["username"] == NODE_ACTOR, entries
    assert "could not be moved aside" in entries[0]["detail"], entries[0]["detail"]
    assert "damaged" in entries[0]["detail"] and "authentication" in entries[0]["detail"], entries[0]["detail"]
