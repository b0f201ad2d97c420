"""A render node that goes down and comes back, in Chromium against a private real deployment.

The viewer shows a CT (2×2, every viewport from one node); the node is stopped (its front and its
daemon: connections are refused) and the reader changes the format, so every viewport asks the node
for a new image and fails. The node is started again, and with no further input every viewport
must paint its image: the viewer probes the node again with a bounded backoff, one request at a
time however many viewports wait for it (webviewer/static/js/noderetry.js).
"""

from __future__ import annotations

import threading

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.webviewer.browser import DESKTOP, launch_chromium, server_cert_of
from tests.webviewer.helpers import login, opened_record

pytestmark = pytest.mark.browser

IMAGE_PATHS = ("/frames/", "/mpr/", "/volume")


class NodeRequests:
    """The page's image requests to one node: how many are under way now, and the most at once."""

    def __init__(self, page, node_url: str, record_id: str):
        self.prefix = f"{node_url.rstrip('/')}/api/v1/records/{record_id}"
        self.lock = threading.Lock()
        self.in_flight = self.most = self.started = 0
        page.on("request", self._start)
        page.on("requestfailed", self._end)
        page.on("requestfinished", self._end)

    def _ours(self, request) -> bool:
        url = request.url
        return url.startswith(self.prefix) and any(part in url for part in IMAGE_PATHS)

    def _start(self, request) -> None:
        if self._ours(request):
            with self.lock:
                self.in_flight += 1
                self.started += 1
                self.most = max(self.most, self.in_flight)

    def _end(self, request) -> None:
        if self._ours(request):
            with self.lock:
                self.in_flight -= 1

    def reset(self) -> None:
        with self.lock:
            self.most, self.started = self.in_flight, 0


def viewports(page) -> list[dict]:
    return page.evaluate("() => [...document.querySelectorAll('#viewports .viewport')].map(v => ({"
                         "...v.dataset, message: v.querySelector('.view-message').textContent}))")


def wait_every_viewport(page, predicate_js: str, what: str, timeout_ms: int) -> None:
    try:
        page.wait_for_function(
            "() => { const all = [...document.querySelectorAll('#viewports .viewport')];"
            f" return all.length > 0 && all.every(v => {predicate_js}); }}", polling=100, timeout=timeout_ms)
    except PlaywrightTimeout:
        raise AssertionError(f"not every viewport {what} within {timeout_ms / 1000:.0f} s: {viewports(page)}") from None


def test_images_come_back_without_input_when_the_node_does(playwright_instance, make_deployment, ct_series, tmp_path):
    deployment = make_deployment()
    record = opened_record(deployment, ct_series, tmp_path / "series", first=40, description="CT node restart")
    node_name = record["institution"]["nodes"][0]["name"]
    instance = next(i for i in deployment.instances if i.name == node_name)
    browser = launch_chromium(playwright_instance, server_cert_of(deployment))
    try:
        page = browser.new_page(viewport=DESKTOP, base_url=deployment.url("web"))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        requests = NodeRequests(page, record["node"]["url"], record["meta"]["id"])
        login(page, deployment)
        page.goto(record["href"])
        wait_every_viewport(page, "Number(v.dataset.shownCount || 0) > 0", "painted an image", 90_000)

        deployment.stop_instance(node_name)
        page.locator("#format").select_option("png")   # the reader's last input: every viewport asks anew
        wait_every_viewport(page, "v.querySelector('.view-message').textContent.includes('could not be reached')",
                            "said its node could not be reached", 30_000)
        requests.reset()
        page.wait_for_timeout(4000)   # the node stays down a while: the viewer probes it meanwhile
        with requests.lock:
            probes_while_down, most_while_down = requests.started, requests.most
        deployment.start_instance(instance)
        deployment.wait_healthy(instance)

        wait_every_viewport(page, "(v.dataset.shownKey || '').includes('format=png')",
                            "painted its image again with no input after the node came back", 90_000)
        assert probes_while_down >= 1, "the node was probed again while it was down"
        assert most_while_down <= 1, f"one probe at a time for the node, not {most_while_down} requests at once"
        assert not [v for v in viewports(page) if v["message"]], "no viewport still shows the node's error"
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        browser.close()
