"""`/api/v1/findings`: written by physicians here, read by any physician or admin, changed by the author."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid

import pytest

from daemons.institution import findings as findings_module
from daemons.institution.findings import MAX_LINKS

from .conftest import (
    INSTITUTION_A,
    INSTITUTION_B,
    User,
    at_once,
    finding_body,
    local_link,
    record_body,
    reference_attacks,
)

REMOTE_LINK = {"record_id": hashlib.sha256(b"stored at institution B").hexdigest(),
               "institution_id": INSTITUTION_B, "node_id": "33333333-3333-4333-8333-333333333333"}


def _audit_actions(api, admin, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    status, body = api.call("GET", f"/api/v1/audit?{query}", admin)
    assert status == 200
    return [(e["action"], e["object_id"], e["patient_id"]) for e in body["items"]]


def test_physician_writes_a_finding_author_from_token(api, users, record, patient_id):
    physician = users["physician"]
    body = finding_body(patient_id, [local_link(record), REMOTE_LINK])
    status, finding = api.call("POST", "/api/v1/findings", physician, body)
    assert status == 201
    for key in ("patient_id", "description", "findings", "conclusion", "recommendation", "date"):
        assert finding[key] == body[key]
    assert finding["records"] == [local_link(record), REMOTE_LINK]
    assert finding["author_id"] == physician.id and finding["author_name"] == physician.username
    assert finding["institution_id"] == INSTITUTION_A
    assert finding["created_at"] == finding["updated_at"]
    assert ("finding.create", finding["id"], patient_id) in _audit_actions(api, users["admin"])


def test_report_text_keeps_line_breaks_and_unicode(api, users, record, patient_id):
    text = "Liver:\n\t- lesion 12 mm (segment VI)\r\n\t- no ascites\nÄußerst unauffällig — 肝臓 ✓"
    status, finding = api.call("POST", "/api/v1/findings", users["physician"],
                               finding_body(patient_id, [local_link(record)], findings=text))
    assert status == 201
    assert api.call("GET", f"/api/v1/findings/{finding['id']}", users["physician_b"])[1]["findings"] == text


def test_author_cannot_be_set_in_the_body(api, users, record, patient_id, db_state):
    before = db_state()
    for forged in ({"author_id": users["physician2"].id}, {"author_name": "Dr. Someone Else"},
                   {"institution_id": INSTITUTION_B}, {"id": str(uuid.uuid4())}):
        status, answer = api.call("POST", "/api/v1/findings", users["physician"],
                                  {**finding_body(patient_id, [local_link(record)]), **forged})
        assert status == 400 and "unknown field" in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("who", ["admin", "admin_b", "physician_b"])
def test_only_physicians_of_this_institution_write_findings(api, users, record, patient_id, db_state, who):
    before = db_state()
    status, answer = api.call("POST", "/api/v1/findings", users[who], finding_body(patient_id, [local_link(record)]))
    assert status == 403 and answer["error"]["code"] == "forbidden"
    assert db_state() == before


@pytest.mark.parametrize("change, code, fragment", [
    ({"patient_id": ""}, "invalid_id", "patient_id"),
    ({"patient_id": "everyone"}, "invalid_id", "patient_id"),
    ({"description": ""}, "validation_error", "description must not be empty"),
    ({"findings": "   "}, "validation_error", "findings must not be empty"),
    ({"conclusion": None}, "validation_error", "conclusion"),
    ({"date": "03.11.2026"}, "validation_error", "date"),
    ({"date": ""}, "validation_error", "date"),
    ({"description": "d" * 2001}, "validation_error", "description is longer"),
    ({"records": []}, "validation_error", "at least one record"),
    ({"records": "all"}, "validation_error", "records must be of type list"),
    ({"records": ["abc"]}, "validation_error", "records[0] must be an object"),
    ({"records": [{"record_id": "x", "institution_id": INSTITUTION_A}]}, "invalid_id", "records[0]"),
    ({"records": [{"record_id": "0" * 64}]}, "validation_error", "records[0]: institution_id is required"),
    ({"records": [{"record_id": "0" * 64, "institution_id": ""}]}, "invalid_id", "institution_id"),
    ({"records": [{"record_id": "0" * 64, "institution_id": INSTITUTION_B, "extra": 1}]},
     "validation_error", "unknown field"),
    ({"records": [REMOTE_LINK, REMOTE_LINK]}, "validation_error", "records[1] links the same record twice"),
    ({"records": [{**REMOTE_LINK, "record_id": f"{i:064x}"} for i in range(201)]}, "validation_error", "at most"),
    ({"findings": "a\u0000b"}, "validation_error", "findings must not contain control"),
    ({"conclusion": "\u001b[31mred"}, "validation_error", "conclusion must not contain control"),
    ({"recommendation": "\u007f"}, "validation_error", "recommendation must not contain control"),
    ({"description": "lone \ud83d surrogate"}, "validation_error", "invalid Unicode"),
])
def test_invalid_finding_bodies_are_refused(api, users, record, patient_id, db_state, change, code, fragment):
    before = db_state()
    status, answer = api.call("POST", "/api/v1/findings", users["physician"],
                              {**finding_body(patient_id, [local_link(record)]), **change})
    assert status == 400, answer
    assert answer["error"]["code"] == code and fragment in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("missing", ["patient_id", "description", "findings", "conclusion", "date", "records"])
def test_required_finding_fields(api, users, record, patient_id, missing):
    body = finding_body(patient_id, [local_link(record)])
    del body[missing]
    status, answer = api.call("POST", "/api/v1/findings", users["physician"], body)
    assert status == 400 and answer["error"]["message"] == f"{missing} is required"


def test_local_links_must_name_a_registered_record_of_the_same_patient(api, users, record, node, patient_id,
                                                                         db_state):
    other_patient = str(uuid.uuid4())
    status, theirs = api.call("POST", "/api/v1/records", users["physician"],
                              record_body(node["id"], other_patient, content=b"other patient"))
    assert status == 201
    before = db_state()
    unregistered = {"record_id": hashlib.sha256(b"never uploaded").hexdigest(), "institution_id": INSTITUTION_A}
    wrong_node = {**local_link(record), "node_id": str(uuid.uuid4())}
    for link, fragment in [(unregistered, "not registered"), (wrong_node, "not registered"),
                           (local_link(theirs), "another patient")]:
        status, answer = api.call("POST", "/api/v1/findings", users["physician"], finding_body(patient_id, [link]))
        assert status == 400 and fragment in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("who", ["admin", "physician", "physician2", "admin_b", "physician_b"])
def test_any_physician_or_admin_reads_a_patients_findings_audited(api, users, finding, patient_id, who):
    caller = users[who]
    status, listed = api.call("GET", f"/api/v1/findings?patient_id={patient_id}", caller)
    assert status == 200 and listed == {"items": [finding], "total": 1}
    status, read = api.call("GET", f"/api/v1/findings/{finding['id']}", caller)
    assert status == 200 and read == finding
    actions = _audit_actions(api, users["admin"], user_id=caller.id, patient_id=patient_id)
    assert ("finding.read", finding["id"], patient_id) in actions
    assert ("finding.search", None, patient_id) in actions


@pytest.mark.parametrize("who", ["admin", "physician", "admin_b"])
@pytest.mark.parametrize("query", ["", "?patient_id=", "?patient_id=%20", "?patient_id=*", "?limit=500"])
def test_listing_findings_needs_a_valid_patient_id(api, users, finding, who, query):
    status, answer = api.call("GET", f"/api/v1/findings{query}", users[who])
    assert status == 400 and "items" not in answer
    assert answer["error"]["code"] in ("validation_error", "invalid_id")
    assert "patient_id" in answer["error"]["message"]


def test_findings_list_only_the_patient_newest_first(api, users, record, finding, patient_id):
    body = finding_body(patient_id, [local_link(record)], date="2026-11-20", description="follow-up")
    status, newer = api.call("POST", "/api/v1/findings", users["physician2"], body)
    assert status == 201
    listed = api.call("GET", f"/api/v1/findings?patient_id={patient_id}", users["physician_b"])[1]
    assert [f["id"] for f in listed["items"]] == [newer["id"], finding["id"]]
    page = api.call("GET", f"/api/v1/findings?patient_id={patient_id}&limit=1&offset=1", users["admin"])[1]
    assert page["total"] == 2 and [f["id"] for f in page["items"]] == [finding["id"]]
    other = api.call("GET", f"/api/v1/findings?patient_id={uuid.uuid4()}", users["physician"])[1]
    assert other == {"items": [], "total": 0}


def test_author_edits_the_finding(api, users, finding, patient_id):
    status, edited = api.call("PUT", f"/api/v1/findings/{finding['id']}", users["physician"],
                              {"conclusion": "Haemangioma confirmed.", "records": [REMOTE_LINK]})
    assert status == 200
    assert edited["conclusion"] == "Haemangioma confirmed."
    assert edited["findings"] == finding["findings"] and edited["records"] == [REMOTE_LINK]
    assert edited["author_id"] == finding["author_id"] and edited["created_at"] == finding["created_at"]
    assert api.call("GET", f"/api/v1/findings/{finding['id']}", users["admin"])[1] == edited
    assert ("finding.update", finding["id"], patient_id) in _audit_actions(api, users["admin"])


def test_moving_a_finding_to_another_patient_is_audited_for_both(api, users, finding, patient_id):
    other_patient = str(uuid.uuid4())
    status, moved = api.call("PUT", f"/api/v1/findings/{finding['id']}", users["physician"],
                             {"patient_id": other_patient, "records": [REMOTE_LINK]})
    assert status == 200 and moved["patient_id"] == other_patient
    for audited in (patient_id, other_patient):
        assert ("finding.update", finding["id"], audited) in \
            _audit_actions(api, users["admin"], patient_id=audited, action="finding.update")


def test_an_edit_for_the_same_patient_is_audited_once(api, users, finding, patient_id):
    api.call("PUT", f"/api/v1/findings/{finding['id']}", users["physician"], {"conclusion": "Confirmed."})
    assert _audit_actions(api, users["admin"], action="finding.update") == \
        [("finding.update", finding["id"], patient_id)]


@pytest.mark.parametrize("who", ["physician2", "admin", "admin_b", "physician_b"])
def test_only_the_author_edits(api, users, finding, db_state, who):
    before = db_state()
    status, answer = api.call("PUT", f"/api/v1/findings/{finding['id']}", users[who], {"conclusion": "forged"})
    assert status == 403 and answer["error"]["code"] == "forbidden"
    assert db_state() == before


@pytest.mark.parametrize("institution_id, role", [(INSTITUTION_B, "physician"), (INSTITUTION_A, "instadmin")])
def test_an_author_moved_away_no_longer_changes_their_findings(api, users, finding, record, issuer, db_state,
                                                               institution_id, role):
    """The token the toplevel mints after a move names the new institution or role: the author is no
    longer a physician here and rewrites nothing here, as they could no longer write a finding here
    (made an admin of this institution, they delete it as any admin here does)."""
    author = users["physician"]
    token, _ = issuer.issue(author.id, author.username, role, institution_id)
    moved = User(author.id, author.username, role, institution_id, token)
    path = f"/api/v1/findings/{finding['id']}"
    refused = [("PUT", path, {"conclusion": "changed from elsewhere"}), ("POST", f"{path}/records", REMOTE_LINK),
               ("DELETE", f"{path}/records/{record['id']}", None)]
    before = db_state()
    for method, url, body in refused + ([("DELETE", path, None)] if role == "physician" else []):
        status, answer = api.call(method, url, moved, body)
        assert status == 403 and answer["error"]["code"] == "forbidden", (method, url, answer)
    assert db_state() == before


def test_refused_changes_are_audited_as_access_denied(api, users, finding):
    """Who tried what on which finding, and why it was refused (`shared.audit.audit_denials`)."""
    path = f"/api/v1/findings/{finding['id']}"
    assert api.call("PUT", path, users["physician2"], {"conclusion": "forged"})[0] == 403
    assert api.call("DELETE", path, users["physician_b"])[0] == 403
    assert api.call("GET", "/api/v1/audit", users["admin_b"])[0] == 403
    status, body = api.call("GET", "/api/v1/audit?action=access.denied", users["admin"])
    assert status == 200 and body["total"] == 3
    entries = {e["user_id"]: e for e in body["items"]}
    expected = {"physician2": ("finding", finding["id"], f"PUT {path}: only the author of a finding"),
                "physician_b": ("finding", finding["id"], f"DELETE {path}: only the author of a finding"),
                "admin_b": ("request", None, "GET /api/v1/audit: this audit log belongs to an institution")}
    for who, (object_type, object_id, detail) in expected.items():
        entry = entries[users[who].id]
        assert (entry["username"], entry["object_type"], entry["object_id"]) == (users[who].username, object_type,
                                                                                 object_id)
        assert entry["detail"].startswith(detail), entry


def test_edit_validates_the_body_and_the_links(api, users, finding, db_state):
    before = db_state()
    author = users["physician"]
    for body in ({}, {"author_id": users["physician2"].id}, {"date": "soon"}, {"records": []},
                 {"patient_id": str(uuid.uuid4())}):  # its local record belongs to the first patient
        status, answer = api.call("PUT", f"/api/v1/findings/{finding['id']}", author, body)
        assert status == 400, (body, answer)
    assert db_state() == before


def test_delete_by_author_or_admin_here(api, users, record, finding, patient_id, db_state):
    before = db_state()
    for who in ("physician2", "admin_b", "physician_b"):
        status, _ = api.call("DELETE", f"/api/v1/findings/{finding['id']}", users[who])
        assert status == 403
    assert db_state() == before
    status, _ = api.call("DELETE", f"/api/v1/findings/{finding['id']}", users["admin"])
    assert status == 204
    assert api.call("GET", f"/api/v1/findings/{finding['id']}", users["admin"])[0] == 404
    _, second = api.call("POST", "/api/v1/findings", users["physician"], finding_body(patient_id, [local_link(record)]))
    status, _ = api.call("DELETE", f"/api/v1/findings/{second['id']}", users["physician"])
    assert status == 204
    state = db_state()
    assert state["finding"] == [] and state["finding_record"] == []


def test_link_and_unlink_records(api, users, finding, record):
    author, path = users["physician"], f"/api/v1/findings/{finding['id']}/records"
    status, linked = api.call("POST", path, author, REMOTE_LINK)
    assert status == 201 and linked["records"] == [local_link(record), REMOTE_LINK]
    status, again = api.call("POST", path, author, REMOTE_LINK)
    assert status == 200 and again["records"] == linked["records"]
    status, _ = api.call("DELETE", f"{path}/{record['id']}?institution_id={INSTITUTION_A}", author)
    assert status == 204
    assert api.call("GET", f"/api/v1/findings/{finding['id']}", author)[1]["records"] == [REMOTE_LINK]
    status, answer = api.call("DELETE", f"{path}/{REMOTE_LINK['record_id']}", author)
    assert status == 409 and "at least one record" in answer["error"]["message"]


def test_a_link_sent_again_is_audited_as_the_read_it_answers(api, users, finding, patient_id):
    """A link the finding holds already changes nothing, but its 200 shows the whole finding: it went
    unaudited, a read of the patient's finding the audit log did not know of."""
    author, path = users["physician"], f"/api/v1/findings/{finding['id']}/records"
    assert api.call("POST", path, author, REMOTE_LINK)[0] == 201
    status, again = api.call("POST", path, author, REMOTE_LINK)
    assert status == 200 and again["findings"] == finding["findings"]
    reads = _audit_actions(api, users["admin"], user_id=author.id, action="finding.read")
    assert reads == [("finding.read", finding["id"], patient_id)]


