"""The viewer over HTTP/2: Chromium fetches the page and every image over h2.

Through the nginx fronts of the session's deployment (daemons/front.py, as `sivr demo` serves;
the layers' own HTTP/2 server, `server.http2 = true`, was retired on 2026-12-01). Debian's
Chromium logs in, opens a CT and scrolls, and Chromium's network events say which protocol
carried each request.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webviewer.browser import DESKTOP, launch_chromium, server_cert_of
from tests.webviewer.helpers import derived_series, new_patient, uploaded_record
from tests.webviewer.test_browser_viewer import open_viewer, wait_shown

DEMO_CT = Path(__file__).resolve().parents[2] / "demo_data" / "ct-chest-100"
SLICES = 12


@pytest.fixture
def h2_page(playwright_instance, deployment):
    browser = launch_chromium(playwright_instance, server_cert_of(deployment))
    context = browser.new_context(viewport=DESKTOP, base_url=deployment.url("web"))
    context.set_default_timeout(30000)
    yield context.new_page()
    context.close()
    browser.close()


def test_viewer_page_and_images_travel_over_h2(h2_page, deployment, tmp_path):
    patient = new_patient(deployment)
    # content of its own (fresh UIDs): the shared deployment may hold these slices under another patient
    files = derived_series(DEMO_CT, tmp_path, first=0, count=SLICES)
    record = {"patient": patient, **uploaded_record(deployment, patient, files, "CT chest (h2 test)")}
    # Resource Timing hides nextHopProtocol of cross-origin images (the node is another origin
    # without Timing-Allow-Origin), so the protocol comes from Chromium's network events.
    protocols: dict[str, str] = {}
    cdp = h2_page.context.new_cdp_session(h2_page)
    cdp.send("Network.enable")
    cdp.on("Network.responseReceived",
           lambda event: protocols.__setitem__(event["response"]["url"], event["response"].get("protocol")))
    open_viewer(h2_page, deployment, record)
    h2_page.locator("#viewport[data-load-state=ready]").wait_for(timeout=120000)
    h2_page.locator("#viewport").focus()
    for _ in range(5):
        h2_page.keyboard.press("ArrowDown")
    wait_shown(h2_page, "d.shownIndex === '5'")
    navigation = h2_page.evaluate("() => performance.getEntriesByType('navigation')[0].nextHopProtocol")
    frames = [protocol for url, protocol in protocols.items() if "/frames/" in url]
    assert navigation == "h2"
    assert len(frames) >= 6 and set(frames) == {"h2"}, protocols
