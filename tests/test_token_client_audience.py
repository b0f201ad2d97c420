"""Python clients send a server only a token the toplevel says is for that server.

The toplevel's exchange answers the token with the audience it was minted for (docs/API.md). A
relay in the toplevel's place passes the exchange on to the real toplevel with the audience of
institution 2 when institution 1's is asked for, as a toplevel (or a proxy before it) that mixes
up two concurrent exchanges would. Before, `shared.token_client` cached that token for institution
1 and sent it there, and it was accepted at institution 2; now the exchange is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shared.token_client import AudienceTokens, exchange_with
from shared.tokens import normalize_audience
from tests.audience_relay import https_session, mixing_relay


@pytest.fixture
def mixing_toplevel(deployment) -> Iterator[str]:
    """The URL of a relay to the real toplevel that asks it for institution 2's token when asked for institution 1's."""
    with mixing_relay(deployment) as url:
        yield url


def test_a_token_answered_for_another_server_is_refused(deployment, mixing_toplevel):
    client = deployment.client("physician")
    first, second = (i["server_url"] for i in deployment.layout.institutions[:2])
    tokens = AudienceTokens(exchange_with(https_session(deployment), mixing_toplevel, lambda: client.session_token))
    try:
        token = tokens.token_for(first)
    except ValueError as exc:
        assert "with a token for" in str(exc) and normalize_audience(second) in str(exc), exc
        return
    replay = https_session(deployment).get(f"{second}/api/v1/records", headers={"Authorization": f"Bearer {token}"},
                                           params={"patient_id": "00000000-0000-4000-8000-000000000000"}, timeout=30)
    raise AssertionError(f"a token for {second} was taken for {first}; replayed there: {replay.status_code}")


def test_a_token_answered_for_the_server_asked_is_kept(deployment, mixing_toplevel):
    client = deployment.client("physician")
    second = deployment.layout.institutions[1]["server_url"]
    tokens = AudienceTokens(exchange_with(https_session(deployment), mixing_toplevel, lambda: client.session_token))
    assert tokens.token_for(second)


def test_the_clients_session_token_is_renewed_before_it_expires(deployment):
    """Tests, benchmarks and the demo's seeding log in once: a fuzzing run of more than
    `tokens.access_ttl_s` (300 s) lost its session (401 on the token exchange) and stopped. The
    client now renews the session token, as the viewer does, once most of its life has passed."""
    client = deployment.client("physician")
    first = client.session_token
    node = deployment.layout.institutions[0]["nodes"][0]["url"]
    time.sleep(1.1)  # a token issued in another second than the login's (the same claims sign the same)
    client._renew_at = 0.0  # its life mostly passed
    client.tokens.clear()  # and the node's token with it: the next call exchanges the renewed one
    client.call("GET", f"{node}/api/v1/records", params={"patient_id_dicom": "NOBODY"})
    assert client.session_token != first
    me = client.call("GET", f"{client.toplevel_url}/api/v1/me").json()
    assert me["username"] == deployment.users["physician"]["username"]