def test_same_record_id_from_two_institutions_needs_institution_id(api, users, finding, record, db_state):
    author, path = users["physician"], f"/api/v1/findings/{finding['id']}/records"
    api.call("POST", path, author, {"record_id": record["id"], "institution_id": INSTITUTION_B})
    before = db_state()
    status, answer = api.call("DELETE", f"{path}/{record['id']}", author)
    assert status == 409 and "institution_id" in answer["error"]["message"]
    assert db_state() == before
    status, _ = api.call("DELETE", f"{path}/{record['id']}?institution_id={INSTITUTION_B}", author)
    assert status == 204


@pytest.mark.parametrize("who", ["physician2", "admin", "admin_b", "physician_b"])
def test_only_the_author_links_and_unlinks(api, users, finding, record, db_state, who):
    api.call("POST", f"/api/v1/findings/{finding['id']}/records", users["physician"], REMOTE_LINK)
    before = db_state()
    path = f"/api/v1/findings/{finding['id']}/records"
    status, _ = api.call("POST", path, users[who], {**REMOTE_LINK, "record_id": "f" * 64})
    assert status == 403
    status, _ = api.call("DELETE", f"{path}/{REMOTE_LINK['record_id']}", users[who])
    assert status == 403
    assert db_state() == before


def test_link_validation(api, users, finding, record, db_state):
    before = db_state()
    author, path = users["physician"], f"/api/v1/findings/{finding['id']}/records"
    cases = [
        ({"record_id": "nothex", "institution_id": INSTITUTION_B}, 400),
        ({"record_id": "a" * 64}, 400),
        ({"record_id": "a" * 64, "institution_id": INSTITUTION_A}, 400),  # not registered here
        ([REMOTE_LINK], 400),
    ]
    for body, expected in cases:
        status, answer = api.call("POST", path, author, body)
        assert status == expected, (body, answer)
    for bad in ("", "%20", "xyz", "A" * 64):
        status, answer = api.call("DELETE", f"{path}/{bad}", author)
        assert status == 400 and answer["error"]["code"] == "invalid_id"
    status, answer = api.call("DELETE", f"{path}/{record['id']}?institution_id=nope", author)
    assert status == 400 and answer["error"]["code"] == "invalid_id"
    status, answer = api.call("DELETE", f"{path}/{'b' * 64}", author)
    assert status == 404
    assert db_state() == before


