"""Institutions and DICOM record types: read by everyone, managed by admins."""

from __future__ import annotations

import threading

import pytest

from daemons.toplevel.models import Institution, database_proxy

from .support import Api


def test_everyone_lists_institutions(api: Api, tokens, seed):
    for role in ("admin", "physician"):
        status, body, _ = api.call("GET", "/api/v1/institutions", tokens[role])
        assert status == 200 and body["total"] == 2
        assert body["items"] == sorted([seed.institution_a, seed.institution_b], key=lambda i: i["name"])
    status, body, _ = api.call("GET", f"/api/v1/institutions/{seed.institution_a['id']}", tokens["physician"])
    assert status == 200 and body == seed.institution_a
    assert set(body) == {"id", "name", "address", "server_url"}


def test_admin_creates_updates_and_deletes_institution(api: Api, tokens):
    status, created, _ = api.call("POST", "/api/v1/institutions", tokens["admin"],
                                  {"name": "Clinic C", "address": "Road 3", "server_url": "https://c.example:5002/"})
    assert status == 201 and created["server_url"] == "https://c.example:5002"
    path = f"/api/v1/institutions/{created['id']}"
    status, updated, _ = api.call("PUT", path, tokens["admin"], {"address": "Road 4"})
    assert status == 200 and updated == dict(created, address="Road 4")
    assert api.call("GET", path, tokens["admin"])[1] == updated
    assert api.call("DELETE", path, tokens["admin"])[0] == 204
    assert api.call("GET", path, tokens["admin"])[0] == 404


@pytest.mark.parametrize("body, code", [
    ({"name": ""}, "validation_error"),
    ({"address": "no name"}, "validation_error"),
    ({"name": "X", "server_url": "ftp://x.example"}, "validation_error"),
    ({"name": "X", "server_url": "javascript:alert(1)"}, "validation_error"),
    ({"name": "X", "unknown": 1}, "validation_error"),
    ({"name": 5}, "validation_error"),
])
def test_create_institution_refuses_bad_input(api: Api, tokens, db_state, body, code):
    before = db_state()
    status, answer, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], body)
    assert status == 400 and answer["error"]["code"] == code
    assert db_state() == before


def test_institution_name_is_unique(api: Api, tokens, seed, db_state):
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": "Clinic B"})
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body, _ = api.call("PUT", f"/api/v1/institutions/{seed.institution_a['id']}", tokens["admin"],
                               {"name": "Clinic B"})
    assert status == 409
    assert db_state() == before


@pytest.mark.parametrize("name", ["clinic b", "CLINIC B", "Clinic  B", "\uff23\uff4c\uff49\uff4e\uff49\uff43 \uff22",
                                  "Clinic\u00a0B", "\u212dlinic B"],
                         ids=["lower", "upper", "two-spaces", "full-width", "no-break-space", "black-letter-c"])
def test_institution_names_are_unique_as_users_read_them(api: Api, tokens, seed, db_state, name):
    """Names told apart only by letter case, compatibility forms (full-width letters), the spaces or
    how an accent is typed were two institutions, created or renamed into each other: 409 naming
    the one that exists (`accounts.save_institution`)."""
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": name})
    assert status == 409 and body["error"]["code"] == "conflict", body
    assert "'Clinic B'" in body["error"]["message"] and seed.institution_b["id"] in body["error"]["message"]
    status, body, _ = api.call("PUT", f"/api/v1/institutions/{seed.institution_a['id']}", tokens["admin"],
                               {"name": name})
    assert status == 409 and "'Clinic B'" in body["error"]["message"], body
    assert db_state() == before


def test_an_accent_tells_institution_names_apart_however_it_is_typed(api: Api, tokens, seed):
    status, body, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": "Klinik \u00c4"})
    assert status == 201, body
    status, body, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": "klinik A\u0308"})
    assert status == 409 and "'Klinik \u00c4'" in body["error"]["message"], body
    status, body, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": "Klinik A"})
    assert status == 201, body
    path = f"/api/v1/institutions/{seed.institution_a['id']}"
    status, body, _ = api.call("PUT", path, tokens["admin"], {"name": "GENERAL HOSPITAL A"})
    assert status == 200 and body["name"] == "GENERAL HOSPITAL A", body  # its own name, other letter case


