"""Benchmark of the 2D render node: every figure of issue 3, measured on this machine.

    python bench/bench_2d.py [--quick]

Sections (results printed as markdown and written to bench/results/bench_2d.raw.json):
1. full load of a 512x512x555 record (DERIVED from the real 100-slice CT, see bench_2d_data.py);
2. first slice after a load request, for 20, 100 and 555 slices;
3. RAM per loaded record against its decoded size, and a second viewer's load sharing it;
4. render + encode time per 512² slice (in process), PNG/WebP/JPEG, and encoder settings;
5. bytes per image and PSNR against the lossless PNG, beside the paper's Table 1;
6. throughput and latency against Orthanc's rendered-frame endpoint, same files, window,
   formats and concurrency, both on loopback HTTP, in one run;
7. 16 concurrent clients scrolling one record through gunicorn over TLS: p50/p95, errors.

The clients run on the same machine as the servers, so they take CPU from them: the same for
our node and for Orthanc.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import io
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import imagecodecs
import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import h2load, machine  # noqa: E402
from bench.bench_2d_data import derived_series, real_ct_files  # noqa: E402
from bench.image_quality import psnr  # noqa: E402
from daemons.deployment import free_port  # noqa: E402
from daemons.render.app import create_app  # noqa: E402
from daemons.render.imaging.encode import encode_image  # noqa: E402
from daemons.render.imaging.geometry import FULL  # noqa: E402
from daemons.render.imaging.pixels import Window  # noqa: E402
from daemons.render.imaging.render2d import render_frame  # noqa: E402
from daemons.render.models import upgrade  # noqa: E402
from daemons.render.settings import KEYS  # noqa: E402
from shared.config import build_config, render_config_toml  # noqa: E402
from shared.tls import create_ca, issue_server_cert  # noqa: E402
from shared.tokens import (  # noqa: E402
    MAX_EXCHANGED_TTL_S,
    TokenIssuer,
    generate_signing_keypair,
    load_private_key,
)

WINDOW = (40.0, 400.0)
#: Every benchmark node's audience; the bench plays the toplevel and mints tokens for it.
NODE_AUDIENCE = "https://bench-node.test"
PAPER_TABLE_1 = {"A 512x512x10": (76.0, 23.4), "B 512x512x54": (158.0, 68.9),
                 "C 512x512x555": (95.1, 32.7), "D 1996x2457x96": (94.4, 22.5)}
RESULTS: dict = {}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Setup:
    """Keys, a token, a CA and a node config in one temporary folder."""

    def __init__(self, root: Path, workers: int = 1, threads: int = 16):
        self.root = root
        self.workers = workers  # gunicorn workers of a node started as a server
        self.threads = threads  # and the request threads of each
        self.institution = str(uuid.uuid4())
        generate_signing_keypair(root / "token.pem", root / "token.pub")
        self.issuer = TokenIssuer(load_private_key(root / "token.pem"), "sivr-toplevel", NODE_AUDIENCE,
                                  MAX_EXCHANGED_TTL_S)
        self.user_id, self.session_id = str(uuid.uuid4()), str(uuid.uuid4())
        create_ca(root / "ca.pem", root / "ca.key")
        issue_server_cert(root / "ca.pem", root / "ca.key", root / "server.pem", root / "server.key", ["127.0.0.1"])

    @property
    def headers(self) -> dict[str, str]:
        """A fresh token as the toplevel's exchange would mint it: nodes accept tokens of <= 60 s."""
        return self._headers("physician")

    @property
    def admin_headers(self) -> dict[str, str]:
        """An administrator's, for the node's health figures."""
        return self._headers("instadmin")

    def _headers(self, role: str) -> dict[str, str]:
        token, _ = self.issuer.issue(self.user_id, "bench", role, self.institution, session_id=self.session_id)
        return {"Authorization": f"Bearer {token}"}

    def values(self, name: str, port: int = 0, tls: bool = False, render: dict | None = None) -> dict:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        server = {"workers": self.workers, "threads": self.threads, "max_request_mb": 4096, "port": port,
                  "host": "127.0.0.1", "timeout_s": 120}
        if tls:
            server.update(tls_cert=str(self.root / "server.pem"), tls_key=str(self.root / "server.key"))
        return {
            "server": server,
            "tokens": {"public_key": str(self.root / "token.pub"), "audience": NODE_AUDIENCE},
            "database": {"url": f"sqlite:///{folder}/render.db"},
            "node": {"institution_id": self.institution, "receipt_key": str(folder / "receipt.pem")},
            "storage": {"dir": str(folder / "store"), "key_file": str(folder / "store.key")},
            "memory": {"budget_mb": 8192},
            "render": render or {},
            "dicom": {"port": 0, "tls_port": 0},
        }

    def config_file(self, name: str, port: int, tls: bool, render: dict | None = None) -> Path:
        values = self.values(name, port, tls, render)
        path = self.root / f"{name}.toml"
        path.write_text(render_config_toml("render", KEYS, values))
        return path


