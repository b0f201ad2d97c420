"""The viewer sends each server a token minted for that server alone (issue 13, item 2).

A patient page asks the toplevel and every institution server; each request's bearer token is
decoded here and must name the server it was sent to, so an institution (or a trap posing as one)
never receives a token the toplevel or another server would accept.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import pytest

from shared.tokens import normalize_audience
from tests.webviewer.helpers import institution, login, new_patient, register_placeholder_records

pytestmark = pytest.mark.browser


def _claims(authorization: str) -> dict:
    payload = authorization.split(" ", 1)[1].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _server(url: str) -> str:
    parts = urlsplit(url)
    return normalize_audience(f"{parts.scheme}://{parts.netloc}")


def _authorized_requests(page) -> list:
    seen: list = []
    page.on("request", lambda r: seen.append(r) if "authorization" in r.headers else None)
    return seen


def test_each_server_gets_a_token_for_itself_only(page, deployment):
    patient = new_patient(deployment)
    register_placeholder_records(deployment, patient, ["CT thorax"])
    sent = _authorized_requests(page)
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    own = institution(deployment)
    page.locator(f"article[data-institution='{own['id']}'] article[data-record]").first.wait_for()
    page.locator(f"article[data-institution='{institution(deployment, 2)['id']}']").wait_for()

    toplevel = normalize_audience(deployment.url("toplevel"))
    institutions = {normalize_audience(i["server_url"]) for i in deployment.layout.institutions}
    by_server: dict[str, set[str]] = {}
    for request in sent:
        server = _server(request.url)
        claims = _claims(request.headers["authorization"])
        assert claims["aud"] == server, f"{request.url} was sent a token for {claims['aud']}"
        by_server.setdefault(server, set()).add(request.headers["authorization"])
        if server != toplevel:
            assert claims["exp"] - claims["iat"] <= 60
    assert {toplevel} | institutions <= set(by_server), "the page asked the toplevel and both institutions"
    exchanges = [r for r in sent if r.url.endswith("/api/v1/auth/token")]
    audiences = [json.loads(r.post_data)["audience"] for r in exchanges]
    assert len(audiences) == len(set(audiences)), f"one exchange per server while its token is fresh: {audiences}"


def test_a_refused_server_token_is_exchanged_again_and_retried_once(page, deployment):
    patient = new_patient(deployment)
    register_placeholder_records(deployment, patient, ["CT abdomen"])
    own = institution(deployment)
    refused: list[str] = []

    def refuse_first(route):
        if not refused and route.request.method == "GET":
            refused.append(route.request.headers["authorization"])
            route.fulfill(status=401, content_type="application/json", headers={
                "Access-Control-Allow-Origin": deployment.url("web")},
                body=json.dumps({"error": {"code": "token_expired", "message": "the access token has expired"}}))
        else:
            route.continue_()

    page.route(f"{own['server_url']}/api/v1/records?*", refuse_first)
    sent = _authorized_requests(page)
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    page.locator(f"article[data-institution='{own['id']}'] article[data-record]").first.wait_for()
    assert len(refused) == 1
    audience = normalize_audience(own["server_url"])
    exchanges = [r for r in sent if r.url.endswith("/api/v1/auth/token")
                 and json.loads(r.post_data)["audience"] == audience]
    assert len(exchanges) == 2, "the refused token was replaced by a fresh exchange"
    assert page.locator("#account").is_visible(), "a server's refusal alone does not end the session"


def test_a_server_that_keeps_refusing_its_token_is_reported_without_ending_the_session(page, deployment):
    patient = new_patient(deployment)
    own = institution(deployment)

    def always_refuse(route):
        route.fulfill(status=401, content_type="application/json",
                      headers={"Access-Control-Allow-Origin": deployment.url("web")},
                      body=json.dumps({"error": {"code": "invalid_token", "message": "Invalid audience"}}))

    page.route(f"{own['server_url']}/api/v1/**", lambda route: always_refuse(route)
               if route.request.method == "GET" else route.continue_())
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    page.get_by_text("refused the access token issued for it").first.wait_for()
    assert page.locator("#account").is_visible(), "the toplevel still vouches for the session"
