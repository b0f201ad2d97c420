"""SIVR's viewer against OHIF v3 on the paper's links (issue 17): time to the first image and bytes.

Both clients read the same series from the same render node: SIVR's viewer through the node's
own API (server-rendered images), OHIF v3 (the built `@ohif/app` of installers/install-ohif.sh,
served on its own loopback origin) through the node's DICOMweb root (it fetches the instances'
pixels and renders them in the browser with WebGL, on SwiftShader here). Debian's Chromium,
one fresh browser context (empty cache) per run, throttled through CDP to each link profile
from before the page is opened.

- SIVR, warm: the series is loaded on the node (another physician has it open).
- SIVR, cold: a copy of the series (same pixels, new UIDs) that the node has never loaded, so
  the time includes loading it.
- OHIF: from opening its viewer URL for the study to its viewport showing an image (the canvas
  screenshot's grey-level spread above that of a blank viewport, polled every 100 ms).
- Browsing (`--browse` profiles, loopback by default): after the first image, every slice of the
  series once (SIVR: the next key once the slice is on screen; OHIF: its next-image key, then
  until its network is idle), then the bytes received in all and the memory of the viewer's
  renderer process (RSS, PSS and Chromium's private memory footprint) and JavaScript heap; and,
  as the floor under both, the renderer of an empty page (`about:blank`) in the same browser.

Bytes are what the page received over the network (CDP `Network.loadingFinished`, all
requests, the viewer's own code included), up to the first image.

Data: the demo CT (demo_data/ct-chest-100: 100 real axial slices of TCIA CMB-CRC, 512x512,
uncompressed). Report: docs/benchmarks-viewer.md, "Against OHIF on the paper's links".

    python bench/bench_links.py [--profiles loopback cs-4g 4G 2G] [--out bench/results/links.raw.json]
                                [--shots DIR] [--browse loopback ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_viewer import FIRST_SLICE_JS, SCROLL_JS, Bench, browser_memory, derive_series  # noqa: E402
from tests.dicomweb.ohif_site import (  # noqa: E402
    CHROMIUM_ARGS,
    MIN_SPREAD,
    OHIF_DIST,
    OhifSite,
    app_config_js,
    configure_for_ohif,
    painted_spread,
)
from tests.webviewer.browser import CHROMIUM, server_cert_of, spki_hash  # noqa: E402

DEMO_CT = REPO / "demo_data" / "ct-chest-100"
VIEWPORT = {"width": 1366, "height": 860}
#: (download kbit/s, upload kbit/s, latency ms): the paper's 2G and 4G, and Cornerstone3D's "4g"
PROFILES = {
    "loopback": None,
    "cs-4g": (30_000, 5_000, 10),
    "4G": (4_000, 3_000, 20),
    "2G": (750, 250, 100),
}
TIMEOUT_S = 900   # OHIF on 2G fetches tens of MB before its first image
#: OHIF's first-visit tour (Shepherd.js) dims and covers the viewport: hidden, so that only the
#: image can make the viewport's grey levels spread (its "investigational use" banner lies over the
#: viewport's bottom, which is left out of the measure)
HIDE_TOUR = """document.addEventListener('DOMContentLoaded', () => {
  const style = document.createElement('style');
  style.textContent = '.shepherd-element, .shepherd-modal-overlay-container { display: none !important; }';
  document.head.appendChild(style);
});"""
BANNER_FRACTION = 0.2


class Traffic:
    """Bytes a page received over the network, from CDP's per-request totals."""

    def __init__(self, context, page, profile: tuple[int, int, int] | None):
        self.bytes = 0
        self.cdp = context.new_cdp_session(page)
        self.cdp.send("Network.enable")
        self.cdp.on("Network.loadingFinished", self._finished)
        if profile:
            down, up, latency = profile
            self.cdp.send("Network.emulateNetworkConditions", {
                "offline": False, "latency": latency,
                "downloadThroughput": down * 1000 / 8, "uploadThroughput": up * 1000 / 8})

    def _finished(self, event: dict) -> None:
        self.bytes += int(event.get("encodedDataLength", 0))


def sivr_first_image(bench: Bench, browser, meta: dict, profile_name: str, browse: bool = False) -> dict:
    """SIVR's viewer, logged in, opening the record: ms and bytes to its first slice on screen
    (and, `browse`, the bytes and memory once every slice was on screen)."""
    context = browser.new_context(viewport=VIEWPORT, base_url=bench.deployment.url("web"))
    try:
        page = context.new_page()
        user = bench.users["physician"]
        traffic = Traffic(context, page, PROFILES[profile_name])
        page.goto("/")
        page.get_by_label("Username").fill(user["username"])
        page.get_by_label("Password").fill(user["password"])
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Patients").wait_for(timeout=TIMEOUT_S * 1000)
        before = traffic.bytes   # the login page and the patient list are not the series
        ms = page.evaluate(FIRST_SLICE_JS, bench.view_hash(meta, "webp"))
        figures = {"ms": round(ms), "bytes": traffic.bytes - before}
        if browse:
            page.locator("#viewport[data-load-state=ready]").wait_for(timeout=TIMEOUT_S * 1000)
            page.locator("#slice").fill("0")
            page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '0'")
            page.evaluate(SCROLL_JS, meta["frames"] - 1)
            figures["browsed"] = {"bytes": traffic.bytes - before, **browser_memory(browser, page)}
        return figures
    finally:
        context.close()