def upload(client, headers, files: list[Path]) -> str:
    data = {"files": [(io.BytesIO(p.read_bytes()), p.name) for p in files]}
    reply = client.post("/api/v1/records", data=data, headers=headers, content_type="multipart/form-data")
    assert reply.status_code in (200, 201), reply.json
    return reply.json["id"]


# --- 1-3: loading, first slice, RAM ----------------------------------------------------------
def bench_loading(setup: Setup, derived: list[Path], real: list[Path], quick: bool) -> None:
    config = build_config("render", KEYS, setup.values("inproc"))
    upgrade(config)
    app = create_app(config)
    client, headers = app.test_client(), setup.headers
    registry = app.extensions["sivr_records"]
    started = time.perf_counter()
    big = upload(client, headers, derived)
    RESULTS["upload_555_s"] = time.perf_counter() - started
    ids = {20: upload(client, headers, real[:20]), 100: upload(client, headers, real), 555: big}

    loads = []
    for _ in range(2 if quick else 5):
        registry.unload(big)
        gc.collect()
        record = registry.load(big)
        assert record.wait_complete(120) and not record.errors
        loads.append(record.finished_at - record.started_at)
    RESULTS["full_load_555_s"] = {"runs": loads, "median": statistics.median(loads), "min": min(loads),
                                  "load_threads": registry.threads}
    registry.unload(big)
    del record
    values_file = setup.root / "inproc.json"
    values_file.write_text(json.dumps(setup.values("inproc")))
    probe = subprocess.run([sys.executable, "-m", "bench.bench_2d_ram", str(values_file), big],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
    RESULTS["ram"] = json.loads(probe.stdout.strip().splitlines()[-1])

    first = {}
    for frames, record_id in ids.items():
        times = []
        for _ in range(3 if quick else 7):
            registry.unload(record_id)
            t0 = time.perf_counter()
            assert client.post(f"/api/v1/records/{record_id}/load", headers=headers).status_code == 202
            reply = client.get(f"/api/v1/records/{record_id}/frames/{frames // 2}?format=webp", headers=headers)
            times.append((time.perf_counter() - t0) * 1000)
            assert reply.status_code == 200, reply.json
            registry.get_loaded(record_id).wait_complete(120)
        first[frames] = {"median_ms": statistics.median(times), "max_ms": max(times)}
    RESULTS["first_slice_ms"] = first
    registry.shutdown()


# --- 4-5: render + encode, sizes and PSNR ----------------------------------------------------
def bench_encode(setup: Setup, real: list[Path], quick: bool) -> None:
    config = build_config("render", KEYS, setup.values("encode"))
    upgrade(config)
    app = create_app(config)
    record_id = upload(app.test_client(), setup.headers, real)
    registry = app.extensions["sivr_records"]
    record = registry.load(record_id)
    record.wait_complete(60)
    timings: dict[str, list[float]] = {"png": [], "webp": [], "jpeg": [], "render_only": []}
    sizes: dict[str, list[int]] = {"png": [], "webp": [], "jpeg": []}
    psnrs: dict[str, list[float]] = {"webp": [], "jpeg": []}
    rounds = 1 if quick else 3
    for key_index, (center, width) in enumerate([WINDOW, (-600.0, 1500.0), (400.0, 1800.0)][:rounds]):
        params = record.gray_params(Window(center, width))
        for index in range(record.frames_total):
            t0 = time.perf_counter()
            lut = record.lut_for((key_index,), params, index)
            image = render_frame(record.frame(index), params, lut, FULL, None, record.frame_spacing(index), 2048)
            timings["render_only"].append((time.perf_counter() - t0) * 1000)
            for fmt in ("png", "webp", "jpeg"):
                t0 = time.perf_counter()
                lut = record.lut_for((key_index,), params, index)
                image = render_frame(record.frame(index), params, lut, FULL, None, record.frame_spacing(index), 2048)
                data, _ = encode_image(image, fmt)
                timings[fmt].append((time.perf_counter() - t0) * 1000)
                if key_index == 0:
                    sizes[fmt].append(len(data))
                    if fmt != "png":
                        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
                        psnrs[fmt].append(psnr(image, decoded))
    RESULTS["render_encode_ms"] = {k: {"median": statistics.median(v), "p95": pct(v, 95)} for k, v in timings.items()}
    RESULTS["bytes_psnr"] = {fmt: {"mean_kb": statistics.mean(v) / 1000,
                                   "psnr_db": statistics.mean(psnrs[fmt]) if fmt in psnrs else float("inf")}
                             for fmt, v in sizes.items()}
    # encoder settings: size and time per setting on the middle slice at the soft-tissue window
    params = record.gray_params(Window(*WINDOW))
    image = render_frame(record.frame(50), params, record.lut_for((0,), params, 50), FULL, None,
                         record.frame_spacing(50), 2048)
    settings = {}

    def pillow(**save):
        def encode(pixels: np.ndarray) -> bytes:
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, **save)
            return out.getvalue()
        return encode

    def libpng(level: int, strategy: int | None, png_filter: int | None):
        return lambda pixels: imagecodecs.png_encode(pixels, level=level, strategy=strategy, filter=png_filter)

    for label, encode in (
        ("png libpng level 1, RLE, SUB filter (chosen)", libpng(1, 3, 16)),
        ("png libpng level 1, RLE, no filter", libpng(1, 3, 8)),
        ("png libpng level 1, RLE, UP filter", libpng(1, 3, 32)),
        ("png libpng level 1, RLE, all filters tried", libpng(1, 3, 248)),
        *[(f"png Pillow level {lvl}", pillow(format="PNG", compress_level=lvl)) for lvl in (1, 6, 9)],
        *[(f"webp q80 method {m}", pillow(format="WEBP", quality=80, method=m)) for m in (0, 2, 4, 6)],
        ("webp lossless method 0", pillow(format="WEBP", lossless=True, method=0)),
    ):
        times, size = [], 0
        for _ in range(5 if quick else 20):
            t0 = time.perf_counter()
            size = len(encode(image))
            times.append((time.perf_counter() - t0) * 1000)
        settings[label] = {"kb": size / 1000, "median_ms": statistics.median(times)}
    RESULTS["encoder_settings"] = settings
    registry.shutdown()