@pytest.mark.parametrize("bad_id", ["", "%20", "1", "not-a-uuid", "' OR ''='"])
def test_blank_or_malformed_finding_id(api, users, finding, db_state, bad_id):
    before = db_state()
    author = users["physician"]
    for method, path, body in [
        ("GET", f"/api/v1/findings/{bad_id}", None),
        ("PUT", f"/api/v1/findings/{bad_id}", {"conclusion": "x"}),
        ("DELETE", f"/api/v1/findings/{bad_id}", None),
        ("POST", f"/api/v1/findings/{bad_id}/records", REMOTE_LINK),
        ("DELETE", f"/api/v1/findings/{bad_id}/records/{'a' * 64}", None),
    ]:
        status, answer = api.call(method, path, author, body)
        assert status == 400 and answer["error"]["code"] == "invalid_id", (method, path, answer)
    assert db_state() == before


def test_unknown_finding_id_is_404(api, users, finding, db_state):
    before = db_state()
    unknown = str(uuid.uuid4())
    for method, path, body in [
        ("GET", f"/api/v1/findings/{unknown}", None),
        ("PUT", f"/api/v1/findings/{unknown}", {"conclusion": "x"}),
        ("DELETE", f"/api/v1/findings/{unknown}", None),
        ("POST", f"/api/v1/findings/{unknown}/records", REMOTE_LINK),
        ("DELETE", f"/api/v1/findings/{unknown}/records/{'a' * 64}", None),
    ]:
        status, answer = api.call(method, path, users["physician"], body)
        assert status == 404 and answer["error"]["code"] == "not_found", (method, path)
    assert db_state() == before


