"""Institutions and DICOM record types: read by everyone, managed by admins."""

from __future__ import annotations

import pytest

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