# --- 6-7: servers -----------------------------------------------------------------------------
class Server:
    def __init__(self, args: list[str], url: str, log: Path, ready: str, verify=True, start_s: float = 60,
                 env: dict[str, str] | None = None):
        self.url = url
        with open(log, "wb") as output:  # the child keeps its own descriptor
            self.process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                            cwd=REPO, env=env)
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline:
            try:
                if requests.get(url + ready, timeout=2, verify=verify).status_code < 500:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{args[0]} did not start; see {log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def start_node(setup: Setup, name: str, tls: bool, render: dict | None = None) -> Server:
    port = free_port()
    config = setup.config_file(name, port, tls, render)
    upgrade(build_config("render", KEYS, setup.values(name, port, tls, render), config))
    # as operators run it: gunicorn with `server.workers` workers sharing one runtime folder
    args = [sys.executable, "-m", "daemons.cli", "serve", "render", "--config", str(config)]
    scheme = "https" if tls else "http"
    return Server(args, f"{scheme}://127.0.0.1:{port}", setup.root / f"{name}.log", "/healthz",
                  verify=str(setup.root / "ca.pem") if tls else True)


def start_orthanc(root: Path, extra: dict | None = None, name: str = "orthanc",
                  env: dict[str, str] | None = None) -> Server:
    """Orthanc on loopback HTTP with its own storage (in `root`/`name`); `extra` adds or overrides
    configuration keys, `env` is its environment (default: this process's)."""
    port = free_port()
    folder = root / name
    folder.mkdir(exist_ok=True)
    config = {"Name": "bench", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "HttpCompressionEnabled": False, "Plugins": [],
              "ConcurrentJobs": 2, "HttpThreadsCount": 50, **(extra or {})}
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    return Server(["Orthanc", str(path)], f"http://127.0.0.1:{port}", folder / "orthanc.log", "/system", env=env)


def run_clients(urls_per_client: list[list[tuple[str, dict]]], verify, headers: dict) -> dict:
    """Each client (a thread with its own keep-alive connection) fetches its URLs in order.

    `http.client` rather than requests: a lighter client leaves more of the shared CPU to the
    server being measured (the same for both servers).
    """
    latencies: list[float] = []
    sizes: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else None

    def connect(url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=60)
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def client(urls: list[tuple[str, dict]]) -> None:
        connection = connect(urls[0][0])
        for url, extra in urls:
            parts = urlsplit(url)
            t0 = time.perf_counter()
            try:
                connection.request("GET", f"{parts.path}?{parts.query}", headers={**headers, **extra})
                reply = connection.getresponse()
                body = reply.read()
                ok, status = reply.status == 200 and len(body) > 100, reply.status
            except (OSError, http.client.HTTPException) as exc:
                ok, status = False, repr(exc)
                connection.close()
                connection = connect(url)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(elapsed)
                if ok:
                    sizes.append(len(body))
                if not ok:
                    errors.append(str(status)[:100])
        connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(len(urls_per_client)) as pool:
        list(pool.map(client, urls_per_client))
    wall = time.perf_counter() - started
    return {"requests": len(latencies), "wall_s": wall, "per_s": len(latencies) / wall,
            "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "errors": len(errors),
            "mean_kb": statistics.mean(sizes) / 1000 if sizes else float("nan"),
            "error_samples": errors[:3]}


#: h2load clients ask for images by the second, so each needs a list long enough that it never
#: starts over (a repeat could come from a cache): room for this many requests per second, all
#: clients together, and for one client twice as fast as its share (a server's workers need not
#: serve their connections alike)
H2LOAD_MOST_PER_S = 5000
H2LOAD_SHARE_MARGIN = 2


def process_group_cpu_s(group: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of one process group: a server
    and every worker it forked (`Server` starts each in a session of its own)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group:  # pgrp; then utime and stime at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(client: str, server: Server, urls_per_client: list[list[tuple[str, dict]]], headers: dict,
            seconds: float, folder: Path) -> dict:
    """Run one load with the chosen client: `python` fetches each list once (`run_clients`),
    `h2load` asks for `seconds` (bench/h2load.py), with the same headers for every request.

    Also the server's CPU time over the run: requests per CPU-second is the per-core figure, which a
    server that serialises its work (Orthanc's rendering) and one that uses every core share."""
    cpu_before = process_group_cpu_s(server.process.pid)
    if client == "python":
        result = run_clients(urls_per_client, True, headers)
    else:
        outcome = h2load.run_clients([h2load.Client([url for url, _ in urls], {**headers, **urls[0][1]})
                                      for urls in urls_per_client], seconds, folder, http1=True)
        latencies = [value * 1000 for value in outcome.latencies_s]
        result = {"requests": len(latencies), "wall_s": seconds, "per_s": len(latencies) / seconds,
                  "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "errors": len(outcome.errors),
                  "mean_kb": float("nan"), "error_samples": outcome.errors[:3], "repeated": outcome.repeated}
    cpu_s = process_group_cpu_s(server.process.pid) - cpu_before
    return {**result, "server_cpu_s": cpu_s, "per_cpu_s": result["requests"] / cpu_s if cpu_s else float("nan")}


def window_centre(mode: str, client: int, request: int, clients: int, requests_per_client: int) -> str:
    """The window centre of a request: the record's own in "same window"; otherwise a centre no other
    request of the run has, spread over the CT's soft-tissue-to-bone range (-300..400 HU), so the
    images look like a reader's and none is served from a cache (centres thousands of units away
    would give blank images, which both servers encode at no cost)."""
    if mode == "same window":
        return f"{WINDOW[0]:g}"
    return f"{-300 + 700 * (client * requests_per_client + request) / (clients * requests_per_client):.4f}"


def bench_versus_orthanc(setup: Setup, real: list[Path], quick: bool, client: str = "python",
                         seconds: float = 8) -> None:
    """Throughput against Orthanc's `/rendered`, same files and windows; `client` as in `measure`."""
    node = start_node(setup, "http-node", tls=False)
    orthanc = start_orthanc(setup.root)
    folder = setup.root / "h2load"
    try:
        session = requests.Session()
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in real]
        reply = session.post(f"{node.url}/api/v1/records", files=files, headers=setup.headers, timeout=300)
        record_id = reply.json()["id"]
        session.post(f"{node.url}/api/v1/records/{record_id}/load", headers=setup.headers, timeout=60)
        while session.get(f"{node.url}/api/v1/records/{record_id}/status", headers=setup.headers,
                          timeout=30).json()["state"] != "ready":
            time.sleep(0.05)
        # Orthanc: the same files, in our slice order (index i = the i-th file the node stored)
        stored_order = []
        for index in range(len(real)):
            data = session.get(f"{node.url}/api/v1/records/{record_id}/original", params={"index": index},
                               headers=setup.headers, timeout=30).content
            stored_order.append(session.post(f"{orthanc.url}/instances", data=data, timeout=60).json()["ID"])
        w = WINDOW[1]
        results = {"client": client, "seconds": seconds if client == "h2load" else None}
        for mode in ("same window", "distinct windows"):
            for concurrency in (1, 4, 16):
                per_client = ((25 if quick else 60) if client == "python"
                              else int(H2LOAD_SHARE_MARGIN * H2LOAD_MOST_PER_S * seconds / concurrency) + 100)
                for fmt in ("png", "jpeg"):
                    def slice_of(k: int, s: int) -> int:
                        return (k * 7 + s) % len(real)

                    centres = [[window_centre(mode, k, s, concurrency, per_client) for s in range(per_client)]
                               for k in range(concurrency)]
                    ours = [[((f"{node.url}/api/v1/records/{record_id}/frames/{slice_of(k, s)}"
                               f"?window={centres[k][s]},{w:g}&format={fmt}&quality=90"), {})
                             for s in range(per_client)] for k in range(concurrency)]
                    theirs = [[((f"{orthanc.url}/instances/{stored_order[slice_of(k, s)]}/frames/0/rendered"
                                 f"?window-center={centres[k][s]}&window-width={w:g}&quality=90"),
                                {"Accept": f"image/{fmt}"}) for s in range(per_client)] for k in range(concurrency)]
                    results[f"{mode}: {fmt} x{concurrency}"] = {
                        "sivr": measure(client, node, ours, setup.headers, seconds, folder),
                        "orthanc": measure(client, orthanc, theirs, {}, seconds, folder),
                    }
        # where a JPEG request's time goes: the request path alone (one image, from the node's
        # cache) against a fresh rendering each time, one client
        repeats = 200 if quick else 2000
        c = WINDOW[0]
        one = f"{node.url}/api/v1/records/{record_id}/frames/50?window={c:g},{w:g}&format=jpeg&quality=90"
        results["request path: one cached jpeg x1"] = {
            "sivr": measure(client, node, [[(one, {})] * repeats], setup.headers, seconds, folder)}
        count = repeats if client == "python" else int(H2LOAD_MOST_PER_S * seconds) + 100
        fresh = [((f"{node.url}/api/v1/records/{record_id}/frames/{i % len(real)}"
                   f"?window={window_centre('distinct windows', 0, i, 1, count)},{w:g}"
                   f"&format=jpeg&quality=90"), {}) for i in range(count)]
        results["request path: fresh jpeg x1"] = {
            "sivr": measure(client, node, [fresh], setup.headers, seconds, folder)}
        check = session.get(theirs[0][0][0], headers={"Accept": "image/png"}, timeout=30)
        results["orthanc_image_size"] = list(Image.open(io.BytesIO(check.content)).size)
        RESULTS["versus_orthanc"] = results
    finally:
        node.stop()
        orthanc.stop()


