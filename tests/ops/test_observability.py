"""Observability of the real daemons (`sivr serve` under gunicorn, TLS, one deployment):
readiness with the database gone, metrics summed over a layer's workers, JSON logs with request
ids, and the audit trail arriving at a syslog listener on loopback."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from daemons.demo import find_or_create_patient
from tests.syslog_peer import Listener

pytestmark = pytest.mark.slow


@pytest.fixture
def syslog():
    """A TCP and a UDP syslog receiver on loopback."""
    listeners = {"tcp": Listener("tcp"), "udp": Listener("udp")}
    yield listeners
    for listener in listeners.values():
        listener.close()


def _export_audit_to(layout, instance_name: str, url: str) -> None:
    config = Path(next(i.config for i in layout.instances if i.name == instance_name))
    text = config.read_text()
    assert '\nsyslog = ""\n' in text
    config.write_text(text.replace('\nsyslog = ""\n', f'\nsyslog = "{url}"\n'))


def _wait_for(condition, what: str, timeout_s: float = 20.0):
    waiter = threading.Event()
    for _ in range(int(timeout_s / 0.1)):
        result = condition()
        if result:
            return result
        waiter.wait(0.1)
    raise AssertionError(f"no {what} within {timeout_s} s")


def _database_files(root: Path, name: str) -> list[Path]:
    return [p for p in (root / "data").rglob(f"{name}*") if re.search(r"\.db(-wal|-shm)?$", p.name)]


def test_probes_metrics_logs_and_audit_export_of_running_daemons(make_deployment, syslog):

    def configure(layout) -> None:
        _export_audit_to(layout, "toplevel", syslog["tcp"].url)
        _export_audit_to(layout, "institution-1", syslog["udp"].url)

    deployment = make_deployment(before_start=configure)
    ca, root = deployment.ca_cert, Path(deployment.layout.root)
    get = lambda url, **kw: requests.get(url, verify=ca, timeout=10, **kw)  # noqa: E731

    for instance in deployment.instances:
        ready = get(f"{instance.url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", (instance.name, ready.text)
        assert all(result == "ok" for result in ready.json()["checks"].values())

    # audited actions on two layers arrive at the central syslog, one over TCP, one over UDP
    client = deployment.client("physician")
    top, inst = deployment.url("toplevel"), deployment.layout.institutions[0]["server_url"]
    patient = find_or_create_patient(client, top, {
        "first_name": "Grace", "last_name": "Hopper", "sex": "F",
        "birth_date": "1906-12-09", "insurance_number": "OBS-0001"})
    client.call("GET", f"{inst}/api/v1/findings", params={"patient_id": patient["id"]})
    login = _wait_for(lambda: [m for m in syslog["tcp"].received if b' auth.login [' in m], "login audit message")
    assert login[0].startswith(b"<110>1 ") and b' layer="toplevel"' in login[0]
    assert b' event_id="110114"' in login[0] and b' username="' in login[0]
    search = _wait_for(lambda: [m for m in syslog["udp"].received if b"sivr-institution" in m], "institution audit")
    assert f'patient_id="{patient["id"]}"'.encode() in search[0]

    # the request id comes back in the header and the error body, and finds the JSON log line
    refused = get(f"{top}/api/v1/patients", headers={"X-Request-Id": "ops-test-4711"})
    assert refused.status_code == 401 and refused.headers["X-Request-Id"] == "ops-test-4711"
    assert refused.json()["error"]["request_id"] == "ops-test-4711"

    def logged() -> list[dict]:
        text = (root / "logs" / "toplevel.log").read_text()
        return [json.loads(line) for line in text.splitlines() if "ops-test-4711" in line]

    line = _wait_for(logged, "access line")[0]
    assert ((line["layer"], line["route"], line["status"], line["method"])
            == ("toplevel", "/api/v1/patients", 401, "GET"))
    lines = (root / "logs" / "toplevel.log").read_text().splitlines()
    assert all(json.loads(text)["layer"] == "toplevel" for text in lines if text.startswith("{"))
    assert any('"logger": "gunicorn.error"' in text for text in lines)  # gunicorn's own lines are JSON too

    # the toplevel runs several workers: /metrics adds up what each of them counted
    assert deployment.layout.first("toplevel") is not None
    for _ in range(12):
        client.call("GET", f"{top}/api/v1/patients", params={"q": "hopper"})
    families = {f.name: f for f in text_string_to_metric_families(get(f"{top}/metrics").text)}
    counted = [s for s in families["sivr_http_requests"].samples
               if s.labels.get("route") == "/api/v1/patients" and s.labels.get("status") == "200"
               and s.name == "sivr_http_requests_total"]
    assert sum(s.value for s in counted) >= 12
    assert "sivr_records_loaded" in get(f"{deployment.url('render-1-1')}/metrics").text
    assert get(f"{deployment.url('web')}/metrics").status_code == 200

    # the databases go away: readiness says so on every layer that has one, liveness stays up
    hidden = []
    for name, instance in (("toplevel", "toplevel"), ("institution-1", "institution-1"), ("render", "render-1-1")):
        for path in _database_files(root, name):
            path.rename(path.with_name(path.name + ".hidden"))
            hidden.append(path)
        down = get(f"{deployment.url(instance)}/readyz")
        assert down.status_code == 503, (instance, down.text)
        assert down.json()["error"]["code"] == "not_ready"
        assert "database" in down.json()["error"]["checks"] and down.json()["error"]["checks"]["database"] != "ok"
        assert get(f"{deployment.url(instance)}/healthz").status_code == 200
    assert get(f"{deployment.url('web')}/readyz").status_code == 200  # no database there
    for path in hidden:
        for fresh in path.parent.glob(path.name.split(".db")[0] + ".db*"):
            if not fresh.name.endswith(".hidden"):
                fresh.unlink()
    for path in hidden:
        path.with_name(path.name + ".hidden").rename(path)
    for instance in ("toplevel", "institution-1", "render-1-1"):
        assert get(f"{deployment.url(instance)}/readyz").status_code == 200, instance
    assert client.call("GET", f"{top}/api/v1/patients", params={"q": "hopper"}).json()["total"] == 1


@pytest.mark.postgres
def test_readyz_answers_503_while_postgresql_refuses_connections(make_deployment, pg_database_factory):
    """PostgreSQL shared with other tests is not stopped: the test database alone refuses connections."""
    import psycopg

    database = pg_database_factory()
    deployment = make_deployment(nodes_per_institution=0, database_urls={"toplevel": database})
    top, ca = deployment.url("toplevel"), deployment.ca_cert
    assert requests.get(f"{top}/readyz", verify=ca, timeout=10).status_code == 200
    name = database.rsplit("/", 1)[1]
    admin = psycopg.connect(os.environ["SIVR_TEST_PG_URL"], autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        down = requests.get(f"{top}/readyz", verify=ca, timeout=10)
        assert down.status_code == 503 and down.json()["error"]["checks"]["database"] != "ok"
        assert requests.get(f"{top}/healthz", verify=ca, timeout=10).status_code == 200
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
    assert requests.get(f"{top}/readyz", verify=ca, timeout=10).status_code == 200
