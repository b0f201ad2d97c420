"""Archive benchmark: a SIVR render node beside Orthanc (Debian's orthanc + orthanc-dicomweb), one run.

    python bench/archive.py [--quick] [--only cstore first_image stow qido cfind metadata rendered]
                            [--render-workers N] [--stow-clients N]

Both servers run on loopback as plain processes (SIVR: `sivr serve render`, as operators run it,
with `--render-workers` gunicorn workers (default 1), its DICOM listener inside; Orthanc: a
generated JSON configuration with its own storage folder and the DicomWeb plugin), on the same
machine, given the same files. The clients (dcmtk `storescu`, Python HTTP clients) share the CPU
with the server being measured, the same for both. Every dcmtk program of the run (storescu, findscu
and Orthanc's DICOM server) has Nagle's algorithm off (`TCP_NODELAY=1`, dcmtk's switch), as SIVR's
listener has; C-STORE is also measured against an Orthanc as Debian runs it (Nagle on), which a
delayed ACK holds near 20 instances/s. Figures (issues 11, 12):

- cstore: dcmtk `storescu` of one 500-instance CT series in one association, instances/s; the series
  is DERIVED from demo_data/ct-chest-100 (each slice re-UIDed five times, positions continued; see
  bench/bench_2d_data.py), once uncompressed (Explicit VR Little Endian, as modalities send) and once
  as the demo files are (JPEG 2000 lossless); `--cstore-rounds N` sends N uncompressed series one
  after another (fresh copies) and reports the median;
- first_image: the first rendered image of a new series, after its first instance arrived by C-STORE;
- stow: STOW-RS of the same series (25 instances per request), instances/s, the requests sent one
  after the other, or by `--stow-clients` clients at once (each its share of the requests, in turn);
- qido: QIDO-RS study searches on a catalogue of 100,000 instances (SIVR; synthetic rows derived from
  the real CT's header), p50/p95;
- cfind: the same searches as C-FIND (every match returned) by dcmtk's findscu and by pynetdicom;
- metadata: WADO-RS /metadata of the 500-instance series;
- rendered: /rendered frames per second at 1, 4 and 16 clients.

A DICOMweb figure whose SIVR route answers 404 is reported as missing (the service not built yet).
Results: printed as markdown and written to bench/results/archive.raw.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from bench.bench_2d import Server, Setup, pct, run_clients, start_orthanc  # noqa: E402
from bench.bench_2d_data import derived_series  # noqa: E402
from daemons.deployment import free_port, free_ports  # noqa: E402
from daemons.render.catalogue.index import InstanceHeader, index_series  # noqa: E402
from daemons.render.ingest.service import series_record_id  # noqa: E402
from daemons.render.models import make_models, upgrade  # noqa: E402
from daemons.render.settings import KEYS  # noqa: E402
from shared.config import build_config, render_config_toml  # noqa: E402
from shared.db import database_from_config  # noqa: E402
from shared.roles import INSTITUTION_ADMIN  # noqa: E402

DEMO_CT = REPO / "demo_data" / "ct-chest-100"
CALLING = "BENCHSCU"
SIVR_AET, ORTHANC_AET = "SIVRBENCH", "ORTHANC"
#: dcmtk's environment variable turning Nagle's algorithm off on its sockets (`main`)
NO_NAGLE = "TCP_NODELAY"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
STOW_BATCH = 25
RESULTS: dict = {"missing": {}}


# --- servers ----------------------------------------------------------------------------------
class Sivr:
    """A SIVR render node under gunicorn (`Setup.workers` workers), with its DICOM listener."""

    def __init__(self, setup: Setup, name: str, complete_s: float = 60.0):
        self.setup = setup
        self.dicom_port, port = free_ports(2)
        values = setup.values(name, port, tls=False)
        values["dicom"] = {"port": self.dicom_port, "ae_title": SIVR_AET, "allowed_callers": [CALLING],
                           "series_complete_s": complete_s}
        self.values = values
        config = setup.root / f"{name}.toml"
        config.write_text(render_config_toml("render", KEYS, values))
        self.config = build_config("render", KEYS, values, config)
        upgrade(self.config)
        self.config_file = config
        self.url = f"http://127.0.0.1:{port}"
        self.server: Server | None = None

    def start(self) -> Sivr:
        # as operators run it: gunicorn with `server.workers` workers sharing one runtime folder
        args = [sys.executable, "-m", "daemons.cli", "serve", "render", "--config", str(self.config_file)]
        self.server = Server(args, self.url, self.setup.root / f"{self.config_file.stem}.log", "/healthz",
                             start_s=300)  # a loaded 2-core machine, and the kernels' warm-up
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def orthanc(setup: Setup, as_shipped: bool = False) -> tuple[Server, int]:
    """Orthanc with its DICOM server and DICOMweb plugin. Its DICOM side is dcmtk's, which leaves
    Nagle's algorithm on unless `TCP_NODELAY=1` is in its environment (`main` sets it for every
    dcmtk program of the run): `as_shipped` starts one without it, as Debian's package runs."""
    port = free_port()
    extra = {"DicomServerEnabled": True, "DicomPort": port, "DicomAet": ORTHANC_AET, "DicomCheckCalledAet": False,
             "Plugins": [DICOMWEB_PLUGIN] if Path(DICOMWEB_PLUGIN).exists() else [],
             "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False}}
    if as_shipped:
        env = {key: value for key, value in os.environ.items() if key != NO_NAGLE}
        return start_orthanc(setup.root, extra, name="orthanc-as-shipped", env=env), port
    return start_orthanc(setup.root, extra), port


# --- data -------------------------------------------------------------------------------------
def bench_series(quick: bool) -> dict[str, list[Path]]:
    cache = Path(tempfile.gettempdir()) / "sivr-bench-archive"
    slices = 100 if quick else 500
    source = sorted(DEMO_CT.glob("*.dcm"))
    return {"uncompressed": derived_series(cache / f"uncompressed-{slices}", slices, source, uncompressed=True),
            "jpeg2000": derived_series(cache / f"j2k-{slices}", slices, source)}


def uids_of(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


# --- (a) C-STORE ------------------------------------------------------------------------------
def storescu(port: int, called: str, files: list[Path], syntax: str) -> float:
    args = ["storescu", "-aet", CALLING, "-aec", called, *(["-xv"] if syntax == "jpeg2000" else []),
            "127.0.0.1", str(port), *map(str, files)]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return elapsed


def sivr_files(sivr: Sivr, series_uid: str) -> int:
    record_id = series_record_id(sivr.setup.institution, series_uid)
    reply = requests.get(f"{sivr.url}/api/v1/records/{record_id}", headers=sivr.setup.headers, timeout=60)
    return int(reply.json().get("files", 0)) if reply.status_code == 200 else 0


def orthanc_instances(server: Server, series_uid: str) -> int:
    found = requests.post(f"{server.url}/tools/lookup", data=series_uid, timeout=60).json()
    if not found:
        return 0
    return len(requests.get(f"{server.url}/series/{found[0]['ID']}", timeout=60).json()["Instances"])


def bench_cstore(sivr: Sivr, theirs: Server, their_port: int, data: dict[str, list[Path]], rounds: int = 1) -> None:
    """Each syntax's series to both servers in turn; with `rounds` > 1 the uncompressed one again
    as fresh copies (new UIDs), series after series as a modality sends them: the series completed
    meanwhile have their derived data built beside the C-STOREs, on both servers' cores.

    Then each syntax's first series once more to an Orthanc as Debian's package runs it (Nagle's
    algorithm on, `orthanc(as_shipped=True)`): its C-STORE responses wait for storescu's delayed
    ACK, about 40 ms each, which bounds it near 20 instances/s whatever its own speed."""
    results = {}
    for syntax, files in data.items():
        tries = []
        for turn in range(rounds if syntax == "uncompressed" else 1):
            sent = files if turn == 0 else derived_series(sivr.setup.root / f"cstore-{turn}", len(files), files[:100])
            _, series_uid = uids_of(sent[0])
            ours_s = storescu(sivr.dicom_port, SIVR_AET, sent, syntax)
            orthanc_s = storescu(their_port, ORTHANC_AET, sent, syntax)
            stored = (sivr_files(sivr, series_uid), orthanc_instances(theirs, series_uid))
            tries.append({"sivr_s": ours_s, "orthanc_s": orthanc_s, "ratio": orthanc_s / ours_s,
                          "stored_sivr_orthanc": stored})
            print(f"C-STORE {syntax}: SIVR {len(sent) / ours_s:.1f}/s, Orthanc {len(sent) / orthanc_s:.1f}/s, "
                  f"stored {stored}", flush=True)
        middle = sorted(tries, key=lambda t: t["ratio"])[len(tries) // 2]  # the median round (the upper one of two)
        results[syntax] = {"instances": len(files), **middle, "sivr_per_s": len(files) / middle["sivr_s"],
                           "orthanc_per_s": len(files) / middle["orthanc_s"], "rounds": tries}
    shipped, shipped_port = orthanc(sivr.setup, as_shipped=True)
    try:
        for syntax, files in data.items():
            elapsed = storescu(shipped_port, ORTHANC_AET, files, syntax)
            results[syntax]["orthanc_as_shipped_per_s"] = len(files) / elapsed
            print(f"C-STORE {syntax}: Orthanc as shipped (Nagle on) {len(files) / elapsed:.1f}/s", flush=True)
    finally:
        shipped.stop()
    RESULTS["cstore"] = results


# --- first image after the first instance arrived ----------------------------------------------
def bench_first_image(sivr: Sivr, source: list[Path], tries: int) -> None:
    """C-STORE the first instance of a new series, then load it and ask for its frame over HTTP."""
    folder = sivr.setup.root / "first-image"
    folder.mkdir(exist_ok=True)
    times, stores = [], []
    for attempt in range(tries):
        ds = pydicom.dcmread(source[attempt % len(source)])
        ds.SeriesInstanceUID, ds.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{attempt}.dcm"
        ds.save_as(path, enforce_file_format=True)
        stores.append(storescu(sivr.dicom_port, SIVR_AET, [path], "jpeg2000") * 1000)
        arrived = time.perf_counter()  # storescu has its C-STORE response: the instance is stored
        record_id = series_record_id(sivr.setup.institution, str(ds.SeriesInstanceUID))
        headers = sivr.setup.headers
        session = requests.Session()
        assert session.post(f"{sivr.url}/api/v1/records/{record_id}/load", headers=headers,
                            timeout=60).status_code == 202
        frame = session.get(f"{sivr.url}/api/v1/records/{record_id}/frames/0?format=webp", headers=headers,
                            timeout=60)
        assert frame.status_code == 200, frame.text
        times.append((time.perf_counter() - arrived) * 1000)
    RESULTS["first_image_ms"] = {"tries": tries, "median": statistics.median(times), "max": max(times),
                                 "storescu_one_instance_ms_median": statistics.median(stores)}
    print(f"first image after C-STORE: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms", flush=True)


# --- DICOMweb ---------------------------------------------------------------------------------
def multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(url: str, headers_of, files: list[Path], clients: int = 1) -> tuple[float, list[int]]:
    """Seconds to store `files` by STOW-RS in requests of STOW_BATCH, and the statuses. One client
    times its requests alone (the bodies are built between them); several send theirs at once,
    bodies built beforehand, and the wall time from the first request to the last answer counts."""
    batches = [files[start:start + STOW_BATCH] for start in range(0, len(files), STOW_BATCH)]
    if clients == 1:
        session, statuses, elapsed = requests.Session(), [], 0.0
        for batch in batches:
            body, content_type = multipart(batch)
            headers = {**headers_of(), "Content-Type": content_type, "Accept": "application/dicom+json"}
            t0 = time.perf_counter()
            statuses.append(session.post(url, data=body, timeout=600, headers=headers).status_code)
            elapsed += time.perf_counter() - t0
        return elapsed, statuses
    bodies = [multipart(batch) for batch in batches]
    shares = [bodies[client::clients] for client in range(clients)]

    def send(share: list[tuple[bytes, str]]) -> list[int]:
        session = requests.Session()
        return [session.post(url, data=body, timeout=600, headers={
            **headers_of(), "Content-Type": content_type, "Accept": "application/dicom+json"}).status_code
            for body, content_type in share]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answered = list(pool.map(send, shares))
    return time.perf_counter() - t0, [status for share in answered for status in share]


def sivr_has(sivr: Sivr, path: str) -> bool:
    reply = requests.get(f"{sivr.url}/dicomweb{path}", headers=sivr.setup.headers, timeout=60)
    return reply.status_code != 404 or "not_found" in reply.text


def bench_stow(sivr: Sivr, theirs: Server, files: list[Path], clients: int = 1) -> None:
    if not sivr_has(sivr, "/studies"):
        RESULTS["missing"]["stow"] = "SIVR has no QIDO/STOW route /dicomweb/studies (DICOMweb not merged)"
        return
    # a fresh copy of the series (new UIDs): neither server holds it yet
    folder = sivr.setup.root / "stow"
    renamed = derived_series(folder, len(files), files[:100])
    ours_s, ours = stow(f"{sivr.url}/dicomweb/studies", Tokens(lambda: sivr.setup.headers), renamed, clients)
    theirs_s, their_statuses = stow(f"{theirs.url}/dicom-web/studies", dict, renamed, clients)
    _, series_uid = uids_of(renamed[0])
    RESULTS["stow"] = {"instances": len(renamed), "per_request": STOW_BATCH, "clients": clients,
                       "sivr_workers": sivr.setup.workers, "sivr_per_s": len(renamed) / ours_s,
                       "orthanc_per_s": len(renamed) / theirs_s, "ratio": theirs_s / ours_s,
                       "sivr_statuses": sorted(set(ours)), "orthanc_statuses": sorted(set(their_statuses)),
                       "stored_sivr_orthanc": (sivr_files(sivr, series_uid), orthanc_instances(theirs, series_uid))}
    print(f"STOW-RS: SIVR {len(renamed) / ours_s:.1f}/s, Orthanc {len(renamed) / theirs_s:.1f}/s", flush=True)


class Tokens:
    """Bearer headers renewed every 30 s (node tokens live 60 s), as a client reuses its token."""

    def __init__(self, mint):
        self.mint, self.headers, self.at = mint, {}, -1e9

    def __call__(self) -> dict[str, str]:
        if time.monotonic() - self.at > 30:
            self.headers, self.at = self.mint(), time.monotonic()
        return self.headers


def timed_gets(urls: list[str], headers_of) -> tuple[list[float], list[int]]:
    session = requests.Session()
    times, statuses = [], []
    for url in urls:
        headers = {**headers_of(), "Accept": "application/dicom+json"}
        t0 = time.perf_counter()
        reply = session.get(url, headers=headers, timeout=120)
        times.append((time.perf_counter() - t0) * 1000)
        statuses.append(reply.status_code)
    return times, statuses


def bench_metadata(sivr: Sivr, theirs: Server, files: list[Path], rounds: int) -> None:
    study, series = uids_of(files[0])
    path = f"/studies/{study}/series/{series}/metadata"
    if not sivr_has(sivr, path):
        RESULTS["missing"]["metadata"] = "SIVR has no WADO-RS /metadata route (DICOMweb not merged)"
        return
    ours, ours_status = timed_gets([f"{sivr.url}/dicomweb{path}"] * rounds, Tokens(lambda: sivr.setup.headers))
    mine, their_status = timed_gets([f"{theirs.url}/dicom-web{path}"] * rounds, dict)
    RESULTS["metadata"] = {"instances": len(files), "rounds": rounds,
                           "sivr_ms": {"p50": pct(ours, 50), "p95": pct(ours, 95)},
                           "orthanc_ms": {"p50": pct(mine, 50), "p95": pct(mine, 95)},
                           "statuses": [sorted(set(ours_status)), sorted(set(their_status))]}
    print(f"WADO-RS metadata: SIVR p50 {pct(ours, 50):.0f} ms, Orthanc p50 {pct(mine, 50):.0f} ms", flush=True)


def bench_rendered(sivr: Sivr, theirs: Server, files: list[Path], quick: bool) -> None:
    study, series = uids_of(files[0])
    instances = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    path = f"/studies/{study}/series/{series}/instances/{instances[0]}/frames/1/rendered"
    if not sivr_has(sivr, path):
        RESULTS["missing"]["rendered"] = "SIVR has no /rendered route (DICOMweb rendered resources not merged)"
        return
    # both warmed: SIVR loads the series into RAM at the first frame, Orthanc has its files on disk
    record_id = series_record_id(sivr.setup.institution, series)
    requests.post(f"{sivr.url}/api/v1/records/{record_id}/load", headers=sivr.setup.headers, timeout=60)
    time.sleep(5)
    results = {}
    query = "?window=40,400,linear"
    for clients in (1, 4, 16):
        per_client = max(10, (80 if quick else 320) // clients)  # each run well inside a token's 60 s

        def urls(root: str, clients: int = clients, per_client: int = per_client) -> list[list[tuple[str, dict]]]:
            frame = "{}/studies/" + study + "/series/" + series + "/instances/{}/frames/1/rendered" + query
            return [[(frame.format(root, instances[(c * 31 + k) % len(instances)]), {"Accept": "image/jpeg"})
                     for k in range(per_client)] for c in range(clients)]

        ours = run_clients(urls(f"{sivr.url}/dicomweb"), True, sivr.setup.headers)
        mine = run_clients(urls(f"{theirs.url}/dicom-web"), True, {})
        results[clients] = {"sivr": ours, "orthanc": mine}
        print(f"/rendered x{clients}: SIVR {ours['per_s']:.1f}/s ({ours['errors']} errors), "
              f"Orthanc {mine['per_s']:.1f}/s ({mine['errors']} errors)", flush=True)
    RESULTS["rendered"] = results


def admin_headers(setup: Setup) -> dict[str, str]:
    """A token of an administrator of the node's institution (valid 60 s, as the toplevel mints them)."""
    token, _ = setup.issuer.issue(setup.user_id, "bench-admin", INSTITUTION_ADMIN, setup.institution,
                                  session_id=setup.session_id)
    return {"Authorization": f"Bearer {token}"}


def fill_catalogue(sivr: Sivr, template: Path, instances: int, per_study: int) -> None:
    """Catalogue rows of `instances` synthetic instances in the node's database (`catalogue_rows`)."""
    database = database_from_config(sivr.config)
    started = time.perf_counter()
    with database.connection_context():
        catalogue_rows(make_models(database).catalogue, template, instances, per_study)
    database.close()
    RESULTS["qido_catalogue_fill_s"] = time.perf_counter() - started


def catalogue_rows(catalogue, template: Path, instances: int, per_study: int) -> None:
    """`instances` synthetic instances (the real CT header of `template`, new names, ids, dates and
    UIDs) in studies of `per_study`, indexed with the node's own code; the same every time."""
    header = pydicom.dcmread(template, stop_before_pixels=True)
    rng = random.Random(11)
    names = ["SMITH", "JONES", "MUELLER", "DUBOIS", "ROSSI", "GARCIA", "NOVAK", "KOWALSKI", "JANSEN", "NILSSON"]
    for study_index in range(instances // per_study):
        ds = header.copy()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.PatientName = f"{rng.choice(names)}^{rng.choice(names).title()}{study_index}"
        ds.PatientID = f"P{study_index // 3:06d}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        ds.StudyDate = f"{rng.randint(2005, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        ds.AccessionNumber = f"A{study_index:08d}"
        ds.Modality = rng.choice(["CT", "CT", "MR", "CR", "US"])
        headers = [InstanceHeader(ds, "0" * 64, 0)]
        for index in range(1, per_study):  # the catalogue reads only these of the other instances
            item = pydicom.Dataset()
            item.SOPClassUID, item.SOPInstanceUID = ds.SOPClassUID, pydicom.uid.generate_uid()
            item.InstanceNumber = index + 1
            headers.append(InstanceHeader(item, "0" * 64, index))
        # catalogue rows only: a `stored_record` row without its store folder is dropped at start-up
        index_series(catalogue, uuid.uuid4().hex + uuid.uuid4().hex, headers)


def study_searches(rounds: int) -> list[str]:
    """The QIDO-RS / C-FIND study searches of both query figures (a fixed mix, `key=value&...`)."""
    rng = random.Random(5)
    queries = []
    for _ in range(rounds):
        kind = rng.randrange(5)
        if kind == 0:
            queries.append(f"PatientName={rng.choice(['SMITH', 'JONES', 'NOVAK', 'ROSSI'])}*&limit=25")
        elif kind == 1:
            year = rng.randint(2005, 2024)
            queries.append(f"StudyDate={year}0101-{year}0331&limit=25")
        elif kind == 2:
            queries.append(f"PatientID=P{rng.randrange(33000):06d}")
        elif kind == 3:
            queries.append(f"AccessionNumber=A{rng.randrange(1000):08d}")
        else:
            queries.append("ModalitiesInStudy=MR&limit=25&includefield=NumberOfStudyRelatedInstances")
    return queries


def bench_qido(sivr: Sivr, rounds: int) -> None:
    if not sivr_has(sivr, "/studies?limit=1"):
        RESULTS["missing"]["qido"] = "SIVR has no QIDO-RS route /dicomweb/studies (DICOMweb not merged)"
        return
    queries = study_searches(rounds)
    # an administrator of the institution may list every patient's studies (a physician names a patient or study)
    tokens = Tokens(lambda: admin_headers(sivr.setup))
    cat_count = requests.get(f"{sivr.url}/dicomweb/studies?limit=1", headers=tokens(), timeout=60)
    times, statuses = timed_gets([f"{sivr.url}/dicomweb/studies?{q}" for q in queries], tokens)
    RESULTS["qido"] = {"queries": len(queries), "p50_ms": pct(times, 50), "p95_ms": pct(times, 95),
                       "max_ms": max(times), "statuses": sorted(set(statuses)),
                       "probe_status": cat_count.status_code}
    print(f"QIDO-RS studies on the 100k catalogue: p50 {pct(times, 50):.1f} ms, p95 {pct(times, 95):.1f} ms",
          flush=True)


def cfind_identifier(search: str) -> pydicom.Dataset:
    """A study-level C-FIND identifier for a QIDO-RS search of `study_searches` (`limit` has no
    C-FIND equivalent: every match is returned), with the keys a study search usually asks for."""
    identifier = pydicom.Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber",
                    "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
        setattr(identifier, keyword, "")
    for pair in search.split("&"):
        keyword, value = pair.split("=", 1)
        if keyword not in ("limit", "includefield"):
            setattr(identifier, keyword, value)
    return identifier


def bench_cfind(sivr: Sivr, rounds: int) -> None:
    """C-FIND at STUDY level (study root) over one association, the same searches as QIDO-RS.

    `limit` has no C-FIND equivalent: every match is returned (a name search matches about a
    tenth of the 2,000 studies); each answer carries the keys a study search usually asks for.
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    from daemons.render.dimse.listener import set_protocol_logging
    from daemons.render.statuses import PENDING, PENDING_WITH_WARNING

    # the client is a stand-in for a PACS or a workstation: it does not dump each answer to text for a
    # log nobody reads (dcmtk's findscu does not either), or it would measure pynetdicom, not the node
    set_protocol_logging("info")
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", sivr.dicom_port, ae_title=SIVR_AET)
    if not association.is_established:
        RESULTS["missing"]["cfind"] = "the association to SIVR's DICOM listener was refused"
        return
    # without it each request's second PDU waits ~40 ms for the server's delayed ACK (`findscu_times`)
    association.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times, answers = [], []
    by_kind: dict[str, list[tuple[float, int]]] = {}
    for search in study_searches(rounds):
        identifier = cfind_identifier(search)
        t0 = time.perf_counter()
        found = sum(1 for status, _ in association.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
                    if status and status.Status in (PENDING, PENDING_WITH_WARNING))
        times.append((time.perf_counter() - t0) * 1000)
        answers.append(found)
        by_kind.setdefault(search.split("=", 1)[0], []).append((times[-1], found))
    association.release()
    RESULTS["cfind_pynetdicom"] = {
        "queries": len(times), "p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "max_ms": max(times),
        "answers_median": statistics.median(answers), "answers_max": max(answers),
        "by_key": {key: {"p50_ms": pct([t for t, _ in v], 50), "answers_median": statistics.median([n for _, n in v])}
                   for key, v in by_kind.items()}}
    print(f"C-FIND studies on the 100k catalogue, pynetdicom client: p50 {pct(times, 50):.1f} ms, "
          f"p95 {pct(times, 95):.1f} ms", flush=True)
    searches = study_searches(rounds)
    times = findscu_times(sivr.dicom_port, searches)
    if len(times) != len(searches):
        RESULTS["missing"]["cfind"] = f"findscu answered {len(times)} of {len(searches)} searches"
        return
    RESULTS["cfind"] = {"client": "dcmtk findscu", "queries": len(times), "p50_ms": pct(times, 50),
                        "p95_ms": pct(times, 95), "max_ms": max(times),
                        "by_key": {key: {"p50_ms": pct([t for t, s in zip(times, searches, strict=True)
                                                        if s.startswith(key + "=")], 50)}
                                   for key in sorted({s.split("=", 1)[0] for s in searches})}}
    print(f"C-FIND studies on the 100k catalogue, findscu: p50 {pct(times, 50):.1f} ms, p95 {pct(times, 95):.1f} ms",
          flush=True)


#: dcmtk's logger at info level (findscu's -v), each line stamped with the time of day to the microsecond
FINDSCU_LOG_CONFIG = """log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%Q} %m%n
"""


def findscu_times(port: int, searches: list[str]) -> list[float]:
    """Each search's time in ms as dcmtk's findscu (a C++ client, as PACS and workstations are) sees
    it: every search one C-FIND of one association, from the log line of its request to the line
    of its final response (answers not printed: `-sr`); only searches that ended in Success count.
    With `TCP_NODELAY=1` (NO_NAGLE),
    dcmtk's own switch (Debian's build leaves Nagle's algorithm on): otherwise the request's second
    PDU (its identifier) waits for the server's delayed ACK of the first, 40 ms on Linux, whatever
    the server. The pynetdicom client above sets it too."""
    with tempfile.TemporaryDirectory(prefix="sivr-bench-findscu-") as folder:
        files = []
        for index, search in enumerate(searches):
            path = Path(folder) / f"q{index:04d}.dcm"
            cfind_identifier(search).save_as(path, implicit_vr=True, little_endian=True)
            files.append(str(path))
        (Path(folder) / "log.cfg").write_text(FINDSCU_LOG_CONFIG)
        done = subprocess.run(["findscu", "-S", "-aet", CALLING, "-aec", SIVR_AET, "-sr",
                               "-lc", str(Path(folder) / "log.cfg"), "127.0.0.1", str(port), *files],
                              capture_output=True, text=True, timeout=600, env={**os.environ, NO_NAGLE: "1"})
    times, sent = [], None
    for line in (done.stdout + done.stderr).splitlines():
        stamp, _, message = line.partition(" ")
        if message.startswith("Sending Find Request"):
            sent = stamp
        elif message.startswith("Received Final Find Response") and sent and "Success" in message:
            times.append((seconds_of_day(stamp) - seconds_of_day(sent)) % 86400 * 1000)  # across midnight too
            sent = None
    return times


def seconds_of_day(stamp: str) -> float:
    """`HH:MM:SS.mmm.uuu` (log4cplus's `%Q`: milliseconds with their fraction) in seconds."""
    hours, minutes, seconds = stamp.split(":")
    whole, milliseconds = seconds.split(".", 1)
    return int(hours) * 3600 + int(minutes) * 60 + int(whole) + float(milliseconds) / 1000


# --- report -----------------------------------------------------------------------------------
def report() -> str:
    r = RESULTS
    lines = [f"machine: {r['machine']}", f"date: {r['date']}", f"load average before: {r.get('load_before')}", "",
             "| figure | goal | SIVR | Orthanc | ratio |", "|---|---|---|---|---|"]
    for syntax, v in r.get("cstore", {}).items():
        rounds = len(v.get("rounds", []))
        which = f", median of {rounds} series" if rounds > 1 else ""
        lines.append(f"| C-STORE {v['instances']}-instance CT ({syntax}){which}, instances/s | >= 2x Orthanc | "
                     f"{v['sivr_per_s']:.1f} | {v['orthanc_per_s']:.1f} | {v['ratio']:.2f}x |")
        if "orthanc_as_shipped_per_s" in v:
            shipped = v["orthanc_as_shipped_per_s"]
            lines.append(f"| the same, Orthanc as Debian runs it (Nagle's algorithm on) | | {v['sivr_per_s']:.1f} | "
                         f"{shipped:.1f} | {v['sivr_per_s'] / shipped:.2f}x |")
    if "first_image_ms" in r:
        v = r["first_image_ms"]
        lines.append(f"| first image after its instance arrived by C-STORE, ms | <= 1000 | "
                     f"median {v['median']:.0f}, max {v['max']:.0f} | | |")
    if "stow" in r:
        v = r["stow"]
        lines.append(f"| STOW-RS {v['instances']} instances ({v['per_request']}/request, {v.get('clients', 1)} "
                     f"client(s), {v.get('sivr_workers', 1)} SIVR worker(s)), instances/s | "
                     f">= 2x Orthanc | {v['sivr_per_s']:.1f} | {v['orthanc_per_s']:.1f} | {v['ratio']:.2f}x |")
    for section, search in (("cfind", "C-FIND study search (all matches), dcmtk findscu"),
                            ("cfind_pynetdicom", "C-FIND study search (all matches), pynetdicom client"),
                            ("qido", "QIDO-RS study search")):
        if section in r:
            v = r[section]
            lines.append(f"| {search}, 100,000 instances, ms | p95 <= 50 | p50 {v['p50_ms']:.1f}, "
                         f"p95 {v['p95_ms']:.1f} | not loaded | |")
    if "metadata" in r:
        v = r["metadata"]
        lines.append(f"| WADO-RS /metadata of the {v['instances']}-instance series, ms | <= 200 | "
                     f"p50 {v['sivr_ms']['p50']:.0f}, p95 {v['sivr_ms']['p95']:.0f} | "
                     f"p50 {v['orthanc_ms']['p50']:.0f}, p95 {v['orthanc_ms']['p95']:.0f} | |")
    for clients, v in r.get("rendered", {}).items():
        s, o = v["sivr"], v["orthanc"]
        lines.append(f"| /rendered JPEG, {clients} client(s), frames/s | | {s['per_s']:.1f} "
                     f"(p95 {s['p95_ms']:.0f} ms, {s['errors']} errors) | {o['per_s']:.1f} "
                     f"(p95 {o['p95_ms']:.0f} ms, {o['errors']} errors) | {s['per_s'] / o['per_s']:.2f}x |")
    for figure, why in r["missing"].items():
        lines.append(f"| {figure} | | missing: {why} | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 instances and fewer repetitions (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections: cstore first_image stow qido cfind metadata rendered")
    parser.add_argument("--render-workers", type=int, default=1,
                        help="gunicorn workers of SIVR's node (a node runs one per core, at most 8)")
    parser.add_argument("--stow-clients", type=int, default=1, help="STOW-RS clients sending at once")
    parser.add_argument("--cstore-rounds", type=int, default=1,
                        help="uncompressed series sent by C-STORE one after another (fresh copies); the median counts")
    args = parser.parse_args()
    # dcmtk's switch for its programs (storescu, findscu, Orthanc's DICOM server): Debian's build
    # leaves Nagle's algorithm on, and then each request or response of two PDUs waits ~40 ms for
    # the other side's delayed ACK. SIVR's listener turns it off itself; both servers are measured
    # on the same terms (Orthanc as shipped too, for C-STORE: `bench_cstore`).
    os.environ[NO_NAGLE] = "1"
    for tool in ("storescu", "Orthanc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y dcmtk orthanc orthanc-dicomweb")
    RESULTS["machine"] = f"{machine.describe()}, Orthanc {orthanc_version()}"
    RESULTS["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS["load_before"] = os.getloadavg()
    sections = set(args.only or ["cstore", "first_image", "stow", "qido", "cfind", "metadata", "rendered"])
    data = bench_series(args.quick)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sivr-bench-archive-") as folder:
        setup = Setup(Path(folder), args.render_workers)
        sivr = Sivr(setup, "sivr")
        if sections & {"qido", "cfind"}:
            fill_catalogue(sivr, data["uncompressed"][0], 10_000 if args.quick else 100_000, 50)
        sivr.start()
        theirs, their_port = orthanc(setup)
        try:
            if "cstore" not in sections and sections & {"metadata", "rendered"}:  # they read the stored series
                storescu(sivr.dicom_port, SIVR_AET, data["uncompressed"], "uncompressed")
                storescu(their_port, ORTHANC_AET, data["uncompressed"], "uncompressed")
            steps = [("cstore", lambda: bench_cstore(sivr, theirs, their_port, data, args.cstore_rounds)),
                     ("first_image", lambda: bench_first_image(sivr, data["jpeg2000"], 5 if args.quick else 20)),
                     ("stow", lambda: bench_stow(sivr, theirs, data["uncompressed"], args.stow_clients)),
                     ("qido", lambda: bench_qido(sivr, 100 if args.quick else 400)),
                     ("cfind", lambda: bench_cfind(sivr, 100 if args.quick else 400)),
                     ("metadata", lambda: bench_metadata(sivr, theirs, data["uncompressed"], 5 if args.quick else 20)),
                     ("rendered", lambda: bench_rendered(sivr, theirs, data["uncompressed"], args.quick))]
            for name, step in steps:
                if name in sections:
                    step()
                    (out / "archive.raw.json").write_text(json.dumps(RESULTS, indent=2, default=str))
        finally:
            sivr.stop()
            theirs.stop()
    print(report())


def orthanc_version() -> str:
    done = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.split("\n")[0].removeprefix("Orthanc ").strip()


if __name__ == "__main__":
    main()