SCROLL_VARIANTS = {
    "default": {},
    "webp method 2 always": {"webp_busy_encodes": 0},
    "webp method 0 always": {"webp_method": 0, "webp_busy_encodes": 0},
}


def bench_scrolling(setup: Setup, derived: list[Path], quick: bool, variant: str = "default") -> None:
    """16 closed-loop clients over TLS; `variant` names node settings (SCROLL_VARIANTS).

    The default node adapts its WebP effort to load (render.webp_busy_encodes); the other
    variants pin it, to show what the adaptation buys and costs in bytes.
    """
    render = SCROLL_VARIANTS[variant]
    node = start_node(setup, "tls-node-" + variant.replace(" ", "-"), tls=True, render=render)
    verify = str(setup.root / "ca.pem")
    try:
        session = requests.Session()
        session.trust_env = False  # an environment CA bundle would override `verify`
        session.verify = verify
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in derived]
        record_id = session.post(f"{node.url}/api/v1/records", files=files, headers=setup.headers,
                                 timeout=600).json()["id"]
        session.post(f"{node.url}/api/v1/records/{record_id}/load", headers=setup.headers, timeout=60)
        while session.get(f"{node.url}/api/v1/records/{record_id}/status", headers=setup.headers,
                          timeout=30).json()["state"] != "ready":
            time.sleep(0.05)
        steps = 30 if quick else 80
        results = {}
        # each viewer its own window (every request renders), then all in the record's own window
        # (what 16 viewers opening one record see first: images rendered once, then shared)
        for mode, window in (("own windows", lambda v: f"&window={40 + v},400"), ("default window", lambda v: "")):
            for fmt in ("webp", "png", "jpeg") if variant == "default" else ("webp",):
                urls = [[((f"{node.url}/api/v1/records/{record_id}/frames/{(viewer * 34 + s) % len(derived)}"
                           f"?format={fmt}{window(viewer)}"), {}) for s in range(steps)] for viewer in range(16)]
                results[f"{fmt}, {mode}"] = run_clients(urls, verify, setup.headers)
        RESULTS.setdefault("scroll_16_clients_tls", {})[variant] = results
        RESULTS.setdefault("node_health_after_scroll", {})[variant] = session.get(
            f"{node.url}/api/v1/node", headers=setup.admin_headers, timeout=30).json()
    finally:
        node.stop()


