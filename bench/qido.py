"""QIDO-RS study search on a catalogue of 100,000 instances (issue 12's figure: p95 <= 50 ms).

    python bench/qido.py [--instances 100000] [--repeat 200] [--pg-url postgresql://user:pw@host/postgres]

Starts a deployment on loopback (gunicorn + TLS, as `sivr demo`), fills the first render node's
catalogue with synthetic patients, studies, series and instances derived from the demo CT's
header (bulk inserts into its database: the catalogue is what a search reads; no pixel data is
needed), then times study searches over HTTPS with dicomweb-client's requests session, one
client, keep-alive, sequential: p50/p95/max per query form. It also prints SQLite's plan of each
search, to show the indexes it uses. With `--pg-url` (a role that may create databases) the node's
database is a fresh PostgreSQL database on that server instead of its SQLite file (dropped at the
end), and the plans are PostgreSQL's. Results: printed as markdown and written to
bench/results/qido.raw.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from bench.pg import fresh_database  # noqa: E402
from daemons.demo import start_deployment  # noqa: E402
from daemons.render.catalogue.index import make_catalogue_models  # noqa: E402
from daemons.render.catalogue.matching import select, where  # noqa: E402
from shared.db import close_database, connect_database  # noqa: E402

CT = REPO / "demo_data" / "ct-chest-100"
SERIES_PER_STUDY = 2
INSTANCES_PER_SERIES = 50
SURNAMES = ["SMITH", "MÜLLER", "GARCIA", "NGUYEN", "ROSSI", "DUBOIS", "KOWALSKI", "TANAKA", "SILVA", "JOHANSSON"]
GIVEN = ["ANNA", "JOHN", "ZOË", "LUCA", "MARIA", "PETER", "AIKO", "JOSÉ", "EVA", "OMAR"]
MODALITIES = ["CT", "MR", "PT", "CR", "US"]


def fill(url: str, instances: int, seed: int = 7) -> dict:
    """Bulk-insert `instances` instances (2 series of 50 per study, 1-3 studies per patient)."""
    rng = random.Random(seed)
    header = pydicom.dcmread(sorted(CT.glob("*.dcm"))[0], stop_before_pixels=True)
    database = connect_database(url)
    cat = make_catalogue_models(database)
    studies_wanted = instances // (SERIES_PER_STUDY * INSTANCES_PER_SERIES)
    patients, studies, series, rows = [], [], [], []
    started = time.perf_counter()
    with database.atomic():
        patient_id = study_id = None
        for number in range(studies_wanted):
            if patient_id is None or rng.random() < 0.5:
                patients.append(f"BENCH-{number:07d}")
                patient_id = cat.Patient.insert(
                    patient_id=patients[-1], issuer="",
                    name=f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}", sex=rng.choice("FM"),
                    birth_date=f"{rng.randint(1930, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}").execute()
            modalities = rng.sample(MODALITIES, SERIES_PER_STUDY)
            study_uid = f"2.25.{7_000_000 + number}"  # short: the real UID plus a suffix would pass 64 chars
            study_id = cat.Study.insert(
                study_uid=study_uid, patient=patient_id,
                study_date=f"{rng.randint(2010, 2026)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                study_time=f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}00",
                accession_number=f"A{number:09d}", study_id=str(number),
                description=str(header.get("StudyDescription", "")) or "CT CAP",
                referring_physician=f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}",
                modalities="\\".join(sorted(modalities)), series_count=SERIES_PER_STUDY,
                instance_count=SERIES_PER_STUDY * INSTANCES_PER_SERIES).execute()
            studies.append(study_uid)
            for position, modality in enumerate(modalities, start=1):
                record_id = f"{number:056d}{position:08d}"
                cat.Series.insert(id=record_id, series_uid=f"{study_uid}.{position}", study=study_id,
                                  modality=modality, series_number=position,
                                  description=str(header.get("SeriesDescription", "")),
                                  instance_count=INSTANCES_PER_SERIES).execute()
                series.append(record_id)
                rows += [{"sop_instance_uid": f"{study_uid}.{position}.{i}", "series": record_id,
                          "sop_class_uid": str(header.SOPClassUID), "instance_number": i, "sha256": "0" * 64,
                          "blob": i - 1} for i in range(1, INSTANCES_PER_SERIES + 1)]
                if len(rows) >= 5000:
                    cat.Instance.insert_many(rows).execute()
                    rows = []
        if rows:
            cat.Instance.insert_many(rows).execute()
    database.execute_sql("ANALYZE")
    filled = {"patients": len(patients), "studies": len(studies), "series": len(series),
              "instances": cat.Instance.select().count(), "fill_s": round(time.perf_counter() - started, 1),
              "some_patient": patients[len(patients) // 2], "some_study": studies[len(studies) // 3]}
    close_database(database)
    return filled


def plans(url: str, patient_id: str) -> dict[str, list[str]]:
    """The database's query plan of the searches (which index each uses)."""
    database = connect_database(url)
    explain = "EXPLAIN QUERY PLAN " if url.startswith("sqlite") else "EXPLAIN "
    cat = make_catalogue_models(database)
    found = {}
    for label, matches in [("PatientID", [("PatientID", patient_id)]),
                           ("StudyDate range", [("StudyDate", "20240101-20240131")]),
                           ("StudyInstanceUID", [("StudyInstanceUID", "1.2.3")])]:
        query = where(select(cat, "STUDY", cat.Study.id), cat, matches).order_by(
            cat.Study.study_date.desc(), cat.Study.study_time.desc(), cat.Study.id).limit(100)
        sql, params = query.sql()
        found[label] = [row[-1] for row in database.execute_sql(explain + sql, params).fetchall()]
    close_database(database)
    return found


