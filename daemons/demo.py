"""`sivr demo`: the whole system on loopback with a demo admin, a demo physician and a real CT.

Seeding goes through the same public HTTP API a physician's browser uses (login, patient, upload,
register, finding), so a working demo is itself an end-to-end check of the layers that exist.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from daemons.deployment import (
    DEMO_DICOM_CALLERS,
    DICOM_PORT,
    LAYOUT_FILE,
    Layout,
    LocalDeployment,
    dicom_endpoint,
    init_deployment,
    require_private_folder,
)
from daemons.front import BACKEND_PORT_OFFSET
from daemons.front import FOLDER as FRONT_FOLDER
from daemons.layers import get_layer
from daemons.render.dicomweb import ROOT as DICOMWEB_ROOT
from shared.files import PRIVATE, write_atomic
from shared.roles import PHYSICIAN, SYSTEM_ADMIN
from shared.token_client import RENEW_FRACTION, AudienceTokens, ExchangedTokenAuth, exchange_with

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CT = REPO_ROOT / "demo_data" / "ct-chest-100"
RECORD_TYPES = [("CT", "Computed tomography"), ("MR", "Magnetic resonance"),
                ("US", "Ultrasound"), ("CR", "Computed radiography"), ("XA", "X-ray angiography")]
DEMO_PATIENT = {
    "first_name": "Demo", "last_name": "Patient", "sex": "M",
    "birth_date": "1961-04-12", "insurance_number": "DEMO-CMB-CRC-01068",
}


def _users_file(root: Path) -> Path:
    return root / "demo-users.json"


def seed_base(layout: Layout) -> dict[str, dict[str, str]]:
    """Institutions, record types, a demo admin and physician in the toplevel DB (idempotent).

    Passwords are random per state folder and kept in a 0600 file, so a demo never ships a
    well-known password.
    """
    from daemons.cli import register_institutions
    from daemons.toplevel import admin_ops

    root = Path(layout.root)
    register_institutions(layout)
    config = get_layer("toplevel").load_config(layout.first("toplevel").config)
    admin_ops.ensure_record_types(config, RECORD_TYPES)
    path = _users_file(root)
    if path.exists():  # kept; made the owner's alone again if it was opened to others meanwhile
        users = json.loads(path.read_text())
        write_private_json(path, users)
        return users
    institution_id = layout.institutions[0]["id"]
    users = {
        "admin": {"username": "admin", "password": secrets.token_urlsafe(12)},
        "physician": {"username": "dr.house", "password": secrets.token_urlsafe(12)},
    }
    admin_ops.create_user(config, "admin", users["admin"]["password"], SYSTEM_ADMIN, institution_id,
                          "Demo Administrator")
    admin_ops.create_user(config, "dr.house", users["physician"]["password"], PHYSICIAN,
                          institution_id, "Dr. Gregory House")
    write_private_json(path, users)
    return users


def write_private_json(path: Path, value: object) -> None:
    """A demo file that holds passwords, readable by its owner only whatever was there before:
    `os.open(..., O_TRUNC, 0o600)` sets a mode only on a file it creates, and an earlier demo.json
    left readable by all (copied in, restored, `chmod 644` to share the addresses) was filled with
    the new passwords and kept its mode."""
    write_atomic(path, json.dumps(value, indent=2).encode(), PRIVATE)


class ApiClient:
    """A logged-in `requests` session against one deployment (CA verified, errors raised).

    Like the viewer, it sends the session token to the toplevel only and a token exchanged for
    each other server to that server (`shared.token_client`), and renews the session token
    (`POST /api/v1/auth/renew`) once most of its life has passed, as the viewer does: a long
    fuzzing or benchmark run lost its session after `tokens.access_ttl_s` (401 on the exchange).
    """

    def __init__(self, deployment: LocalDeployment, username: str, password: str):
        self.session = requests.Session()
        # An environment CA bundle (REQUESTS_CA_BUNDLE) would override Session.verify: ignore it.
        self.session.trust_env = False
        self.session.verify = deployment.ca_cert
        self.toplevel_url = toplevel_url = deployment.url("toplevel")
        reply = self.session.post(f"{toplevel_url}/api/v1/auth/login",
                                  json={"username": username, "password": password}, timeout=30)
        reply.raise_for_status()
        self._renewing = threading.Lock()
        self._keep(reply.json())
        exchanger = requests.Session()
        exchanger.trust_env = False
        exchanger.verify = deployment.ca_cert
        self._renewer = exchanger
        self.tokens = AudienceTokens(exchange_with(exchanger, toplevel_url, self.current_session_token))
        self.session.auth = self.auth = ExchangedTokenAuth(toplevel_url, self.current_session_token, self.tokens)

    def _keep(self, answer: dict) -> None:
        self.session_token = answer["access_token"]
        self._renew_at = time.monotonic() + int(answer["expires_in"]) * RENEW_FRACTION

    def current_session_token(self) -> str:
        """The session token, renewed first when most of its life has passed (one renewal at a time)."""
        with self._renewing:
            if time.monotonic() >= self._renew_at:
                reply = self._renewer.post(f"{self.toplevel_url}/api/v1/auth/renew", timeout=30,
                                           headers={"Authorization": f"Bearer {self.session_token}"})
                reply.raise_for_status()
                self._keep(reply.json())
            return self.session_token

    def token_for(self, url: str) -> str:
        """The token this client sends to the server of `url` (for clients other than `requests`)."""
        return self.auth.token_for_url(url)

    def call(self, method: str, url: str, ok=(200, 201, 204), **kwargs) -> requests.Response:
        reply = self.session.request(method, url, timeout=kwargs.pop("timeout", 120), **kwargs)
        if reply.status_code not in ok:
            raise RuntimeError(f"{method} {url} answered {reply.status_code}: {reply.text[:300]}")
        return reply

    def patient_reference(self, patient_id: str) -> str:
        """The toplevel's signed reference to a patient, which institution servers need to store their data."""
        return self.call("POST", f"{self.toplevel_url}/api/v1/patients/{patient_id}/reference").json()[
            "patient_reference"]


