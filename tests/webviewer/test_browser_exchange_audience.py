"""The viewer sends a server only a token the toplevel says is for that server.

The toplevel's exchange (`POST api/v1/auth/token`) answers the token with the audience it was
minted for (docs/API.md). Here the answer for institution 1 is the real toplevel's answer for
institution 2, as a toplevel (or a proxy before it) that mixes up two concurrent exchanges would
give. Before, the viewer sent that token to institution 1, which could replay it at institution 2
for the token's life; now the viewer compares the audience it was answered with the one it asked
for, sends nothing, and says which answer it could not use.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import pytest
import requests

from shared.tokens import normalize_audience
from tests.webviewer.helpers import institution, login, new_patient, register_placeholder_records
from tests.webviewer.hostile_answers import serve

pytestmark = pytest.mark.browser


def _audience_of(authorization: str) -> str:
    payload = authorization.split(" ", 1)[1].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"]


def test_a_token_answered_for_another_server_is_never_sent(page, deployment):
    patient = new_patient(deployment)
    register_placeholder_records(deployment, patient, ["CT thorax"])
    own, other = institution(deployment, 1), institution(deployment, 2)
    asked, swapped = normalize_audience(own["server_url"]), normalize_audience(other["server_url"])
    own_origin = "{0.scheme}://{0.netloc}".format(urlsplit(own["server_url"]))

    def mixed_up(route):
        """For institution 1, the real toplevel's answer to the same session asking for institution 2
        (asked from here: Playwright's own requests do not trust the deployment's CA)."""
        if json.loads(route.request.post_data or "{}").get("audience") != asked:
            route.continue_()
            return
        reply = requests.post(route.request.url, json={"audience": swapped}, verify=deployment.ca_cert, timeout=30,
                              headers={"Authorization": route.request.headers["authorization"]})
        serve(route, deployment, reply.json())

    page.route(f"{deployment.url('toplevel')}/api/v1/auth/token", mixed_up)
    sent_to_own: list[str] = []
    page.on("request", lambda r: sent_to_own.append(r.headers["authorization"])
            if r.url.startswith(own_origin) and "authorization" in r.headers else None)
    login(page, deployment)
    page.goto(f"/#/patients/{patient['id']}")
    article = page.locator(f"article[data-institution='{own['id']}']")
    article.get_by_text("audience").first.wait_for()

    leaked = [a for a in sent_to_own if _audience_of(a) != asked]
    if leaked:  # what the receiving institution could do with it: the other institution takes it
        replay = requests.get(f"{other['server_url']}/api/v1/records", params={"patient_id": patient["id"]},
                              headers={"Authorization": leaked[0]}, verify=deployment.ca_cert, timeout=30)
        raise AssertionError(f"institution 1 was sent {len(leaked)} token(s) for {swapped}; "
                             f"replayed there: {replay.status_code}")
    assert page.locator("#account").is_visible(), "the toplevel's wrong answer does not end the session"