def test_findings_for_patients_the_toplevel_did_not_vouch_for_are_refused(api, users, record, patient_id, db_state):
    """Issue 13, item 11: findings were stored for any patient id, existing or not."""
    before = db_state()
    for name, reference in reference_attacks(api, users, patient_id).items():
        body = finding_body(patient_id, [local_link(record)])
        if reference is not None:
            body["patient_reference"] = reference
        status, answer = api.call("POST", "/api/v1/findings", users["physician"], body, references=False)
        assert status == 400 and answer["error"]["code"] == "invalid_patient_reference", (name, answer)
    assert db_state() == before


def test_moving_a_finding_to_another_patient_needs_a_reference_to_them(api, users, finding, db_state):
    before = db_state()
    status, answer = api.call("PUT", f"/api/v1/findings/{finding['id']}", users["physician"],
                              {"patient_id": str(uuid.uuid4())}, references=False)
    assert status == 400 and answer["error"]["code"] == "invalid_patient_reference"
    assert db_state() == before
    status, _ = api.call("PUT", f"/api/v1/findings/{finding['id']}", users["physician"], {"description": "edited"},
                         references=False)
    assert status == 200


def test_a_reference_sent_with_an_edit_is_checked_though_the_patient_stays(api, users, finding, patient_id,
                                                                            db_state):
    """An edit that kept the patient took any `patient_reference` unread: a number, NaN, an object,
    100,000 characters, another patient's or an expired one (found by tests/hostile/test_route_fuzz.py)."""
    path = f"/api/v1/findings/{finding['id']}"
    before = db_state()
    given = {name: value for name, value in reference_attacks(api, users, patient_id).items() if value is not None}
    attacks = {**given, "a number": 12345, "an object": {"sub": patient_id}, "a list": [], "long": "x" * 100_000}
    for name, reference in attacks.items():
        edit = {"description": "edited", "patient_reference": reference}
        status, answer = api.call("PUT", path, users["physician"], edit, references=False)
        assert status == 400 and answer["error"]["code"] == "invalid_patient_reference", (name, answer)
    assert db_state() == before
    status, answer = api.call("PUT", path, users["physician"], {"description": "edited", "patient_id": patient_id})
    assert status == 200 and answer["description"] == "edited", answer


