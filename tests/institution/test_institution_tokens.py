"""Forged, expired and malformed tokens are refused with 401 before anything is read or changed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import TokenIssuer, load_private_key

from .conftest import AUDIENCE, INSTITUTION_A, ISSUER, record_body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(role: str = "instadmin") -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": now, "exp": now + 300,
            "role": role, "inst": INSTITUTION_A, "name": "mallory", "sid": str(uuid.uuid4()),
            "auth_time": now}


def _unsigned(alg: str) -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims()).encode())}."


def _hs256_with_public_key(public_pem: bytes) -> str:
    """Algorithm confusion: HMAC keyed with the (public) verification key."""
    signing_input = (f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
                     f"{_b64(json.dumps(_claims()).encode())}")
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _role_escalated(token: str) -> str:
    """A physician's valid token with the payload edited to say admin; signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "instadmin"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


@pytest.fixture
def forged_tokens(signing_keys, issuer, make_user) -> dict[str, tuple[str, str]]:
    """name -> (token, expected error code)."""
    real_key = load_private_key(signing_keys[0])
    other_key = TokenIssuer(Ed25519PrivateKey.generate(), ISSUER, AUDIENCE, 300)
    wrong_issuer = TokenIssuer(real_key, "someone-else", AUDIENCE, 300)
    wrong_audience = TokenIssuer(real_key, ISSUER, "other-system", 300)
    admin_id = str(uuid.uuid4())
    return {
        "other_key": (other_key.issue(admin_id, "mallory", "instadmin", INSTITUTION_A)[0], "invalid_token"),
        "alg_none": (_unsigned("none"), "invalid_token"),
        "alg_none_capitalised": (_unsigned("None"), "invalid_token"),
        "hs256_confusion": (_hs256_with_public_key(signing_keys[1].read_bytes()), "invalid_token"),
        "expired": (issuer.issue(admin_id, "mallory", "instadmin", INSTITUTION_A,
                                 now=int(time.time()) - 3600)[0], "token_expired"),
        "wrong_issuer": (wrong_issuer.issue(admin_id, "mallory", "instadmin", INSTITUTION_A)[0], "invalid_token"),
        "wrong_audience": (wrong_audience.issue(admin_id, "mallory", "instadmin", INSTITUTION_A)[0],
                           "invalid_token"),
        "tampered_role": (_role_escalated(make_user("physician").token), "invalid_token"),
        "garbage": ("not.a.jwt", "invalid_token"),
    }


ATTACKED_CALLS = [
    ("POST", "/api/v1/nodes", {"name": "evil", "url": "https://evil.example"}),
    ("DELETE", "/api/v1/nodes/{node}", None),
    ("PUT", "/api/v1/nodes/{node}", {"url": "https://evil.example"}),
    ("DELETE", "/api/v1/records/{record}", None),
    ("PATCH", "/api/v1/records/{record}", {"description": "relabelled"}),
    ("DELETE", "/api/v1/findings/{finding}", None),
    ("GET", "/api/v1/findings?patient_id={patient}", None),
    ("GET", "/api/v1/audit", None),
]


@pytest.mark.parametrize("attack", ["other_key", "alg_none", "alg_none_capitalised", "hs256_confusion",
                                    "expired", "wrong_issuer", "wrong_audience", "tampered_role", "garbage"])
def test_forged_or_expired_token_is_refused_and_nothing_changes(api, finding, record, db_state, forged_tokens,
                                                                 attack):
    token, code = forged_tokens[attack]
    before = db_state()
    for method, path, body in ATTACKED_CALLS:
        path = path.format(node=record["node_id"], record=record["id"], finding=finding["id"],
                           patient=finding["patient_id"])
        status, answer = api.call(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
        assert status == 401, (method, path, answer)
        assert answer["error"]["code"] == code
    assert db_state() == before


@pytest.mark.parametrize("header, code", [
    (None, "missing_token"),
    ("Bearer", "invalid_token"),
    ("Bearer    ", "invalid_token"),
    ("Basic YWRtaW46YWRtaW4=", "invalid_token"),
])
def test_missing_or_malformed_authorization_header(api, node, db_state, header, code):
    before = db_state()
    headers = {} if header is None else {"Authorization": header}
    for method, path in [("GET", "/api/v1/info"), ("GET", "/api/v1/nodes"), ("DELETE", f"/api/v1/nodes/{node['id']}")]:
        status, answer = api.call(method, path, headers=headers)
        assert status == 401 and answer["error"]["code"] == code
    assert db_state() == before


def test_token_of_the_real_key_is_accepted(api, users):
    status, body = api.call("GET", "/api/v1/info", users["physician"])
    assert status == 200 and body["institution_id"] == INSTITUTION_A


def test_refused_token_writes_no_record(api, node, db_state, forged_tokens, patient_id):
    before = db_state()
    status, _ = api.call("POST", "/api/v1/records", json=record_body(node["id"], patient_id),
                         headers={"Authorization": f"Bearer {forged_tokens['other_key'][0]}"})
    assert status == 401
    assert db_state() == before
