"""The console sends a server only a token the toplevel says is for that server.

The toplevel's exchange answers the token with the audience it was minted for (docs/API.md). A
relay in the toplevel's place passes every call on to the real toplevel, but asks for institution
2's token when the console asks for institution 1's, as a toplevel (or a proxy before it) that
mixes up two concurrent exchanges would. Before, the console cached that token for institution 1
and sent it there, and it was accepted at institution 2; now the exchange is refused
(`shared.token_client.answered_for`, the rule the Python client and the viewer hold too).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
import requests

from admin_gui.api_client import ApiClient, ApiError
from shared.token_client import EXCHANGE_PATH
from shared.tokens import normalize_audience


def _https(deployment) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = deployment.ca_cert
    return session


@pytest.fixture
def mixing_toplevel(gui_deployment) -> Iterator[str]:
    """The URL of a relay to the real toplevel that asks it for institution 2's token when asked for institution 1's."""
    first, second = (normalize_audience(i["server_url"]) for i in gui_deployment.layout.institutions[:2])
    upstream = _https(gui_deployment)
    toplevel = gui_deployment.url("toplevel")

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

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _console(gui_deployment, toplevel_url: str) -> ApiClient:
    console = ApiClient(toplevel_url, gui_deployment.ca_cert)
    console.login(**gui_deployment.users["admin"])
    return console


def test_a_token_answered_for_another_institution_is_neither_kept_nor_sent(gui_deployment, mixing_toplevel):
    console = _console(gui_deployment, mixing_toplevel)
    first, second = (i["server_url"] for i in gui_deployment.layout.institutions[:2])
    tokens = console.credentials.server_tokens
    assert tokens is not None
    try:
        token = tokens.token_for(first)
    except ApiError as exc:
        assert exc.code == "bad_response" and "with a token for" in exc.message, exc.message
        assert normalize_audience(second) in exc.message, exc.message
    else:
        replay = _https(gui_deployment).get(f"{second}/api/v1/nodes", headers={"Authorization": f"Bearer {token}"},
                                            timeout=30)
        raise AssertionError(f"the console took a token for {second} as {first}'s; replayed there: "
                             f"{replay.status_code}")
    # a screen's call to institution 1 gets the console's words, not the server's refusal of a stranger's token
    with pytest.raises(ApiError) as refused:
        console.for_server(first).get("/api/v1/nodes")
    assert refused.value.code == "bad_response", (refused.value.code, refused.value.message)


def test_a_token_answered_for_the_institution_asked_is_used(gui_deployment, mixing_toplevel):
    console = _console(gui_deployment, mixing_toplevel)
    second = gui_deployment.layout.institutions[1]["server_url"]
    assert isinstance(console.for_server(second).get("/api/v1/nodes"), (dict, list))