def test_changes_at_once_keep_the_rules_and_answer_no_500(app, api, users, record, patient_id):
    """Two removals at once of a finding's two links each saw two and left it with none
    (PostgreSQL), or one failed with "database is locked", a 500 (SQLite); two edits of one record
    or two deletions of one finding at once gave that 500 too. A few rounds: it is a race."""
    author = users["physician"]
    for _ in range(4):
        status, finding = api.call("POST", "/api/v1/findings", author,
                                   finding_body(patient_id, [local_link(record), REMOTE_LINK]))
        assert status == 201, finding
        path = f"/api/v1/findings/{finding['id']}/records"
        unlinks = [("DELETE", f"{path}/{record['id']}?institution_id={INSTITUTION_A}", None),
                   ("DELETE", f"{path}/{REMOTE_LINK['record_id']}", None)]
        assert at_once(app, unlinks, author) == [204, 409]
        assert len(api.call("GET", f"/api/v1/findings/{finding['id']}", author)[1]["records"]) == 1
        edits = [("PATCH", f"/api/v1/records/{record['id']}", {"description": f"edit {n}"}) for n in range(4)]
        assert at_once(app, edits, author) == [200] * 4
        deletions = [("DELETE", f"/api/v1/findings/{finding['id']}", None)] * 3
        assert at_once(app, deletions, author) == [204, 404, 404]


