"""What the hostile-answer browser tests share: a real answer changed (`set_in`), served in the
server's place (`serve`), and the check that the viewer still takes a click (`still_usable`)."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.webviewer.helpers import login

INFINITE = "__infinite__"   # stands for 1e400 in an answer: JSON that reads as Infinity


def serve(route, deployment, body: object) -> None:
    """Answer `route` as the node would, cross-origin; INFINITE strings go out as 1e400."""
    text = json.dumps(body).replace(json.dumps(INFINITE), "1e400")
    route.fulfill(status=200, content_type="application/json", body=text,
                  headers={"Access-Control-Allow-Origin": deployment.url("web")})


def still_usable(page) -> None:
    """The page takes a click at once: the Patients link leads to the patient search."""
    page.get_by_role("link", name="Patients").first.click(timeout=10_000)
    page.get_by_role("heading", name="Patients").wait_for(timeout=10_000)


def set_in(path: str, value) -> Callable[[dict], object]:
    """A change of a real answer (RecordMeta, a finding…): the field at `path` (dots, list indexes) set to `value`."""
    def change(meta: dict) -> dict:
        *parents, last = path.split(".")
        here = meta
        for key in parents:
            here = here[int(key)] if isinstance(here, list) else here[key]
        here[int(last) if isinstance(here, list) else last] = value
        return meta
    return change


def attach_refused(page, deployment, waiting: dict, url: str, body: object) -> tuple[str, list[str]]:
    """Answer `url` (read by the work list's Attach before it registers the waiting series) with
    `body`, attach the series to its patient and wait for the refusal: its text, and the
    registrations the institution was sent meanwhile."""
    registrations: list[str] = []

    def institution_records(route):
        if route.request.method == "POST":
            registrations.append(route.request.url)
        route.continue_()

    page.route(url, lambda route: serve(route, deployment, body))
    page.route(f"{waiting['server']}/api/v1/records", institution_records)
    login(page, deployment)
    page.goto("/#/worklist")
    item = page.locator(f'.worklist-item[data-record="{waiting["record_id"]}"]')
    patient = waiting["patient"]
    item.get_by_role("button", name=f"Attach to {patient['last_name']}, {patient['first_name']}").click()
    error = item.locator(".form-error")
    error.get_by_text("tell IT").wait_for(timeout=20_000)
    return error.inner_text(), registrations