class RunningDeployment(LocalDeployment):
    """A started deployment plus its demo users and logged-in clients (tests, benchmarks)."""

    users: dict[str, dict[str, str]]

    def client(self, role: str = "physician") -> ApiClient:
        return ApiClient(self, **self.users[role])


def start_deployment(root: Path, before_start: Callable[[Layout], None] | None = None,
                     **init_kwargs) -> RunningDeployment:
    """Init a deployment in `root` on free loopback ports, seed users, run `before_start`, start it.

    Every instance is served through its TLS/HTTP/2 front (daemons/front.py), as `sivr demo` serves them.
    """
    layout = init_deployment(root, pick_free_ports=True, hold_ports=True, **{"front": True, **init_kwargs})
    users = seed_base(layout)
    if before_start is not None:
        before_start(layout)
    deployment = RunningDeployment(layout)
    deployment.users = users
    try:
        deployment.start()
    except BaseException:
        deployment.stop()
        raise
    return deployment


def upload_record(client: ApiClient, node_url: str, files: list[Path]) -> dict:
    """Upload the files of one record to a render node; returns its RecordMeta."""
    handles = [("files", (f.name, f.open("rb"), "application/dicom")) for f in files]
    try:
        return client.call("POST", f"{node_url}/api/v1/records", files=handles, timeout=600).json()
    finally:
        for _, (_, handle, _) in handles:
            handle.close()


def register_record(client: ApiClient, institution_url: str, meta: dict, node_id: str,
                    patient_id: str, record_type: str, description: str, confirm_mismatch: bool = False) -> dict:
    """Register an uploaded record's metadata at its institution (idempotent).

    Images that name another patient than `patient_id` (the public demo series are anonymised) are
    registered only with `confirm_mismatch`: the explicit confirmation a physician gives in the
    viewer's upload dialog, audited by the institution (daemons/institution/reconciliation.py).
    """
    body = {
        "id": meta["id"], "node_id": node_id, "rows": meta["rows"], "columns": meta["columns"],
        "frames": meta["frames"], "modality": meta["modality"], "record_type": record_type,
        "patient_id": patient_id, "description": description,
        "study_date": _iso_date(meta.get("study_date")),
        "patient_reference": client.patient_reference(patient_id),
        "receipt": meta["receipt"],  # the node's proof that it stores the record (shared.receipts)
    }
    if confirm_mismatch:
        body["identity"] = {"decision": "confirmed_mismatch", "dicom_patient": {
            "name": meta.get("patient_name") or "", "patient_id": meta.get("patient_id_dicom") or "",
            "birth_date": meta.get("patient_birth_date") or ""}}
    return client.call("POST", f"{institution_url}/api/v1/records", json=body).json()


def mark_filed(client: ApiClient, node_url: str, record_id: str) -> None:
    """Tell the node a registered series is filed, so it leaves the node's work list (as the viewer does)."""
    client.call("POST", f"{node_url}/api/v1/records/{record_id}/filed")


def write_finding(client: ApiClient, institution_url: str, patient_id: str,
                  links: list[dict], **text: str) -> dict:
    body = {"patient_id": patient_id, "description": "", "findings": "", "conclusion": "",
            "recommendation": "", "date": _iso_date(None), "records": links,
            "patient_reference": client.patient_reference(patient_id)}
    body.update(text)
    return client.call("POST", f"{institution_url}/api/v1/findings", json=body).json()


