"""`sivr ready`: ask a local instance's `/readyz`, waiting until it is ready or the time is up.

The systemd units run it as `ExecStartPost=`, so a unit counts as started only once its layer can
serve (database at the right schema, store, keys), and units ordered after it wait for that too.
It talks to the instance named by its config, on this host: a wildcard listen address is asked on
loopback, and the certificate checked is the instance's own (`server.tls_cert`), whichever CA
issued it, so the check needs no CA file and no host name.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time

from shared.config import Config

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _connection(config: Config, timeout_s: float) -> http.client.HTTPConnection:
    server = config["server"]
    host = WILDCARDS.get(server["host"], server["host"])
    if not server["tls_cert"]:
        return http.client.HTTPConnection(host, server["port"], timeout=timeout_s)
    context = ssl.create_default_context(cafile=server["tls_cert"])
    context.check_hostname = False  # the certificate itself is the trust anchor: it is this instance's
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return http.client.HTTPSConnection(host, server["port"], timeout=timeout_s, context=context)


def check_ready(config: Config, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(ready, what the instance said or why it could not be asked)."""
    connection = _connection(config, timeout_s)
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"no answer from {connection.host}:{connection.port}: {exc}"
    finally:
        connection.close()
    try:
        answer = json.loads(body)
    except ValueError:
        return False, f"/readyz answered HTTP {response.status} without JSON"
    if response.status == 200:
        return True, "ready"
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    return False, str(error.get("message") or f"/readyz answered HTTP {response.status}")


def wait_ready(config: Config, wait_s: float, interval_s: float = 1.0) -> tuple[bool, str]:
    """Ask until the instance is ready or `wait_s` has passed; the last answer is returned."""
    deadline = time.monotonic() + wait_s
    while True:
        ready, message = check_ready(config)
        if ready or time.monotonic() >= deadline:
            return ready, message
        time.sleep(interval_s)
