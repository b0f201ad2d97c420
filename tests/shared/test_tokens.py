"""Token minting and verification, including the attacks the seed fell for."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import TokenError, TokenIssuer, TokenVerifier, generate_signing_keypair, load_private_key, load_public_key


@pytest.fixture
def keypair(tmp_path):
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    generate_signing_keypair(private, public)
    return load_private_key(private), load_public_key(public), private


def _pair(keypair, ttl=300):
    private, public, _ = keypair
    return TokenIssuer(private, "sivr-toplevel", "sivr", ttl), TokenVerifier(public, "sivr-toplevel", "sivr", 0)


def test_private_key_file_is_owner_only(keypair):
    assert (keypair[2].stat().st_mode & 0o777) == 0o600


def test_round_trip_carries_identity(keypair):
    issuer, verifier = _pair(keypair)
    token, expires_in = issuer.issue("u1", "alice", "physician", "inst-1")
    identity = verifier.verify(token)
    assert (identity.user_id, identity.username, identity.role, identity.institution_id) == (
        "u1", "alice", "physician", "inst-1")
    assert expires_in == 300 and identity.expires_at - identity.auth_time == 300


def test_renewal_keeps_session_and_auth_time(keypair):
    issuer, verifier = _pair(keypair)
    first = verifier.verify(issuer.issue("u1", "a", "admin", "i")[0])
    renewed = verifier.verify(issuer.issue("u1", "a", "admin", "i", first.session_id, first.auth_time)[0])
    assert renewed.session_id == first.session_id and renewed.auth_time == first.auth_time


def test_expired_token_is_refused(keypair):
    issuer, verifier = _pair(keypair, ttl=10)
    token, _ = issuer.issue("u1", "a", "admin", "i", now=int(time.time()) - 60)
    with pytest.raises(TokenError) as err:
        verifier.verify(token)
    assert err.value.code == "token_expired"


def test_token_signed_with_another_key_is_refused(keypair):
    _, verifier = _pair(keypair)
    other = TokenIssuer(Ed25519PrivateKey.generate(), "sivr-toplevel", "sivr", 300)
    with pytest.raises(TokenError, match="signature"):
        verifier.verify(other.issue("u1", "a", "admin", "i")[0])


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(keypair):
    issuer, verifier = _pair(keypair)
    claims = jwt.decode(issuer.issue("u1", "a", "admin", "i")[0], options={"verify_signature": False})
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(TokenError, match="not accepted"):
        verifier.verify(forged)


def test_hs256_with_public_key_as_secret_is_refused(keypair):
    _, verifier = _pair(keypair)
    secret = keypair[2].with_suffix(".pub").read_bytes()
    claims = {"iss": "sivr-toplevel", "aud": "sivr", "sub": "u", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "role": "admin", "inst": "i", "name": "x", "sid": "s",
              "auth_time": int(time.time())}
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(TokenError):
        verifier.verify(forged)


@pytest.mark.parametrize("field,value", [("iss", "someone-else"), ("aud", "other-app")])
def test_wrong_issuer_or_audience_is_refused(keypair, field, value):
    private, public, _ = keypair
    issuer = TokenIssuer(private, value if field == "iss" else "sivr-toplevel",
                         value if field == "aud" else "sivr", 300)
    with pytest.raises(TokenError):
        TokenVerifier(public, "sivr-toplevel", "sivr").verify(issuer.issue("u", "a", "admin", "i")[0])


def test_garbage_and_unknown_role_are_refused(keypair):
    private, public, _ = keypair
    verifier = TokenVerifier(public, "sivr-toplevel", "sivr")
    with pytest.raises(TokenError):
        verifier.verify("not-a-token")
    claims = {"iss": "sivr-toplevel", "aud": "sivr", "sub": "u", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "role": "root", "inst": "i", "name": "x", "sid": "s",
              "auth_time": int(time.time())}
    with pytest.raises(TokenError, match="role"):
        verifier.verify(jwt.encode(claims, private, algorithm="EdDSA"))


def test_missing_claim_is_refused(keypair):
    private, public, _ = keypair
    claims = {"iss": "sivr-toplevel", "aud": "sivr", "sub": "u", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "role": "admin", "name": "x", "sid": "s",
              "auth_time": int(time.time())}
    with pytest.raises(TokenError, match="inst"):
        TokenVerifier(public, "sivr-toplevel", "sivr").verify(jwt.encode(claims, private, algorithm="EdDSA"))
