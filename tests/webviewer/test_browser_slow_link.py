"""Reading at the speed of the hand on the paper's 2G link (issue 17), in Chromium throttled through CDP.

Scrolling fast used to abort each request for the one after it, so on 2G nothing was painted until
the hand stopped while the slice counter moved on: the reader scrolled blind. Now the viewer
paints the newest slice it can get as a small lossy preview, and the full-quality slice once the
hand stops; on a slow link nothing is fetched ahead while the hand moves (the slice under the
cursor has the link), and cine keeps its rate with previews instead of waiting for each full
frame. The tests assert behaviour, not timings: several different slices are painted while the
keys are still going, each labelled with its own slice, and the full-quality image of the last
slice follows.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shared.tokens import normalize_audience
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


def throttle(page, conditions: dict):
    """Chromium's network emulation on this page (CDP); the session, to lift it with `unthrottle`."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", conditions)
    return cdp


def unthrottle(cdp) -> None:
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                    "downloadThroughput": -1, "uploadThroughput": -1})


def open_at_first_slice(page, deployment, record, fmt: str = "webp") -> None:
    """Open the record's viewer on slice 0 and record every image put on screen in window.__painted."""
    login(page, deployment)
    page.goto(f"/#/patients/{record['patient']['id']}")
    page.get_by_role("link", name=re.compile("Open CT")).click()
    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=90000)
    if fmt != "webp":
        page.locator("#format").select_option(fmt)
    page.locator("#slice").fill("0")
    page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '0'", polling=50)
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


def is_preview(key: str) -> bool:
    return "format=jpeg" in key and "quality=60" in key


def test_a_fast_scroll_on_2g_paints_the_newest_slices_then_full_quality(page, deployment, record, shots):
    open_at_first_slice(page, deployment, record)
    viewport = page.locator("#viewport")
    cdp = throttle(page, PAPER_2G)
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
        unthrottle(cdp)
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


def image_requests(deployment) -> dict[tuple[str, str], float]:
    """The render node's count of slice and value-probe GETs and of preflights (OPTIONS) for them,
    from its metrics: (what, method) -> count."""
    text = requests.get(f"{deployment.url('render-1-1')}/metrics", verify=deployment.ca_cert, timeout=10).text
    routes = {"/api/v1/records/<record_id>/frames/<int(signed=True):index>": "slice",
              "/api/v1/records/<record_id>/frames/<int(signed=True):index>/value": "value"}
    counts = dict.fromkeys([(what, method) for what in routes.values() for method in ("GET", "OPTIONS")], 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (routes.get(sample.labels.get("route", ""), ""), sample.labels.get("method", ""))
            if sample.name == "sivr_http_requests_total" and key in counts:
                counts[key] += sample.value
    return counts


def test_slices_and_probed_values_are_asked_for_without_a_preflight_each(page, deployment, record):
    """Each slice (and each point under the value probe) is a new URL, and a cross-origin GET with an
    Authorization header needs a CORS preflight per URL (two round trips a slice: 200 ms on the
    paper's 2G). The viewer sends those GETs' token as `access_token` instead, so scrolling and
    probing ask for images and values and nothing else."""
    open_at_first_slice(page, deployment, record)
    sent: list[tuple[str, dict]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers)) if "/frames/" in r.url else None)
    before = image_requests(deployment)
    page.locator("#viewport").focus()
    for _ in range(16):   # past what was fetched ahead of slice 0
        page.keyboard.press("ArrowDown")
        page.wait_for_timeout(100)
    page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '16'", polling=50)
    page.keyboard.press("i")   # the value probe
    box = page.locator("#viewport").bounding_box()
    probe = page.locator("#viewport .probe-value")
    shown = ""
    for step in range(4):
        page.mouse.move(box["x"] + box["width"] * (0.3 + 0.1 * step), box["y"] + box["height"] / 2)
        page.wait_for_function("([el, before]) => !el.hidden && el.textContent.includes('HU')"
                               " && el.textContent !== before", arg=[probe.element_handle(), shown], polling=50)
        shown = probe.text_content()
    after = image_requests(deployment)
    asked = {key: after[key] - before[key] for key in after}
    assert asked[("slice", "GET")] >= 8 and asked[("value", "GET")] >= 4, asked
    assert asked[("slice", "OPTIONS")] == asked[("value", "OPTIONS")] == 0, asked
    slices = [(url, headers) for url, headers in sent if re.search(r"/frames/\d+\?", url)]
    values = [(url, headers) for url, headers in sent if "/value?" in url]
    assert len(slices) >= 8 and len(values) >= 4, sent
    for url, headers in slices + values:
        assert "access_token=" in url and "authorization" not in headers, url