def test_institutions_created_at_once_under_names_read_the_same_are_one(app, tokens, seed):
    """The names are compared in the transaction that writes, under one lock: both requests finding
    the name free, then both inserting (the unique index compares names as typed), is not possible."""
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def create(name: str) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.post("/api/v1/institutions", json={"name": name},
                                    headers={"Authorization": f"Bearer {tokens['admin']}"}).status_code)

    names = ("Clinic D", "clinic d", "CLINIC D", "Clinic  d")
    threads = [threading.Thread(target=create, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409, 409, 409]


def test_a_store_holding_names_read_the_same_keeps_working(api: Api, tokens, seed):
    """Names created before the rule stay as they are: each is edited as before, and may be renamed
    to another name, though not to a third spelling of theirs."""
    with database_proxy.connection_context():
        first = Institution.create(name="Clinic C")
        second = Institution.create(name="clinic c")
    path = f"/api/v1/institutions/{second.id}"
    status, body, _ = api.call("PUT", path, tokens["admin"], {"name": "clinic c", "address": "Road 5"})
    assert status == 200 and body["address"] == "Road 5", body
    status, body, _ = api.call("PUT", path, tokens["admin"], {"name": "CLINIC C"})
    assert status == 409 and "'Clinic C'" in body["error"]["message"] and first.id in body["error"]["message"], body
    status, body, _ = api.call("PUT", path, tokens["admin"], {"name": "Clinic C North"})
    assert status == 200 and body["name"] == "Clinic C North", body
    status, body, _ = api.call("PUT", f"/api/v1/institutions/{first.id}", tokens["admin"], {"server_url": ""})
    assert status == 200, body


def test_institution_with_users_cannot_be_deleted(api: Api, tokens, seed, db_state):
    before = db_state()
    status, body, _ = api.call("DELETE", f"/api/v1/institutions/{seed.institution_b['id']}", tokens["admin"])
    assert status == 409 and "user" in body["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("bad_id, status", [("", 400), ("abc", 400), ("5bf29f22-7355-4236-ad80-e8705d114f9f", 404)])
def test_institution_bad_ids(api: Api, tokens, db_state, method, bad_id, status):
    before = db_state()
    got, body, _ = api.call(method, f"/api/v1/institutions/{bad_id}", tokens["admin"],
                            {"name": "Z"} if method == "PUT" else None)
    assert got == status and body["error"]["code"] in ("invalid_id", "not_found")
    assert db_state() == before


def test_record_types_lifecycle(api: Api, tokens):
    status, created, _ = api.call("POST", "/api/v1/record-types", tokens["admin"], {"code": "ct", "name": "CT"})
    assert status == 201 and created["code"] == "CT" and set(created) == {"id", "code", "name"}
    status, body, _ = api.call("GET", "/api/v1/record-types", tokens["physician"])
    assert status == 200 and body == {"items": [created], "total": 1}
    path = f"/api/v1/record-types/{created['id']}"
    status, updated, _ = api.call("PUT", path, tokens["admin"], {"name": "Computed tomography"})
    assert status == 200 and updated == dict(created, name="Computed tomography")
    assert api.call("DELETE", path, tokens["admin"])[0] == 204
    assert api.call("GET", "/api/v1/record-types", tokens["admin"])[1]["total"] == 0
    assert api.call("DELETE", path, tokens["admin"])[0] == 404


def test_record_type_code_is_unique_and_checked(api: Api, tokens, db_state):
    _, ct, _ = api.call("POST", "/api/v1/record-types", tokens["admin"], {"code": "CT", "name": "CT"})
    _, mr, _ = api.call("POST", "/api/v1/record-types", tokens["admin"], {"code": "MR", "name": "MR"})
    before = db_state()
    assert api.call("POST", "/api/v1/record-types", tokens["admin"], {"code": "Ct", "name": "x"})[0] == 409
    assert api.call("PUT", f"/api/v1/record-types/{mr['id']}", tokens["admin"], {"code": "CT"})[0] == 409
    for body in ({"code": "", "name": "x"}, {"code": "C T", "name": "x"}, {"code": "X" * 17, "name": "x"},
                 {"code": "US"}, {}):
        assert api.call("POST", "/api/v1/record-types", tokens["admin"], body)[0] == 400
    assert api.call("PUT", f"/api/v1/record-types/{ct['id']}", tokens["physician"], {"name": "y"})[0] == 403
    assert api.call("DELETE", f"/api/v1/record-types/{ct['id']}", tokens["physician"])[0] == 403
    assert api.call("DELETE", "/api/v1/record-types/", tokens["admin"])[0] == 400
    assert api.call("DELETE", "/api/v1/record-types/CT", tokens["admin"])[0] == 400
    assert db_state() == before


def test_wrong_method_is_a_json_405(api: Api, tokens):
    status, body, response = api.call("PATCH", "/api/v1/record-types", tokens["admin"])
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]
