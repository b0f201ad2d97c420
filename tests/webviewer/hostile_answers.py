"""What the hostile-answer browser tests share: a real answer changed (`set_in`), served in the
server's place (`serve`), and the check that the viewer still takes a click (`still_usable`)."""

from __future__ import annotations

import json
from collections.abc import Callable

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