# --- report -------------------------------------------------------------------------------------
def report() -> str:
    r = RESULTS
    lines = [f"machine: {r['machine']}", ""]
    load = r["full_load_555_s"]
    lines += ["| figure | goal | measured |", "|---|---|---|",
              f"| full load 512x512x555 (derived), s | <= 0.36 | median {load['median']:.3f}, min {load['min']:.3f} |"]
    for frames, v in r["first_slice_ms"].items():
        lines.append(f"| first slice after load request, {frames} slices, ms | <= 100 | "
                     f"median {v['median_ms']:.1f}, max {v['max_ms']:.1f} |")
    ram = r["ram"]
    lines.append(f"| RAM per loaded record / decoded size | <= 1.2 | {ram['ratio']:.3f} "
                 f"({ram['rss_growth_bytes'] / 2**20:.0f} MiB for "
                 f"{ram['decoded_bytes'] / 2**20:.0f} MiB; 2nd viewer same copy: {ram['second_viewer_same_copy']}, "
                 f"+{ram['rss_growth_second_viewer_bytes'] / 2**20:.1f} MiB) |")
    enc = r["render_encode_ms"]
    lines.append(f"| WebP render+encode 512², median ms | <= 10 | {enc['webp']['median']:.2f} "
                 f"(p95 {enc['webp']['p95']:.2f}) |")
    for mode in ("own windows", "default window"):
        scroll = r["scroll_16_clients_tls"]["default"][f"webp, {mode}"]
        lines.append(f"| 16 clients scrolling 555 slices (TLS, WebP, {mode}), p95 ms / errors | <= 100 / 0 | "
                     f"{scroll['p95_ms']:.1f} / {scroll['errors']} |")
    lines += ["", "render + encode per 512² slice, in process (ms):", "", "| step | median | p95 |", "|---|---|---|"]
    lines += [f"| {k} | {v['median']:.2f} | {v['p95']:.2f} |" for k, v in enc.items()]
    lines += ["", "bytes and PSNR vs lossless PNG (100 slices, window 40/400, default quality):", "",
              "| format | mean KB | PSNR dB |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean_kb']:.1f} | {v['psnr_db']:.1f} |" for k, v in r["bytes_psnr"].items()]
    lines += ["", "paper Table 1 (2D PNG / WebP KB): "
              + ", ".join(f"{k}: {a} / {b}" for k, (a, b) in PAPER_TABLE_1.items())]
    lines += ["", "encoder settings (middle slice):", "", "| setting | KB | median ms |", "|---|---|---|"]
    lines += [f"| {k} | {v['kb']:.1f} | {v['median_ms']:.2f} |" for k, v in r["encoder_settings"].items()]
    lines += ["", "versus Orthanc (loopback HTTP, same 100 files, window 40/400, quality 90):", "",
              ("| format x clients | SIVR req/s | Orthanc req/s | ratio | SIVR p50/p95 ms | Orthanc p50/p95 ms "
               "| errors S/O | req per CPU-second S/O |"),
              "|---|---|---|---|---|---|---|---|"]
    for key, v in r["versus_orthanc"].items():
        if not isinstance(v, dict) or "orthanc" not in v:
            continue
        s, o = v["sivr"], v["orthanc"]
        lines.append(f"| {key} | {s['per_s']:.1f} | {o['per_s']:.1f} | {s['per_s'] / o['per_s']:.2f} | "
                     f"{s['p50_ms']:.1f}/{s['p95_ms']:.1f} | {o['p50_ms']:.1f}/{o['p95_ms']:.1f} | "
                     f"{s['errors']}/{o['errors']} | {s['per_cpu_s']:.0f}/{o['per_cpu_s']:.0f} |")
    lines += ["", "where a JPEG request's time goes (our node, one client): " + ", ".join(
        f"{key.split(': ')[1]} {v['sivr']['per_s']:.0f}/s, p50 {v['sivr']['p50_ms']:.3f} ms"
        for key, v in r["versus_orthanc"].items() if key.startswith("request path"))]
    lines += ["", "16 clients scrolling the 555-slice record over TLS:", "",
              "| format, windows (node) | requests | req/s | p50 ms | p95 ms | errors | KB/image |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} ({variant}) | {v['requests']} | {v['per_s']:.1f} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} | "
              f"{v['errors']} | {v['mean_kb']:.1f} |"
              for variant, runs in r["scroll_16_clients_tls"].items() for k, v in runs.items()]
    lines += ["", "WebP images encoded at method 0 because the node was busy: " + ", ".join(
        f"{variant} {health['webp_fast_encodes']}" for variant, health in r["node_health_after_scroll"].items())]
    lines += ["", "load average (1, 5, 15 min) before each section: " + ", ".join(
        f"{k} {v[0]:.1f}/{v[1]:.1f}/{v[2]:.1f}" for k, v in r["load_average_before"].items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections: loading encode orthanc scrolling")
    parser.add_argument("--client", choices=("python", "h2load"), default="python",
                        help="the load generator against Orthanc: python (http.client threads, a fixed "
                             "number of requests) or h2load (one process per client, --seconds each run)")
    parser.add_argument("--seconds", type=float, default=8, help="length of each h2load run")
    parser.add_argument("--render-workers", type=int, default=1,
                        help="gunicorn workers of the node in the server sections (server.workers)")
    parser.add_argument("--render-threads", type=int, default=16,
                        help="request threads of each of those workers (server.threads)")
    args = parser.parse_args()
    if args.client == "h2load":
        h2load.require()
    RESULTS["render_workers"] = args.render_workers
    RESULTS["render_threads"] = args.render_threads
    RESULTS["machine"] = machine.describe()
    cache = Path(tempfile.gettempdir()) / "sivr-bench-2d"
    derived = derived_series(cache / "derived-555")
    real = real_ct_files()
    sections = set(args.only or ["loading", "encode", "orthanc", "scrolling"])
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    steps = [("loading", lambda s: bench_loading(s, derived, real, args.quick)),
             ("encode", lambda s: bench_encode(s, real, args.quick)),
             ("orthanc", lambda s: bench_versus_orthanc(s, real, args.quick, args.client, args.seconds)
              if shutil.which("Orthanc") else None),
             *[("scrolling", lambda s, v=variant: bench_scrolling(s, derived, args.quick, v))
               for variant in SCROLL_VARIANTS]]
    with tempfile.TemporaryDirectory(prefix="sivr-bench-") as folder:
        setup = Setup(Path(folder), args.render_workers, args.render_threads)
        for name, step in steps:
            if name in sections:
                RESULTS.setdefault("load_average_before", {})[name] = os.getloadavg()
                step(setup)
                (out / "bench_2d.raw.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    if sections == {"loading", "encode", "orthanc", "scrolling"}:
        print(report())
    else:
        print(json.dumps(RESULTS, indent=2, default=str))


if __name__ == "__main__":
    main()