def test_a_token_in_an_image_url_is_the_nodes_own_and_renewed_when_refused(page, deployment, record):
    """A token in a URL is safe to send because it is the node's own, living a minute at most
    (docs/API.md): never the session's. The node refusing one (expired) gets the image asked again
    with a fresh token, as a refused header token does."""
    refused: list[str] = []

    def refuse_first(route):
        if refused:
            route.continue_()
            return
        refused.append(route.request.url)
        route.fulfill(status=401, content_type="application/json",
                      headers={"Access-Control-Allow-Origin": deployment.url("web")},
                      body=json.dumps({"error": {"code": "token_expired", "message": "the access token has expired"}}))

    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if re.search(r"/frames/\d+\?", r.url) else None)
    node = normalize_audience(deployment.url("render-1-1"))
    exchanges: list[str] = []
    page.on("request", lambda r: exchanges.append(r.url) if r.url.endswith("/api/v1/auth/token")
            and json.loads(r.post_data or "{}").get("audience") == node else None)
    page.route(re.compile(r".*/frames/\d+\?.*"), refuse_first)
    open_at_first_slice(page, deployment, record)   # painted although its first image was refused

    def token_of(url: str) -> str:
        return parse_qs(urlsplit(url).query)["access_token"][0]

    for url in sent:
        payload = token_of(url).split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["aud"] == node and claims["exp"] - claims["iat"] <= 60, claims
    # the refused token was exchanged again (the new one may be the same bytes: Ed25519 signs the same
    # claims, minted in the same second, identically) and the slice asked again
    assert len(exchanges) >= 2, exchanges
    assert [urlsplit(url).path for url in sent].count(urlsplit(refused[0]).path) >= 2


def test_on_2g_nothing_is_fetched_ahead_while_the_hand_moves(page, deployment, record):
    """The link is the hand's: once the scroll is fast, every image asked for is a preview of the
    slice under the cursor, none a full-quality slice fetched ahead."""
    cdp = throttle(page, PAPER_2G)   # from the start, so the viewer measures the slow link
    try:
        open_at_first_slice(page, deployment, record)
        page.locator("#viewport").focus()
        # keys sent in the page 40 ms apart (Playwright's own presses come 100-300 ms apart on a
        # busy machine, slower than a fast scroll)
        keys = page.evaluate("""async () => {
          const keys = [];
          for (let k = 0; k < 12; k++) {
            keys.push(performance.now());
            document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
            await new Promise((r) => setTimeout(r, 40));
          }
          return keys;
        }""")
        page.wait_for_function(
            "() => { const d = document.querySelector('#viewport').dataset;"
            " return d.shownIndex === '12' && d.shownKey.includes('format=webp'); }", polling=50, timeout=60000)
        # the image requests started while the scroll was fast: from the second step to the last
        # (the full image once the hand stops is asked for 200 ms after it)
        during = page.evaluate("""([from, to]) => performance.getEntriesByType('resource')
          .filter((e) => e.name.includes('/frames/') && e.startTime > from && e.startTime <= to)
          .map((e) => [e.startTime, e.name])""", [keys[1], keys[-1] + 40])
    finally:
        unthrottle(cdp)
    assert any(is_preview(url) for _, url in during), during
    for started, url in during:
        if is_preview(url):
            continue
        # a full-quality image of the slice under the cursor is the hand pausing (a busy page can
        # hold a step back past the 200 ms settle time); one ahead of it is fetching ahead
        under_cursor = sum(1 for k in keys if k <= started)
        asked = int(re.search(r"/frames/(\d+)\?", url).group(1))
        assert asked <= under_cursor, f"slice {asked} fetched ahead while the hand was at {under_cursor}: {during}"


def test_cine_on_2g_keeps_its_rate_with_previews_and_ends_at_full_quality(page, deployment, record, shots):
    """Cine at 10 fps on 2G: frames advance at the chosen rate as small previews (full PNG frames
    would hold it to a few a second); stopped, the frame it stopped on comes at full quality."""
    cdp = throttle(page, PAPER_2G)
    try:
        open_at_first_slice(page, deployment, record, fmt="png")
        page.locator("#fps").select_option("10")
        page.locator("#play").click()
        page.wait_for_timeout(3000)
        page.locator("#play").click()
        stopped = int(page.locator("#slice").input_value())
        page.wait_for_function(
            "n => { const d = document.querySelector('#viewport').dataset;"
            " return d.shownIndex === String(n) && d.shownKey.includes('format=png'); }",
            arg=stopped, polling=50, timeout=60000)
    finally:
        unthrottle(cdp)
    shot(page, shots, "71-viewer-cine-stopped-on-2g", full_page=False)
    shown = painted(page)
    during = shown[:-1]
    assert any(is_preview(p["key"]) for p in during), shown
    assert stopped >= 15, f"cine moved {stopped} frames in 3 s at 10 fps"   # full PNG frames: a handful
    assert shown[-1]["index"] == stopped and "format=png" in shown[-1]["key"]


