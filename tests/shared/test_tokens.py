"""Token minting and verification, including the attacks the seed fell for."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import (
    TokenError,
    TokenIssuer,
    TokenVerifier,
    generate_signing_keypair,
    key_id,
    load_private_key,
    load_public_key,
)

#: A server's own audience (its base URL), as every layer is configured since per-server audiences.
AUD = "https://render-1.test:5003"


@pytest.fixture
def keypair(tmp_path):
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    generate_signing_keypair(private, public)
    return load_private_key(private), load_public_key(public), private


def _pair(keypair, ttl=300):
    private, public, _ = keypair
    return TokenIssuer(private, "sivr-toplevel", AUD, ttl), TokenVerifier(public, "sivr-toplevel", AUD, 0)


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
    first = verifier.verify(issuer.issue("u1", "a", "sysadmin", "i")[0])
    renewed = verifier.verify(issuer.issue("u1", "a", "sysadmin", "i", first.session_id, first.auth_time)[0])
    assert renewed.session_id == first.session_id and renewed.auth_time == first.auth_time


def test_expired_token_is_refused(keypair):
    issuer, verifier = _pair(keypair, ttl=10)
    token, _ = issuer.issue("u1", "a", "sysadmin", "i", now=int(time.time()) - 60)
    with pytest.raises(TokenError) as err:
        verifier.verify(token)
    assert err.value.code == "token_expired"


def test_token_signed_with_another_key_is_refused(keypair):
    _, verifier = _pair(keypair)
    other = TokenIssuer(Ed25519PrivateKey.generate(), "sivr-toplevel", AUD, 300)
    with pytest.raises(TokenError, match="signature"):
        verifier.verify(other.issue("u1", "a", "sysadmin", "i")[0])


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(keypair):
    issuer, verifier = _pair(keypair)
    claims = jwt.decode(issuer.issue("u1", "a", "sysadmin", "i")[0], options={"verify_signature": False})
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(TokenError, match="not accepted"):
        verifier.verify(forged)


def test_hs256_with_public_key_as_secret_is_refused(keypair):
    _, verifier = _pair(keypair)
    secret = keypair[2].with_suffix(".pub").read_bytes()
    claims = {"iss": "sivr-toplevel", "aud": AUD, "sub": "u", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "role": "sysadmin", "inst": "i", "name": "x", "sid": "s",
              "auth_time": int(time.time())}
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(TokenError):
        verifier.verify(forged)


@pytest.mark.parametrize("field,value", [("iss", "someone-else"), ("aud", "https://other.test:5003")])
def test_wrong_issuer_or_audience_is_refused(keypair, field, value):
    private, public, _ = keypair
    issuer = TokenIssuer(private, value if field == "iss" else "sivr-toplevel",
                         value if field == "aud" else AUD, 300)
    with pytest.raises(TokenError):
        TokenVerifier(public, "sivr-toplevel", AUD).verify(issuer.issue("u", "a", "sysadmin", "i")[0])


def test_garbage_and_unknown_role_are_refused(keypair):
    private, public, _ = keypair
    verifier = TokenVerifier(public, "sivr-toplevel", AUD)
    with pytest.raises(TokenError):
        verifier.verify("not-a-token")
    claims = {"iss": "sivr-toplevel", "aud": AUD, "sub": "u", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "role": "root", "inst": "i", "name": "x", "sid": "s",
              "auth_time": int(time.time())}
    for retired in ("root", "admin"):  # `admin`: the single admin role before schema 2 split it
        with pytest.raises(TokenError, match="role"):
            verifier.verify(jwt.encode(dict(claims, role=retired), private, algorithm="EdDSA"))


def test_missing_claim_is_refused(keypair):
    private, public, _ = keypair
    claims = {"iss": "sivr-toplevel", "aud": AUD, "sub": "u", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "role": "sysadmin", "name": "x", "sid": "s",
              "auth_time": int(time.time())}
    with pytest.raises(TokenError, match="inst"):
        TokenVerifier(public, "sivr-toplevel", AUD).verify(jwt.encode(claims, private, algorithm="EdDSA"))


def _new_keys(tmp_path, name):
    generate_signing_keypair(tmp_path / f"{name}.pem", tmp_path / f"{name}.pub")
    return load_private_key(tmp_path / f"{name}.pem"), load_public_key(tmp_path / f"{name}.pub")


def test_a_token_names_its_signing_key(keypair):
    issuer, _ = _pair(keypair)
    token, _ = issuer.issue("u", "alice", "physician", "i")
    assert jwt.get_unverified_header(token)["kid"] == key_id(keypair[1]) == issuer.key_id
    assert len(issuer.key_id) == 16


def test_a_rotation_keeps_every_session_working(tmp_path):
    """Every layer accepts the next key before the toplevel signs with it, and the old one until its
    tokens have expired; once the old key is gone its tokens are refused, naming why."""
    old_private, old_public = _new_keys(tmp_path, "old")
    new_private, new_public = _new_keys(tmp_path, "new")
    old_token, _ = TokenIssuer(old_private, "sivr-toplevel", AUD, 300).issue("u1", "alice", "physician", "i")
    new_token, _ = TokenIssuer(new_private, "sivr-toplevel", AUD, 300).issue("u2", "bob", "sysadmin", "i")
    during = TokenVerifier([new_public, old_public], "sivr-toplevel", AUD)
    assert during.verify(old_token).username == "alice" and during.verify(new_token).username == "bob"
    after = TokenVerifier(new_public, "sivr-toplevel", AUD)
    assert after.verify(new_token).username == "bob"
    with pytest.raises(TokenError, match="key this server does not accept") as refused:
        after.verify(old_token)
    assert refused.value.code == "invalid_token"


def test_a_key_id_does_not_let_another_key_sign(tmp_path):
    """A forger who copies a trusted key's `kid` into a token signed with their own key gains nothing."""
    trusted_private, trusted_public = _new_keys(tmp_path, "trusted")
    forger = Ed25519PrivateKey.generate()
    claims = jwt.decode(TokenIssuer(trusted_private, "sivr-toplevel", AUD, 300).issue("u", "a", "sysadmin", "i")[0],
                        options={"verify_signature": False})
    forged = jwt.encode(claims, forger, algorithm="EdDSA", headers={"kid": key_id(trusted_public)})
    with pytest.raises(TokenError, match="signature is not valid"):
        TokenVerifier(trusted_public, "sivr-toplevel", AUD).verify(forged)
    for odd_kid in (5, ["x"], "", "0" * 16):
        signing_input = f"{_b64({'alg': 'EdDSA', 'typ': 'JWT', 'kid': odd_kid})}.{_b64(claims)}"
        signature = base64.urlsafe_b64encode(trusted_private.sign(signing_input.encode())).rstrip(b"=").decode()
        with pytest.raises(TokenError) as refused:
            TokenVerifier(trusted_public, "sivr-toplevel", AUD).verify(f"{signing_input}.{signature}")
        assert refused.value.code == "invalid_token", odd_kid