NODE = "render-1-1"


@contextlib.contextmanager
def node_database(admin_url: str | None) -> Iterator[str | None]:
    """The URL of a fresh PostgreSQL database for the node (`bench.pg`); None (the node's SQLite
    file) without `admin_url`."""
    if admin_url is None:
        yield None
        return
    with fresh_database(admin_url, "sivr_bench_qido") as (_name, url):
        yield url


def timed(session: requests.Session, url: str, params: dict, repeat: int, expect: tuple[int, ...] = (200, 204)) -> dict:
    times = []
    results = 0
    for _ in range(repeat):
        started = time.perf_counter()
        reply = session.get(url, params=params, headers={"Accept": "application/dicom+json"}, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code in expect, (reply.status_code, reply.text[:300])
        results = len(reply.json()) if reply.status_code == 200 else 0
    times.sort()
    return {"results": results, "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 1), "max_ms": round(times[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--pg-url", help="the node's catalogue on this PostgreSQL server (a role that may create "
                                         "databases) instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sivr-bench-qido-") as folder, node_database(args.pg_url) as pg_url:
        deployment = start_deployment(Path(folder), database_urls={NODE: pg_url} if pg_url else None)
        try:
            node = deployment.layout.first("render")
            assert node is not None and node.name == NODE, "the deployment's first render node"
            db_url = pg_url or f"sqlite:///{Path(folder) / 'data' / node.name / 'render.db'}"
            filled = fill(db_url, args.instances)
            # the admin's session: a token exchanged for the node, renewed before it expires
            session = deployment.client("admin").session
            url = f"{node.url}/dicomweb/studies"
            forms = {
                "PatientID (one patient)": {"PatientID": filled["some_patient"]},
                "StudyInstanceUID (one study)": {"StudyInstanceUID": filled["some_study"]},
                "StudyDate one month, limit 100": {"StudyDate": "20240101-20240131", "limit": 100},
                "PatientName SMI*, limit 100": {"PatientName": "SMI*", "limit": 100},
                "ModalitiesInStudy MR + StudyDate year, limit 100": {"ModalitiesInStudy": "MR",
                                                                     "StudyDate": "20250101-20251231", "limit": 100},
                "fuzzy PatientName 'zoe mul', limit 25": {"PatientName": "zoe mul", "fuzzymatching": "true",
                                                          "limit": 25},
                "all studies, limit 101 (OHIF's study list)": {"limit": 101, "offset": 0,
                                                               "includefield": "00081030,00080060"},
            }
            # the floor of this machine: token check, one indexed SELECT, a JSON error; no search, no audit write
            floor = timed(session, f"{node.url}/dicomweb/studies/1.2.826.0.1.3680043.99/series", {}, args.repeat,
                          expect=(404,))
            results = {"(floor: unknown study, 404, no audit write)": floor}
            results.update({label: timed(session, url, params, args.repeat) for label, params in forms.items()})
            report = {"machine": machine.describe(),
                      "load_average": os.getloadavg(), "cpus": os.cpu_count(), "catalogue": filled,
                      "repeat": args.repeat, "searches": results, "plans": plans(db_url, filled["some_patient"]),
                      "database": "PostgreSQL" if pg_url else "SQLite"}
        finally:
            deployment.stop()
    print(f"\nmachine: {report['machine']}, {report['cpus']} CPUs, load average {report['load_average']}")
    print(f"\nQIDO-RS study search, catalogue of {filled['instances']:,} instances in {report['database']} "
          f"({filled['studies']:,} studies, {filled['patients']:,} patients), {args.repeat} searches each, "
          "one HTTPS client, sequential\n")
    print("| search | results | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|")
    for label, figures in results.items():
        print(f"| {label} | {figures['results']} | {figures['p50_ms']} | {figures['p95_ms']} | {figures['max_ms']} |")
    print(f"\n{report['database']} plans:", json.dumps(report["plans"], indent=2))
    out = REPO / "bench" / "results" / "qido.raw.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
