"""TLS material for local and test deployments: a private CA and server certificates it signs.

Production uses real certificates named in each layer's config; this exists so that even the
demo and the tests speak TLS with verification on (clients trust the local CA, never `verify=False`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.config import ConfigError
from shared.files import PUBLIC, require_owner_only, write_atomic
from shared.tokens import write_private_key

#: TLS 1.2 cipher suites the servers offer: forward-secret ECDHE key exchange with AEAD ciphers
#: only (no CBC-mode suites such as ECDHE-ECDSA-AES256-SHA384 or AES128-SHA256, no static RSA key
#: exchange). TLS 1.3 suites are all AEAD and are not affected by this list.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"




def restrict(context: ssl.SSLContext) -> ssl.SSLContext:
    """`context` limited to TLS 1.2 or newer and, in TLS 1.2, to TLS12_CIPHERS."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    return context


def _no_passphrase() -> str:
    # without a callback OpenSSL would ask for a passphrase on the terminal
    raise ssl.SSLError("the key is protected by a passphrase")


class UnusablePem(ValueError):
    """A certificate or key file that cannot serve: `path` names which, `why` says how; `locked`
    when the key is under a passphrase (each caller says what to do about that)."""

    def __init__(self, path: Path, why: str, locked: bool = False):
        super().__init__(f"{path}: {why}")
        self.path, self.why, self.locked = path, why, locked


def read_pem_pair(cert_path: Path, key_path: Path) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    """The certificate chain and the private key of a PEM pair, the key the first certificate's
    (UnusablePem otherwise: unreadable, not PEM, under a passphrase, or another certificate's key)."""
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise UnusablePem(Path(exc.filename or cert_path), str(exc.strerror)) from exc
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise UnusablePem(cert_path, "not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:
        raise UnusablePem(key_path, "the key is protected by a passphrase", locked=True) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UnusablePem(key_path, "not a PEM private key") from exc
    if key.public_key() != chain[0].public_key():
        raise UnusablePem(key_path, f"not the key of the certificate in {cert_path}")
    return chain, key


def load_credentials(where: object, cert: tuple[str, str], key: tuple[str, str],
                     context: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """`context` (default: a restricted server context) holding the certificate chain and key that a
    config names; `cert` and `key` are (config key, file), e.g. ("server.tls_cert", "/etc/sivr/tls/server.pem").

    Every server checks its pair with this before it serves: gunicorn loads them only
    when a client connects, so a garbage key logged "Listening at https://..." and then failed every
    handshake without a word, and a missing one or a key of another certificate stopped the start
    with a traceback. A ConfigError names the config `where`, the key and the file.
    """
    (cert_name, cert_file), (key_name, key_file) = cert, key
    for name, path, other in ((cert_name, cert_file, key_name), (key_name, key_file, cert_name)):
        if not path:
            raise ConfigError(f"{where}: {name} is empty while {other} is set: TLS needs both "
                              "(both empty: plain HTTP, only behind a TLS proxy)")
    try:
        read_pem_pair(Path(cert_file), Path(key_file))
    except UnusablePem as exc:
        name = cert_name if exc.path == Path(cert_file) else key_name
        hint = " (the servers start unattended: write an unprotected copy, mode 0600)" if exc.locked else ""
        raise ConfigError(f"{where}: {name} {exc.path} is unusable: {exc.why}{hint}") from exc
    require_owner_only(Path(key_file), f"{where}: {key_name}")
    context = context if context is not None else restrict(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except (OSError, ssl.SSLError) as exc:  # e.g. a key type this OpenSSL does not take
        raise ConfigError(f"{where}: {cert_name} {cert_file} or {key_name} {key_file} is unusable: {exc}") from exc
    return context


#: A DNS label (RFC 1123): letters, digits and inner hyphens, 1-63 characters.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MAX_DNS_NAME = 253
#: X.509's upper bound on a common name (RFC 5280 ub-common-name); longer names go in the SAN only.
MAX_COMMON_NAME = 64


def check_hostname(host: str) -> str:
    """`host` if a certificate may name it and a URL carry it: an IP address (no zone) or a DNS name
    of RFC 1123 labels. A URL, a wildcard, spaces or control characters are refused (ValueError,
    naming it) before anything is written: they made certificates no client accepts, and configs
    that are not valid TOML."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        if (0 < len(host) <= MAX_DNS_NAME and all(_LABEL.fullmatch(label) for label in labels)
                and not labels[-1].isdigit()):
            return host
    else:
        if "%" not in host:
            return host
    raise ValueError(f"host name {host!r} is neither an IP address (without a zone) nor a DNS name "
                     f"(dot-separated labels of letters, digits and inner hyphens, 1-63 characters each, "
                     f"at most {MAX_DNS_NAME} in all)")


def _name(common_name: str | None) -> x509.Name:
    """SIVR's subject; without a common name when the host name is too long for one (the SAN names it)."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SIVR local")]
    if common_name is not None and len(common_name) <= MAX_COMMON_NAME:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def create_ca(cert_path: Path, key_path: Path, days: int = 3650) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("SIVR local CA"))
        .issuer_name(_name("SIVR local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_key(key_path, key)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)


CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def load_ca(ca_cert_path: Path, ca_key_path: Path) -> tuple[x509.Certificate, CaKey]:
    """The CA certificate and its key, or ValueError naming the file: unreadable, not PEM, a key
    under a passphrase, a certificate that is no CA, or a key that is not the certificate's.
    Signing with a mismatched key or a non-CA certificate made certificates no client verifies."""
    try:
        chain, ca_key = read_pem_pair(ca_cert_path, ca_key_path)
    except UnusablePem as exc:
        hint = "; write an unprotected copy for the CA machine (openssl pkey)" if exc.locked else ""
        raise ValueError(f"{exc.path}: cannot use the CA: {exc.why}{hint}") from exc
    ca_cert = chain[0]
    if not isinstance(ca_key, CaKey):
        raise ValueError(f"{ca_key_path}: a CA key must be an EC, RSA or Ed25519 key")
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError(f"{ca_cert_path}: not a CA certificate (basic constraints without CA:TRUE)")
    return ca_cert, ca_key


def issue_server_cert(
    ca_cert_path: Path,
    ca_key_path: Path,
    cert_path: Path,
    key_path: Path,
    hostnames: Iterable[str] = ("localhost", "127.0.0.1", "::1"),
    days: int = 825,
    client_auth: bool = False,
) -> None:
    """A server certificate for `hostnames` (DNS names or IP addresses) signed by the local CA;
    `client_auth` also lets it authenticate as a TLS client (a DICOM TLS peer is both: it calls
    and is called)."""
    hosts = [check_hostname(host) for host in hostnames]
    if not hosts:
        raise ValueError("a server certificate needs at least one host name")
    ca_cert, ca_key = load_ca(ca_cert_path, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]
                                             + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])),
                       critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private_key(key_path, key)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