def test_a_token_without_key_id_is_checked_against_every_accepted_key(tmp_path):
    first_private, first_public = _new_keys(tmp_path, "first")
    _, second_public = _new_keys(tmp_path, "second")
    claims = jwt.decode(TokenIssuer(first_private, "sivr-toplevel", AUD, 300).issue("u", "a", "sysadmin", "i")[0],
                        options={"verify_signature": False})
    unnamed = jwt.encode(claims, first_private, algorithm="EdDSA")
    assert "kid" not in jwt.get_unverified_header(unnamed)
    assert TokenVerifier([second_public, first_public], "sivr-toplevel", AUD).verify(unnamed).role == "sysadmin"
    with pytest.raises(TokenError, match="signature is not valid"):
        TokenVerifier([second_public], "sivr-toplevel", AUD).verify(unnamed)
    expired = jwt.encode({**claims, "exp": int(time.time()) - 60}, first_private, algorithm="EdDSA")
    with pytest.raises(TokenError) as refused:
        TokenVerifier([second_public, first_public], "sivr-toplevel", AUD, 0).verify(expired)
    assert refused.value.code == "token_expired"
    with pytest.raises(ValueError, match="at least one public key"):
        TokenVerifier([], "sivr-toplevel", AUD)


@pytest.mark.parametrize("url, audience", [
    ("https://Inst-A.Example:5002/", "https://inst-a.example:5002"),
    ("HTTPS://inst-a.example:443", "https://inst-a.example"),
    ("http://127.0.0.1:80/", "http://127.0.0.1"),
    ("https://[::1]:5003", "https://[::1]:5003"),
    ("https://proxy.example/sivr/node-1/", "https://proxy.example/sivr/node-1"),
])
def test_an_audience_is_the_normalized_base_url(url, audience):
    from shared.tokens import normalize_audience

    assert normalize_audience(url) == audience


@pytest.mark.parametrize("bad", ["", "sivr", "inst-a.example:5002", "ftp://x.example", "https://u:p@x.example",
                                 "https://x.example/?a=1", "https://x.example/#f", "https://x.example:99999", "https://"])
def test_anything_but_a_base_url_is_no_audience(bad):
    from shared.tokens import normalize_audience

    with pytest.raises(ValueError):
        normalize_audience(bad)


def test_an_exchanged_token_names_its_audience_and_short_life(keypair):
    private, public, _ = keypair
    issuer = TokenIssuer(private, "sivr-toplevel", "https://top.example", 300)
    token, expires_in = issuer.issue("u1", "alice", "physician", "i", audience="https://node.example", ttl_s=30)
    assert expires_in == 30
    node = TokenVerifier(public, "sivr-toplevel", "https://node.example", 0, max_lifetime_s=60)
    assert node.verify(token).user_id == "u1"
    with pytest.raises(TokenError) as refused:
        TokenVerifier(public, "sivr-toplevel", "https://top.example", 0).verify(token)
    assert refused.value.code == "invalid_token"


def test_a_layer_refuses_tokens_minted_to_live_longer_than_it_accepts(keypair):
    """A misconfigured toplevel (or a stolen session token for a layer sharing its audience) cannot
    stretch the revocation bound of the institution and render layers."""
    private, public, _ = keypair
    token, _ = TokenIssuer(private, "sivr-toplevel", "https://node.example", 300).issue("u1", "alice", "physician", "i")
    with pytest.raises(TokenError, match="lives longer than the 60 s"):
        TokenVerifier(public, "sivr-toplevel", "https://node.example", 0, max_lifetime_s=60).verify(token)


def test_the_node_cache_never_outlives_a_token(keypair):
    from daemons.render.token_cache import CachingVerifier

    private, public, _ = keypair
    verifier = CachingVerifier(TokenVerifier(public, "sivr-toplevel", "https://node.example", 0, max_lifetime_s=60))
    assert verifier.max_lifetime_s == 60
    # 3 s, not 1: `exp` counts whole seconds, so a 1 s token issued late in a second lived a few
    # milliseconds, and a busy machine's first verify found it expired already
    token, _ = TokenIssuer(private, "sivr-toplevel", "https://node.example", 3).issue("u1", "alice", "physician", "i")
    expires_at = verifier.verify(token).expires_at
    assert verifier.verify(token).user_id == "u1"  # from the cache
    time.sleep(max(0.0, expires_at - time.time()) + 0.1)
    with pytest.raises(TokenError) as refused:
        verifier.verify(token)
    assert refused.value.code == "token_expired"
