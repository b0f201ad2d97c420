"""One origin rule for token audiences, the CORS doors and the web layer's `connect-src`
(shared.origins): the same configured URL gives the same origin in all three."""

from __future__ import annotations

import pytest

from shared.config import build_config
from shared.origins import serialized_origin, server_origin, split_origin
from shared.token_client import server_of
from shared.tokens import normalize_audience
from webviewer import settings
from webviewer.app import create_app

#: As operators copy them from address bars and certificates, and the origin browsers send.
WRITTEN = [
    ("https://Node-1.Example:443/", "https://node-1.example"),
    ("HTTPS://[FD00::1]:5003", "https://[fd00::1]:5003"),
    ("http://127.0.0.1:80", "http://127.0.0.1"),
    ("https://inst-a.example:5002", "https://inst-a.example:5002"),
]


@pytest.mark.parametrize("written, origin", WRITTEN)
def test_every_door_reads_a_configured_url_as_one_origin(written, origin):
    assert server_origin(written) == origin
    assert normalize_audience(written) == origin
    assert serialized_origin(written) == origin
    assert server_of(written + "/api/v1/users?q=x") == origin
    policy = create_app(build_config("web", settings.KEYS, {
        "web": {"toplevel_url": "https://toplevel.example", "connect_origins": [written]},
    })).test_client().get("/").headers["Content-Security-Policy"]
    connect = dict(d.strip().split(" ", 1) for d in policy.split(";"))["connect-src"]
    # the web layer kept the default port and the letter case as written; CSP then matched no Origin it meant
    assert connect == f"'self' https://toplevel.example {origin}"


def test_a_base_url_keeps_its_path_and_an_origin_drops_it():
    assert split_origin("https://Proxy.example/sivr/node-1/") == ("https://proxy.example", "/sivr/node-1")
    assert normalize_audience("https://Proxy.example/sivr/node-1/") == "https://proxy.example/sivr/node-1"
    assert server_origin("https://Proxy.example/sivr/node-1/") == "https://proxy.example"
    assert serialized_origin("https://proxy.example/sivr") == "https://proxy.example/sivr"  # no origin: as written


@pytest.mark.parametrize("bad", ["", "node-1.example:5003", "ftp://x.example", "javascript:alert(1)",
                                 "https://u:p@x.example", "https://x.example/?a=1", "https://x.example:99999",
                                 "https://[::1"])
def test_anything_but_an_http_server_url_is_refused_with_its_value_named(bad):
    with pytest.raises(ValueError) as caught:
        server_origin(bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("written", ["https://b\u00fccher.example", "https://\u0130.example:5003", "https://\u212a.example"])
def test_a_host_beyond_ascii_is_refused_for_its_idna_form(written):
    """Browsers send an internationalized host in its IDNA form (`xn--`), so no request names it as
    written; lower-casing it made `İ` two characters (a stored URL outgrew its column: a 500 on
    PostgreSQL) and the Kelvin sign a `k`, another host. Every door refuses it alike."""
    for door in (server_origin, normalize_audience):
        with pytest.raises(ValueError, match="xn--"):
            door(written)
    assert serialized_origin(written) == written  # a CORS origin that is none matches only itself
    assert server_origin("https://xn--bcher-kva.example") == "https://xn--bcher-kva.example"