def find_or_create_patient(client: ApiClient, toplevel_url: str, patient: dict) -> dict:
    found = client.call("GET", f"{toplevel_url}/api/v1/patients",
                        params={"insurance_number": patient["insurance_number"]}).json()["items"]
    return found[0] if found else client.call("POST", f"{toplevel_url}/api/v1/patients", json=patient).json()


def new_user(admin: ApiClient, toplevel_url: str, institution_id: str, username: str, role: str,
             password: str = "a-test-password-1") -> dict[str, str]:
    """Create a user through the API (an existing one is kept); returns its credentials."""
    admin.call("POST", f"{toplevel_url}/api/v1/users", ok=(201, 409), json={
        "username": username, "password": password, "full_name": username.title(),
        "role": role, "institution_id": institution_id})
    return {"username": username, "password": password}


def register_nodes(admin: ApiClient, institution: dict) -> dict[str, dict]:
    """Make sure every render node of a layout institution is in its registry with its receipt key; by URL."""
    nodes = admin.call("GET", f"{institution['server_url']}/api/v1/nodes").json()["items"]
    known = {n["url"]: n for n in nodes}
    for node in institution["nodes"]:
        key = {"receipt_key": node["receipt_key"]} if node.get("receipt_key") else {}
        if node["url"] not in known:
            known[node["url"]] = admin.call("POST", f"{institution['server_url']}/api/v1/nodes",
                                            json={"name": node["name"], "url": node["url"],
                                                  "store": node.get("store", ""), **key}).json()
        elif key and known[node["url"]].get("receipt_key") != key["receipt_key"]:
            known[node["url"]] = admin.call("PUT", f"{institution['server_url']}/api/v1/nodes/"
                                            f"{known[node['url']]['id']}", json=key).json()
    return known


def seed_demo_data(deployment: LocalDeployment, users: dict, dicom_dir: Path = DEMO_CT) -> None:
    """Register the render node, a patient, upload the CT, register it and write a finding."""
    layout = deployment.layout
    running = {i.layer for i in deployment.instances}
    doctor = ApiClient(deployment, **users["physician"])
    patient = find_or_create_patient(doctor, deployment.url("toplevel"), DEMO_PATIENT)
    if "institution" not in running:
        return
    inst = layout.institutions[0]
    known = register_nodes(ApiClient(deployment, **users["admin"]), inst)
    if "render" not in running or not dicom_dir.is_dir():
        return
    node = known[inst["nodes"][0]["url"]]
    meta = upload_record(doctor, node["url"], sorted(dicom_dir.glob("*.dcm")))
    registered = doctor.call("GET", f"{inst['server_url']}/api/v1/records",
                             params={"patient_id": patient["id"]}).json()["items"]
    if not any(r["id"] == meta["id"] for r in registered):
        # the demo series is anonymised: its DICOM patient is not the demo patient, which the
        # viewer shows side by side; registering it for them is the confirmation a physician gives
        register_record(doctor, inst["server_url"], meta, node["id"], patient["id"], "CT",
                        "CT chest/abdomen/pelvis, lung series", confirm_mismatch=True)
        write_finding(doctor, inst["server_url"], patient["id"],
                      [{"record_id": meta["id"], "institution_id": inst["id"], "node_id": node["id"]}],
                      description="CT chest/abdomen/pelvis",
                      findings="No focal consolidation. No pleural effusion.",
                      conclusion="No acute cardiopulmonary finding.",
                      recommendation="Routine follow-up.", date=_iso_date(meta.get("study_date")))
    mark_filed(doctor, node["url"], meta["id"])
    doctor.call("POST", f"{node['url']}/api/v1/records/{meta['id']}/load", ok=(200, 202))


def _iso_date(dicom_date: str | None) -> str:
    """DICOM DA (YYYYMMDD) to ISO; today's date when the file has none."""
    import datetime as dt

    if dicom_date and len(dicom_date) == 8 and dicom_date.isdigit():
        return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:]}"
    if dicom_date and len(dicom_date) == 10:
        return dicom_date
    return dt.date.today().isoformat()


def _default_ports_free() -> bool:
    public = (5000, 5001, 5002, 5003)
    for port in (*public, *(p + BACKEND_PORT_OFFSET for p in public), DICOM_PORT):  # and the fronts' backends
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def dicomweb_roots(deployment: LocalDeployment) -> dict[str, str]:
    """The DICOMweb root of each running render node, by node name (what a DICOMweb client is given)."""
    return {i.name: i.url + DICOMWEB_ROOT for i in deployment.instances if i.layer == "render"}


