"""CORS on the DICOMweb root (daemons/render/dicomweb/cors.py) with `dicomweb.cors_origins` set:
what a browser viewer served from another origin (OHIF) gets, and what any other origin does not."""

from __future__ import annotations

import pytest

from tests.origin_cases import CONFIGURED, SENT
from tests.render.conftest import build_node, close_node

VIEWER = "https://viewer.example:3000"
STRANGER = "https://evil.example"


@pytest.fixture(scope="module")
def cors_node(tmp_path_factory, token_keys):
    harness = build_node(tmp_path_factory.mktemp("cors-node"), token_keys,
                         dicomweb__cors_origins=[VIEWER + "/", *CONFIGURED])
    yield harness
    close_node(harness)


def preflight(harness, origin: str):
    return harness.client.options("/dicomweb/studies", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept"})


def test_preflight_from_an_allowed_origin_needs_no_token(cors_node):
    reply = preflight(cors_node, VIEWER)
    assert reply.status_code == 204
    assert reply.headers["Access-Control-Allow-Origin"] == VIEWER  # configured with a trailing slash
    assert "GET" in reply.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in reply.headers["Access-Control-Allow-Headers"]
    assert int(reply.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in reply.headers  # the token is a header, never a cookie
    assert "Origin" in reply.headers.getlist("Vary")


def test_a_refused_origin_gets_no_cors_headers(cors_node):
    for reply in (preflight(cors_node, STRANGER),
                  cors_node.client.get("/dicomweb/studies", headers={**cors_node.headers("sysadmin"),
                                                                     "Origin": STRANGER})):
        assert not [h for h, _ in reply.headers if h.lower().startswith("access-control-")], reply.headers


@pytest.mark.parametrize("origin, allowed", SENT)
def test_configured_origins_match_as_every_layers_cors_origins(cors_node, origin, allowed):
    """An upper-case host or the default port in `dicomweb.cors_origins` matched no browser's Origin
    here (a trailing `/` did; in `cors.origins` it did not): both doors answer these cases alike
    (tests/shared/test_webapp.py)."""
    for reply in (preflight(cors_node, origin),
                  cors_node.client.get("/dicomweb/studies?limit=0", headers={**cors_node.headers("sysadmin"),
                                                                             "Origin": origin})):
        assert reply.status_code == 204
        assert (reply.headers.get("Access-Control-Allow-Origin") == origin) is allowed
        assert ("Access-Control-Expose-Headers" in reply.headers or "Access-Control-Allow-Methods" in reply.headers
                ) is allowed


def test_every_answer_varies_on_origin(cors_node):
    """Only answers to an allowed origin named Origin in Vary: the one made without an Origin (or
    for another) could be handed from a cache to the viewer's call, without its CORS headers."""
    for origin in (None, STRANGER, VIEWER):
        headers = {**cors_node.headers("sysadmin"), **({"Origin": origin} if origin else {})}
        reply = cors_node.client.get("/dicomweb/studies?limit=0", headers=headers)
        assert "Origin" in reply.headers.getlist("Vary") or "Origin" in reply.headers.get("Vary", ""), origin


def test_a_real_get_carries_allow_origin_and_exposes_warning(cors_node):
    reply = cors_node.client.get("/dicomweb/studies?limit=0",
                                 headers={**cors_node.headers("sysadmin"), "Origin": VIEWER})
    assert reply.status_code == 204
    assert reply.headers["Access-Control-Allow-Origin"] == VIEWER
    exposed = {name.strip() for name in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert "Warning" in exposed  # paging warnings reach the page
    # what a rendered image says of itself, as the node's own API exposes it (image_headers.EXPOSED)
    assert {"X-Render-Ms", "X-Orientation", "X-Window"} <= exposed
    # errors too: a browser client must be able to read why it was refused
    refused = cors_node.client.get("/dicomweb/studies", headers={"Origin": VIEWER})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == VIEWER
    assert refused.get_json()["error"]["code"]


def test_no_origin_configured_means_same_origin_only(tmp_path_factory, token_keys):
    harness = build_node(tmp_path_factory.mktemp("plain-node"), token_keys)
    try:
        reply = harness.client.get("/dicomweb/studies", headers={**harness.headers("sysadmin"), "Origin": VIEWER})
        assert reply.status_code == 204 and "Access-Control-Allow-Origin" not in reply.headers
    finally:
        close_node(harness)
