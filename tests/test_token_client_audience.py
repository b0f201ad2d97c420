"""Python clients send a server only a token the toplevel says is for that server.

The toplevel's exchange answers the token with the audience it was minted for (docs/API.md). A
relay in the toplevel's place passes the exchange on to the real toplevel with the audience of
institution 2 when institution 1's is asked for, as a toplevel (or a proxy before it) that mixes
up two concurrent exchanges would. Before, `shared.token_client` cached that token for institution
1 and sent it there, and it was accepted at institution 2; now the exchange is refused.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
import requests

from shared.token_client import AudienceTokens, exchange_with
from shared.tokens import normalize_audience


def _https(deployment) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = deployment.ca_cert
    return session


@pytest.fixture
def mixing_toplevel(deployment) -> Iterator[str]:
    """The URL of a relay to the real toplevel that asks it for institution 2's token when asked for institution 1's."""
    first, second = (normalize_audience(i["server_url"]) for i in deployment.layout.institutions[:2])
    upstream = _https(deployment)
    toplevel = deployment.url("toplevel")

    class Relay(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body.get("audience") == first:
                body["audience"] = second
            reply = upstream.post(f"{toplevel}{self.path}", json=body, timeout=30,
                                  headers={"Authorization": self.headers["Authorization"]})
            self.send_response(reply.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_token_answered_for_another_server_is_refused(deployment, mixing_toplevel):
    client = deployment.client("physician")
    first, second = (i["server_url"] for i in deployment.layout.institutions[:2])
    tokens = AudienceTokens(exchange_with(_https(deployment), mixing_toplevel, lambda: client.session_token))
    try:
        token = tokens.token_for(first)
    except ValueError as exc:
        assert "with a token for" in str(exc) and normalize_audience(second) in str(exc), exc
        return
    replay = _https(deployment).get(f"{second}/api/v1/records", headers={"Authorization": f"Bearer {token}"},
                                    params={"patient_id": "00000000-0000-4000-8000-000000000000"}, timeout=30)
    raise AssertionError(f"a token for {second} was taken for {first}; replayed there: {replay.status_code}")


def test_a_token_answered_for_the_server_asked_is_kept(deployment, mixing_toplevel):
    client = deployment.client("physician")
    second = deployment.layout.institutions[1]["server_url"]
    tokens = AudienceTokens(exchange_with(_https(deployment), mixing_toplevel, lambda: client.session_token))
    assert tokens.token_for(second)
