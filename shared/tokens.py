"""Access tokens: EdDSA (Ed25519) JWTs minted by the toplevel, verified everywhere else.

Only the toplevel holds the private key; institution and render layers hold the public key, so a
compromised backend cannot mint tokens and no layer needs to call another to check one
(horizontal independence, DESIGN.md). The verifier accepts exactly one algorithm, which is what
defeats `alg: none` and algorithm-confusion tokens.

Every layer has its own audience, its public base URL (`tokens.audience`), and accepts only tokens
whose `aud` is that URL. Login gives a session token for the toplevel's audience; the toplevel
exchanges it (RFC 8693 style, `POST /api/v1/auth/token`) for a short-lived token per server the
client talks to. A token captured by one server (a trap institution, a compromised node) is
therefore useless at every other, and since per-server tokens live at most
`MAX_EXCHANGED_TTL_S`, a revoked session stops working on every layer within that time.

Tokens name their signing key (`kid`, a hash of the public key), and a verifier may hold several
public keys: the signing key is rotated without ending anyone's session by letting every layer
accept the new key before the toplevel signs with it, and the old one until its tokens expire.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from shared.files import PRIVATE, PUBLIC, write_atomic
from shared.origins import server_base_url
from shared.roles import ROLES

ALGORITHM = "EdDSA"
#: The query parameter that carries a token where an endpoint takes it there (RFC 6750 §2.3,
#: `shared.auth.require_auth(token_in_query=True)`); log lines never show its value (`shared.logs`).
QUERY_TOKEN_PARAM = "access_token"
#: Longest life of a token for an institution server or a render node: the bound on how long a
#: revoked session keeps working there (those layers cannot ask the toplevel; DESIGN.md).
MAX_EXCHANGED_TTL_S = 60
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "role", "inst", "name", "sid", "auth_time"]


class TokenError(Exception):
    """A token that must be refused; `code` is the API error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Identity:
    """Who is calling, as the token says; the only source of user, role and institution.

    What a role may do is decided by `shared.roles` (one rule for every layer).
    """

    user_id: str
    username: str
    role: str
    institution_id: str
    session_id: str
    auth_time: int
    expires_at: int


def normalize_audience(url: str) -> str:
    """A server's audience from its base URL (`shared.origins.server_base_url`): lower-case scheme
    and host, no default port, no trailing slash. Raises ValueError for anything but an absolute
    http(s) base URL."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("an audience must be the server's base URL, e.g. https://host:5002")
    return server_base_url(url)


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """Write a PEM private key readable by its owner only (0600 from creation, no race; shared/files.py)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, pem, PRIVATE)


def generate_signing_keypair(private_path: Path, public_path: Path) -> None:
    """Create the toplevel's token signing key and the public key every other layer gets."""
    key = Ed25519PrivateKey.generate()
    write_private_key(private_path, key)
    write_atomic(public_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), PUBLIC)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def unverified_header(token: str) -> dict:
    """The header of a signed token, unverified, to pick its key; `jwt.PyJWTError` when malformed.

    PyJWT encodes the token as UTF-8 first, so a lone surrogate (which a JSON string can carry:
    a patient reference or an upload receipt in a request body) raised UnicodeEncodeError, a 500.
    A token is ASCII text (base64url and dots): anything else is malformed here.
    """
    if not token.isascii():
        raise jwt.DecodeError("a token is ASCII text (base64url parts and dots)")
    return jwt.get_unverified_header(token)


def key_id(public_key: Ed25519PublicKey) -> str:
    """The `kid` of tokens signed with this key's private half: 16 hex digits of its SHA-256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class TokenIssuer:
    """Mints access tokens; lives only in the toplevel."""

    def __init__(self, private_key: Ed25519PrivateKey, issuer: str, audience: str, ttl_s: int):
        self._key = private_key
        self.key_id = key_id(private_key.public_key())
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    def issue(
        self,
        user_id: str,
        username: str,
        role: str,
        institution_id: str,
        session_id: str | None = None,
        auth_time: int | None = None,
        now: int | None = None,
        audience: str | None = None,
        ttl_s: int | None = None,
    ) -> tuple[str, int]:
        """Return `(token, expires_in)`; a renewal passes the session's id and start time.

        Without `audience` and `ttl_s` the token is a session token for the issuer's own audience;
        a token exchange names the target server's audience and the short lifetime.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = int(time.time()) if now is None else now
        ttl_s = self.ttl_s if ttl_s is None else ttl_s
        claims = {
            "iss": self.issuer,
            "aud": self.audience if audience is None else audience,
            "sub": user_id,
            "iat": now,
            "exp": now + ttl_s,
            "role": role,
            "inst": institution_id,
            "name": username,
            "sid": session_id or str(uuid.uuid4()),
            "auth_time": auth_time if auth_time is not None else now,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id}), ttl_s


class TokenVerifier:
    """Checks signature, algorithm, issuer, audience and times; returns the caller's Identity."""

    def __init__(self, public_keys: Ed25519PublicKey | Sequence[Ed25519PublicKey], issuer: str, audience: str,
                 leeway_s: int = 5, max_lifetime_s: int | None = None):
        """`public_keys`: the current key first, then any still accepted during a rotation.

        `max_lifetime_s`: refuse tokens minted to live longer (`exp - iat`), so that a layer which
        relies on short lifetimes for revocation holds the toplevel to them.
        """
        keys = [public_keys] if isinstance(public_keys, Ed25519PublicKey) else list(public_keys)
        if not keys:
            raise ValueError("a token verifier needs at least one public key")
        self.public_keys: dict[str, Ed25519PublicKey] = {key_id(key): key for key in keys}
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.max_lifetime_s = max_lifetime_s

    def verify(self, token: str) -> Identity:
        try:
            header = unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_token", f"the access token is malformed: {exc}") from exc
        if header.get("alg") != ALGORITHM:
            raise TokenError(
                "invalid_token", f"token algorithm {header.get('alg')!r} is not accepted"
            )
        kid = header.get("kid")
        if kid is None:
            candidates = list(self.public_keys.values())  # a token minted before tokens named their key
        elif isinstance(kid, str) and kid in self.public_keys:
            candidates = [self.public_keys[kid]]
        else:
            raise TokenError("invalid_token", "the access token's signature is by a key this server does not "
                                              "accept (retired, or not yet installed here); log in again")
        claims = self._decode(token, candidates)
        if self.max_lifetime_s is not None and int(claims["exp"]) - int(claims["iat"]) > self.max_lifetime_s:
            raise TokenError("invalid_token", f"the access token lives longer than the {self.max_lifetime_s} s this "
                                              "server accepts: exchange the session token for one for this server")
        if claims["role"] not in ROLES:
            raise TokenError("invalid_token", "the access token names an unknown role")
        return Identity(
            user_id=str(claims["sub"]),
            username=str(claims["name"]),
            role=str(claims["role"]),
            institution_id=str(claims["inst"]),
            session_id=str(claims["sid"]),
            auth_time=int(claims["auth_time"]),
            expires_at=int(claims["exp"]),
        )

    def _decode(self, token: str, keys: list[Ed25519PublicKey]) -> dict:
        """The checked claims of a token whose signature one of `keys` verifies."""
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    issuer=self.issuer,
                    audience=self.audience,
                    leeway=self.leeway_s,
                    options={"require": _REQUIRED_CLAIMS},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError as exc:
                raise TokenError("token_expired", "the access token has expired; log in again") from exc
            except jwt.PyJWTError as exc:
                raise TokenError("invalid_token", f"the access token was refused: {exc}") from exc
        raise TokenError("invalid_token", "the access token's signature is not valid")
