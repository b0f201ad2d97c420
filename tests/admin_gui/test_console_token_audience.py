"""The console sends a server only a token the toplevel says is for that server.

The toplevel's exchange answers the token with the audience it was minted for (docs/API.md). A
relay in the toplevel's place passes every call on to the real toplevel, but asks for institution
2's token when the console asks for institution 1's, as a toplevel (or a proxy before it) that
mixes up two concurrent exchanges would. Before, the console cached that token for institution 1
and sent it there, and it was accepted at institution 2; now the exchange is refused
(`shared.token_client.answered_for`, the rule the Python client and the viewer hold too).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from admin_gui.api_client import ApiClient, ApiError
from shared.tokens import normalize_audience
from tests.audience_relay import https_session, mixing_relay


@pytest.fixture
def mixing_toplevel(gui_deployment) -> Iterator[str]:
    """The URL of a relay to the real toplevel that asks it for institution 2's token when asked for institution 1's."""
    with mixing_relay(gui_deployment) as url:
        yield url


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
        replay = https_session(gui_deployment).get(f"{second}/api/v1/nodes",
                                                   headers={"Authorization": f"Bearer {token}"}, timeout=30)
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
