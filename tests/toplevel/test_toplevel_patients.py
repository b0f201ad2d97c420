"""Patients (search by partial name and exact insurance number) and the audit trail of every access."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from daemons.toplevel.patients import MAX_SEARCH_WORDS
from shared.errors import ApiError
from shared.patient_refs import check_patient_reference
from shared.tokens import key_id, load_public_key

from .support import Api, patient_body


@pytest.fixture
def patients(api: Api, tokens) -> list[dict]:
    made = []
    for body in (
        patient_body(),
        patient_body(first_name="Marko", last_name="Simic", sex="M", insurance_number="HR-222"),
        patient_body(first_name="John", last_name="O'Brien", sex="M", insurance_number="UK-1"),
        patient_body(first_name="Zoë", last_name="100%_Real", sex="O", insurance_number="X-1"),
    ):
        status, created, _ = api.call("POST", "/api/v1/patients", tokens["physician"], body)
        assert status == 201, created
        made.append(created)
    return made


def _search(api: Api, token: str, query: str) -> list[str]:
    status, body, _ = api.call("GET", f"/api/v1/patients?{query}", token)
    assert status == 200, body
    return sorted(p["insurance_number"] for p in body["items"])


def test_create_patient(api: Api, tokens):
    status, body, _ = api.call("POST", "/api/v1/patients", tokens["admin"], patient_body())
    assert status == 201
    assert set(body) == {"id", "first_name", "last_name", "sex", "birth_date", "insurance_number", "created_at"}
    assert (body["last_name"], body["birth_date"], body["sex"]) == ("Šimić", "1970-03-15", "F")


def test_search_by_partial_name_ignores_case_and_accents(api: Api, tokens, patients):
    token = tokens["physician"]
    assert _search(api, token, "q=simi") == ["HR-123456", "HR-222"]
    assert _search(api, token, "q=ŠIMIĆ") == ["HR-123456", "HR-222"]
    assert _search(api, token, "q=ana%20sim") == ["HR-123456"]
    assert _search(api, token, "q=sim%20ana") == ["HR-123456"]
    assert _search(api, token, "q=o'br") == ["UK-1"]
    assert _search(api, token, "q=zoe") == ["X-1"]
    assert _search(api, token, "q=100%25_") == ["X-1"]
    assert _search(api, token, "q=%25") == ["X-1"]  # a literal %, not a wildcard
    assert _search(api, token, "q=_") == ["X-1"]
    assert _search(api, token, "q=nobody") == []
    assert len(_search(api, token, "")) == 4


def test_search_by_exact_insurance_number(api: Api, tokens, patients):
    token = tokens["admin"]
    assert _search(api, token, "insurance_number=HR-222") == ["HR-222"]
    assert _search(api, token, "insurance_number=HR-22") == []
    assert _search(api, token, "insurance_number=HR-222&q=ana") == []


def test_a_search_of_many_words_matches_each_once_and_refuses_too_many(api: Api, tokens, patients):
    """One condition per word: 84 one-letter words overflowed SQLite's parser stack and 210 U+FDFA
    (four words each, once folded) Python's stack on PostgreSQL, both a 500. A repeated word is
    matched once; more than MAX_SEARCH_WORDS different ones are refused, naming the limit."""
    token = tokens["physician"]
    assert _search(api, token, "q=" + "+".join(["a"] * 84)) == ["HR-123456", "HR-222", "X-1"]
    assert _search(api, token, "q=" + "%EF%B7%BA" * 210) == []
    many = " ".join(chr(ord("a") + n) for n in range(MAX_SEARCH_WORDS))
    assert _search(api, token, "q=" + many.replace(" ", "+")) == []
    status, body, _ = api.call("GET", "/api/v1/patients?q=" + many.replace(" ", "+") + "+zz", token)
    assert status == 400 and body["error"]["code"] == "validation_error", body
    assert f"at most {MAX_SEARCH_WORDS}" in body["error"]["message"]


def test_patient_paging(api: Api, tokens, patients):
    status, body, _ = api.call("GET", "/api/v1/patients?limit=2&offset=1", tokens["physician"])
    assert status == 200 and body["total"] == 4 and len(body["items"]) == 2
    assert api.call("GET", "/api/v1/patients?offset=-1", tokens["physician"])[0] == 400


def test_get_update_and_delete_patient(api: Api, tokens, patients):
    path = f"/api/v1/patients/{patients[0]['id']}"
    assert api.call("GET", path, tokens["physician"])[1] == patients[0]
    status, body, _ = api.call("PUT", path, tokens["physician"], {"last_name": "Horvat", "birth_date": "1971-01-02"})
    assert status == 200 and body == dict(patients[0], last_name="Horvat", birth_date="1971-01-02")
    assert _search(api, tokens["physician"], "q=horv") == ["HR-123456"]
    assert _search(api, tokens["physician"], "q=%C5%A1imi%C4%87") == ["HR-222"]
    status, body, _ = api.call("DELETE", path, tokens["physician"])
    assert status == 403
    assert api.call("DELETE", path, tokens["admin"])[0] == 204
    assert api.call("GET", path, tokens["admin"])[0] == 404


@pytest.mark.parametrize("change", [
    {"sex": "X"}, {"sex": "f"}, {"birth_date": "15.03.1970"}, {"birth_date": "2999-01-01"},
    {"birth_date": "1970-02-30"}, {"first_name": ""}, {"last_name": "x" * 101}, {"insurance_number": ""},
    {"insurance_number": 12345}, {"extra": "field"}, {"first_name": None},
])
def test_create_patient_refuses_bad_input(api: Api, tokens, db_state, change):
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/patients", tokens["physician"], patient_body(**change))
    assert status == 400 and body["error"]["code"] == "validation_error", body
    assert db_state() == before


def test_names_that_fold_longer_than_the_search_column_are_refused_not_a_500(api: Api, tokens, patients, db_state):
    """Folding for search spells out compatibility characters (NFKD: U+FDFA is 18 letters) and `ß`
    (`ss`), so two names of 100 characters each made a search key of up to 3,600 characters for a
    column of 210: PostgreSQL answered 500, SQLite stored it. Accented letters fold shorter and
    still fit (`Š` is `s`)."""
    before = db_state()
    for change in ({"first_name": "\ufdfa" * 100}, {"first_name": "ß" * 100, "last_name": "ß" * 100}):
        status, body, _ = api.call("POST", "/api/v1/patients", tokens["physician"],
                                   patient_body(insurance_number="LONG-1", **change))
        assert status == 400 and body["error"]["code"] == "validation_error", body
        assert "first_name and last_name" in body["error"]["message"]
        status, body, _ = api.call("PUT", f"/api/v1/patients/{patients[0]['id']}", tokens["physician"], change)
        assert status == 400 and body["error"]["code"] == "validation_error", body
    assert db_state() == before
    status, body, _ = api.call("POST", "/api/v1/patients", tokens["physician"],
                               patient_body(first_name="Š" * 100, last_name="Ž" * 100, insurance_number="LONG-2"))
    assert status == 201, body


def test_duplicate_insurance_number_is_a_conflict(api: Api, tokens, patients, db_state):
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/patients", tokens["physician"],
                               patient_body(first_name="Other", insurance_number="HR-222"))
    assert status == 409 and body["error"]["code"] == "conflict"
    status, _, _ = api.call("PUT", f"/api/v1/patients/{patients[0]['id']}", tokens["physician"],
                            {"insurance_number": "HR-222"})
    assert status == 409
    assert db_state() == before


@pytest.mark.parametrize("number, status", [
    ("ＨＲ-２２２", 409),  # full-width: HR-222 in NFKC form
    ("HR-222\u200b", 400),  # zero-width space
    ("\u2060HR-222", 400),  # word joiner
    ("HR-222\u00ad", 400),  # soft hyphen
    ("HR\u2011222", 400),  # non-breaking hyphen
])
def test_an_insurance_number_written_to_look_like_another_is_that_one_or_refused(api: Api, tokens, patients,
                                                                                 db_state, number, status):
    """Each was another patient's number (201): "Ana Horvat, HR-222" could be created once per
    spelling, all listed alike, and records filed under any. Now the full-width form is HR-222
    itself (409) and what is not printable ASCII is refused, on creation and edit alike."""
    before = db_state()
    created, body, _ = api.call("POST", "/api/v1/patients", tokens["physician"],
                                patient_body(first_name="Other", insurance_number=number))
    edited, _, _ = api.call("PUT", f"/api/v1/patients/{patients[0]['id']}", tokens["physician"],
                            {"insurance_number": number})
    assert (created, edited) == (status, status), body
    assert body["error"]["code"] == ("conflict" if status == 409 else "validation_error")
    assert db_state() == before
    assert _search(api, tokens["physician"], "insurance_number=%EF%BC%A8%EF%BC%B2-222") == ["HR-222"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("bad_id, status", [("", 400), ("%20", 400), ("12", 400), ("' OR ''='", 400),
                                             ("5bf29f22-7355-4236-ad80-e8705d114f9f", 404)])
def test_patient_bad_ids(api: Api, tokens, patients, db_state, method, bad_id, status):
    before = db_state()
    got, body, _ = api.call(method, f"/api/v1/patients/{bad_id}", tokens["admin"],
                            {"first_name": "Eve"} if method == "PUT" else None)
    assert got == status and body["error"]["code"] in ("invalid_id", "not_found")
    assert db_state() == before


def _audit(api: Api, token: str, query: str = "") -> list[dict]:
    status, body, _ = api.call("GET", f"/api/v1/audit?limit=500&{query}", token)
    assert status == 200, body
    return body["items"]


def test_every_patient_access_is_audited(api: Api, tokens, seed, patients):
    doctor = seed.users["physician"]
    pid = patients[0]["id"]
    api.call("GET", f"/api/v1/patients/{pid}", tokens["physician"])
    api.call("GET", "/api/v1/patients?q=ana", tokens["physician"])
    api.call("PUT", f"/api/v1/patients/{pid}", tokens["physician"], {"first_name": "Anna"})
    api.call("DELETE", f"/api/v1/patients/{pid}", tokens["admin"])
    entries = _audit(api, tokens["admin"], f"patient_id={pid}")
    assert [e["action"] for e in entries] == ["patient.delete", "patient.update", "patient.search",
                                              "patient.read", "patient.create"]
    read = entries[3]
    assert read["user_id"] == doctor["id"] and read["username"] == "dr.house"
    assert read["client_ip"] and read["object_type"] == "patient" and read["at"].endswith("Z")
    assert "q='ana'" in entries[2]["detail"]
    assert entries[0]["user_id"] == seed.users["admin"]["id"]
    assert set(read) == {"id", "at", "user_id", "username", "action", "object_type", "object_id",
                         "patient_id", "client_ip", "detail"}


def test_search_without_results_is_audited(api: Api, tokens):
    api.call("GET", "/api/v1/patients?insurance_number=NONE-1", tokens["physician"])
    entries = _audit(api, tokens["admin"], "action=patient.search")
    assert len(entries) == 1 and "NONE-1" in entries[0]["detail"] and entries[0]["patient_id"] is None


def test_logins_and_user_changes_are_audited(api: Api, tokens, seed):
    api.call("POST", "/api/v1/auth/login", json={"username": "dr.house", "password": "not-it-at-all"})
    api.call("PUT", f"/api/v1/users/{seed.users['physician_b']['id']}", tokens["admin"], {"full_name": "B. Doc"})
    assert {e["username"] for e in _audit(api, tokens["admin"], "action=auth.login")} >= {"admin", "dr.house"}
    failed = _audit(api, tokens["admin"], "action=auth.login_failed")
    assert failed[0]["username"] == "dr.house" and failed[0]["object_id"] == seed.users["physician"]["id"]
    update = _audit(api, tokens["admin"], f"user_id={seed.users['admin']['id']}&action=user.update")
    assert update[0]["object_id"] == seed.users["physician_b"]["id"] and "B. Doc" in update[0]["detail"]
    created = _audit(api, tokens["admin"], "action=user.create")
    assert len(created) == 4 and created[0]["username"] == "sivr-cli"


def test_audit_filters_by_time_and_refuses_bad_filters(api: Api, tokens, patients):
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert _audit(api, tokens["admin"], f"since={future.replace('+', '%2B')}") == []
    assert len(_audit(api, tokens["admin"], "until=2999-01-01T00:00:00Z")) > 0
    for query in ("since=yesterday", "patient_id=abc", "user_id=1%20OR%201=1", "limit=0"):
        status, body, _ = api.call("GET", f"/api/v1/audit?{query}", tokens["admin"])
        assert status == 400, (query, body)


def test_physicians_cannot_read_the_audit_log(api: Api, tokens):
    status, body, _ = api.call("GET", "/api/v1/audit", tokens["physician"])
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_racing_duplicate_creations_give_one_201_and_409s(app, tokens):
    """Check-then-insert races end in the unique index: the losers get 409, never a 500."""

    def create(_: int) -> int:
        return Api(app.test_client()).call("POST", "/api/v1/patients", tokens["physician"],
                                           patient_body(insurance_number="RACE-1"))[0]

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(create, range(6)))
    assert statuses == [201] + [409] * 5


def test_patient_reference_vouches_for_one_existing_patient_and_user(api: Api, tokens, seed, patients, signing_keys):
    """What institution servers check before storing a finding or record (issue 13, item 11)."""
    patient = patients[0]
    status, body, _ = api.call("POST", f"/api/v1/patients/{patient['id']}/reference", tokens["physician"])
    assert status == 200 and body["expires_in"] == 600
    reference = body["patient_reference"]
    keys = {key_id(load_public_key(signing_keys[1])): load_public_key(signing_keys[1])}
    stated = check_patient_reference(reference, patient["id"], seed.users["physician"]["id"], keys, "sivr-toplevel", 5)
    # whom it names, for comparison with the DICOM patient of a series registered for them (issue 11)
    assert stated == {key: patient[key] for key in ("first_name", "last_name", "birth_date")}
    with pytest.raises(ApiError):
        check_patient_reference(reference, patient["id"], seed.users["physician_b"]["id"], keys, "sivr-toplevel", 5)
    # its own audience: it is no access token anywhere
    status, answer, _ = api.call("GET", "/api/v1/me", reference)
    assert status == 401 and answer["error"]["code"] == "invalid_token"
    status, audit, _ = api.call("GET", f"/api/v1/audit?action=patient.reference&patient_id={patient['id']}",
                                tokens["admin"])
    assert audit["total"] == 1 and audit["items"][0]["username"] == "dr.house"
    assert api.call("POST", f"/api/v1/patients/{uuid.uuid4()}/reference", tokens["physician"])[0] == 404
    assert api.call("POST", f"/api/v1/patients/{patient['id']}/reference")[0] == 401