def blank_page_renderer(browser) -> dict:
    """The memory of a renderer showing an empty page in a fresh context of the same browser: what
    Chromium spends before any viewer runs, the floor under both viewers' renderer figures."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto("about:blank")
        time.sleep(1)
        return browser_memory(browser, page)["viewer_renderer_mb"]
    finally:
        context.close()


def ohif_first_image(site: OhifSite, session_token: str, study_uid: str, profile_name: str, browser,
                     shots: Path | None = None, browse_slices: int = 0) -> dict:
    """OHIF's viewer URL for the study: ms and bytes until its viewport shows an image (the page
    saved in `shots` then, to check what was counted as the first image); with `browse_slices`,
    the bytes and memory once it stepped through them and its network is idle."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.add_init_script(HIDE_TOUR)
        traffic = Traffic(context, page, PROFILES[profile_name])
        started = time.perf_counter()
        page.goto(f"{site.origin}/viewer?StudyInstanceUIDs={study_uid}#sivr_session={session_token}",
                  timeout=TIMEOUT_S * 1000)
        canvas = page.locator("canvas.cornerstone-canvas").first
        canvas.wait_for(timeout=TIMEOUT_S * 1000)
        while viewport_spread(canvas) < MIN_SPREAD:
            if time.perf_counter() - started > TIMEOUT_S:
                raise TimeoutError(f"OHIF showed no image within {TIMEOUT_S} s on {profile_name}")
            time.sleep(0.1)
        figures = {"ms": round((time.perf_counter() - started) * 1000), "bytes": traffic.bytes}
        if shots is not None:
            page.screenshot(path=str(shots / f"ohif-first-image-{profile_name}.png"))
        if browse_slices:
            canvas.click()
            for _ in range(browse_slices - 1):
                page.keyboard.press("ArrowDown")   # OHIF's next-image hotkey
                page.wait_for_timeout(50)
            page.wait_for_load_state("networkidle", timeout=TIMEOUT_S * 1000)
            if shots is not None:
                page.screenshot(path=str(shots / f"ohif-browsed-{profile_name}.png"))
            figures["browsed"] = {"bytes": traffic.bytes, **browser_memory(browser, page)}
        return figures
    finally:
        context.close()


def ohif_or_timeout(*args) -> dict:
    """OHIF's figures, or that it showed no image within TIMEOUT_S (the other runs still count)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return ohif_first_image(*args)
    except (PlaywrightTimeout, TimeoutError) as exc:
        return {"ms": None, "no_image_within_s": TIMEOUT_S, "error": str(exc).splitlines()[0]}


def viewport_spread(canvas) -> float:
    """The grey-level spread of the viewport above OHIF's banner."""
    box = canvas.bounding_box()
    clip = {**box, "height": box["height"] * (1 - BANNER_FRACTION)}
    return painted_spread(canvas.page.screenshot(clip=clip))


def study_uid_of(files: list[Path]) -> str:
    import pydicom

    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", choices=tuple(PROFILES), default=tuple(PROFILES))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "links.raw.json"))
    parser.add_argument("--shots", type=Path, help="save OHIF's page at its first image here")
    parser.add_argument("--browse", nargs="*", choices=tuple(PROFILES), default=("loopback",),
                        help="profiles on which both viewers also browse the whole series")
    args = parser.parse_args()
    if not (OHIF_DIST / "index.html").is_file():
        print(f"OHIF is not installed in {OHIF_DIST}: run installers/install-ohif.sh", file=sys.stderr)
        return 2
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)   # requests would let them override the local CA
    from playwright.sync_api import sync_playwright

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "load_average_at_start": os.getloadavg(), "viewport": VIEWPORT, "runs": []}
    site = OhifSite()
    with tempfile.TemporaryDirectory(prefix="sivr-bench-links-") as tmp:
        bench = Bench(Path(tmp) / "deployment", before_start=configure_for_ohif(site.origin))
        try:
            tls = Path(bench.deployment.layout.root) / "tls"
            config = app_config_js(bench.node["url"], bench.deployment.url("toplevel"))
            site.start(tls / "server.pem", tls / "server.key", config)
            files = sorted(DEMO_CT.glob("*.dcm"))
            warm = bench.add_record(files, "CT 100 slices (real)")
            study_uid = study_uid_of(files)
            token = bench.doctor.session_token
            with sync_playwright() as p:
                spki = spki_hash(server_cert_of(bench.deployment))
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                    *CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki}"])
                sivr_first_image(bench, browser, warm, "loopback")   # loads the series on the node
                for number, profile in enumerate(args.profiles):
                    cold = bench.add_record(derive_series(Path(tmp) / f"copy-{number}", len(files), DEMO_CT),
                                            f"CT 100 slices (copy {number}, never loaded)")
                    browse = profile in args.browse
                    run = {"profile": profile,
                           **({"blank_page_renderer_mb": blank_page_renderer(browser)} if browse else {}),
                           "sivr_warm": sivr_first_image(bench, browser, warm, profile, browse),
                           "sivr_cold": sivr_first_image(bench, browser, cold, profile),
                           "ohif": ohif_or_timeout(site, token, study_uid, profile, browser, args.shots,
                                                   len(files) if browse else 0)}
                    if run["ohif"]["ms"] is not None:
                        run["ohif_over_sivr_warm"] = round(run["ohif"]["ms"] / max(1, run["sivr_warm"]["ms"]), 1)
                        run["ohif_over_sivr_cold"] = round(run["ohif"]["ms"] / max(1, run["sivr_cold"]["ms"]), 1)
                    results["runs"].append(run)
                    print(json.dumps(run), flush=True)
                browser.close()
        finally:
            bench.stop()
            site.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
