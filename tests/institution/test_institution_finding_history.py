"""A finding's earlier texts are kept at every change: what a colleague read stays traceable."""

from __future__ import annotations

import uuid
from pathlib import Path

import peewee
import pytest

from daemons.institution.models import database_proxy, upgrade

from .conftest import institution_config, local_link, sqlite_at_schema

REMOTE_LINK = {"record_id": "b" * 64, "institution_id": str(uuid.UUID(int=7)), "node_id": None}


def _versions(api, user, finding_id):
    return api.call("GET", f"/api/v1/findings/{finding_id}/versions", user)


def test_every_change_keeps_the_text_it_replaced(api, users, finding, record):
    author = users["physician"]
    url = f"/api/v1/findings/{finding['id']}"
    status, _ = api.call("PUT", url, author, {"conclusion": "Haemangioma confirmed by MR."})
    assert status == 200
    assert api.call("POST", f"{url}/records", author, REMOTE_LINK)[0] == 201
    assert api.call("DELETE", f"{url}/records/{REMOTE_LINK['record_id']}", author)[0] == 204
    status, history = _versions(api, users["physician_b"], finding["id"])  # read as the finding is read
    assert status == 200, history
    items = history["items"]
    assert [v["version"] for v in items] == [1, 2, 3] and history["current_version"] == 4
    assert [v["change"] for v in items] == ["update", "link", "unlink"]
    first = items[0]
    for key in ("description", "findings", "conclusion", "recommendation", "date", "patient_id", "author_id"):
        assert first[key] == finding[key], key
    assert first["records"] == [local_link(record)] and first["written_at"] == finding["created_at"]
    assert first["changed_by_id"] == author.id and first["changed_by_name"] == author.username
    assert items[1]["conclusion"] == "Haemangioma confirmed by MR."
    assert items[2]["records"] == [local_link(record), REMOTE_LINK]
    assert not history["deleted"]


def test_a_save_that_changes_nothing_keeps_no_version_and_audits_the_read(api, users, finding, record):
    """The viewer's edit form sends every text at each save: a save that changed nothing kept a
    version ("edited") and audited an edit of every field, so the history filled with copies."""
    author = users["physician"]
    url = f"/api/v1/findings/{finding['id']}"
    same = {key: finding[key] for key in ("description", "findings", "conclusion", "recommendation", "date",
                                          "patient_id")}
    status, answer = api.call("PUT", url, author, {**same, "records": [local_link(record)]})
    assert status == 200 and answer["conclusion"] == finding["conclusion"]
    status, history = _versions(api, author, finding["id"])
    assert history["items"] == [] and history["current_version"] == 1
    status, log = api.call("GET", f"/api/v1/audit?object_id={finding['id']}", users["admin"])
    actions = [(e["action"], e["detail"]) for e in log["items"] if e["action"].startswith("finding.")]
    assert ("finding.read", "saved unchanged") in actions and not any(a == "finding.update" for a, _ in actions)

    # every real change is kept, one field or one link at a time (the dangerous mistake: one taken as none)
    changes = [{"conclusion": "Changed."}, {"date": "2026-02-03"}, {"records": [REMOTE_LINK]},
               {"records": [{**REMOTE_LINK, "node_id": str(uuid.UUID(int=9))}]}, {"recommendation": ""}]
    for number, change in enumerate(changes, 1):
        status, answer = api.call("PUT", url, author, {**same, **change})
        assert status == 200, answer
        status, history = _versions(api, author, finding["id"])
        assert len(history["items"]) == number, change
        same = {**same, **{key: value for key, value in change.items() if key != "records"}}
    status, log = api.call("GET", "/api/v1/audit?action=finding.update", users["admin"])
    assert [e["detail"] for e in reversed(log["items"]) if e["object_id"] == finding["id"]] == [
        "conclusion", "date", "records", "records", "recommendation"]


def test_reading_the_history_is_audited_under_every_patient_it_names(api, users, finding, patient_id):
    other_patient = str(uuid.uuid4())
    status, _ = api.call("PUT", f"/api/v1/findings/{finding['id']}", users["physician"],
                         {"patient_id": other_patient, "records": [REMOTE_LINK]})
    assert status == 200
    status, history = _versions(api, users["physician2"], finding["id"])
    assert status == 200 and history["items"][0]["patient_id"] == patient_id
    status, log = api.call("GET", "/api/v1/audit?action=finding.versions.read", users["admin"])
    assert status == 200
    assert {(e["object_id"], e["patient_id"], e["user_id"]) for e in log["items"]} == {
        (finding["id"], patient_id, users["physician2"].id), (finding["id"], other_patient, users["physician2"].id)}


def test_a_deleted_findings_text_stays_for_the_institutions_administrators(api, users, finding):
    assert api.call("DELETE", f"/api/v1/findings/{finding['id']}", users["physician"])[0] == 204
    assert api.call("GET", f"/api/v1/findings/{finding['id']}", users["admin"])[0] == 404
    status, history = _versions(api, users["admin"], finding["id"])
    assert status == 200 and history["deleted"] and history["current_version"] is None
    assert [(v["version"], v["change"], v["findings"]) for v in history["items"]] == \
        [(1, "delete", finding["findings"])]
    for reader in ("physician", "physician2", "physician_b", "admin_b"):
        status, answer = _versions(api, users[reader], finding["id"])
        assert status == 403 and answer["error"]["code"] == "forbidden", reader


