"""Request ids, JSON logs, /readyz, /metrics and the syslog audit export, on an app of the shared base.

The daemons started for real (readiness with the database gone, metrics summed over gunicorn
workers, the export from every layer) are in tests/ops/test_observability.py.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import ssl
import threading
from pathlib import Path

import peewee
import pytest

from shared.audit_export import SyslogExporter, atna_event, format_message
from shared.config import ConfigError, build_config
from shared.db import connect_database, upgrade_schema
from shared.health import add_readiness_check, database_check
from shared.logs import JsonFormatter
from shared.tls import create_ca, issue_server_cert
from shared.tokens import generate_signing_keypair
from shared.webapp import create_base_app
from tests.syslog_peer import Listener

RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) "
    rb"\[(?P<sd>sivrAudit@32473(?: [a-z_]+=\"(?:[^\"\\\]]|\\.)*\")+)\](?: \xef\xbb\xbf(?P<msg>.*))?$", re.S)


@pytest.fixture
def make_app(tmp_path):
    generate_signing_keypair(tmp_path / "k.pem", tmp_path / "k.pub")

    def make(**sections):
        values = {"tokens": {"public_key": str(tmp_path / "k.pub"), "audience": "https://web.test"}, **sections}
        app = create_base_app(__name__, build_config("web", (), values))

        @app.get("/things/<int:thing_id>")
        def thing(thing_id: int):
            if thing_id == 0:
                raise RuntimeError("boom")
            return {"id": thing_id}

        return app

    return make


# --- request ids and logs ------------------------------------------------------------------------

def test_a_sane_request_id_is_kept_and_returned_in_header_and_error_body(make_app):
    client = make_app().test_client()
    reply = client.get("/nowhere", headers={"X-Request-Id": "console-1f2e.3:4_5"})
    assert reply.headers["X-Request-Id"] == "console-1f2e.3:4_5"
    assert reply.json["error"]["request_id"] == "console-1f2e.3:4_5"
    failed = client.get("/things/0")
    assert failed.status_code == 500 and failed.json["error"]["request_id"] == failed.headers["X-Request-Id"]


@pytest.mark.parametrize("offered", ["x" * 65, "has space", "semi;colon", "-leading-dash", "é"])
def test_an_unusable_request_id_is_replaced(make_app, offered):
    reply = make_app().test_client().get("/things/1", headers={"X-Request-Id": offered})
    assert reply.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-Id"])


def test_each_request_is_one_json_access_line_with_route_status_and_id(make_app):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("web"))
    access = logging.getLogger("sivr.access")
    access.addHandler(handler)
    try:
        make_app().test_client().get("/things/42", headers={"X-Request-Id": "find-me-42"})
    finally:
        access.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "find-me-42" and line["layer"] == "web" and line["level"] == "info"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/things/<int:thing_id>", 200)
    assert line["duration_ms"] >= 0 and line["user_id"] is None and line["time"].endswith("+00:00")


def test_the_formatter_keeps_a_traceback_on_its_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info())
    text = JsonFormatter("toplevel").format(record)
    assert "\n" not in text and "ValueError" in json.loads(text)["exception"]


def test_a_token_in_a_url_never_reaches_a_log_line():
    """Image GETs may carry their token as `access_token` (shared.auth); gunicorn's own error lines
    quote a request's whole URI, and an exception's text may too: the line shows neither token."""
    token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-_%2B"
    uri = f"/api/v1/records/ab/frames/3?format=jpeg&access_token={token}&size=64x64"
    try:
        raise RuntimeError(f"cannot serve {uri}")
    except RuntimeError:
        record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s",
                                   (uri,), __import__("sys").exc_info())
    line = json.loads(JsonFormatter("render").format(record))
    assert token not in json.dumps(line) and "eyJ" not in json.dumps(line)
    assert line["message"] == ("Error handling request /api/v1/records/ab/frames/3?format=jpeg"
                               "&access_token=<redacted>&size=64x64")
    assert "access_token=<redacted>&size" in line["exception"]



_LOG_ONE_LINE = """
import json, logging, sys
if sys.argv[1] == "served":
    import daemons.gunicorn_conf  # what gunicorn imports in every served layer's arbiter
from shared.logs import JsonFormatter
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)
        print(JsonFormatter("render").format(record))
