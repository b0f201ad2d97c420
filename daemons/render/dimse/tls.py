"""DICOM TLS (PS3.15 Annex B, the secure transport connection profiles) for the node's DIMSE listener
and its C-MOVE associations to destinations marked `tls://`.

The rule is the HTTPS one (`shared.tls`): TLS 1.2 or newer, and in TLS 1.2 only the ECDHE + AEAD
suites of `shared.tls.TLS12_CIPHERS` (`shared.tls.restrict`). The node authenticates with
`dicom.tls_cert`/`dicom.tls_key` (default: its HTTPS certificate), verifies its peers against
`dicom.tls_ca`, and, with
`dicom.tls_require_client_cert` (the default, as Annex B has both ends authenticate), refuses a
caller without a certificate that CA vouches for. Calling AE titles are still checked after the
handshake, exactly as on the plain port.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from shared.config import Config, ConfigError
from shared.tls import load_credentials, restrict


class DeferredHandshakeContext(ssl.SSLContext):
    """A server context whose sockets shake hands on their first read, not when wrapped.

    pynetdicom wraps each accepted socket in its one accepting thread; with Python's default the
    TLS handshake would run there, so a peer that connects and never sends a ClientHello would stop
    the listener accepting anyone. Deferred, the handshake runs in the association's own thread
    under `dicom.network_timeout_s` (set on the socket when the connection opens)."""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def credentials(config: Config) -> tuple[tuple[str, str], tuple[str, str]]:
    """The node's DICOM TLS certificate and key as (config key, file): `dicom.tls_cert`/`tls_key`,
    else the HTTPS ones."""
    section = config["dicom"]

    def pick(name: str) -> tuple[str, str]:
        return (f"dicom.{name}", section[name]) if section[name] else (f"server.{name}", config["server"][name])

    return pick("tls_cert"), pick("tls_key")


def server_context(config: Config) -> ssl.SSLContext:
    """The context of the TLS listener (`dicom.tls_port`)."""
    section = config["dicom"]
    context = load_credentials(config.source or "<config>", *credentials(config),
                               restrict(DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)))
    if section["tls_ca"]:
        context.load_verify_locations(cafile=section["tls_ca"])
        context.verify_mode = ssl.CERT_REQUIRED if section["tls_require_client_cert"] else ssl.CERT_OPTIONAL
    return context


def client_context(config: Config) -> ssl.SSLContext:
    """The context of C-MOVE associations to `tls://` destinations: the destination's certificate is
    verified (against `dicom.tls_ca`, else the system's CAs) for its host name or address, and the
    node presents its own certificate."""
    section = config["dicom"]
    context = restrict(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if section["tls_ca"]:
        context.load_verify_locations(cafile=section["tls_ca"])
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return load_credentials(config.source or "<config>", *credentials(config), context)


def check_config(config: Config, tls_destinations: bool) -> None:
    """Refuse TLS settings that cannot work (checked before the node starts): a certificate and key
    are needed when the TLS listener or a `tls://` destination is configured, and a CA when client
    certificates are required."""
    where = config.source or "<config>"
    section = config["dicom"]
    port = int(section["tls_port"])
    if port and port == int(section["port"]):
        raise ConfigError(f"{where}: dicom.tls_port must differ from dicom.port (the plain listener)")
    if not (port or tls_destinations):
        return
    (_, cert), (_, key) = credentials(config)
    if not (cert and key):
        raise ConfigError(f"{where}: DICOM TLS needs dicom.tls_cert and dicom.tls_key (or server.tls_cert and "
                          "server.tls_key)")
    if port and section["tls_require_client_cert"] and not section["tls_ca"]:
        raise ConfigError(f"{where}: dicom.tls_require_client_cert needs dicom.tls_ca, the CA that vouches for "
                          "the callers' certificates")
    try:
        server_context(config) if port else client_context(config)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: DICOM TLS certificate, key or CA unusable: {exc}") from exc
