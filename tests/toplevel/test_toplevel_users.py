"""Users and the own profile: every role, bad input, and the attacks of issue 2."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from daemons.toplevel import accounts
from daemons.toplevel.accounts import check_email, check_username
from daemons.toplevel.models import Institution, User, database_proxy
from shared.errors import ApiError

from .support import PASSWORDS, Api


def _new_user(seed, **extra) -> dict:
    body = {"username": "dr.new", "password": "new-user-pass-1", "full_name": "Nora New",
            "email": "nora@hospital.example", "role": "physician", "institution_id": seed.institution_a["id"]}
    body.update(extra)
    return body


def _hash_of(username: str) -> str:
    with database_proxy.connection_context():
        return User.get(User.username == username).password_hash


def test_admin_creates_user_who_can_log_in(api: Api, tokens, seed):
    status, body, response = api.call("POST", "/api/v1/users", tokens["admin"], _new_user(seed))
    assert status == 201
    assert set(body) == {"id", "username", "full_name", "email", "role", "institution_id", "active", "created_at"}
    assert body["username"] == "dr.new" and body["active"] is True and body["created_at"].endswith("Z")
    assert "password" not in response.get_data(as_text=True)
    assert api.login("dr.new", "new-user-pass-1")["user"]["id"] == body["id"]


@pytest.mark.parametrize("change, code", [
    ({"username": "x"}, "validation_error"),
    ({"username": "has space"}, "validation_error"),
    ({"username": "dr.\u202enew"}, "validation_error"),
    ({"username": "dr.\x01new"}, "validation_error"),
    ({"password": "short"}, "validation_error"),
    ({"password": "          "}, "validation_error"),
    ({"role": "superuser"}, "validation_error"),
    ({"email": "not-an-address"}, "validation_error"),
    ({"institution_id": ""}, "invalid_id"),
    ({"institution_id": "1234"}, "invalid_id"),
    ({"institution_id": str(uuid.uuid4())}, "validation_error"),
    ({"active": False, "username": "dr.other"}, "validation_error"),
])
def test_create_user_refuses_bad_input(api: Api, tokens, seed, db_state, change, code):
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/users", tokens["admin"], _new_user(seed, **change))
    assert status == 400 and body["error"]["code"] == code, body
    assert db_state() == before


@pytest.mark.parametrize("check, value", [(check_username, "dr.new"), (check_email, "nora@hospital.example")])
def test_username_and_email_rules_refuse_a_trailing_newline(check, value):
    """The rules themselves, whatever strips their input first: `$` alone would match before a final newline."""
    assert check(value, "field") == value
    with pytest.raises(ApiError) as err:
        check(value + "\n", "field")
    assert err.value.status == 400 and err.value.code == "validation_error"


def test_create_user_missing_fields(api: Api, tokens, seed):
    for field in ("username", "password", "full_name", "role", "institution_id"):
        body = _new_user(seed)
        del body[field]
        status, answer, _ = api.call("POST", "/api/v1/users", tokens["admin"], body)
        assert status == 400 and field in answer["error"]["message"]


def test_duplicate_username_is_a_conflict(api: Api, tokens, seed, db_state):
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/users", tokens["admin"], _new_user(seed, username="DR.HOUSE"))
    assert status == 409 and body["error"]["code"] == "conflict"
    assert db_state() == before


def test_password_keeps_its_spaces(api: Api, tokens, seed):
    api.call("POST", "/api/v1/users", tokens["admin"], _new_user(seed, password="  spaced pass  "))
    assert api.login("dr.new", "  spaced pass  ")
    status, _, _ = api.call("POST", "/api/v1/auth/login", json={"username": "dr.new", "password": "spaced pass"})
    assert status == 401


def test_admin_lists_and_filters_users(api: Api, tokens, seed):
    status, body, _ = api.call("GET", "/api/v1/users", tokens["admin"])
    assert status == 200 and body["total"] == 4
    assert {u["username"] for u in body["items"]} == {"admin", "dr.house", "admin.b", "dr.b"}
    assert all("role" in u and "email" in u for u in body["items"])
    _, body, _ = api.call("GET", "/api/v1/users?q=HOUSE", tokens["admin"])
    assert [u["username"] for u in body["items"]] == ["dr.house"]
    _, body, _ = api.call("GET", f"/api/v1/users?institution_id={seed.institution_b['id']}", tokens["admin"])
    assert {u["username"] for u in body["items"]} == {"admin.b", "dr.b"}
    _, body, _ = api.call("GET", "/api/v1/users?limit=1&offset=1", tokens["admin"])
    assert len(body["items"]) == 1 and body["total"] == 4
    status, body, _ = api.call("GET", "/api/v1/users?institution_id=nope", tokens["admin"])
    assert status == 400 and body["error"]["code"] == "invalid_id"
    status, _, _ = api.call("GET", "/api/v1/users?limit=100000", tokens["admin"])
    assert status == 400


def test_physician_sees_names_only(api: Api, tokens, seed):
    status, body, response = api.call("GET", "/api/v1/users", tokens["physician"])
    assert status == 200 and body["total"] == 4
    for user in body["items"]:
        assert set(user) == {"id", "username", "full_name", "institution_id"}
    assert "argon2" not in response.get_data(as_text=True)


ADMIN_ONLY = [
    ("POST", "/api/v1/users", "new_user"),
    ("GET", "/api/v1/users/{admin_b}", None),
    ("PUT", "/api/v1/users/{admin_b}", {"role": "physician"}),
    ("DELETE", "/api/v1/users/{admin_b}", None),
    ("POST", "/api/v1/users/{admin_b}/password", {"new_password": "taken-over-123"}),
    ("POST", "/api/v1/institutions", {"name": "Evil Clinic"}),
    ("PUT", "/api/v1/institutions/{inst_b}", {"name": "Renamed"}),
    ("DELETE", "/api/v1/institutions/{inst_b}", None),
    ("POST", "/api/v1/record-types", {"code": "PT", "name": "PET"}),
    ("GET", "/api/v1/audit", None),
]


@pytest.mark.parametrize("method, path, body", ADMIN_ONLY)
def test_physician_calling_admin_endpoints_is_forbidden(api: Api, tokens, seed, db_state, method, path, body):
    path = path.format(admin_b=seed.users["admin_b"]["id"], inst_b=seed.institution_b["id"])
    if body == "new_user":
        body = _new_user(seed, role="sysadmin")
    before = db_state()
    status, answer, _ = api.call(method, path, tokens["physician"], body)
    assert status == 403 and answer["error"]["code"] == "forbidden"
    assert db_state() == before


def test_admin_gets_and_updates_user(api: Api, tokens, seed):
    uid = seed.users["physician"]["id"]
    status, body, _ = api.call("GET", f"/api/v1/users/{uid}", tokens["admin"])
    assert status == 200 and body == seed.users["physician"]
    status, body, _ = api.call("PUT", f"/api/v1/users/{uid}", tokens["admin"],
                               {"full_name": "Greg House", "institution_id": seed.institution_b["id"],
                                "email": "house@b.example"})
    assert status == 200
    assert (body["full_name"], body["institution_id"], body["email"]) == \
        ("Greg House", seed.institution_b["id"], "house@b.example")
    assert api.call("GET", f"/api/v1/users/{uid}", tokens["admin"])[1] == body


def test_moving_a_user_ends_their_sessions(api: Api, tokens, seed):
    uid = seed.users["physician"]["id"]
    status, _, _ = api.call("PUT", f"/api/v1/users/{uid}", tokens["admin"], {"role": "sysadmin"})
    assert status == 200
    status, body, _ = api.call("POST", "/api/v1/auth/renew", tokens["physician"])
    assert status == 401 and body["error"]["code"] == "session_expired"
    claims = api.login("dr.house", PASSWORDS["physician"])["user"]
    assert claims["role"] == "sysadmin"


@pytest.mark.parametrize("body", [{}, {"active": "no"}, {"role": "root"}, {"password_hash": "x"},
                                  {"institution_id": str(uuid.uuid4())}])
def test_update_user_refuses_bad_input(api: Api, tokens, seed, db_state, body):
    before = db_state()
    status, answer, _ = api.call("PUT", f"/api/v1/users/{seed.users['physician']['id']}", tokens["admin"], body)
    assert status == 400 and answer["error"]["code"] == "validation_error"
    assert db_state() == before


@pytest.mark.parametrize("body", [{"active": False}, {"role": "physician"}])
def test_admin_cannot_deactivate_or_demote_themself(api: Api, tokens, seed, db_state, body):
    before = db_state()
    status, answer, _ = api.call("PUT", f"/api/v1/users/{seed.users['admin']['id']}", tokens["admin"], body)
    assert status == 409 and answer["error"]["code"] == "conflict"
    assert db_state() == before


def test_admin_cannot_delete_themself(api: Api, tokens, seed, db_state):
    before = db_state()
    status, body, _ = api.call("DELETE", f"/api/v1/users/{seed.users['admin']['id']}", tokens["admin"])
    assert status == 409 and body["error"]["code"] == "conflict"
    assert db_state() == before


@pytest.mark.parametrize("bad_id, status, code", [
    ("", 400, "invalid_id"),
    ("%20", 400, "invalid_id"),
    ("not-a-uuid", 400, "invalid_id"),
    ("1 OR 1=1", 400, "invalid_id"),
    ("*", 400, "invalid_id"),
    ("{7d444840-9dc0-11d1-b245-5ffdce74fad2}", 400, "invalid_id"),
    ("5bf29f22-7355-4236-ad80-e8705d114f9f", 404, "not_found"),
])
def test_delete_user_with_blank_malformed_or_unknown_id(api: Api, tokens, db_state, bad_id, status, code):
    before = db_state()
    got, body, _ = api.call("DELETE", f"/api/v1/users/{bad_id}", tokens["admin"])
    assert (got, body["error"]["code"]) == (status, code)
    assert db_state() == before


def test_admin_deletes_user(api: Api, tokens, seed):
    uid = seed.users["physician_b"]["id"]
    status, _, response = api.call("DELETE", f"/api/v1/users/{uid}", tokens["admin"])
    assert status == 204 and response.get_data() == b""
    assert api.call("GET", f"/api/v1/users/{uid}", tokens["admin"])[0] == 404
    assert api.call("GET", "/api/v1/me", tokens["physician_b"])[0] == 401
    assert api.call("DELETE", f"/api/v1/users/{uid}", tokens["admin"])[0] == 404


def test_admin_resets_password_and_ends_sessions(api: Api, tokens, seed):
    uid = seed.users["physician"]["id"]
    status, _, _ = api.call("POST", f"/api/v1/users/{uid}/password", tokens["admin"],
                            {"new_password": "fresh-password-9"})
    assert status == 204
    assert api.call("GET", "/api/v1/me", tokens["physician"])[0] == 401
    assert api.call("POST", "/api/v1/auth/login",
                    json={"username": "dr.house", "password": PASSWORDS["physician"]})[0] == 401
    assert api.login("dr.house", "fresh-password-9")


def test_admin_reset_refuses_short_password_and_own_account(api: Api, tokens, seed, db_state):
    before = db_state()
    status, body, _ = api.call("POST", f"/api/v1/users/{seed.users['physician']['id']}/password",
                               tokens["admin"], {"new_password": "short"})
    assert status == 400 and body["error"]["code"] == "validation_error"
    status, body, _ = api.call("POST", f"/api/v1/users/{seed.users['admin']['id']}/password",
                               tokens["admin"], {"new_password": "no-old-password-needed?"})
    assert status == 403
    assert db_state() == before


def test_me_shows_and_updates_own_profile(api: Api, tokens, seed):
    status, body, _ = api.call("GET", "/api/v1/me", tokens["physician"])
    assert status == 200 and body == seed.users["physician"]
    status, body, _ = api.call("PUT", "/api/v1/me", tokens["physician"],
                               {"full_name": "Dr. G. House", "email": "gh@a.example"})
    assert status == 200 and body["full_name"] == "Dr. G. House" and body["email"] == "gh@a.example"
    assert body["role"] == "physician"


@pytest.mark.parametrize("body", [{}, {"role": "sysadmin"}, {"active": False}, {"email": "nope"},
                                  {"institution_id": "11111111-1111-4111-8111-111111111111"}])
def test_me_cannot_change_role_or_anything_else(api: Api, tokens, db_state, body):
    before = db_state()
    status, answer, _ = api.call("PUT", "/api/v1/me", tokens["physician"], body)
    assert status == 400 and answer["error"]["code"] == "validation_error"
    assert db_state() == before


def test_own_password_change_ends_the_other_sessions(api: Api, tokens):
    elsewhere = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    status, _, _ = api.call("POST", "/api/v1/me/password", tokens["physician"],
                            {"old_password": PASSWORDS["physician"], "new_password": "my-new-password"})
    assert status == 204
    assert api.login("dr.house", "my-new-password")
    assert api.call("POST", "/api/v1/auth/renew", tokens["physician"])[0] == 200
    status, body, _ = api.call("POST", "/api/v1/auth/renew", elsewhere)
    assert status == 401 and body["error"]["code"] == "session_expired"


@pytest.mark.parametrize("body, status, code", [
    ({"new_password": "my-new-password"}, 400, "validation_error"),
    ({"old_password": "", "new_password": "my-new-password"}, 400, "validation_error"),
    ({"old_password": None, "new_password": "my-new-password"}, 400, "validation_error"),
    ({"old_password": "wrong-password", "new_password": "my-new-password"}, 403, "wrong_password"),
    ({"old_password": PASSWORDS["physician"], "new_password": "short"}, 400, "validation_error"),
    ({"old_password": PASSWORDS["physician"]}, 400, "validation_error"),
])
def test_own_password_change_needs_the_old_password(api: Api, tokens, db_state, body, status, code):
    before = db_state()
    hash_before = _hash_of("dr.house")
    got, answer, _ = api.call("POST", "/api/v1/me/password", tokens["physician"], body)
    assert (got, answer["error"]["code"]) == (status, code)
    assert _hash_of("dr.house") == hash_before
    after = db_state()
    after.pop("login_failure"), before.pop("login_failure")
    assert after == before


def test_guessing_old_password_with_a_token_is_throttled(make_config, seed):
    from daemons.toplevel.app import create_app

    api = Api(create_app(make_config(auth={"max_failed_logins": 3})).test_client())
    token = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    for _ in range(3):
        api.call("POST", "/api/v1/me/password", token, {"old_password": "guess-guess", "new_password": "x" * 12})
    status, _, response = api.call("POST", "/api/v1/me/password", token,
                                   {"old_password": PASSWORDS["physician"], "new_password": "x" * 12})
    assert status == 429 and "Retry-After" in response.headers


def test_a_search_as_long_as_a_stored_full_name_finds_it(api: Api, tokens, seed):
    """A full name holds up to 200 characters: a search of it whole is no over-long value."""
    long_name = "Dr. " + "Verylongname " * 15 + "House"
    api.call("POST", "/api/v1/users", tokens["admin"], _new_user(seed, full_name=long_name[:200]))
    status, body, _ = api.call("GET", "/api/v1/users", tokens["admin"], query_string={"q": long_name[:200]})
    assert status == 200, body
    assert [u["full_name"] for u in body["items"]] == [long_name[:200]]
    status, body, _ = api.call("GET", "/api/v1/users", tokens["admin"], query_string={"q": "x" * 201})
    assert status == 400 and "q" in body["error"]["message"]


def _deleted_once_checked(monkeypatch, fields: dict, institution_id: str) -> None:
    """Delete `institution_id` right after the body's `institution_id` is checked: the sysadmin who
    deletes it and the admin who moves or creates a user there acting at the same moment."""
    checked = fields["institution_id"]

    def check_then_deleted(value: str, field: str) -> str:
        ident = checked.check(value, field)
        Institution.delete().where(Institution.id == institution_id).execute()
        return ident

    monkeypatch.setitem(fields, "institution_id", dataclasses.replace(checked, check=check_then_deleted))


def test_a_user_moved_or_created_in_an_institution_deleted_meanwhile_is_a_409(api, tokens, seed, db_state,
                                                                               monkeypatch):
    """The institution exists when the body is checked and is deleted (it has no member yet) before
    the row is written: the database's foreign key refused the write, a move answered 500 and a new
    user 409 "the username is already taken"."""
    physician = seed.users["physician"]
    for fields, method, path, body in (
        (accounts.USER_UPDATE_FIELDS, "PUT", f"/api/v1/users/{physician['id']}", {}),
        (accounts.USER_CREATE_FIELDS, "POST", "/api/v1/users",
         {"username": "newcomer", "password": "a-long-password", "full_name": "New Comer", "role": "physician"}),
    ):
        status, doomed, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": f"Closing {method}"})
        assert status == 201, doomed
        before = db_state()
        with monkeypatch.context() as patch:
            _deleted_once_checked(patch, fields, doomed["id"])
            status, answer, _ = api.call(method, path, tokens["admin"], {**body, "institution_id": doomed["id"]})
        assert status == 409 and answer["error"]["code"] == "conflict", answer
        assert "deleted meanwhile" in answer["error"]["message"]
        assert {k: v for k, v in db_state().items() if k != "institution"} == {
            k: v for k, v in before.items() if k != "institution"}


def test_the_password_policy_is_the_servers_own_setting(make_config, seed):
    """The console checked a new password against a 10 of its own, whatever `auth.min_password_length`
    an operator set: 12 characters refused by a server asking 14 passed it, 9 allowed by a server asking
    8 were refused before the server saw them. The server says its lengths to any signed-in user."""
    from daemons.toplevel.app import create_app

    api = Api(create_app(make_config(auth={"min_password_length": 14})).test_client())
    assert api.call("GET", "/api/v1/me/password-policy")[0] == 401
    token = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    status, body, _ = api.call("GET", "/api/v1/me/password-policy", token)
    assert status == 200 and body == {"min_length": 14, "max_length": 1024}
    status, body, _ = api.call("POST", "/api/v1/me/password", token,
                               {"old_password": PASSWORDS["physician"], "new_password": "x" * 13})
    assert status == 400 and "14" in body["error"]["message"]
