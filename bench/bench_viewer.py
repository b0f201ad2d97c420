"""Benchmark of the physicians' viewer in Debian's Chromium against a real local deployment.

Measures what a physician feels: time from opening a record to the first slice on screen, how
many slices per second keyboard scrolling shows (each one rendered by the node, fetched and
displayed), the same under the paper's 2G and 4G profiles (Chromium network emulation through
CDP) for PNG, WebP and JPEG with the bytes of each image, and the browser's memory after paging
through a 500-slice record. The "hand" section scrolls at the speed of a hand on the wheel (a
slice every 50 ms, keys not waiting for images) on each link and counts what was painted while the
hand moved, the longest time nothing new was painted, and how long after the hand stopped the last
slice was on screen at full quality (issue 17). The "protocols" section opens the record and
scrolls at hand speed on the paper's 2G and 4G once over HTTP/2 and once over HTTP/1.1 (Chromium
with --disable-http2), against the same deployment and its TLS/HTTP/2 fronts. The "drag3d"
section turns a 3D view with the mouse for 3 s on each link and counts the previews painted while
dragging and the time from the release to the full-quality still.

Data: the real 100-slice CT (../shared/data/dicom/tcia-cmb-crc-ct-100); the 500-slice record is
DERIVED from it (its slices repeated with new UIDs and positions), labelled so in the report.

    python bench/bench_viewer.py [--out bench/results/viewer.raw.json] [--skip-large]
                                 [--only open hand protocols drag3d large]
                                 [--links loopback 4G 2G cs-4g]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemons.demo import (  # noqa: E402
    ApiClient,
    find_or_create_patient,
    register_nodes,
    register_record,
    seed_base,
    upload_record,
)
from daemons.deployment import Layout, LocalDeployment, init_deployment  # noqa: E402
from tests.ops.helpers import wait_ready  # noqa: E402
from tests.webviewer.browser import launch_chromium, server_cert_of  # noqa: E402

CT_DIR = REPO.parent / "shared" / "data" / "dicom" / "tcia-cmb-crc-ct-100"
VIEWPORT = {"width": 1366, "height": 860}
PROFILES = {  # the paper's network profiles (download rate, latency)
    "loopback": None,
    "4G": {"latency": 20, "kbit": 4000},
    "2G": {"latency": 100, "kbit": 750},
    "cs-4g": {"latency": 10, "kbit": 30000},   # Cornerstone3D's "4g" (its 5 Mbit/s upstream not modelled)
}
FORMATS = ("png", "webp", "jpeg")

# Runs in the page: open a record by hash and resolve with ms until its first image is shown.
FIRST_SLICE_JS = """async (hash) => {
  const t0 = performance.now();
  location.hash = hash;
  return await new Promise((resolve) => {
    const check = () => {
      const v = document.querySelector('#viewport');
      if (v && v.dataset.shownIndex !== undefined) { resolve(performance.now() - t0); return true; }
      return false;
    };
    if (check()) return;
    const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
    obs.observe(document.body,
                {subtree: true, attributes: true, childList: true, attributeFilter: ['data-shown-index']});
  });
}"""

# Runs in the page: press ArrowDown n times, each after the previous slice is on screen.
SCROLL_JS = """async (n) => {
  const v = document.querySelector('#viewport');
  const shownAt = (i) => new Promise((resolve) => {
    if (v.dataset.shownIndex === String(i)) return resolve();
    const obs = new MutationObserver(() => {
      if (v.dataset.shownIndex === String(i)) { obs.disconnect(); resolve(); }
    });
    obs.observe(v, {attributes: true, attributeFilter: ['data-shown-index']});
  });
  const start = Number(v.dataset.shownIndex);
  const bytes = [];
  const t0 = performance.now();
  for (let k = 1; k <= n; k++) {
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
    await shownAt(start + k);
    bytes.push(Number(v.dataset.bytes));
  }
  return {seconds: (performance.now() - t0) / 1000, bytes};
}"""


# Runs in the page: press ArrowDown n times, one every stepMs, without waiting for images (a hand on
# the wheel); every paint is recorded; resolves once the last slice is on screen at full quality.
HAND_JS = """async ({n, stepMs}) => {
  const v = document.querySelector('#viewport');
  const paints = [];
  const preview = (key) => key.includes('format=jpeg') && key.includes('quality=60');
  let resolveFinal;
  const final = new Promise((resolve) => { resolveFinal = resolve; });
  const start = Number(v.dataset.shownIndex), last = start + n;
  const obs = new MutationObserver(() => {
    const d = v.dataset;
    paints.push({t: performance.now(), index: Number(d.shownIndex), preview: preview(d.shownKey),
                 bytes: Number(d.bytes)});
    if (Number(d.shownIndex) === last && !preview(d.shownKey)) resolveFinal(performance.now());
  });
  obs.observe(v, {attributes: true, attributeFilter: ['data-shown-count']});
  const t0 = performance.now();
  for (let k = 1; k <= n; k++) {
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
    await new Promise((r) => setTimeout(r, stepMs));
  }
  const tEnd = performance.now();
  const tFinal = await Promise.race([final, new Promise((r) => setTimeout(() => r(null), 90000))]);
  obs.disconnect();
  return {t0, tEnd, tFinal, paints};
}"""
HAND_STEP_MS = 50
HAND_STEPS = 99  # 20 slices a second for 5 s through the 100-slice CT


def hand_figures(run: dict) -> dict:
    """What the reader saw while the hand moved, from the paints HAND_JS recorded."""
    t0, t_end = run["t0"], run["tEnd"]
    during = [p for p in run["paints"] if p["t"] <= t_end]
    times = [t0, *(p["t"] for p in during), t_end]
    settled = None if run["tFinal"] is None else max(0, round(run["tFinal"] - t_end))  # 0: on screen already
    return {
        "scroll_s": round((t_end - t0) / 1000, 2),
        "painted_during_scroll": len(during),
        "distinct_slices_painted": len({p["index"] for p in during}),
        "images_per_s": round(len(during) / ((t_end - t0) / 1000), 1),
        "previews": sum(p["preview"] for p in during),
        "longest_blind_ms": round(max(b - a for a, b in zip(times, times[1:], strict=False))),
        "last_slice_full_quality_after_stop_ms": settled,
        "bytes_during_scroll": sum(p["bytes"] for p in during),
    }


def measure_hand(bench: Bench, browser, meta: dict, profile_name: str, fmt: str) -> dict:
    """Open the record unthrottled, go to its first slice, then scroll at hand speed on the link."""
    context, page = bench.new_page(browser, None)
    try:
        page.evaluate(FIRST_SLICE_JS, bench.view_hash(meta, fmt))
        page.locator("#viewport[data-load-state=ready]").wait_for(timeout=120000)
        page.locator("#slice").fill("0")
        page.wait_for_function("() => document.querySelector('#viewport').dataset.shownIndex === '0'")
        throttle(context, page, PROFILES[profile_name])
        load = os.getloadavg()[0]   # the machine is shared: each figure carries the load it ran under
        run = page.evaluate(HAND_JS, {"n": HAND_STEPS, "stepMs": HAND_STEP_MS})
        return {"profile": profile_name, "format": fmt, "step_ms": HAND_STEP_MS,
                "utc": time.strftime("%H:%M:%S", time.gmtime()), "load_1m": round(load, 1),
                **hand_figures(run)}
    finally:
        context.close()


# Runs in the page: record every image put on screen (time, and whether it is a 3D preview).
PAINTS_JS = """() => {
  window.__paints = [];
  const v = document.querySelector('#viewport');
  new MutationObserver(() => window.__paints.push({t: performance.now(), key: v.dataset.shownKey}))
    .observe(v, {attributes: true, attributeFilter: ['data-shown-count']});
}"""
DRAG_S = 3.0
DRAG_STEP_MS = 30


def measure_drag3d(bench: Bench, browser, meta: dict, profile_name: str, mode: str) -> dict:
    """Turn the 3D view by a mouse drag of DRAG_S on the link: previews painted per second while
    dragging, the longest time without one, and the time from the release to the still."""
    context, page = bench.new_page(browser, None)
    try:
        page.evaluate(FIRST_SLICE_JS, bench.view_hash(meta, "webp"))
        page.locator("#viewport[data-load-state=ready]").wait_for(timeout=120000)
        page.locator("#plane").select_option("3d")
        page.locator("#volume-mode").select_option(mode)
        page.wait_for_function(f"() => (document.querySelector('#viewport').dataset.shownKey || '')"
                               f".includes('mode={mode}')", timeout=120000)
        throttle(context, page, PROFILES[profile_name])
        page.evaluate(PAINTS_JS)
        box = page.locator("#viewport").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        t0 = page.evaluate("performance.now()")
        steps = int(DRAG_S * 1000 / DRAG_STEP_MS)
        for step in range(1, steps + 1):
            page.mouse.move(x + 200 * step / steps, y + 20 * step / steps)
            page.wait_for_timeout(DRAG_STEP_MS)
        t_up = page.evaluate("performance.now()")
        page.mouse.up()
        page.wait_for_function("t => (document.querySelector('#viewport').dataset.shownKey || '')"
                               ".includes('render=still') && window.__paints.some((p) => p.t > t)",
                               arg=t_up, timeout=120000)
        paints = page.evaluate("() => window.__paints")
        during = [p for p in paints if t0 <= p["t"] <= t_up and "render=interactive" in p["key"]]
        still = next(p for p in paints if p["t"] > t_up and "render=still" in p["key"])
        times = [t0, *(p["t"] for p in during), t_up]
        return {"profile": profile_name, "mode": mode, "drag_s": round((t_up - t0) / 1000, 2),
                "previews_painted": len(during), "previews_per_s": round(len(during) / ((t_up - t0) / 1000), 1),
                "longest_blind_ms": round(max(b - a for a, b in zip(times, times[1:], strict=False))),
                "still_after_release_ms": round(still["t"] - t_up)}
    finally:
        context.close()


def throttle(context, page, profile: dict | None) -> None:
    """The link profile through Chromium's network emulation (CDP); None leaves it unthrottled."""
    if not profile:
        return
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    rate = profile["kbit"] * 1000 / 8
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": profile["latency"],
        "downloadThroughput": rate, "uploadThroughput": rate})