log = logging.getLogger("sivr.access")
log.addHandler(Keep())
log.setLevel("INFO")
log.info("%s %s", "GET", 200, extra={"route": "/r/<x>", "status": 200})
r = records[0]
print(json.dumps([r.lineno, r.funcName, r.thread, r.threadName, r.process, r.processName]))
"""


def test_served_daemons_leave_out_the_record_fields_no_line_writes():
    """Served layers skip the caller's file and line (a stack walk per record), thread and process
    (shared.logs.leave_out_unwritten_fields): every access line is cheaper, and no line loses a key."""
    import subprocess
    import sys

    def run(mode: str) -> tuple[dict, list]:
        out = subprocess.run([sys.executable, "-c", _LOG_ONE_LINE, mode], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[2]).stdout.splitlines()
        return json.loads(out[0]), json.loads(out[1])

    plain_line, plain_fields = run("plain")
    served_line, served_fields = run("served")
    assert plain_fields[0] > 0 and plain_fields[2] is not None and plain_fields[4] is not None
    assert served_fields == [0, "(unknown function)", None, None, None, None]
    assert served_line.keys() == plain_line.keys()
    assert {k: v for k, v in served_line.items() if k != "time"} == {k: v for k, v in plain_line.items() if k != "time"}

# --- readiness -----------------------------------------------------------------------------------

def test_readyz_lists_every_check_and_answers_503_naming_the_failed_ones(make_app):
    app = make_app()
    add_readiness_check(app, "disk", lambda: None)
    add_readiness_check(app, "queue", lambda: "the queue is stuck")
    add_readiness_check(app, "broken", lambda: 1 / 0)
    client = app.test_client()
    reply = client.get("/readyz")
    assert reply.status_code == 503
    error = reply.json["error"]
    assert error["code"] == "not_ready" and "queue: the queue is stuck" in error["message"]
    assert error["checks"]["disk"] == "ok" and error["checks"]["token_keys"] == "ok"
    assert "ZeroDivision" not in reply.get_data(as_text=True)  # exception text stays in the log
    assert client.get("/healthz").status_code == 200


def test_readyz_reports_a_token_key_file_gone(make_app, tmp_path):
    app = make_app()
    assert app.test_client().get("/readyz").json["status"] == "ready"
    (tmp_path / "k.pub").unlink()
    reply = app.test_client().get("/readyz")
    assert reply.status_code == 503 and "k.pub" in reply.json["error"]["checks"]["token_keys"]


def test_probes_that_overlap_a_run_of_the_checks_do_not_run_them_again(make_app):
    """Each `/readyz` ran every check (a render node's S3 store check is a request to the store): a
    probe that arrives while another runs them now answers at once, without running them."""
    app = make_app()
    release, runs = threading.Event(), []

    def slow() -> None:
        runs.append(1)
        release.wait(30)

    add_readiness_check(app, "store", slow)
    first: list[int] = []
    runner = threading.Thread(target=lambda: first.append(app.test_client().get("/readyz").status_code))
    runner.start()
    try:
        for _ in range(500):
            if runs:
                break
            threading.Event().wait(0.01)
        overlapping = [app.test_client().get("/readyz") for _ in range(5)]
    finally:
        release.set()
        runner.join(30)
    assert len(runs) == 1 and first == [200]
    for reply in overlapping:  # no earlier results to answer with: the check that has not answered
        assert reply.status_code == 503
        assert "store: not answered after" in reply.json["error"]["message"]
        assert reply.json["error"]["checks"]["token_keys"] == "ok"
    assert app.test_client().get("/readyz").status_code == 200 and len(runs) == 2  # one after another: each runs


class Thing(peewee.Model):
    x = peewee.IntegerField()


def test_database_check_wants_the_layer_at_its_schema_version(tmp_path):
    db = connect_database(f"sqlite:///{tmp_path}/t.db")
    assert "no schema_version table" in database_check(db, "toplevel", 1)()
    with db.bind_ctx([Thing]):
        upgrade_schema(db, "toplevel", [Thing])
    db.close()
    assert database_check(db, "toplevel", 1)() is None
    assert "schema version 1, this server needs 2" in database_check(db, "toplevel", 2)()
    # a later release upgraded it: `sivr db upgrade` cannot help, so the advice is not to run it
    newer = database_check(db, "toplevel", 0)()
    assert "schema 1 is newer than this release (0)" in newer and "restore the pre-upgrade backup" in newer
    assert "sivr db upgrade" not in newer
    assert "no institution schema" in database_check(db, "institution", 1)()
    assert db.is_closed()  # the probe leaves no connection behind
    gone = connect_database(f"sqlite:///{tmp_path}/not-a-folder/x.db")
    (tmp_path / "not-a-folder").write_text("a file where a folder should be")
    assert "cannot be reached" in database_check(gone, "toplevel", 1)()


# --- metrics -------------------------------------------------------------------------------------

def test_metrics_count_by_url_rule_and_status(make_app):
    client = make_app().test_client()
    for thing in (1, 2, 3, 0):
        client.get(f"/things/{thing}")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sivr_http_requests_total{layer="web",method="GET",route="/things/<int:thing_id>",status="200"} 3.0' in text
    assert 'route="/things/<int:thing_id>",status="500"} 1.0' in text
    assert "sivr_http_request_duration_seconds_bucket" in text
    assert "/things/1" not in text  # raw paths (with ids) never become labels


def test_methods_a_caller_makes_up_add_no_series(make_app):
    """The method label was the request's own: each made-up method (answered 405 without a token)
    was a new series of the counter and the histogram, kept until a restart (6,000 requests grew a
    web layer's /metrics from 2.4 to 16 MB and its workers by 200 MB)."""
    client = make_app().test_client()
    for index in range(50):
        client.open("/things/1", method=f"X{index:04d}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "X0001" not in text
    assert 'sivr_http_requests_total{layer="web",method="other",route="<unmatched>",status="405"} 50.0' in text


def test_metrics_readers_are_the_listed_addresses_or_the_token_holder(make_app, tmp_path):
    (tmp_path / "metrics.token").write_text("s3cret-scraper-token\n")
    (tmp_path / "metrics.token").chmod(0o600)
    app = make_app(metrics={"allow": ["10.0.0.0/8"], "token_file": str(tmp_path / "metrics.token")})
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.2.3.4"}).status_code == 200
    refused = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403
    token = {"Authorization": "Bearer s3cret-scraper-token"}
    assert client.get("/metrics", headers=token, environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200
    wrong = {"Authorization": "Bearer s3cret-scraper-tokex"}
    assert client.get("/metrics", headers=wrong, environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 403


def test_metrics_settings_are_checked_at_start(make_app, tmp_path):
    with pytest.raises(ConfigError, match="metrics.allow"):
        make_app(metrics={"allow": ["not-an-address"]})
    (tmp_path / "short").write_text("short")
    (tmp_path / "short").chmod(0o600)
    with pytest.raises(ConfigError, match="at least 16"):
        make_app(metrics={"token_file": str(tmp_path / "short")})
    (tmp_path / "readable").write_text("a token every local user may read\n")
    (tmp_path / "readable").chmod(0o644)
    with pytest.raises(ConfigError, match=r"metrics.token_file .*readable by its owner only \(chmod 600\), is 0o644"):
        make_app(metrics={"token_file": str(tmp_path / "readable")})


# --- audit export --------------------------------------------------------------------------------

ENTRY = {"id": "0e4f", "at": "2026-11-29T21:40:00Z", "user_id": "u-1", "username": 'dr "house"]',
         "action": "record.read", "object_type": "record", "object_id": "abc", "patient_id": None,
         "client_ip": "10.0.0.9", "detail": "index=3 — ünïcode"}


def sd_params(sd: bytes) -> dict[str, str]:
    return {k: v.replace('\\"', '"').replace("\\]", "]").replace("\\\\", "\\")
            for k, v in re.findall(r'([a-z_]+)="((?:[^"\\\]]|\\.)*)"', sd.decode())}


def test_an_audit_entry_is_one_rfc5424_message_with_its_fields_as_structured_data():
    message = format_message(ENTRY, "render", hostname="node 7")
    match = RFC5424.match(message)
    assert match, message
    assert int(match["pri"]) == 13 * 8 + 6
    assert (match["host"], match["app"], match["msgid"]) == (b"node7", b"sivr-render", b"record.read")
    params = sd_params(match["sd"])
    assert params["username"] == 'dr "house"]' and params["patient_id"] == "" and params["layer"] == "render"
    assert (params["event_id"], params["event_action"], params["outcome"]) == ("110110", "R", "0")
    assert match["msg"].decode() == "index=3 — ünïcode"


@pytest.mark.parametrize("action, expected", [
    ("auth.login", ("110114", "E")), ("auth.login_failed", ("110114", "E")), ("record.upload", ("110104", "C")),
    ("record.upload_again", ("110104", "C")), ("record.append", ("110104", "C")), ("patient.delete", ("110105", "D")),
    ("user.password_change", ("110137", "U")), ("record.original", ("110106", "R")),
    ("finding.link", ("110110", "U")), ("record.view", ("110110", "R")), ("institution.something_new", ("110100", "E")),
    ("access.denied", ("110113", "E")),
])
def test_actions_map_to_dicom_audit_events(action, expected):
    assert atna_event(action) == expected


@pytest.mark.parametrize("action, outcome", [
    ("access.denied", "4"), ("auth.login_failed", "4"), ("user.password_change_failed", "4"),
    ("dicom.store_refused", "4"), ("dicom.find_refused", "4"), ("dicom.get_refused", "4"), ("dicom.move_refused", "4"),
    ("instance.conflict", "4"), ("study.conflict", "4"), ("series.conflict", "4"),
    ("record.read", "0"), ("user.create", "0"), ("record.append", "0"),
])
def test_refused_attempts_are_exported_as_failures(action, outcome):
    params = sd_params(RFC5424.match(format_message({**ENTRY, "action": action}, "toplevel"))["sd"])
    assert (params["action"], params["outcome"]) == (action, outcome)


def wait_for(condition, timeout_s: float = 10.0) -> None:
    """The receiving side reads in its own thread: give it the moment it needs."""
    waiter = threading.Event()
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        waiter.wait(0.05)
    raise AssertionError("the syslog listener received nothing in time")


def _tls_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    create_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    issue_server_cert(tmp_path / "ca.pem", tmp_path / "ca.key", tmp_path / "s.pem", tmp_path / "s.key",
                      ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "s.pem", tmp_path / "s.key")
    return context, tmp_path / "ca.pem"


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_exported_entries_reach_a_syslog_server(transport, tmp_path):
    context, ca = _tls_context(tmp_path) if transport == "tls" else (None, "")
    listener = Listener(transport, context)
    try:
        exporter = SyslogExporter(listener.url, "toplevel", str(ca))
        for n in range(3):
            exporter.send({**ENTRY, "id": f"entry-{n}"})
        assert exporter.flush(10)
        wait_for(lambda: len(listener.received) == 3)
        ids = sorted(sd_params(RFC5424.match(m)["sd"])["id"] for m in listener.received)
        assert ids == ["entry-0", "entry-1", "entry-2"]
    finally:
        listener.close()


def test_a_syslog_server_that_comes_back_gets_the_entries_queued_meanwhile():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exporter = SyslogExporter(f"tcp://127.0.0.1:{port}", "institution")
    exporter.send({**ENTRY, "id": "while-down"})
    assert not exporter.flush(0.3)  # nobody listens yet: the entry waits in the queue
    listener = Listener("tcp", port=port)
    try:
        assert exporter.flush(20)
        wait_for(lambda: listener.received)
        assert sd_params(RFC5424.match(listener.received[0])["sd"])["id"] == "while-down"
    finally:
        listener.close()


def test_a_bad_syslog_url_stops_the_start(make_app):
    with pytest.raises(ConfigError, match="audit.syslog"):
        make_app(audit={"syslog": "http://logs.example:514"})


def test_only_committed_audit_entries_are_exported(make_app, tmp_path):
    """An entry written in a transaction that rolls back was never an action: it is not sent."""
    from shared.audit import make_audit_model, record_audit
    from shared.errors import ApiError

    listener = Listener("udp")
    db = connect_database(f"sqlite:///{tmp_path}/audit.db")
    model = make_audit_model(db)
    db.create_tables([model])
    app = make_app(audit={"syslog": listener.url})

    @app.post("/act/<outcome>")
    def act(outcome: str):
        with db.atomic():
            record_audit(model, f"thing.{outcome}", "thing", user_id="u", username="someone")
            if outcome == "refused":
                raise ApiError(409, "conflict", "rolled back")
        record_audit(model, "thing.after", "thing", user_id="u", username="someone")  # autocommitted
        return {"ok": True}

    try:
        client = app.test_client()
        assert client.post("/act/refused").status_code == 409
        assert client.post("/act/update").status_code == 200
        exporter = app.extensions["sivr_audit_export"]
        assert exporter.flush(10)
        wait_for(lambda: len(listener.received) >= 2)
        actions = sorted(sd_params(RFC5424.match(m)["sd"])["action"] for m in listener.received)
        assert actions == ["thing.after", "thing.update"]
        assert model.select().count() == 2
    finally:
        listener.close()
        db.close()
