"""Tokens bound to one server, and revocation on every layer within the exchanged tokens' life
(issue 13, items 2 and 9), against the real daemons of a two-institution deployment.

The toplevel here mints exchanged tokens of 3 s and the other layers allow 1 s of clock leeway,
so the bound they give (TTL + leeway) is shown in seconds; `test_the_default_bound_is_60_s`
checks that the defaults give at most 60 s.
"""

from __future__ import annotations

import time
import tomllib
import uuid
from pathlib import Path

import pytest
import requests

from daemons.demo import RunningDeployment, new_user, start_deployment
from daemons.deployment import Layout, init_deployment
from daemons.layers import LAYERS
from daemons.toplevel.settings import KEYS as TOPLEVEL_KEYS
from shared.config import COMMON_KEYS, render_config_toml
from shared.tokens import MAX_EXCHANGED_TTL_S, normalize_audience
from tests.conftest import cheap_password_hashing

TTL_S = 3
LEEWAY_S = 1
TRAP = "https://trap.example:8443"


def _short_tokens(layout: Layout) -> None:
    """`before_start`: 3-s exchanged tokens at the toplevel, 1 s of leeway on the other layers (and the
    least hashing cost, as the shared deployments: `cheap_password_hashing`)."""
    cheap_password_hashing(layout)
    for instance in layout.instances:
        if instance.layer == "web":
            continue
        path = Path(instance.config)
        values = tomllib.loads(path.read_text())
        values["tokens"].update({"exchanged_ttl_s": TTL_S} if instance.layer == "toplevel"
                                else {"leeway_s": LEEWAY_S})
        path.write_text(render_config_toml(instance.layer, LAYERS[instance.layer].keys, values))


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> RunningDeployment:
    running = start_deployment(tmp_path_factory.mktemp("audiences"), before_start=_short_tokens,
                               institution_names=["North Hospital", "South Clinic"])
    yield running
    running.stop()


