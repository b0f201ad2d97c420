"""A whole SIVR deployment in one folder: keys, certificates, one config per instance, processes.

`sivr init` writes the folder for IT to review and copy to hosts; `sivr demo` and the test suite
start every instance from it on loopback. Both go through this module so the tests exercise
exactly what operators run. A layout made with a front (`front=True`: `sivr demo`, the test
deployments, `sivr init --front`) serves each instance at its URL through its own nginx (TLS,
HTTP/2; daemons/front.py) in front of gunicorn on a loopback port; one without, gunicorn with TLS.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import itertools
import json
import os
import pwd
import random
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from daemons import front as fronts
from daemons.layers import LAYERS, get_layer
from daemons.render.store.s3 import store_location
from daemons.toplevel.accounts import INSTITUTION_FIELDS
from shared.config import DEFAULT_PORTS, ConfigError, build_config, render_config_toml
from shared.errors import ApiError
from shared.files import PRIVATE, PUBLIC, make_folder, write_atomic
from shared.receipts import load_or_create_node_key, public_key_text
from shared.tls import check_hostname, create_ca, issue_server_cert
from shared.tokens import generate_signing_keypair
from shared.validation import validate
from shared.webapp import read_proxy_secret

STORE_KEY_BYTES = 32
# how long a stopped daemon may take (its 10 s graceful timeout and exit handlers) before SIGKILL
STOP_WAIT_S = 20
# files of data/ named when init refuses a folder holding data
EXISTING_DATA_SHOWN = 3
BIND_RETRY_S = 5.0
LAYOUT_FILE = "deployment.json"
DICOM_PORT = 11112
MAX_DEFAULT_RENDER_WORKERS = 8
#: The deployment's server certificate and key (relative to its folder), shown by the gunicorns or the fronts.
FRONT_CERT, FRONT_KEY = "tls/server.pem", "tls/server.key"
#: Calling AE titles a local deployment's render nodes accept: dcmtk's defaults and "MODALITY".
#: A production node lists its modalities' AE titles instead (`dicom.allowed_callers`).
DEMO_DICOM_CALLERS = ("MODALITY", "ECHOSCU", "STORESCU", "FINDSCU")


@dataclass
class Instance:
    """One daemon process: its layer, name, config file and URL."""

    layer: str
    name: str
    config: str
    url: str
    institution: str | None = None


@dataclass
class Layout:
    """What `sivr init` wrote: instances and the institutions they belong to."""

    root: str
    ca_cert: str
    instances: list[Instance] = field(default_factory=list)
    institutions: list[dict] = field(default_factory=list)
    #: every instance is served at its URL by its front (daemons/front.py); layouts written before
    #: fronts existed load without it
    front: bool = False

    def save(self) -> None:
        write_atomic(Path(self.root, LAYOUT_FILE), (json.dumps(asdict(self), indent=2) + "\n").encode(), PUBLIC)

    @classmethod
    def load(cls, root: Path) -> Layout:
        """The layout in `root`; a ConfigError naming the file when it is missing, unreadable or not
        one `sivr init` wrote (the installers and `sivr demo` showed a traceback)."""
        path = Path(root) / LAYOUT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["instances"] = [Instance(**i) for i in data["instances"]]
            return cls(**data)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the deployment: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError) as exc:  # not UTF-8 or JSON, a field missing or unknown
            raise ConfigError(f"{path}: not a deployment that `sivr init` wrote "
                              f"({type(exc).__name__}: {exc})") from exc

    def by_layer(self, layer: str) -> list[Instance]:
        return [i for i in self.instances if i.layer == layer]

    def first(self, layer: str) -> Instance | None:
        found = self.by_layer(layer)
        return found[0] if found else None


@dataclass(frozen=True)
class ObjectStore:
    """An S3 endpoint for the render stores: each institution's nodes share one prefix of `bucket`."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    ca_file: str = ""


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
CHOSEN_PORTS_FROM = 20000
_random = random.SystemRandom()


