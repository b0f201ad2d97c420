"""Hostile input the toplevel must answer with a 4xx naming the problem, never a 500.

Lone surrogates (JSON can carry `"\\ud800"`) cannot be encoded for argon2 or any database, and
PostgreSQL refuses NUL in text it compares; each case here was a 500 before it was refused.
"""

from __future__ import annotations

import pytest

from shared.errors import EMPTY_SEGMENT_MESSAGE

from .support import PASSWORDS, patient_body


@pytest.mark.parametrize("body", [
    {"username": "admin", "password": "secret\ud800"},
    {"username": "ad\ud800min", "password": "secret"},
    {"username": "ad\x00min", "password": "secret"},
    {"username": "admin\n", "password": "secret"},
    {"username": "admin\u202e", "password": "secret"},
    {"username": "\u2066admin", "password": "secret"},
    {"username": "\u200b\u2060 ", "password": "secret"},
], ids=["surrogate-password", "surrogate-username", "nul-username", "newline-username", "rlo-username",
        "isolate-username", "zero-width-username"])
def test_login_with_unencodable_text_is_a_validation_error(api, seed, body):
    """A username with a bidirectional control, or of zero-width characters alone, was looked up,
    answered 401 and written to the audit log and the login throttle as sent: no username holds
    one (`shared.validation`, as every typed field), so it is refused before the lookup."""
    status, answer, _ = api.call("POST", "/api/v1/auth/login", json=body)
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error" and answer["error"]["message"]
    assert api.login(seed.users["admin"]["username"], PASSWORDS["admin"])["access_token"]


def test_unencodable_old_password_is_refused_and_changes_nothing(api, tokens, seed):
    status, answer, _ = api.call("POST", "/api/v1/me/password", tokens["physician"],
                                 json={"old_password": "x\ud800", "new_password": "a-new-password-1"})
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error"
    api.login(seed.users["physician"]["username"], PASSWORDS["physician"])


def test_unencodable_new_password_is_refused_and_changes_nothing(api, tokens, seed):
    status, answer, _ = api.call("POST", "/api/v1/me/password", tokens["physician"],
                                 json={"old_password": PASSWORDS["physician"],
                                       "new_password": "a-new-password\udfff"})
    assert status == 400, answer
    assert "old_password" not in answer["error"]["message"]
    assert "new_password" in answer["error"]["message"]
    api.login(seed.users["physician"]["username"], PASSWORDS["physician"])


def test_admin_reset_to_an_unencodable_password_is_refused(api, tokens, seed):
    physician = seed.users["physician"]
    status, answer, _ = api.call("POST", f"/api/v1/users/{physician['id']}/password", tokens["admin"],
                                 json={"new_password": "reset-password\ud800"})
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error"
    api.login(physician["username"], PASSWORDS["physician"])


@pytest.mark.parametrize("path", [
    "/api/v1/patients?q=an%00a",
    "/api/v1/patients?insurance_number=HR%00",
    "/api/v1/patients?q=%1b%5b2J",
    "/api/v1/users?q=ad%00",
])
def test_control_characters_in_search_text_are_a_validation_error(api, tokens, path):
    status, answer, _ = api.call("GET", path, tokens["admin"])
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error"
    assert "control characters" in answer["error"]["message"]


def test_search_text_keeps_working_with_unicode(api, tokens):
    status, answer, _ = api.call("GET", "/api/v1/patients?q=%C5%A0imi%C4%87%20%F0%9F%A6%B4", tokens["admin"])
    assert status == 200, answer
    assert answer["total"] == 0


@pytest.mark.parametrize("url", ["https://[::1", "https://host.example:99999", "https://host.example:0",
                                 "https://host.example:port"])
def test_institution_server_url_that_does_not_parse_is_a_validation_error(api, tokens, db_state, url):
    before = db_state()
    status, answer, _ = api.call("POST", "/api/v1/institutions", tokens["admin"],
                                 json={"name": "Broken URL Hospital", "server_url": url})
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error"
    assert "server_url" in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("url", ["https://" + "\u0130" * 480, "https://b\u00fccher.example:5002"])