def derive_series(dest: Path, total: int, source: Path = CT_DIR) -> list[Path]:
    """`total` slices made by repeating the real CT's slices with new UIDs and positions."""
    import pydicom
    from pydicom.uid import generate_uid

    sources = sorted(source.glob("*.dcm"))
    study, series = generate_uid(), generate_uid()
    dest.mkdir(parents=True, exist_ok=True)
    first = pydicom.dcmread(sources[0], stop_before_pixels=True)
    step = float(first.get("SpacingBetweenSlices", first.SliceThickness))
    x, y, z0 = (float(v) for v in first.ImagePositionPatient)
    files = []
    for number in range(total):
        ds = pydicom.dcmread(sources[number % len(sources)])
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.ImagePositionPatient = [x, y, z0 - number * step]
        ds.InstanceNumber = number + 1
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SeriesDescription = f"DERIVED {total}-slice series from TCIA CMB-CRC lung CT"
        path = dest / f"derived-{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def process_memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages split among their users) and Chromium's own "private memory
    footprint" of one process, from /proc.

    The private footprint is what Chromium's task manager shows as a process's "Memory footprint"
    and what its memory metrics report: on Linux, resident anonymous memory plus swap
    (RssAnon + VmSwap, `CalculatePrivateFootprintKb` in Chromium's memory_instrumentation). It
    leaves out the browser's code and fonts, which every renderer maps alike and PSS charges in part.
    """
    values = {"rss": 0.0, "pss": 0.0, "private": 0.0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key.lower()] = int(rest.split()[0]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "VmSwap"):
                values["private"] += int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values


def browser_memory(browser, page) -> dict:
    """Memory of every Chromium process (browser, renderers, GPU, utilities) and the page's JS heap."""
    cdp = browser.new_browser_cdp_session()
    processes = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
    by_type: dict[str, dict[str, float]] = {}
    largest_renderer = {"rss": 0.0, "pss": 0.0, "private": 0.0}
    for proc in processes:
        used = process_memory_mb(proc["id"])
        if proc["type"] == "renderer" and used["pss"] > largest_renderer["pss"]:
            largest_renderer = used
        slot = by_type.setdefault(proc["type"], {"rss": 0.0, "pss": 0.0, "private": 0.0})
        for key in slot:
            slot[key] += used[key]
    page_cdp = page.context.new_cdp_session(page)
    page_cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in page_cdp.send("Performance.getMetrics")["metrics"]}
    return {"mb_by_process_type": {k: {m: round(v, 1) for m, v in d.items()} for k, d in by_type.items()},
            "viewer_renderer_mb": {k: round(v, 1) for k, v in largest_renderer.items()},
            "pss_mb_total": round(sum(d["pss"] for d in by_type.values()), 1),
            "rss_mb_total": round(sum(d["rss"] for d in by_type.values()), 1),
            "js_heap_used_mb": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1)}


