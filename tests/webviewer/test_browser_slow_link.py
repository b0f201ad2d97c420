"""Reading at the speed of the hand on the paper's 2G link (issue 17), in Chromium throttled through CDP.

Scrolling fast used to abort each request for the one after it, so on 2G nothing was painted until
the hand stopped while the slice counter moved on: the reader scrolled blind. Now the viewer
paints the newest slice it can get as a small lossy preview, at most one in flight, and the
full-quality slice once the hand stops. The test asserts behaviour, not timings: several
different slices are painted while the keys are still going, each labelled with its own slice,
and the full-quality image of the last slice follows.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.webviewer.helpers import derived_series, login, new_patient, shot, uploaded_record

pytestmark = pytest.mark.browser

SLICES = 40
# The paper's 2G profile: 750 kbit/s down, 250 kbit/s up, 100 ms latency.
PAPER_2G = {"offline": False, "latency": 100, "downloadThroughput": 750_000 / 8, "uploadThroughput": 250_000 / 8}


@pytest.fixture(scope="module")
def record(deployment, ct_series, tmp_path_factory):
    patient = new_patient(deployment)
    files = derived_series(ct_series, tmp_path_factory.mktemp("slow-link"), first=10, count=SLICES)
    return {"patient": patient, **uploaded_record(deployment, patient, files, "CT chest (slow link test)")}


def painted(page) -> list[dict]:
    return page.evaluate("() => window.__painted")


def test_a_fast_scroll_on_2g_paints_the_newest_slices_then_full_quality(page, deployment, record, shots):
    login(page, deployment)
    page.goto(f"/#/patients/{record['patient']['id']}")
    page.get_by_role("link", name=re.compile("Open CT")).click()
    viewport = page.locator("#viewport")
    viewport.wait_for()
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=90000)
    page.locator("#slice").fill("0")
    page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '0'", polling=50)
    # every image put on screen, with the slice it is labelled with (a MutationObserver sees each)
    page.evaluate("""() => {
      window.__painted = [];
      const v = document.querySelector('#viewport');
      new MutationObserver(() => {
        const d = v.dataset, last = window.__painted[window.__painted.length - 1];
        if (!last || last.count !== d.shownCount)
          window.__painted.push({count: d.shownCount, index: Number(d.shownIndex), key: d.shownKey,
                                 label: document.querySelector('#slice-out').textContent});
      }).observe(v, {attributes: true, attributeFilter: ['data-shown-count']});
    }""")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", PAPER_2G)
    try:
        viewport.focus()
        for _ in range(SLICES - 1):  # 20 slices a second, as a hand on the wheel or the keys
            page.keyboard.press("ArrowDown")
            page.wait_for_timeout(50)
        during = [p for p in painted(page) if p["index"] > 0]
        page.wait_for_function(
            "n => { const d = document.querySelector('#viewport').dataset;"
            " return d.shownIndex === String(n) && d.shownKey.includes('format=webp'); }",
            arg=SLICES - 1, polling=50, timeout=60000)
    finally:
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                        "downloadThroughput": -1, "uploadThroughput": -1})
    shot(page, shots, "70-viewer-after-fast-scroll-on-2g", full_page=False)

    # the reader saw the scroll move: several different slices were painted before the keys stopped
    assert len({p["index"] for p in during}) >= 3, during
    previews = [p for p in during if "format=jpeg" in p["key"]]
    assert previews, during
    for p in previews:
        query = {k: v[0] for k, v in parse_qs(urlsplit(p["key"]).query).items()}
        width, height = (int(n) for n in query["size"].split("x"))
        assert max(width, height) <= 512  # a small preview, not the full image
        assert f"/frames/{p['index']}?" in p["key"]  # each image is the slice it is labelled with
    assert [p["index"] for p in during] == sorted(p["index"] for p in during)  # never an older slice after a newer
    final = painted(page)[-1]
    assert final["index"] == SLICES - 1 and "format=webp" in final["key"]