# The link meter and the rule for a slow link (scheduler.js), as the browser runs them.
LINK_METER_JS = """async () => {
  const { LinkMeter, RequestScheduler, HAND_RATE } = await import('/static/js/scheduler.js');
  // three 50 kB answers asked together on a 100 kB/s link, first bytes after 0.1 s: the bodies
  // share the link and end 0.5 s apart
  const shared = new LinkMeter();
  for (const end of [600, 1100, 1600]) shared.add(50000, 0, 100, end, true);
  // a link measured on loopback (40 kB in 5 ms), then slowed to the paper's 2G (first byte after
  // 0.2 s: preflight and request; 40 kB in 0.43 s)
  const slowed = new LinkMeter();
  for (let k = 0; k < 8; k++) slowed.add(40000, 10 * k, 10 * k + 3, 10 * k + 5, true);
  for (let k = 0, t = 1000; k < 4; k++, t += 630) slowed.add(40000, t, t + 200, t + 630, true);
  // answers one after another: a full-quality image of `full` bytes, `latency` s to its first byte
  const slow = (full, latency, bytesPerSecond) => {
    const scheduler = new RequestScheduler({}, {}, {}, null, () => 0);
    const body = 1000 * full / bytesPerSecond;
    for (let k = 0, t = 0; k < 4; k++, t += 1000 * latency + body) {
      scheduler.link.add(full, t, t + 1000 * latency, t + 1000 * latency + body, true);
    }
    return scheduler.slowLink();
  };
  return { shared: shared.bytesPerSecond, sharedLatency: shared.latency, slowed: slowed.bytesPerSecond,
           slowedLatency: slowed.latency, slowedSide: slowed.previewSide(), handRate: HAND_RATE,
           // the paper's 4G (500 kB/s, 60 ms with the preflight and rendering): 36.6 kB PNG, 13.7 kB JPEG
           pngOn4G: slow(36600, 0.06, 500000), jpegOn4G: slow(13700, 0.06, 500000),
           // loopback on a busy machine: 0.1 s of rendering before each first byte, hidden by the
           // slices fetched ahead in parallel
           pngOnBusyLoopback: slow(36600, 0.1, 50e6) };
}"""


def test_link_meter_measures_the_link_and_sees_it_slow_down(page, deployment):
    """Bodies that shared the link are charged the time the link spent on them (so prefetch and
    previews in flight together measure the link, not a share of it), latency (to the first byte)
    apart from throughput, and a link that slows is measured anew within a few answers (its
    previews then sized for it). A link is slow when its throughput carries fewer full-quality
    slices a second than a fast hand scrolls: the paper's 4G for PNG, not for JPEG, nor loopback
    whose time goes to rendering (the slices fetched ahead in parallel hide that)."""
    login(page, deployment)
    got = page.evaluate(LINK_METER_JS)
    assert got["shared"] == pytest.approx(100_000) and got["sharedLatency"] == pytest.approx(0.1)
    assert got["slowed"] == pytest.approx(40_000 / 0.43, rel=0.01)
    assert got["slowedLatency"] == pytest.approx(0.2)
    assert got["slowedSide"] == 192   # a twentieth of a second of 2G: the smallest preview
    assert got["pngOn4G"] and not got["jpegOn4G"] and not got["pngOnBusyLoopback"]


def test_on_2g_three_previews_are_in_flight_while_the_hand_moves(page, deployment, record):
    """Each preview pays two round trips (CORS preflight, request) before its bytes: on 2G three
    are kept in flight, so the link is busy meanwhile, and never more."""
    cdp = throttle(page, PAPER_2G)
    try:
        open_at_first_slice(page, deployment, record)
        page.locator("#viewport").focus()
        page.evaluate("""async () => {
          for (let k = 0; k < 30; k++) {
            document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
            await new Promise((r) => setTimeout(r, 40));
          }
        }""")
        page.wait_for_function(
            "() => { const d = document.querySelector('#viewport').dataset;"
            " return d.shownIndex === '30' && d.shownKey.includes('format=webp'); }", polling=50, timeout=60000)
        previews = page.evaluate("""() => performance.getEntriesByType('resource')
          .filter((e) => e.name.includes('/frames/') && e.name.includes('quality=60'))
          .map((e) => [e.startTime, e.responseEnd])""")
    finally:
        unthrottle(cdp)
    # the most previews in flight at one moment (each interval from its start to its last byte)
    events = sorted([(start, 1) for start, _ in previews] + [(end, -1) for _, end in previews])
    in_flight, most = 0, 0
    for _, change in events:
        in_flight += change
        most = max(most, in_flight)
    assert most == 3, previews