class Raw:
    """Plain HTTPS calls with an explicit token: what an attacker holding a captured token does."""

    def __init__(self, deployment: RunningDeployment):
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = deployment.ca_cert
        self.toplevel = deployment.url("toplevel")

    def get(self, url: str, token: str) -> tuple[int, str]:
        reply = self.http.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return reply.status_code, reply.json().get("error", {}).get("code", "") if reply.status_code >= 400 else ""

    def login(self, username: str, password: str) -> str:
        reply = self.http.post(f"{self.toplevel}/api/v1/auth/login", json={"username": username, "password": password},
                               timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()["access_token"]

    def exchange(self, session_token: str, audience: str) -> tuple[int, dict]:
        reply = self.http.post(f"{self.toplevel}/api/v1/auth/token", json={"audience": audience},
                               headers={"Authorization": f"Bearer {session_token}"}, timeout=30)
        return reply.status_code, reply.json()


def _servers(deployment: RunningDeployment) -> dict[str, str]:
    """A cheap authenticated GET on each server, by a short name."""
    north, south = deployment.layout.institutions
    return {
        "toplevel": f"{deployment.url('toplevel')}/api/v1/me",
        "north": f"{north['server_url']}/api/v1/info",
        "south": f"{south['server_url']}/api/v1/info",
        "north-node": f"{north['nodes'][0]['url']}/api/v1/presets",
        "south-node": f"{south['nodes'][0]['url']}/api/v1/presets",
    }


def _base(url: str) -> str:
    return url.split("/api/", 1)[0]


def test_a_token_is_accepted_only_by_the_server_it_was_minted_for(short):
    raw = Raw(short)
    servers = _servers(short)
    session = raw.login(**short.users["physician"])
    targets = {name: _base(url) for name, url in servers.items() if name != "toplevel"}
    targets["trap"] = TRAP  # what a trap institution's server_url would receive
    tokens = {"toplevel": session}
    for holder in ("toplevel", *targets):
        if holder != "toplevel":  # fresh, so that every refusal below is for the audience, not the age
            status, body = raw.exchange(session, targets[holder])
            assert status == 200, body
            tokens[holder] = body["access_token"]
        for name, url in servers.items():
            status, code = raw.get(url, tokens[holder])
            if name == holder:
                assert status == 200, (holder, name, code)
            else:
                assert (status, code) == (401, "invalid_token"), f"a token for {holder} worked at {name}"
    # nor can a captured server token be turned into any other
    for holder in ("north", "north-node", "trap"):
        captured = raw.exchange(session, targets[holder])[1]["access_token"]
        status, body = raw.exchange(captured, _base(servers["south"]))
        assert status == 401 and body["error"]["code"] == "invalid_token"


def _until_refused(raw: Raw, calls: dict[str, tuple[str, str]], limit_s: float) -> dict[str, float]:
    """Call each `(url, token)` until it is refused; seconds until each one was (or fail at `limit_s`)."""
    started = time.monotonic()
    refused: dict[str, float] = {}
    while len(refused) < len(calls):
        elapsed = time.monotonic() - started
        assert elapsed < limit_s, f"still accepted after {elapsed:.1f} s: {set(calls) - set(refused)}"
        for name, (url, token) in calls.items():
            if name not in refused:
                status, code = raw.get(url, token)
                if status == 401:
                    assert code == "token_expired", (name, code)
                    refused[name] = time.monotonic() - started
                else:
                    assert status == 200, (name, status, code)
        time.sleep(0.1)
    return refused


@pytest.mark.parametrize("revoke", ["logout", "deactivate", "delete", "demote", "move"])
def test_revoked_access_ends_on_every_layer_within_the_token_life(short, revoke):
    raw = Raw(short)
    servers = _servers(short)
    north, south = short.layout.institutions
    admin = short.client("admin")
    top = short.url("toplevel")
    username = f"revoked.{revoke}.{uuid.uuid4().hex[:6]}"
    user = new_user(admin, top, north["id"], username, "instadmin" if revoke == "demote" else "physician")
    session = raw.login(**user)
    user_id = admin.call("GET", f"{top}/api/v1/users", params={"q": username}).json()["items"][0]["id"]
    held = {}
    for name in ("north", "north-node"):
        status, body = raw.exchange(session, _base(servers[name]))
        assert status == 200, body
        held[name] = (servers[name], body["access_token"])
        for _ in range(3):  # the node's verifier cache holds it now
            assert raw.get(*held[name]) == (200, "")

    revoked_at = time.monotonic()
    answer = {
        "logout": lambda: raw.http.post(f"{top}/api/v1/auth/logout", headers={"Authorization": f"Bearer {session}"},
                                        timeout=30),
        "deactivate": lambda: admin.call("PUT", f"{top}/api/v1/users/{user_id}", json={"active": False}),
        "delete": lambda: admin.call("DELETE", f"{top}/api/v1/users/{user_id}"),
        "demote": lambda: admin.call("PUT", f"{top}/api/v1/users/{user_id}", json={"role": "physician"}),
        "move": lambda: admin.call("PUT", f"{top}/api/v1/users/{user_id}", json={"institution_id": south["id"]}),
    }[revoke]()
    assert answer.status_code in (200, 204), answer.text
    # at once: no new token for any server, and the toplevel refuses the session
    for name in ("north", "south-node"):
        status, body = raw.exchange(session, _base(servers[name]))
        assert status == 401 and body["error"]["code"] == "session_expired", (name, body)
    assert raw.get(servers["toplevel"], session) == (401, "session_expired")
    # the tokens already held die with their short life, on every layer, without any call between layers
    refused = _until_refused(raw, held, limit_s=TTL_S + LEEWAY_S + 2)
    assert time.monotonic() - revoked_at <= TTL_S + LEEWAY_S + 1.5, refused


def test_a_client_that_keeps_exchanging_loses_access_once_revoked(short):
    """The demo/test client, like the viewer, renews its per-server tokens on its own: after a
    revocation its very next renewal is refused, within one token life."""
    north = short.layout.institutions[0]
    admin = short.client("admin")
    top = short.url("toplevel")
    user = new_user(admin, top, north["id"], f"renewing.{uuid.uuid4().hex[:6]}", "physician")
    doctor = type(admin)(short, **user)
    url = f"{north['server_url']}/api/v1/info"
    assert doctor.call("GET", url).status_code == 200
    user_id = admin.call("GET", f"{top}/api/v1/users", params={"q": user["username"]}).json()["items"][0]["id"]
    admin.call("PUT", f"{top}/api/v1/users/{user_id}", json={"active": False})
    deadline = time.monotonic() + TTL_S + LEEWAY_S + 2
    while True:
        try:
            reply = doctor.session.get(url, timeout=30)
        except requests.HTTPError as exc:  # the exchange itself is refused
            assert exc.response.status_code == 401 and exc.response.json()["error"]["code"] == "session_expired"
            break
        if reply.status_code == 401:
            break
        assert reply.status_code == 200 and time.monotonic() < deadline, "access outlived the token life"
        time.sleep(0.2)


def test_the_default_bound_is_60_s():
    defaults = {key.dotted: key.default for key in (*COMMON_KEYS, *TOPLEVEL_KEYS)}
    assert defaults["tokens.exchanged_ttl_s"] + defaults["tokens.leeway_s"] <= 60
    assert defaults["tokens.exchanged_ttl_s"] <= MAX_EXCHANGED_TTL_S == 60


def test_init_gives_each_server_its_own_audience_and_a_layer_without_one_refuses_to_start(tmp_path):
    layout = init_deployment(tmp_path / "d", institution_names=["A", "B"], pick_free_ports=True)
    audiences = {}
    for instance in layout.instances:
        config = LAYERS[instance.layer].load_config(instance.config)
        if instance.layer != "web":
            assert normalize_audience(config["tokens"]["audience"]) == normalize_audience(instance.url)
            audiences[instance.name] = config["tokens"]["audience"]
    assert len(set(audiences.values())) == len(audiences) == 5
    assert {normalize_audience(i["server_url"]) for i in layout.institutions} <= set(audiences.values())

    institution = layout.by_layer("institution")[0]
    path = Path(institution.config)
    values = tomllib.loads(path.read_text())
    values["tokens"]["audience"] = ""
    path.write_text(render_config_toml("institution", LAYERS["institution"].keys, values))
    layer = LAYERS["institution"]
    config = layer.load_config(path)
    layer.upgrade_schema(config)
    with pytest.raises(ValueError, match=f"{path}: tokens.audience must be this server's public base URL"):
        layer.create_app(config)