def test_an_empty_page_of_a_deleted_findings_history_is_audited_too(api, users, finding, patient_id):
    assert api.call("DELETE", f"/api/v1/findings/{finding['id']}", users["physician"])[0] == 204
    status, history = api.call("GET", f"/api/v1/findings/{finding['id']}/versions?before=1", users["admin"])
    assert status == 200 and history["items"] == [] and history["deleted"] and history["total"] == 1
    status, log = api.call("GET", "/api/v1/audit?action=finding.versions.read", users["admin"])
    assert [(e["object_id"], e["patient_id"]) for e in log["items"]] == [(finding["id"], patient_id)]


@pytest.mark.parametrize("who", ["physician2", "admin_b"])
def test_a_refused_change_keeps_no_version(api, users, finding, who):
    status, _ = api.call("PUT", f"/api/v1/findings/{finding['id']}", users[who], {"conclusion": "forged"})
    assert status == 403
    assert api.call("DELETE", f"/api/v1/findings/{finding['id']}", users["physician_b"])[0] == 403
    status, history = _versions(api, users["admin"], finding["id"])
    assert status == 200 and history["items"] == [] and history["current_version"] == 1


def test_unknown_and_malformed_finding_ids(api, users):
    status, answer = _versions(api, users["admin"], str(uuid.uuid4()))
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = _versions(api, users["admin"], "not-a-uuid")
    assert status == 400 and answer["error"]["code"] == "invalid_id"


def test_a_schema_4_database_gets_the_versions_table(tmp_path: Path, signing_keys):
    """Schema 4 -> 5 creates the versions table; findings written before start their history at
    their next change."""
    path = tmp_path / "v4.db"
    sqlite_at_schema(path, 4).close()
    config = institution_config(f"sqlite:///{path}", signing_keys)
    try:
        assert upgrade(config) == 7
        assert "finding_version" in peewee.SqliteDatabase(str(path)).get_tables()
    finally:
        database_proxy.close()


def test_a_long_history_is_read_a_page_at_a_time(api, users, finding):
    """An author who saves one finding 60 times (each text at its bound) made every read of its
    history carry all 60 (300 saves: 27.7 MB); an answer holds at most `PAGE_MAX` versions, the
    newest by default, and `?before=` pages back."""
    url = f"/api/v1/findings/{finding['id']}"
    texts = {"findings": "f" * 50_000, "conclusion": "c" * 20_000, "recommendation": "r" * 20_000}
    for n in range(60):
        assert api.call("PUT", url, users["physician"], {**texts, "description": f"save {n}"})[0] == 200
    reader = users["physician_b"]
    status, newest = _versions(api, reader, finding["id"])
    assert status == 200 and newest["total"] == 60 and newest["current_version"] == 61
    assert [v["version"] for v in newest["items"]] == list(range(41, 61))
    status, page = api.call("GET", f"{url}/versions?limit=50&before=41", reader)
    assert status == 200 and [v["version"] for v in page["items"]] == list(range(1, 41))
    assert page["items"][0]["description"] == finding["description"]
    status, page = api.call("GET", f"{url}/versions?limit=50", reader)
    assert [v["version"] for v in page["items"]] == list(range(11, 61))
    for query in ("limit=51", "limit=0", "limit=-1", "before=0", "before=x", f"before={2**63}"):
        status, answer = api.call("GET", f"{url}/versions?{query}", reader)
        assert status == 400 and answer["error"]["code"] == "validation_error", query


def test_a_deleted_findings_older_page_stays_for_administrators_only(api, users, finding):
    url = f"/api/v1/findings/{finding['id']}"
    for n in range(3):
        assert api.call("PUT", url, users["physician"], {"description": f"save {n}"})[0] == 200
    assert api.call("DELETE", url, users["admin"])[0] == 204
    status, answer = api.call("GET", f"{url}/versions?before=1", users["physician"])
    assert status == 403 and answer["error"]["code"] == "forbidden"
    status, page = api.call("GET", f"{url}/versions?before=3&limit=1", users["admin"])
    assert status == 200 and page["deleted"] and page["total"] == 4
    assert [v["description"] for v in page["items"]] == ["save 0"]


def test_a_finding_says_it_was_changed_even_within_the_second_it_was_written(api, users, finding, patient_id):
    """The viewer's "Changed … History" line compared `updated_at` with `created_at`, answered to the
    second: an edit within the second of the writing left the finding looking unchanged, its history
    unreachable (a browser test failed on a fast run). `changed` says whether a version was kept."""
    assert finding["changed"] is False
    status, edited = api.call("PUT", f"/api/v1/findings/{finding['id']}", users["physician"], {"conclusion": "Now."})
    assert status == 200 and edited["changed"] is True
    status, listed = api.call("GET", f"/api/v1/findings?patient_id={patient_id}", users["physician"])
    assert status == 200 and [f["changed"] for f in listed["items"] if f["id"] == finding["id"]] == [True]
