"""Debian's Chromium driven by Playwright (sync API) against a real deployment.

TLS: Chromium is told to accept exactly the deployment's server key, by the SHA-256 hash of its
SubjectPublicKeyInfo (`--ignore-certificate-errors-spki-list`), instead of
`--ignore-certificate-errors`. So the browser still refuses any other certificate, the page stays
a secure context, and nothing is installed into a certificate store on the machine; the server
certificate is the one `sivr init` issued from the local CA, shared by every layer.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
DESKTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 780}


def spki_hash(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)), the form Chromium's SPKI allow-list takes."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def server_cert_of(deployment) -> Path:
    return Path(deployment.layout.root) / "tls" / "server.pem"


def launch_chromium(playwright_instance, cert: Path, extra_args: tuple[str, ...] = ()):
    return playwright_instance.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_hash(cert)}", *extra_args],
    )
