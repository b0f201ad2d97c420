"""The token exchange (`POST /api/v1/auth/token`): a session token for a short-lived token bound
to one other server, refused once the session or the user has ended."""

from __future__ import annotations

import jwt
import pytest

from daemons.toplevel.app import create_app
from daemons.toplevel.models import AuditEntry, database_proxy
from shared.config import ConfigError
from shared.tokens import MAX_EXCHANGED_TTL_S

from .conftest import TOPLEVEL_AUDIENCE
from .support import PASSWORDS, Api

INST_A = "https://inst-a.example:5002"
NODE = "https://render-1.inst-a.example:5003"


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _exchange(api: Api, token: str, audience) -> tuple[int, dict]:
    status, body, _ = api.call("POST", "/api/v1/auth/token", token, json={"audience": audience})
    return status, body


def test_exchange_gives_a_short_token_for_that_server_only(api: Api, seed):
    session = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    status, body = _exchange(api, session, "HTTPS://Inst-A.example:5002/")
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["audience"] == INST_A
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    claims, session_claims = _claims(body["access_token"]), _claims(session)
    assert claims["aud"] == INST_A and session_claims["aud"] == TOPLEVEL_AUDIENCE
    assert claims["exp"] - claims["iat"] == body["expires_in"] == 55 <= MAX_EXCHANGED_TTL_S
    assert (claims["sub"], claims["sid"], claims["role"], claims["inst"]) == (
        session_claims["sub"], session_claims["sid"], "physician", seed.institution_a["id"])
    # the exchanged token is worth nothing at the toplevel, not even for another exchange
    status, refused, _ = api.call("GET", "/api/v1/me", body["access_token"])
    assert status == 401 and refused["error"]["code"] == "invalid_token"
    status, refused = _exchange(api, body["access_token"], NODE)
    assert status == 401 and refused["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("audience", [TOPLEVEL_AUDIENCE, TOPLEVEL_AUDIENCE + "/", "", "inst-a.example",
                                      "ftp://inst-a.example", "https://user:pw@inst-a.example",
                                      "https://inst-a.example/?q=1", "https://inst-a.example:99999", 42, None,
                                      "https://" + "a" * 2000])
def test_exchange_refuses_a_bad_or_own_audience(api: Api, seed, audience):
    session = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    status, body = _exchange(api, session, audience)
    assert status == 400 and body["error"]["code"] == "validation_error", body


@pytest.mark.parametrize("audience", ["https://inst-a.exa\x00mple:5002", "https://inst-a.exa\tmple:5002",
                                      "https://inst-a.example:5002/\nx", "https://inst a.example", "https://inst-a.\x85example"],
                         ids=["nul", "tab", "newline", "space", "nel"])
def test_exchange_refuses_an_audience_with_spaces_or_control_characters(api: Api, seed, audience):
    """`urlsplit` drops tabs and line breaks unseen and keeps NUL: a token was signed for
    `https://inst-a.exa\x00mple:5002`, an audience no server has, and on PostgreSQL the audit entry
    naming it failed (a 500). No base URL holds one (`shared.origins.split_origin`)."""
    session = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    status, body = _exchange(api, session, audience)
    assert status == 400 and body["error"]["code"] == "validation_error", body
    assert "spaces or control characters" in body["error"]["message"]


def test_exchange_refuses_unknown_fields_and_missing_tokens(api: Api, seed):
    session = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    status, body, _ = api.call("POST", "/api/v1/auth/token", session, json={"audience": INST_A, "scope": "all"})
    assert status == 400 and body["error"]["code"] == "validation_error"
    status, body, _ = api.call("POST", "/api/v1/auth/token", json={"audience": INST_A})
    assert status == 401 and body["error"]["code"] == "missing_token"


@pytest.mark.parametrize("revoke", ["logout", "deactivate", "delete", "demote", "move", "password_reset"])
def test_exchange_is_refused_once_the_session_or_user_has_ended(api: Api, seed, revoke):
    session = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    assert _exchange(api, session, INST_A)[0] == 200
    admin = api.login("admin", PASSWORDS["admin"])["access_token"]
    user = f"/api/v1/users/{seed.users['physician']['id']}"
    done = {
        "logout": lambda: api.call("POST", "/api/v1/auth/logout", session),
        "deactivate": lambda: api.call("PUT", user, admin, json={"active": False}),
        "delete": lambda: api.call("DELETE", user, admin),
        "demote": lambda: api.call("PUT", user, admin, json={"role": "instadmin"}),  # any role change
        "move": lambda: api.call("PUT", user, admin, json={"institution_id": seed.institution_b["id"]}),
        "password_reset": lambda: api.call("POST", f"{user}/password", admin,
                                           json={"new_password": "a-brand-new-password"}),
    }[revoke]()
    assert done[0] in (200, 204), done[1]
    status, body = _exchange(api, session, INST_A)
    assert status == 401 and body["error"]["code"] == "session_expired", body


def test_exchanges_are_audited_once_per_session_and_server(api: Api, seed):
    session = api.login("dr.house", PASSWORDS["physician"])["access_token"]
    for audience in (INST_A, INST_A + "/", NODE, INST_A):
        assert _exchange(api, session, audience)[0] == 200
    rows = list(AuditEntry.select().where(AuditEntry.action == "auth.token_exchange").order_by(AuditEntry.at))
    database_proxy.close()
    assert [r.detail for r in rows] == [f"audience {INST_A}", f"audience {NODE}"]
    assert {r.object_id for r in rows} == {_claims(session)["sid"]}
    assert {r.username for r in rows} == {"dr.house"}


@pytest.mark.parametrize("ttl", [0, 61, 300])
def test_toplevel_refuses_to_start_with_exchanged_tokens_living_over_60_s(make_config, seed, ttl):
    with pytest.raises(ConfigError, match=f"tokens.exchanged_ttl_s must be from 1 to 60, got {ttl}$"):
        create_app(make_config(tokens={"exchanged_ttl_s": ttl}))


@pytest.mark.parametrize("audience", ["", "sivr", "toplevel.example:5001", "https://x.example/?a=b"])
def test_toplevel_refuses_to_start_without_its_own_audience(make_config, seed, audience):
    config = make_config(tokens={"audience": audience})
    with pytest.raises((ValueError, ConfigError), match="tokens.audience must be this server's public base URL"):
        create_app(config)