def test_institution_server_url_with_a_host_beyond_ascii_is_refused_for_its_idna_form(api, tokens, seed, db_state, url):
    """`İ` is two characters lower-cased: a server_url of 488 measured as sent was stored as 968 in
    a column of 500, a 500 on PostgreSQL. Browsers send such a host in its IDNA form (`xn--`), so
    that form is asked for; the length is checked on the URL as stored."""
    before = db_state()
    for method, path, body in (("POST", "/api/v1/institutions", {"name": "IDN Hospital", "server_url": url}),
                               ("PUT", f"/api/v1/institutions/{seed.institution_b['id']}", {"server_url": url})):
        status, answer, _ = api.call(method, path, tokens["admin"], json=body)
        assert status == 400 and answer["error"]["code"] == "validation_error", (method, answer)
        assert "server_url" in answer["error"]["message"] and "xn--" in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("url, problem", [
    ("http://inst-c.example:5002", "https"),
    ("http://10.0.0.5:5002", "https"),
    ("https://user:secret@inst-c.example:5002", "user name or password"),
])
def test_institution_server_url_that_would_expose_tokens_is_refused(api, tokens, db_state, url, problem):
    """Clients send every user's token to this URL: never in clear text, never with credentials in it."""
    before = db_state()
    status, answer, _ = api.call("POST", "/api/v1/institutions", tokens["admin"],
                                 json={"name": "Plain Hospital", "server_url": url})
    assert status == 400 and answer["error"]["code"] == "validation_error"
    assert problem in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("url", ["http://127.0.0.1:5002", "http://localhost:5002", "http://[::1]:5002"])
def test_institution_server_url_may_be_plain_http_on_loopback(api, tokens, url):
    status, answer, _ = api.call("POST", "/api/v1/institutions", tokens["admin"],
                                 json={"name": f"Local {url}", "server_url": url})
    assert status == 201 and answer["server_url"] == url


@pytest.mark.parametrize("query", ["since=0001-01-01T00:00:00%2B01:00", "until=9999-12-31T23:59:59-01:00"])
def test_an_audit_time_outside_utc_years_is_400(api, tokens, query):
    """Valid ISO 8601 times that fall before year 1 or after 9999 in UTC: astimezone overflowed, a 500."""
    status, body, _ = api.call("GET", f"/api/v1/audit?{query}", tokens["admin"])
    assert status == 400 and body["error"]["code"] == "validation_error", body


@pytest.mark.parametrize("method, path", [("GET", "/api/v1//users"), ("POST", "/api/v1/auth//login"),
                                          ("GET", "/api/v1/users//")])
def test_a_path_with_an_empty_segment_is_a_404_that_says_so(api, tokens, method, path):
    """A bare "not found", as for a path that names nothing, though the same path with one `/` exists."""
    status, answer, _ = api.call(method, path, tokens["admin"])
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found" and answer["error"]["message"] == EMPTY_SEGMENT_MESSAGE


@pytest.mark.parametrize("method, path", [("GET", "/api/v1/users/%00"), ("PUT", "/api/v1/institutions/a%00b"),
                                          ("DELETE", "/api/v1/patients/%00")])
def test_a_refusal_whose_path_holds_nul_is_audited_not_a_500(api, tokens, seed, method, path):
    """A physician is refused these (403) before the id is read, and the refusal's `access.denied`
    entry quotes the path: PostgreSQL refused the NUL, the entry was lost and the answer was 500.
    What no database stores is kept as U+FFFD (`shared.audit`)."""
    status, answer, _ = api.call(method, path, tokens["physician"], json={"name": "x"} if method == "PUT" else None)
    assert status == 403 and answer["error"]["code"] == "forbidden", answer
    status, log, _ = api.call("GET", "/api/v1/audit?action=access.denied", tokens["admin"])
    assert status == 200, log
    entry = log["items"][0]
    assert entry["user_id"] == seed.users["physician"]["id"]
    assert "\x00" not in entry["object_id"] + entry["detail"] and "\ufffd" in entry["object_id"]
    assert entry["detail"].startswith(f"{method} /api/v1/")


def test_a_peer_address_longer_than_the_audit_column_is_audited_cut_not_a_500(api, tokens, seed):
    """gunicorn's `remote_addr` may be longer than the audit's 64 characters (an IPv6 address with a
    zone id, a trusted proxy's X-Forwarded-For value): PostgreSQL refused the entry, which was lost,
    and the answer was 500. It is kept cut, ending in `…` (`shared.audit.stored_address`)."""
    address = "fe80::a00:27ff:fe4e:66a1%" + "veth-a1b2c3d4e5f6-" * 4
    peer = {"environ_base": {"REMOTE_ADDR": address}}
    status, login, _ = api.call("POST", "/api/v1/auth/login", json={"username": "dr.house",
                                                                      "password": PASSWORDS["physician"]}, **peer)
    assert status == 200, login
    status, created, _ = api.call("POST", "/api/v1/patients", login["access_token"], patient_body(), **peer)
    assert status == 201, created
    status, log, _ = api.call("GET", f"/api/v1/audit?user_id={seed.users['physician']['id']}", tokens["admin"])
    assert status == 200, log
    cut = address[:63] + "…"
    assert {(entry["action"], entry["client_ip"]) for entry in log["items"] if entry["client_ip"] != "127.0.0.1"} == {
        ("auth.login", cut), ("patient.create", cut)}