def test_a_link_added_while_the_finding_is_edited_keeps_the_edit(app, api, users, record, patient_id, monkeypatch):
    """Adding a link read the finding unlocked and saved that copy whole: an edit landing between
    was undone (and a finding moved to another patient meanwhile went back, keeping the new
    patient's links). The link now holds the finding's lock, so the edit waits for it."""
    author = users["physician"]
    status, finding = api.call("POST", "/api/v1/findings", author, finding_body(patient_id, [local_link(record)]))
    assert status == 201
    checking, real = threading.Event(), findings_module._is_linked

    def slow_check(row, link):  # the link request, between its read and its save
        checking.set()
        time.sleep(0.5)
        return real(row, link)

    monkeypatch.setattr(findings_module, "_is_linked", slow_check)
    linked: list[int] = []
    request = threading.Thread(target=lambda: linked.append(app.test_client().post(
        f"/api/v1/findings/{finding['id']}/records", json=REMOTE_LINK, headers=author.headers).status_code))
    request.start()
    checking.wait(10)
    assert api.call("PUT", f"/api/v1/findings/{finding['id']}", author, {"description": "edited"})[0] == 200
    request.join()
    assert linked == [201]
    now = api.call("GET", f"/api/v1/findings/{finding['id']}", author)[1]
    assert now["description"] == "edited" and len(now["records"]) == 2


def test_findings_written_at_once_answer_no_500(app, api, users, record, patient_id):
    """Writing a finding reads the records it links, then writes: on SQLite one of several at once
    failed with "database is locked", a 500."""
    from shared.patient_refs import issue_patient_reference

    from .conftest import ISSUER

    author = users["physician"]
    body = finding_body(patient_id, [local_link(record)],
                        patient_reference=issue_patient_reference(api.signing_key, ISSUER, patient_id, author.id, 300))
    for _ in range(4):
        assert at_once(app, [("POST", "/api/v1/findings", body)] * 6, author) == [201] * 6


def test_links_added_one_by_one_stop_at_the_bound_of_a_findings_records(api, users, finding, record, db_state):
    """A finding links at most MAX_LINKS records however they come: in its body, or one by one (where
    2,000 were taken, and each list of the patient's findings carried them all)."""
    author, path = users["physician"], f"/api/v1/findings/{finding['id']}/records"
    remote = [{"record_id": hashlib.sha256(str(i).encode()).hexdigest(), "institution_id": INSTITUTION_B}
              for i in range(MAX_LINKS)]
    status, full = api.call("PUT", f"/api/v1/findings/{finding['id']}", author,
                            {"records": [local_link(record), *remote[:MAX_LINKS - 1]]})
    assert status == 200 and len(full["records"]) == MAX_LINKS
    before = db_state()
    status, answer = api.call("POST", path, author, remote[-1])
    assert status == 409 and answer["error"]["code"] == "conflict"
    assert f"{MAX_LINKS} records" in answer["error"]["message"] and "remove a link" in answer["error"]["message"]
    assert db_state() == before
    assert api.call("POST", path, author, remote[0])[0] == 200  # linked already: nothing added
    assert api.call("DELETE", f"{path}/{remote[0]['record_id']}", author)[0] == 204
    status, relinked = api.call("POST", path, author, remote[-1])
    assert status == 201 and len(relinked["records"]) == MAX_LINKS