def _chosen_range() -> range:
    """Where free ports are chosen: below the kernel's ephemeral range, whose ports it hands out by
    itself, to every outgoing connection and every bind to port 0. A port chosen there and released
    until its server binds it could be taken in between by any connection on the host (CI saw a
    render node's DICOM port taken so); below it, only by another program choosing at random too.
    An empty range (the ephemeral range configured low) leaves the choice to the kernel."""
    try:
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return range(CHOSEN_PORTS_FROM, max(CHOSEN_PORTS_FROM, low))


# Ports this process has chosen already. A port chosen, released and not yet bound by its server
# (a peer the caller starts later) was free again to the next choice: CI saw a render node's DICOM
# listener bind the port just chosen for a C-MOVE destination, whose storescp then could not.
_chosen_before: set[int] = set()  # by port alone: one on 127.0.0.1 conflicts with the wildcard's


def _bind_free(host: str) -> socket.socket:
    """A socket bound, without SO_REUSEADDR, to a port of `_chosen_range` free now and never chosen
    before by this process (else any free port)."""
    chosen = _chosen_range()
    for _ in range(64 if chosen else 0):
        port = _random.choice(chosen)
        if port in _chosen_before:
            continue
        sock = _new_socket(host)
        try:
            sock.bind((host, port))
        except OSError:  # in use, or in TIME_WAIT: another one
            sock.close()
            continue
        _chosen_before.add(port)
        return sock
    sock = _new_socket(host)
    sock.bind((host, 0))
    return sock


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different ports free now, all bound at once (ports chosen one after another may
    repeat). They may still be taken before the caller binds them (see hold_free_port), though
    not by an outgoing connection (`_chosen_range`)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(_bind_free(host)) for _ in range(count)]
        return [sock.getsockname()[1] for sock in sockets]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now; anything may take it before the caller binds it (see hold_free_port)."""
    return free_ports(1, host)[0]


# Ports chosen by hold_free_port, kept bound by this process until LocalDeployment hands each to
# its daemon: between choosing a port and the daemon starting, nothing else can bind it, nor get
# it as a free port or as the local port of an outgoing connection.
_held_ports: dict[tuple[str, int], socket.socket] = {}


def _new_socket(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def hold_free_port(host: str = "127.0.0.1") -> int:
    """A free port on `host`, held bound (without SO_REUSEADDR, so it cannot be shared) until started."""
    sock = _bind_free(host)
    port = sock.getsockname()[1]
    _held_ports[(host, port)] = sock
    return port


def listening_socket(host: str, port: int) -> socket.socket:
    """The bound socket a daemon serves on: the one held since its port was chosen, else bound now.

    Bound here rather than by gunicorn so that a port taken meanwhile fails the start with the
    address named, before any process is started. Like gunicorn, it tries for BIND_RETRY_S: the
    workers of a daemon just killed may still be closing their copies of the socket.
    """
    held = _held_ports.pop((host, port), None)
    if held is not None:
        return held
    deadline = time.monotonic() + BIND_RETRY_S
    while True:
        sock = _new_socket(host)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: restarts reuse it
        try:
            sock.bind((host, port))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise OSError(exc.errno, f"cannot bind {host}:{port}: {exc.strerror}") from exc
        time.sleep(0.2)


def existing_data(root: Path) -> list[str]:
    """What in a deployment folder only its keys open or nothing can rebuild, relative to `root`:
    the first files under data/ (databases, render stores), a node's store key whose store folder
    exists, and every S3 key-encryption key (its bucket prefix may hold records only it opens).

    `init --force` rewrites keys, CA and configs: over any of these it would make records unreadable
    for ever and pair the databases with institution ids of a different deployment.
    """
    data, keys = root / "data", root / "keys"
    # the first few suffice to refuse: a real store holds millions of files
    files = (p for p in data.rglob("*") if not p.is_dir()) if data.is_dir() else iter(())
    found = sorted(itertools.islice(files, EXISTING_DATA_SHOWN))
    if keys.is_dir():
        found += sorted(key for key in keys.glob("*.store.key")
                        if (data / key.name.removesuffix(".store.key") / "store").exists())
        found += sorted(keys.glob("*.store-kek.key"))
    return [p.relative_to(root).as_posix() for p in found]


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"user {uid}"


def _only_our_group(gid: int) -> bool:
    """Whether the group `gid` is this user's own private group (a umask 002 set-up makes every
    folder group-writable by it): our primary group, naming no other member."""
    if gid != os.getegid():
        return False
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    return members <= {_user_name(os.geteuid())}


def _sudo_caller() -> set[int]:
    """The user who ran `sudo` to become root (`SUDO_UID`): `sudo sivr demo` in their own clone works
    on folders they could change anyway. Nobody else's, and only when this is root: the variable is
    the caller's word, which only root's own environment is trusted to carry."""
    uid = os.environ.get("SUDO_UID", "")
    return {int(uid)} if os.geteuid() == 0 and uid.isdigit() else set()


def require_private_folder(root: Path) -> None:
    """ValueError unless nobody but this user and root can change `root` or a folder above it.

    A deployment folder holds the signing key, the CA and every config that IT later copies to the
    hosts. In a folder another user owns (or may write, or one above it), that user renames
    `keys/` or a config away after init wrote them and puts their own in its place (files of the
    folder's owner are no obstacle to that): a signing key they know, with which they mint a system
    administrator's token. So init, and `sivr demo` before it reads or writes its state folder,
    refuse such a folder, as sshd refuses an authorized_keys file others may change. A folder above
    it may be writable by all if it has the sticky bit (/tmp): others cannot rename what is ours
    there. Folders not made yet are checked from the first that exists.
    """
    root = Path(root).resolve()
    trusted = {0, os.geteuid(), *_sudo_caller()}
    for folder in (root, *root.parents):
        try:
            status = folder.stat()
        except FileNotFoundError:
            continue
        fix = ("choose a folder that only you (and root) can change, e.g. one made by `mktemp -d`, "
               "or make it yours and not writable by others (chown, chmod go-w)")
        if status.st_uid not in trusted:
            raise ValueError(f"{folder} belongs to {_user_name(status.st_uid)}, who could replace the keys and "
                             f"configs written under it: {fix}")
        others_write = status.st_mode & 0o002 or (status.st_mode & 0o020 and not _only_our_group(status.st_gid))
        if others_write and (folder == root or not status.st_mode & stat.S_ISVTX):
            raise ValueError(f"{folder} may be written by other users (mode {stat.filemode(status.st_mode)}), "
                             f"who could replace the keys and configs written under it: {fix}")


def default_render_workers() -> int:
    """A render node's gunicorn workers: one per core (they share the decoded series), at most
    MAX_DEFAULT_RENDER_WORKERS (each worker keeps its own compiled kernels and decode pool)."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_RENDER_WORKERS))


def init_deployment(
    root: Path,
    hostnames: list[str] | None = None,
    institution_names: list[str] | None = None,
    nodes_per_institution: int | list[int] = 1,
    database_urls: dict[str, str] | None = None,
    pick_free_ports: bool = False,
    force: bool = False,
    hold_ports: bool = False,
    object_store: ObjectStore | None = None,
    front: bool = False,
    render_workers: int | None = None,
) -> Layout:
    """Write keys, a local CA and server certificate, and one config file per instance.

    `nodes_per_institution` is one count for all, or a count per institution.
    `database_urls` maps an instance name (`toplevel`, `institution-1`, ...) to a peewee URL;
    others get SQLite files beside their config. With `pick_free_ports` every instance gets a
    free loopback port (tests); otherwise the layers' default ports, render nodes counting up.
    With `hold_ports` as well, this process keeps the chosen ports bound until a LocalDeployment
    of the layout starts the daemons on them (no other process can take one in between); a
    caller that starts the daemons some other way leaves it off.
    With `object_store` the render nodes of each institution share one prefix of its bucket (one
    key-encryption key and one credentials file per institution); otherwise each has its own folder.
    With `front` every instance's URL is served by nginx (TLS, HTTP/2; a config per instance in
    `front/`) in front of its gunicorn, which listens on loopback without TLS and believes the
    front's X-Forwarded-For; otherwise gunicorn serves the URL with TLS itself.
    `render_workers`: gunicorn workers per render node (default `default_render_workers()`).
    `force` rewrites a folder that already holds a deployment, never one holding data (`existing_data`).
    """
    hostnames = [check_hostname(host) for host in hostnames or ["127.0.0.1", "localhost", "::1"]]
    institution_names = [_institution_name(name) for name in institution_names or ["Demo Hospital"]]
    twice = sorted({name for name in institution_names if institution_names.count(name) > 1})
    if twice:
        raise ValueError(f"institution name {twice[0]!r} given more than once: the toplevel knows each name once")
    if isinstance(nodes_per_institution, int):
        nodes_per_institution = [nodes_per_institution] * len(institution_names)
    if len(nodes_per_institution) != len(institution_names):
        raise ValueError("give one render-node count per institution")
    if min(nodes_per_institution) < 0:
        raise ValueError(f"render nodes per institution: {min(nodes_per_institution)} is below 0")
    root = root.resolve()
    require_private_folder(root)
    keys, tls, data = root / "keys", root / "tls", root / "data"
    for folder in (keys, tls, data, root / fronts.FOLDER):
        if folder.is_symlink():
            raise ValueError(f"{folder} is a symbolic link: init writes keys, certificates and data only "
                             "into the deployment folder's own sub-folders")
    held = existing_data(root)
    if held:
        shown = ", ".join(held[:EXISTING_DATA_SHOWN]) + (" and more" if len(held) > EXISTING_DATA_SHOWN else "")
        raise FileExistsError(
            f"{root} holds data ({shown}): init never overwrites a deployment that has data, not even "
            "with --force (its store keys are the only copy); move the folder away or choose another --dir")
    if (root / LAYOUT_FILE).exists() and not force:
        raise FileExistsError(f"{root} already holds a deployment; use --force to overwrite it")
    database_urls = database_urls or {}
    host = hostnames[0]
    # Modes set whatever the umask: keys/ holds every secret; data/ every SQLite database (users,
    # findings, patient names) and the render stores: only the deployment's own user may list or
    # enter either. The configs, tls/ and its certificates are for anyone on the host to read.
    make_folder(root, 0o755)
    make_folder(tls, 0o755)
    for folder in (keys, data):
        make_folder(folder, 0o700)
        os.chmod(folder, 0o700)

    private_key, public_key = keys / "token_ed25519.pem", keys / "token_ed25519.pub"
    generate_signing_keypair(private_key, public_key)
    create_ca(tls / "ca.pem", tls / "ca.key")
    issue_server_cert(tls / "ca.pem", tls / "ca.key", tls / "server.pem", tls / "server.key", hostnames)

    used_defaults: set[int] = set()
    next_extra_port = 5100

    def port_for(layer: str) -> int:
        """A free port (tests), the layer's default the first time, then 5100 upwards."""
        nonlocal next_extra_port
        if pick_free_ports:
            loopback = fronts.bind_host(host)
            return hold_free_port(loopback) if hold_ports else free_port(loopback)
        if DEFAULT_PORTS[layer] not in used_defaults:
            used_defaults.add(DEFAULT_PORTS[layer])
            return DEFAULT_PORTS[layer]
        next_extra_port += 1
        return next_extra_port - 1

    next_dicom_port = DICOM_PORT
    dicom_host = host if ":" not in host else "127.0.0.1"

    def dicom_port() -> int:
        nonlocal next_dicom_port
        if pick_free_ports:
            address = fronts.bind_host(dicom_host)
            return hold_free_port(address) if hold_ports else free_port(address)
        next_dicom_port += 1
        return next_dicom_port - 1

    def backend_port(public_port: int) -> int:
        if pick_free_ports:
            return hold_free_port(fronts.BACKEND_HOST) if hold_ports else free_port(fronts.BACKEND_HOST)
        return public_port + fronts.BACKEND_PORT_OFFSET

    url_host = f"[{host}]" if ":" in host else host
    layout = Layout(root=str(root), ca_cert=str(tls / "ca.pem"), front=front)
    ports = {"web": port_for("web"), "toplevel": port_for("toplevel")}
    web_url = f"https://{url_host}:{ports['web']}"
    common = {
        "server": {"host": host, "tls_cert": FRONT_CERT, "tls_key": FRONT_KEY},
        "cors": {"origins": [web_url]},
        "tokens": {"public_key": "keys/token_ed25519.pub"},
    }

    def add(layer: str, name: str, port: int, values: dict, institution: str | None = None) -> None:
        merged = {section: dict(body) for section, body in common.items()}
        merged["server"] = {**merged["server"], "port": port}
        url = f"https://{url_host}:{port}"
        if front:
            behind = backend_port(port)
            secret_file = f"keys/{name}.front-secret"
            write_atomic(root / secret_file, secrets.token_urlsafe(32).encode(), PRIVATE)
            merged["server"] = {"host": fronts.BACKEND_HOST, "port": behind, "tls_cert": "", "tls_key": "",
                                "trusted_proxies": 1, "proxy_secret_file": secret_file}
            if layer == "render":  # DICOM TLS keeps the certificate the HTTPS port no longer has
                values = {**values, "dicom": {**values.get("dicom", {}), "tls_cert": FRONT_CERT, "tls_key": FRONT_KEY}}
        if layer != "web":
            # each server accepts only tokens minted for the URL its clients call it at
            merged["tokens"] = {**merged["tokens"], "audience": url}
        for section, body in values.items():
            merged.setdefault(section, {}).update(body)
        if name in database_urls:
            merged.setdefault("database", {})["url"] = database_urls[name]
        path = root / f"{name}.toml"
        keys_of_layer = LAYERS[layer].keys
        build_config(layer, keys_of_layer, merged, path)  # refuse a bad key before writing
        write_atomic(path, render_config_toml(layer, keys_of_layer, merged).encode(), PUBLIC)
        layout.instances.append(
            Instance(layer, name, str(path), url, institution)
        )
        if front:
            write_front(root, layout.instances[-1])

    toplevel_url = f"https://{url_host}:{ports['toplevel']}"
    add("toplevel", "toplevel", ports["toplevel"], {
        "database": {"url": "sqlite:///data/toplevel.db"},
        "tokens": {"private_key": "keys/token_ed25519.pem"},
    })
    institutions = zip(institution_names, nodes_per_institution, strict=True)
    for number, (inst_name, node_count) in enumerate(institutions, start=1):
        inst_id = str(uuid.uuid4())
        inst_port = port_for("institution")
        inst_instance = f"institution-{number}"
        add("institution", inst_instance, inst_port, {
            "database": {"url": f"sqlite:///data/{inst_instance}.db"},
            "institution": {"id": inst_id, "name": inst_name},
        }, inst_id)
        layout.institutions.append({
            "id": inst_id, "name": inst_name, "server_url": layout.instances[-1].url, "nodes": [],
        })
        shared_store = _institution_store(keys, inst_instance, object_store) if object_store else None
        for node in range(1, node_count + 1):
            node_name = f"render-{number}-{node}"
            store_values = ({**shared_store, "s3": {**shared_store["s3"], "cache_dir": f"data/{node_name}/s3-cache"}}
                            if shared_store else _own_store(keys, node_name))
            receipt_key = load_or_create_node_key(keys / f"{node_name}.receipt.pem")
            add("render", node_name, port_for("render"), {
                "server": {"workers": render_workers or default_render_workers(), "threads": 16,
                           "max_request_mb": 2048},
                "database": {"url": f"sqlite:///data/{node_name}/render.db"},
                "node": {"institution_id": inst_id, "name": node_name,
                         "receipt_key": f"keys/{node_name}.receipt.pem"},
                **store_values,
                "dicom": {"port": dicom_port(), "host": dicom_host,
                          "ae_title": f"SIVR-{number}-{node}"[:16], "allowed_callers": list(DEMO_DICOM_CALLERS)},
            }, inst_id)
            make_folder(data / node_name / "store", 0o700)
            layout.institutions[-1]["nodes"].append({
                "name": node_name, "url": layout.instances[-1].url, "store": _store_name(store_values),
                "receipt_key": public_key_text(receipt_key.public_key()),  # to register at the institution
            })
    servers = [i.url for i in layout.instances if i.layer in ("institution", "render")]
    add("web", "web", ports["web"], {"web": {"toplevel_url": toplevel_url, "connect_origins": servers}})
    layout.save()
    return layout


def _institution_name(name: str) -> str:
    """The name as the toplevel will store it (stripped), checked by the toplevel's own rule before
    init writes anything: it was checked only when registering, after every file was written."""
    try:
        return validate({"name": name}, INSTITUTION_FIELDS, partial=True)["name"]
    except ApiError as exc:
        raise ValueError(f"institution name {name!r}: {exc.message}") from exc


def write_front(root: Path, instance: Instance) -> Path:
    """Write the nginx config of an instance's front from its URL and its config (backend port, body
    limit, keep-alive), so that the front refuses what the instance would (daemons/front.py)."""
    config = get_layer(instance.layer).load_config(instance.config)
    server = config["server"]
    url = urlsplit(instance.url)
    secret = read_proxy_secret(config) if server["proxy_secret_file"] else ""
    return fronts.write_config(root, fronts.Front(
        instance.name, url.hostname or fronts.BACKEND_HOST, url.port or 443, server["port"],
        f"../{FRONT_CERT}", f"../{FRONT_KEY}", server["max_request_mb"], server["keepalive_s"], secret,
        get_layer(instance.layer).streamed_locations))


def _own_store(keys: Path, node_name: str) -> dict:
    """A node's own encrypted folder and its key."""
    write_atomic(keys / f"{node_name}.store.key", secrets.token_bytes(STORE_KEY_BYTES), PRIVATE)
    return {"storage": {"backend": "local", "dir": f"data/{node_name}/store",
                        "key_file": f"keys/{node_name}.store.key"}}


def _institution_store(keys: Path, inst_instance: str, store: ObjectStore) -> dict:
    """The bucket prefix, key-encryption key and S3 credentials the nodes of one institution share."""
    write_atomic(keys / f"{inst_instance}.store-kek.key", secrets.token_bytes(STORE_KEY_BYTES), PRIVATE)
    credentials = {"access_key_id": store.access_key_id, "secret_access_key": store.secret_access_key}
    write_atomic(keys / f"{inst_instance}.s3.json", json.dumps(credentials).encode("utf-8"), PRIVATE)
    return {
        "storage": {"backend": "s3", "key_file": f"keys/{inst_instance}.store-kek.key"},
        "s3": {"endpoint_url": store.endpoint_url, "bucket": store.bucket, "prefix": f"{inst_instance}/",
               "region": store.region, "credentials_file": f"keys/{inst_instance}.s3.json",
               "ca_file": store.ca_file},
    }


def _store_name(values: dict) -> str:
    """The `store` a node declares in its institution's registry ("" for its own folder)."""
    if values["storage"]["backend"] != "s3":
        return ""
    s3 = values["s3"]
    return store_location(s3["endpoint_url"], s3["bucket"], s3["prefix"])


class LocalDeployment:
    """Start and stop every instance of a layout as `sivr serve` subprocesses."""

    def __init__(self, layout: Layout, layers: tuple[str, ...] | None = None):
        self.layout = layout
        self.root = Path(layout.root)
        wanted = layers or tuple(LAYERS)
        self.instances = [i for i in layout.instances if i.layer in wanted]
        self.processes: dict[str, subprocess.Popen] = {}
        self.fronts: dict[str, subprocess.Popen] = {}

    @property
    def ca_cert(self) -> str:
        return self.layout.ca_cert

    def url(self, name: str) -> str:
        for instance in self.instances:
            if instance.name == name or instance.layer == name:
                return instance.url
        raise KeyError(f"no running instance named {name!r}")

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def front_log_path(self, name: str) -> Path:
        """nginx's error log of the instance's front (plain text, apart from the daemon's JSON lines)."""
        return self.root / "logs" / f"{name}.front.log"

    def start_instance(self, instance: Instance) -> None:
        """Start one daemon on a socket bound here and inherited (see listening_socket), and its front.
        A render node's DICOM port is handed over the same way.

        `-P`: the folder this process runs in stays off the daemon's import path (cli.gunicorn_argv).
        """
        if self.layout.front:
            fronts.nginx_binary()  # refused before the daemon starts, never leaving it running unfronted
        self.log_path(instance.name).parent.mkdir(exist_ok=True)
        config = get_layer(instance.layer).load_config(instance.config)
        server = config["server"]
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(listening_socket(fronts.bind_host(server["host"]), server["port"]))
            argv = [sys.executable, "-P", "-m", "daemons.cli", "serve", instance.layer, "--config", instance.config,
                    "--listen-fd", str(sock.fileno())]
            inherited = [sock.fileno()]
            if instance.layer == "render" and config["dicom"]["port"]:
                dicom = stack.enter_context(listening_socket(fronts.bind_host(config["dicom"]["host"]),
                                                             config["dicom"]["port"]))
                argv += ["--dicom-fd", str(dicom.fileno())]
                inherited.append(dicom.fileno())
            log = stack.enter_context(open(self.log_path(instance.name), "ab"))
            self.processes[instance.name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=inherited)
        if self.layout.front:
            self.start_front(instance)

    def start_front(self, instance: Instance) -> None:
        """Start nginx at the instance's URL, on the socket held since `init_deployment` chose its port.

        nginx takes listening sockets from its parent through the `NGINX` environment variable (the
        way it hands them to a new binary on an upgrade), so the port is never free in between.
        """
        url = urlsplit(instance.url)
        host = fronts.bind_host(url.hostname or fronts.BACKEND_HOST)
        run_folder = self.root / fronts.FOLDER / "run" / instance.name
        run_folder.mkdir(parents=True, exist_ok=True)
        argv = fronts.command(write_front(self.root, instance), run_folder)  # the config as it is now
        with listening_socket(host, url.port) as sock, open(self.front_log_path(instance.name), "ab") as log:
            # as nginx sets it on sockets it binds itself: the connections it accepts inherit it, so
            # a restart after a kill can bind the port while they linger in TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.listen(socket.SOMAXCONN)
            # nginx makes the sockets it binds non-blocking but takes inherited ones as they are: a
            # blocking one leaves the worker that loses the race for a connection stuck in accept(),
            # its open requests unanswered until the next connection arrives
            sock.setblocking(False)
            self.fronts[instance.name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(sock.fileno(),),
                env={**os.environ, "NGINX": f"{sock.fileno()};"})

    def start(self, timeout_s: float = 60.0) -> None:
        for instance in self.instances:
            self.start_instance(instance)
        for instance in self.instances:
            self.wait_healthy(instance, timeout_s)

    def wait_healthy(self, instance: Instance, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        watched = [(self.processes[instance.name], self.log_path(instance.name))]
        if instance.name in self.fronts:
            watched.append((self.fronts[instance.name], self.front_log_path(instance.name)))
        while time.monotonic() < deadline:
            for process, log in watched:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{instance.name} ({Path(str(process.args[0])).name}) exited with {process.returncode}; "
                        f"log:\n" + log.read_text(errors="replace")[-4000:])
            try:
                if requests.get(f"{instance.url}/readyz", verify=self.ca_cert, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{instance.name} was not ready (/readyz) within {timeout_s} s")

    def stop_instance(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop an instance as its clients see it: its front (if any), then its daemon."""
        self.stop([name], sig)

    def stop(self, names: list[str] | None = None, sig: int = signal.SIGTERM) -> None:
        """Stop the named instances (default: all) at once, as their clients see them: every front
        first (a draining nginx may still pass a request to its daemon), then every daemon. Each
        takes its own grace for requests in flight (up to `--graceful-timeout`); they need not take
        them one after another. nginx's graceful stop is SIGQUIT."""
        names = list(self.processes) if names is None else names
        front_sig = signal.SIGQUIT if sig == signal.SIGTERM else sig
        for group, number in ((self.fronts, front_sig), (self.processes, sig)):
            signalled = [process for process in (group.pop(name, None) for name in names) if _signal(process, number)]
            for process in signalled:
                _wait(process)

    def __enter__(self) -> LocalDeployment:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal(process: subprocess.Popen | None, sig: int) -> bool:
    """Send `sig` to a running process's group; False when there is nothing to stop."""
    if process is None or process.poll() is not None:
        return False
    os.killpg(process.pid, sig)
    return True


def _wait(process: subprocess.Popen) -> None:
    """Wait for a signalled process, killing its group after STOP_WAIT_S."""
    try:
        process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def dicom_endpoint(instance: Instance) -> dict:
    """Where a render node listens for DICOM: {"host", "port", "ae_title"} from its config."""
    section = LAYERS["render"].load_config(instance.config)["dicom"]
    return {"host": section["host"], "port": section["port"], "ae_title": section["ae_title"]}