def memory_pressure(page) -> None:
    """What Chromium gets from the OS when memory runs short: it drops purgeable caches
    (decoded images above all), which is what it holds beyond the live page."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    cdp.send("Memory.simulatePressureNotification", {"level": "critical"})
    page.wait_for_timeout(1500)


class Bench:
    def __init__(self, root: Path, before_start: Callable[[Layout], None] | None = None):
        layout = init_deployment(root, pick_free_ports=True, front=True)  # served as `sivr demo` serves it
        self.users = seed_base(layout)
        if before_start is not None:
            before_start(layout)
        self.deployment = LocalDeployment(layout)
        self.deployment.start()
        self.inst = layout.institutions[0]
        self.node = register_nodes(ApiClient(self.deployment, **self.users["admin"]), self.inst)[
            self.inst["nodes"][0]["url"]]
        self.doctor = ApiClient(self.deployment, **self.users["physician"])
        self.patient = find_or_create_patient(self.doctor, self.deployment.url("toplevel"), {
            "first_name": "Bench", "last_name": "Mark", "sex": "O", "birth_date": "1960-01-01",
            "insurance_number": "BENCH-0001"})

    def add_record(self, files: list[Path], description: str) -> dict:
        meta = upload_record(self.doctor, self.node["url"], files)
        register_record(self.doctor, self.inst["server_url"], meta, self.node["id"],
                        self.patient["id"], "CT", description, confirm_mismatch=True)
        return meta

    def view_hash(self, meta: dict, fmt: str) -> str:
        return f"#/view/{self.inst['id']}/{self.node['id']}/{meta['id']}?format={fmt}"

    def new_page(self, browser, profile: dict | None):
        context = browser.new_context(viewport=VIEWPORT, base_url=self.deployment.url("web"))
        page = context.new_page()
        user = self.users["physician"]
        page.goto("/")
        page.get_by_label("Username").fill(user["username"])
        page.get_by_label("Password").fill(user["password"])
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Patients").wait_for()
        throttle(context, page, profile)
        return context, page

    def stop(self) -> None:
        self.deployment.stop()


def measure_viewing(bench: Bench, browser, meta: dict, profile_name: str, fmt: str, slices: int) -> dict:
    context, page = bench.new_page(browser, PROFILES[profile_name])
    try:
        first_ms = page.evaluate(FIRST_SLICE_JS, bench.view_hash(meta, fmt))
        page.locator("#viewport[data-load-state=ready]").wait_for(timeout=120000)
        first_bytes = int(page.locator("#viewport").get_attribute("data-bytes"))
        size = page.locator("#viewport").get_attribute("data-shown-key").split("size=")[1].split("&")[0]
        scroll = page.evaluate(SCROLL_JS, slices)
        return {"profile": profile_name, "format": fmt, "image_size": size,
                "first_slice_ms": round(first_ms, 1),
                "slices_per_s": round(slices / scroll["seconds"], 1),
                "bytes_per_image_mean": round(statistics.mean([first_bytes, *scroll["bytes"]])),
                "scrolled": slices}
    finally:
        context.close()


PROTOCOL_LINKS = ("4G", "2G")
PROTOCOL_FORMAT = "jpeg"
# Chromium's switch for HTTP/1.1 only; the fronts answer both protocols, so only the browser changes.
HTTP1_ONLY = ("--disable-http2",)


def measure_protocols(bench: Bench, playwright, meta: dict) -> list[dict]:
    """First image and hand-speed scrolling on each link, over HTTP/2 and over HTTP/1.1."""
    rows = []
    # loaded on the node first, so the first protocol measured does not also pay for the load
    bench.doctor.call("POST", f"{bench.node['url']}/api/v1/records/{meta['id']}/load", ok=(200, 202))
    wait_ready(bench.doctor, bench.node["url"], meta["id"])
    for protocol, extra in (("h2", ()), ("http/1.1", HTTP1_ONLY)):
        browser = launch_chromium(playwright, server_cert_of(bench.deployment), extra)
        try:
            context, page = bench.new_page(browser, None)
            spoken = page.evaluate("() => performance.getEntriesByType('navigation')[0].nextHopProtocol")
            context.close()
            for profile in PROTOCOL_LINKS:
                context, page = bench.new_page(browser, PROFILES[profile])
                try:  # the record is loaded on the node: this is the link and the protocol
                    first_ms = page.evaluate(FIRST_SLICE_JS, bench.view_hash(meta, PROTOCOL_FORMAT))
                finally:
                    context.close()
                hand = measure_hand(bench, browser, meta, profile, PROTOCOL_FORMAT)
                rows.append({"protocol": protocol, "negotiated": spoken, "profile": profile,
                             "format": PROTOCOL_FORMAT, "first_slice_ms": round(first_ms, 1),
                             **{k: v for k, v in hand.items() if k not in ("profile", "format")}})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            browser.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "viewer.raw.json"))
    parser.add_argument("--skip-large", action="store_true", help="skip the 500-slice memory run")
    parser.add_argument("--links", nargs="+", choices=tuple(PROFILES), default=tuple(PROFILES),
                        help="link profiles of the hand and drag3d sections (default: all)")
    parser.add_argument("--only", nargs="+", choices=("open", "hand", "protocols", "drag3d", "large"),
                        default=("open", "hand", "protocols", "drag3d", "large"),
                        help="sections to run: open and page (open), hand-speed scrolling (hand), "
                             "HTTP/2 against HTTP/1.1 on 2G and 4G (protocols), "
                             "turning a 3D view (drag3d), 500 slices (large)")
    args = parser.parse_args()
    if not CT_DIR.is_dir():
        print(f"real CT absent: {CT_DIR}", file=sys.stderr)
        return 2
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)   # requests would let them override the local CA
    from playwright.sync_api import sync_playwright

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
                     "viewport": VIEWPORT, "runs": []}
    with tempfile.TemporaryDirectory(prefix="sivr-bench-viewer-") as tmp:
        bench = Bench(Path(tmp) / "deployment")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p, server_cert_of(bench.deployment))
                real = sorted(CT_DIR.glob("*.dcm"))
                cold_record = bench.add_record(real, "CT 100 slices (real)")
                if "open" in args.only:
                    # Cold: the record is on disk only; opening it starts the load.
                    cold = measure_viewing(bench, browser, cold_record, "loopback", "webp", 60)
                    results["runs"].append({"case": "cold open (record on disk only)", **cold})
                    print(json.dumps(cold), flush=True)
                    for profile in PROFILES:
                        for fmt in FORMATS:
                            run = measure_viewing(bench, browser, cold_record, profile, fmt,
                                                  60 if profile == "loopback" else 10)
                            results["runs"].append({"case": "loaded record", **run})
                            print(json.dumps(run), flush=True)
                if "hand" in args.only:
                    results["hand"] = []
                    for profile in args.links:
                        for fmt in FORMATS:
                            hand = measure_hand(bench, browser, cold_record, profile, fmt)
                            results["hand"].append(hand)
                            print(json.dumps(hand), flush=True)
                if "protocols" in args.only:
                    results["protocols"] = measure_protocols(bench, p, cold_record)
                if "drag3d" in args.only:
                    results["drag3d"] = []
                    for profile in args.links:
                        for mode in ("mip", "dvr"):
                            drag = measure_drag3d(bench, browser, cold_record, profile, mode)
                            results["drag3d"].append(drag)
                            print(json.dumps(drag), flush=True)
                if "large" in args.only and not args.skip_large:
                    large = bench.add_record(derive_series(Path(tmp) / "large", 500),
                                             "CT 500 slices (DERIVED)")
                    context, page = bench.new_page(browser, None)
                    first_ms = page.evaluate(FIRST_SLICE_JS, bench.view_hash(large, "webp"))
                    page.locator("#viewport[data-load-state=ready]").wait_for(timeout=600000)
                    scroll = page.evaluate(SCROLL_JS, 499)
                    paged = browser_memory(browser, page)
                    memory_pressure(page)
                    results["large"] = {
                        "slices": 500, "derived": True, "first_slice_ms": round(first_ms, 1),
                        "slices_per_s": round(499 / scroll["seconds"], 1),
                        "memory_after_paging_all": paged,
                        "memory_after_pressure_signal": browser_memory(browser, page)}
                    print(json.dumps(results["large"]), flush=True)
                    context.close()
                browser.close()
        finally:
            bench.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
