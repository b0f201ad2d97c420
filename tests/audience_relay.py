"""A relay in the toplevel's place that mixes up token exchanges, for the clients' audience tests.

It passes every POST on to the real toplevel but asks for institution 2's token when institution 1's
is asked for, as a toplevel (or a proxy before it) that mixes up two concurrent exchanges would. The
Python client (`shared.token_client`) and the console (`admin_gui.api_client`) must refuse the token
it answers (`shared.token_client.answered_for`).
"""

from __future__ import annotations

import contextlib
import http.server
import json
from collections.abc import Iterator

import requests

from shared.token_client import EXCHANGE_PATH
from shared.tokens import normalize_audience
from tests.loopback_http import serving


def https_session(deployment) -> requests.Session:
    """A session that trusts the deployment's CA alone (this machine's REQUESTS_CA_BUNDLE left out)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = deployment.ca_cert
    return session


@contextlib.contextmanager
def mixing_relay(deployment) -> Iterator[str]:
    """The URL of the relay to `deployment`'s toplevel, for as long as the block runs."""
    first, second = (normalize_audience(i["server_url"]) for i in deployment.layout.institutions[:2])
    upstream = https_session(deployment)
    toplevel = deployment.url("toplevel")

    class Relay(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == EXCHANGE_PATH and body.get("audience") == first:
                body["audience"] = second
            headers = {key: self.headers[key] for key in ("Authorization",) if key in self.headers}
            reply = upstream.post(f"{toplevel}{self.path}", json=body, headers=headers, timeout=30)
            self.send_response(reply.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        def log_message(self, *args) -> None:
            pass

    with serving(Relay) as url:
        yield url