def write_demo_json(deployment: LocalDeployment, users: dict) -> Path:
    running = {i.layer: i.url for i in reversed(deployment.instances)}
    info = {"layers": running, "ca_cert": deployment.ca_cert, "users": users}
    node = deployment.layout.first("render")
    if node is not None and dicom_endpoint(node)["port"]:
        info["dicom"] = dicom_endpoint(node)
    roots = dicomweb_roots(deployment)
    if roots:
        info["dicomweb"] = roots
    path = Path(deployment.layout.root) / "demo.json"
    write_private_json(path, info)
    return path


#: What a demo writes into its state folder (`init_deployment`, `seed_base`, `write_demo_json`, the
#: daemons' logs): all that `--fresh` removes. Folders, files, and the instances' configs and
#: `write_atomic`'s temporaries by pattern.
DEMO_FOLDERS = frozenset({"keys", "tls", "data", "logs", FRONT_FOLDER})
DEMO_FILES = frozenset({LAYOUT_FILE, "demo.json", "demo-users.json"})
_DEMO_FILE_NAME = re.compile(r"(toplevel|web|institution-\d+|render-\d+-\d+)\.toml|\..+\.[0-9a-f]{16}\.tmp")


def _written_by_a_demo(entry: Path) -> bool:
    if entry.name in DEMO_FOLDERS:
        return entry.is_dir() or entry.is_symlink()
    return entry.name in DEMO_FILES or bool(_DEMO_FILE_NAME.fullmatch(entry.name))


def discard_state(state_dir: Path) -> None:
    """`--fresh`: remove an earlier demo's state, and nothing else.

    The folder was removed whole, whatever it held: `sivr demo --fresh --state-dir .` in a
    checkout (or a home folder, a typo) deleted every file in it before the demo started there.
    A folder holding anything a demo does not write is refused, naming it; links are removed, not
    followed."""
    if not state_dir.exists():
        return
    if not state_dir.is_dir():
        raise ValueError(f"--state-dir {state_dir} is not a folder: --fresh removes a demo's state folder only")
    entries = sorted(state_dir.iterdir())
    foreign = [entry.name for entry in entries if not _written_by_a_demo(entry)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ValueError(f"--state-dir {state_dir} holds {foreign[0]!r}{more}, which no demo writes: --fresh "
                         "removes only a demo's own files; name another --state-dir, or move those away")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_demo(state_dir: Path, fresh: bool = False, with_data: bool = True) -> int:
    state_dir = state_dir.resolve()
    require_private_folder(state_dir)  # before anything of it is read, run or removed
    if fresh:
        discard_state(state_dir)
    if (state_dir / LAYOUT_FILE).exists():
        layout = Layout.load(state_dir)
    else:
        free = _default_ports_free()
        try:
            layout = init_deployment(state_dir, pick_free_ports=not free, hold_ports=not free, front=True)
        except FileExistsError as exc:  # an earlier demo's set-up stopped before it wrote its layout
            raise SystemExit(f"sivr demo: {state_dir} holds an unfinished demo ({exc}); start it again "
                             "with --fresh to discard it") from exc
    users = seed_base(layout)
    deployment = LocalDeployment(layout)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        deployment.start()
        if with_data:
            print("Uploading the demo CT series (100 slices)...", flush=True)
            seed_demo_data(deployment, users)
        path = write_demo_json(deployment, users)
        _print_welcome(deployment, users, path)
        stop.wait()
    finally:
        print("Stopping SIVR...", flush=True)
        deployment.stop()
    return 0


def _print_welcome(deployment: LocalDeployment, users: dict, path: Path) -> None:
    web = next((i.url for i in deployment.instances if i.layer == "web"), None)
    print("\nSIVR is running:")
    for instance in deployment.instances:
        print(f"  {instance.name:<16} {instance.url}")
    node = deployment.layout.first("render")
    if node is not None and dicom_endpoint(node)["port"]:
        dicom = dicom_endpoint(node)
        print(f"  {'DICOM':<16} AE title {dicom['ae_title']} on {dicom['host']}:{dicom['port']} "
              f"(callers: {', '.join(DEMO_DICOM_CALLERS)})")
    for name, root in dicomweb_roots(deployment).items():
        print(f"  {'DICOMweb':<16} {root} ({name})")
    if web:
        print(f"\nOpen {web}/ in a browser.")
    print(f"Trust the local CA first: {deployment.ca_cert}")
    print("  (Chromium on Linux: certutil -d sql:$HOME/.pki/nssdb -A -t 'C,,' -n sivr-demo -i <that file>)")
    for role, cred in users.items():
        print(f"  {role:<10} username {cred['username']!r}  password {cred['password']!r}")
    sivr = Path(sys.executable).with_name("sivr")
    command = sivr if sivr.exists() else "sivr"
    print(f"Console: {command} admin --url {deployment.url('toplevel')} --ca {deployment.ca_cert}")
    print(f"Details: {path}")
    print("Stop with Ctrl-C.", flush=True)
