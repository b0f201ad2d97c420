"""The `sivr` command as an operator runs it: init, user add, serve, demo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from daemons.layers import LAYERS, get_layer
from shared.receipts import load_or_create_node_key, public_key_text

SIVR = [sys.executable, "-m", "daemons.cli"]


def run_sivr(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SIVR, *args], input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def initialised(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("init")
    result = run_sivr("init", "--dir", str(root), "--institution-name", "General Hospital",
                      "--institution-name", "Clinic B")
    assert result.returncode == 0, result.stderr
    return root


def test_init_writes_private_keys_owner_only(initialised):
    for key in ["keys/token_ed25519.pem", "tls/ca.key", "tls/server.key",
                "keys/render-1-1.store.key", "keys/render-2-1.store.key",
                "keys/render-1-1.receipt.pem", "keys/render-2-1.receipt.pem"]:
        mode = stat.S_IMODE((initialised / key).stat().st_mode)
        assert mode == 0o600, f"{key} has mode {oct(mode)}"
    assert len((initialised / "keys/render-1-1.store.key").read_bytes()) == 32


def test_every_layers_sqlite_database_and_the_data_folder_are_owner_only(tmp_path):
    """Outside the units' UMask=0077 (a plain `sivr init`, `sivr db upgrade`), SQLite made its files
    0644 in a 0755 data/: users and password hashes, findings, patient names readable by anyone."""
    from daemons.cli import main

    old_umask = os.umask(0o022)
    try:
        assert main(["init", "--dir", str(tmp_path), "--nodes-per-institution", "1"]) == 0
        for name in ("institution-1", "render-1-1"):
            layer = name.split("-", 1)[0]
            assert main(["db", "upgrade", layer, "--config", str(tmp_path / f"{name}.toml")]) == 0
    finally:
        os.umask(old_umask)
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    databases = {p.relative_to(data).as_posix() for p in data.rglob("*.db")}
    assert databases == {"toplevel.db", "institution-1.db", "render-1-1/render.db"}
    for database in databases:
        assert stat.S_IMODE((data / database).stat().st_mode) == 0o600, database


def test_init_writes_a_valid_documented_config_per_instance(initialised):
    layout = json.loads((initialised / "deployment.json").read_text())
    assert {i["layer"] for i in layout["instances"]} == set(LAYERS)
    for instance in layout["instances"]:
        text = Path(instance["config"]).read_text()
        assert "# " in text and "Default:" in text
        config = get_layer(instance["layer"]).load_config(instance["config"])
        # each instance behind its own nginx front by default: TLS there, gunicorn on loopback only
        assert config["server"]["host"] == "127.0.0.1" and not config["server"]["tls_cert"]
        assert (initialised / "front" / f"{instance['name']}.conf").is_file()
        assert config["tokens"]["public_key"].endswith("token_ed25519.pub")
        if instance["layer"] != "toplevel":
            assert "private_key" not in config["tokens"], "only the toplevel may hold the signing key"


def test_init_without_fronts_has_gunicorn_serve_tls_itself(tmp_path):
    """`--no-front`, for a host behind a buffering proxy of IT's own (docs/deployment.md, "Slow clients")."""
    root = tmp_path / "deploy"
    result = run_sivr("init", "--dir", str(root), "--no-front")
    assert result.returncode == 0, result.stderr
    for instance in json.loads((root / "deployment.json").read_text())["instances"]:
        config = get_layer(instance["layer"]).load_config(instance["config"])
        assert Path(config["server"]["tls_cert"]).is_file() and not config["server"]["proxy_secret_file"]
    assert not (root / "front").exists()


@pytest.mark.parametrize("content, mode, message", [
    (None, 0o600, "cannot read it"),  # no such file
    ("[]", 0o600, "must be JSON with access_key_id and secret_access_key"),
    ("{}", 0o600, "must be JSON with access_key_id and secret_access_key"),
    ("", 0o600, "must be JSON with access_key_id and secret_access_key"),
    ('{"access_key_id": "AK", "secret_access_key": "SK"}', 0o644, "readable by its owner only"),
])
def test_init_refuses_unusable_s3_credentials_naming_the_file(tmp_path, content, mode, message):
    """A missing, empty or malformed credentials file was a traceback (or "Expecting value: line 1
    column 1", naming no file); a copy every local user may read is refused as the node refuses it."""
    credentials = tmp_path / "s3.json"
    if content is not None:
        credentials.write_text(content)
        credentials.chmod(mode)
    result = run_sivr("init", "--dir", str(tmp_path / "deploy"), "--s3-endpoint", "https://s3.example.org:8333",
                      "--s3-bucket", "b", "--s3-credentials", str(credentials))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert str(credentials) in result.stderr and message in result.stderr, result.stderr


def test_init_with_an_object_store_gives_each_institution_one_shared_prefix(tmp_path):
    credentials = tmp_path / "s3.json"
    credentials.write_text(json.dumps({"access_key_id": "AK", "secret_access_key": "SK"}))
    credentials.chmod(0o600)
    root = tmp_path / "deploy"
    result = run_sivr("init", "--dir", str(root), "--institution-name", "North", "--institution-name", "South",
                      "--nodes-per-institution", "2", "--s3-endpoint", "https://s3.example.org:8333",
                      "--s3-bucket", "sivr-records", "--s3-credentials", str(credentials))
    assert result.returncode == 0, result.stderr
    layout = json.loads((root / "deployment.json").read_text())
    configs = {i["name"]: get_layer("render").load_config(i["config"]) for i in layout["instances"]
               if i["layer"] == "render"}
    assert {c["storage"]["backend"] for c in configs.values()} == {"s3"}
    assert configs["render-1-1"]["s3"]["prefix"] == configs["render-1-2"]["s3"]["prefix"] == "institution-1/"
    assert configs["render-2-1"]["s3"]["prefix"] == "institution-2/"
    assert configs["render-1-1"]["storage"]["key_file"] == configs["render-1-2"]["storage"]["key_file"]
    for name in ("institution-1.store-kek.key", "institution-1.s3.json"):
        assert stat.S_IMODE((root / "keys" / name).stat().st_mode) == 0o600
    stores = [n["store"] for inst in layout["institutions"] for n in inst["nodes"]]
    assert stores[0] == stores[1] == "s3:https://s3.example.org:8333/sivr-records/institution-1" != stores[2]
    half = run_sivr("init", "--dir", str(tmp_path / "other"), "--s3-bucket", "b")
    assert half.returncode != 0 and "go together" in half.stderr


def test_init_gives_each_node_a_receipt_key_named_in_its_config_and_the_layout(initialised):
    layout = json.loads((initialised / "deployment.json").read_text())
    published = {n["url"]: n["receipt_key"] for inst in layout["institutions"] for n in inst["nodes"]}
    for instance in (i for i in layout["instances"] if i["layer"] == "render"):
        config = get_layer("render").load_config(instance["config"])
        key = load_or_create_node_key(Path(config["node"]["receipt_key"]))
        assert public_key_text(key.public_key()) == published[instance["url"]]
    assert len(set(published.values())) == len(published) == 2


def test_store_rewrap_of_a_local_store_says_it_has_nothing_to_rewrap(initialised):
    """It printed "0 record(s) rewrapped ... every record now opens without storage.old_key_files"
    about a store that has one key and nothing wrapped."""
    layout = json.loads((initialised / "deployment.json").read_text())
    config = next(i["config"] for i in layout["instances"] if i["layer"] == "render")
    assert get_layer("render").load_config(config)["storage"]["backend"] == "local"
    result = run_sivr("store", "rewrap", "--config", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("nothing to rewrap: a local store") and "rewrapped" not in result.stdout


def test_init_refuses_to_overwrite_without_force(initialised):
    result = run_sivr("init", "--dir", str(initialised))
    assert result.returncode == 2 and "--force" in result.stderr


def test_user_add_creates_an_admin_and_refuses_a_duplicate(initialised):
    config = str(initialised / "toplevel.toml")
    ok = run_sivr("user", "add", "--config", config, "--username", "root-admin", "--role", "sysadmin",
                  "--institution", "General Hospital", "--password-stdin", stdin="a-long-password-1\n")
    assert ok.returncode == 0, ok.stderr
    again = run_sivr("user", "add", "--config", config, "--username", "root-admin", "--role", "sysadmin",
                     "--institution", "General Hospital", "--password-stdin", stdin="a-long-password-1\n")
    assert again.returncode != 0 and "root-admin" in (again.stderr + again.stdout)
    ambiguous = run_sivr("user", "add", "--config", config, "--username", "x", "--role", "sysadmin",
                         "--password-stdin", stdin="a-long-password-1\n")
    assert ambiguous.returncode != 0 and "--institution" in ambiguous.stderr


def test_user_add_takes_the_new_roles_and_set_role_changes_one(initialised):
    config = str(initialised / "toplevel.toml")
    added = run_sivr("user", "add", "--config", config, "--username", "north-admin", "--role", "instadmin",
                     "--institution", "General Hospital", "--password-stdin", stdin="a-long-password-1\n")
    assert added.returncode == 0 and "(instadmin)" in added.stdout, added.stderr
    old_role = run_sivr("user", "add", "--config", config, "--username", "old", "--role", "admin",
                        "--institution", "General Hospital", "--password-stdin", stdin="a-long-password-1\n")
    assert old_role.returncode != 0 and "invalid choice" in old_role.stderr
    changed = run_sivr("user", "set-role", "--config", config, "North-Admin", "sysadmin")
    assert changed.returncode == 0 and "north-admin is now sysadmin" in changed.stdout, changed.stderr
    unknown = run_sivr("user", "set-role", "--config", config, "nobody", "physician")
    assert unknown.returncode != 0 and "no user named" in unknown.stderr


def test_serve_refuses_a_config_with_an_unknown_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nbogus = 1\n")
    result = run_sivr("serve", "toplevel", "--config", str(bad))
    assert result.returncode == 2 and "server.bogus" in result.stderr


def test_serve_refuses_the_retired_http2_mode_pointing_to_the_front(tmp_path):
    """hypercorn (`server.http2 = true`) was retired on 2026-12-01: exit 2 with one line naming the
    file, the key and the nginx front, before anything listens."""
    config = tmp_path / "render.toml"
    config.write_text("[server]\nhost = \"127.0.0.1\"\nport = 1\nhttp2 = true\n")
    for command in (["ready", "render"], ["db", "upgrade", "render"], ["serve", "render"]):
        result = run_sivr(*command, "--config", str(config))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"sivr: {config}: server.http2 = true"), (command, lines)
        assert "nginx front" in lines[0] and "sivr init --front" in lines[0]


@pytest.mark.slow
def test_demo_comes_up_writes_demo_json_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "demo"
    process = subprocess.Popen([*SIVR, "demo", "--state-dir", str(state), "--no-data"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (state / "demo.json").exists():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "demo.json not written within 120 s"
            time.sleep(0.5)
        info = json.loads((state / "demo.json").read_text())
        assert set(info) == {"layers", "ca_cert", "users", "dicom", "dicomweb"}
        dicom = info["dicom"]
        assert set(dicom) == {"host", "port", "ae_title"}
        (root,) = info["dicomweb"].values()  # the node's DICOMweb root answers (a search needs a token)
        assert root == info["layers"]["render"] + "/dicomweb"
        unauthenticated = requests.get(f"{root}/studies", verify=info["ca_cert"], timeout=10)
        assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"]
        if shutil.which("storescu"):  # a modality sends to the demo (dcmtk's default calling AE title)
            ct = sorted((Path(__file__).resolve().parents[1] / "demo_data" / "ct-chest-100").glob("*.dcm"))[:2]
            sent = subprocess.run(["storescu", "-xv", "-aec", dicom["ae_title"], dicom["host"], str(dicom["port"]),
                                   *map(str, ct)], capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stderr
        assert set(info["users"]) == {"admin", "physician"}
        for url in info["layers"].values():
            assert requests.get(f"{url}/healthz", verify=info["ca_cert"], timeout=10).ok
        login = requests.post(f"{info['layers']['toplevel']}/api/v1/auth/login", json=info["users"]["admin"],
                              verify=info["ca_cert"], timeout=10)
        assert login.status_code == 200
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        for url in info["layers"].values():
            with pytest.raises(requests.ConnectionError):
                requests.get(f"{url}/healthz", verify=info["ca_cert"], timeout=5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_demo_json_names_each_render_nodes_dicomweb_root(tmp_path):
    from daemons.demo import write_demo_json
    from daemons.deployment import LocalDeployment, init_deployment

    layout = init_deployment(tmp_path / "two-nodes", pick_free_ports=True, nodes_per_institution=2)
    deployment = LocalDeployment(layout)
    info = json.loads(write_demo_json(deployment, {}).read_text())
    nodes = [i for i in layout.instances if i.layer == "render"]
    assert len(nodes) == 2
    assert info["dicomweb"] == {i.name: f"{i.url}/dicomweb" for i in nodes}


def test_cert_issue_makes_a_certificate_the_ca_verifies(initialised, tmp_path):
    from cryptography import x509

    result = run_sivr("cert", "issue", "--ca-dir", str(initialised / "tls"), "--hostname", "render-7.example.org",
                      "--hostname", "10.0.0.7", "--out", str(tmp_path / "host"))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "host" / "server.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((tmp_path / "host" / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((initialised / "tls" / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "render-7.example.org" in names.get_values_for_type(x509.DNSName)


def test_institution_add_with_a_given_id(initialised):
    wanted = "3f2b8a8e-5d7c-4c1e-9a51-0c1d2e3f4a5b"
    result = run_sivr("institution", "add", "--config", str(initialised / "toplevel.toml"),
                      "--name", "Third Clinic", "--id", wanted)
    assert result.returncode == 0, result.stderr
    assert wanted in result.stdout


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_init_force_refuses_a_deployment_holding_data_and_writes_nothing(tmp_path, capsys):
    """`--force` rewrote the store keys (their only copy), the token key and the CA over a deployment
    with its stores and databases, and gave institution-1.toml an id toplevel.db did not know."""
    from daemons.cli import main

    root = tmp_path / "d"
    assert main(["init", "--dir", str(root)]) == 0
    before = _files(root)
    capsys.readouterr()
    assert main(["init", "--dir", str(root), "--force"]) == 2
    error = capsys.readouterr().err
    assert "data/toplevel.db" in error and "--force" in error and "Traceback" not in error
    assert _files(root) == before


def test_init_force_rewrites_a_deployment_whose_data_is_gone(tmp_path):
    from daemons.cli import main

    root = tmp_path / "d"
    assert main(["init", "--dir", str(root)]) == 0
    shutil.rmtree(root / "data")
    assert main(["init", "--dir", str(root), "--force", "--institution-name", "North"]) == 0
    layout = json.loads((root / "deployment.json").read_text())
    config = get_layer("toplevel").load_config(root / "toplevel.toml")
    from daemons.toplevel.admin_ops import list_institutions

    assert [(i["id"], i["name"]) for i in list_institutions(config)] == \
        [(i["id"], i["name"]) for i in layout["institutions"]]


def test_init_replaces_a_planted_key_file_or_link_and_never_writes_through_it(tmp_path):
    """init opened keys with O_CREAT|O_TRUNC: an existing 0644 file kept 0644 with the new secret in
    it, and a link made init write the store key into the file it points to."""
    from daemons.cli import main

    root, victim = tmp_path / "d", tmp_path / "victim"
    (root / "keys").mkdir(parents=True)
    victim.mkdir()
    (victim / "notes.txt").write_text("notes")
    (root / "keys" / "render-1-1.store.key").symlink_to(victim / "notes.txt")
    (root / "keys" / "token_ed25519.pem").write_text("old")
    (root / "keys" / "token_ed25519.pem").chmod(0o644)
    assert main(["init", "--dir", str(root)]) == 0
    assert (victim / "notes.txt").read_text() == "notes"
    for key in ("render-1-1.store.key", "token_ed25519.pem"):
        path = root / "keys" / key
        assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600, key
    assert len((root / "keys" / "render-1-1.store.key").read_bytes()) == 32


@pytest.mark.parametrize("folder", ["keys", "tls", "data"])
def test_init_refuses_a_linked_sub_folder_and_writes_nothing(tmp_path, capsys, folder):
    from daemons.cli import main

    root, elsewhere = tmp_path / "d", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / folder).symlink_to(elsewhere)
    assert main(["init", "--dir", str(root)]) == 2
    error = capsys.readouterr().err
    assert f"{root / folder}" in error and "link" in error
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in root.iterdir()) == [folder]


def test_init_sets_its_modes_whatever_the_umask(tmp_path):
    from daemons.cli import main

    root = tmp_path / "d"
    old_umask = os.umask(0)
    try:
        assert main(["init", "--dir", str(root), "--front"]) == 0
    finally:
        os.umask(old_umask)
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}
    assert not [p for p, mode in modes.items() if mode & 0o022], modes
    assert modes["."] == modes["tls"] == 0o755 and modes["keys"] == modes["data"] == 0o700
    assert modes["toplevel.toml"] == modes["tls/ca.pem"] == modes["deployment.json"] == 0o644
    assert modes["tls/ca.key"] == modes["keys/render-1-1.store.key"] == 0o600


LONG_HOST = ".".join(["a" * 30, "b" * 30, "example", "org"])  # 73 characters: too long for a CN, fine for a SAN


@pytest.mark.parametrize("args", [
    ["--institution-name", ""], ["--institution-name", "North\tHospital"], ["--institution-name", "A\nB"],
    ["--hostname", "my host"], ["--hostname", "https://x.org/"], ["--hostname", "a.org\nb"],
    ["--hostname", ""], ["--hostname", "*.example.org"], ["--hostname", "a" * 64 + ".org"],
    ["--hostname", "a-.example.org"], ["--hostname", "fe80::1%eth0"], ["--nodes-per-institution", "-3"],
])
def test_init_refuses_bad_arguments_before_writing_anything(tmp_path, args):
    """These were refused only after deployment.json, configs and keys were written (a host name with
    a newline went unescaped into toplevel.toml), and the rerun was refused as a deployment."""
    root = tmp_path / "d"
    result = run_sivr("init", "--dir", str(root), *args)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert repr(args[1]) in result.stderr or args[1] in result.stderr
    assert not root.exists()


def test_init_and_cert_issue_take_a_host_name_too_long_for_a_common_name(tmp_path):
    from cryptography import x509

    root = tmp_path / "d"
    result = run_sivr("init", "--dir", str(root), "--hostname", LONG_HOST, "--hostname", "10.0.0.1")
    assert result.returncode == 0, result.stderr
    for folder in (root / "tls", tmp_path / "out"):
        if folder.name == "out":
            issued = run_sivr("cert", "issue", "--ca-dir", str(root / "tls"), "--hostname", LONG_HOST,
                              "--out", str(folder))
            assert issued.returncode == 0, issued.stderr
        cert = x509.load_pem_x509_certificate((folder / "server.pem").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert LONG_HOST in names.get_values_for_type(x509.DNSName)


def test_cert_issue_refuses_a_bad_host_name_before_writing(initialised, tmp_path):
    out = tmp_path / "out"
    result = run_sivr("cert", "issue", "--ca-dir", str(initialised / "tls"), "--hostname", "https://x.org/",
                      "--out", str(out))
    assert result.returncode == 2 and "'https://x.org/'" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_init_refuses_an_institution_named_twice(tmp_path):
    """deployment.json got two institutions of that name, the toplevel one (exit 0)."""
    root = tmp_path / "d"
    result = run_sivr("init", "--dir", str(root), "--institution-name", "A", "--institution-name", " A ")
    assert result.returncode == 2 and "'A'" in result.stderr and "Traceback" not in result.stderr
    assert not root.exists()


def test_institution_add_refuses_an_existing_name_with_another_id(initialised):
    """It exited 0 printing the existing institution's id, not the one asked for."""
    config = str(initialised / "toplevel.toml")
    other = "0b7e6a1c-2d3f-4a5b-8c9d-0e1f2a3b4c5d"
    result = run_sivr("institution", "add", "--config", config, "--name", "General Hospital", "--id", other)
    assert result.returncode != 0 and "General Hospital" in result.stderr and other in result.stderr
    assert "Traceback" not in result.stderr and other not in result.stdout
    layout = json.loads((initialised / "deployment.json").read_text())
    same = run_sivr("institution", "add", "--config", config, "--name", "General Hospital",
                    "--id", layout["institutions"][0]["id"])
    assert same.returncode == 0, same.stderr  # registering it again as init did stays harmless


@pytest.mark.parametrize("key_file", ["keys/missing.key", "keys"])
def test_store_rewrap_names_the_config_of_a_missing_or_folder_key_file(tmp_path, capsys, key_file):
    """A FileNotFoundError or IsADirectoryError traceback."""
    from daemons.cli import main
    from daemons.deployment import ObjectStore, init_deployment

    init_deployment(tmp_path / "d", object_store=ObjectStore("https://127.0.0.1:1", "bucket", "id", "secret"))
    config = tmp_path / "d" / "render-1-1.toml"
    text = config.read_text()
    assert 'key_file = "keys/institution-1.store-kek.key"' in text
    config.write_text(text.replace('key_file = "keys/institution-1.store-kek.key"', f'key_file = "{key_file}"'))
    assert main(["store", "rewrap", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert str(config) in error and key_file in error and len(error.strip().splitlines()) == 1, error


def test_store_rewrap_of_an_unreachable_object_store_is_one_line(tmp_path, capsys):
    """StoreUnavailable traceback (endpoint unreachable, wrong credentials, no bucket, key not found)."""
    from daemons.cli import main
    from daemons.deployment import ObjectStore, init_deployment

    init_deployment(tmp_path / "d", object_store=ObjectStore("https://127.0.0.1:1", "bucket", "id", "secret"))
    config = tmp_path / "d" / "render-1-1.toml"
    assert main(["store", "rewrap", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert str(config) in error and "127.0.0.1:1" in error and len(error.strip().splitlines()) == 1, error


def _ca_dir(tmp_path: Path, name: str, cert: bytes, key: bytes) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "ca.pem").write_bytes(cert)
    (folder / "ca.key").write_bytes(key)
    return folder


def test_cert_issue_refuses_a_ca_it_cannot_sign_with_before_writing(initialised, tmp_path):
    """A key not matching ca.pem or a non-CA ca.pem gave exit 0 and a certificate that does not verify;
    a passphrase-protected key a TypeError; a missing --ca-dir a FileNotFoundError after --out was made;
    a truncated PEM a message naming no file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    tls = initialised / "tls"
    ca_pem, ca_key, server_pem = ((tls / n).read_bytes() for n in ("ca.pem", "ca.key", "server.pem"))
    other_key = ec.generate_private_key(ec.SECP256R1())
    locked = other_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.BestAvailableEncryption(b"secret"))
    plain = other_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    cases = {
        "mismatched": (_ca_dir(tmp_path, "mismatched", ca_pem, plain), "ca.key"),
        "not-a-ca": (_ca_dir(tmp_path, "not-a-ca", server_pem, (tls / "server.key").read_bytes()), "ca.pem"),
        "locked": (_ca_dir(tmp_path, "locked", ca_pem, locked), "ca.key"),
        "truncated-key": (_ca_dir(tmp_path, "truncated-key", ca_pem, ca_key[:60]), "ca.key"),
        "truncated-pem": (_ca_dir(tmp_path, "truncated-pem", ca_pem[:80], ca_key), "ca.pem"),
        "missing": (tmp_path / "missing", "ca.pem"),
    }
    for case, (ca_dir, named) in cases.items():
        out = tmp_path / f"out-{case}"
        result = run_sivr("cert", "issue", "--ca-dir", str(ca_dir), "--hostname", "h.example.org", "--out", str(out))
        assert result.returncode == 2, (case, result.stdout)
        assert str(ca_dir / named) in result.stderr and "Traceback" not in result.stderr, (case, result.stderr)
        assert not out.exists(), case


@pytest.fixture
def serve_attempts(monkeypatch, tmp_path) -> list:
    """`sivr serve` run in this process up to where it would start serving: gunicorn's exec is
    recorded, never run (nothing binds a port). The folder, environment and
    metrics folder it sets up for gunicorn are restored or kept under tmp_path."""
    started: list = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # recorded as absent: removed again afterwards
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")

    def record(*args):
        started.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", record)
    return started


def _toplevel_config(tmp_path: Path, **server: str) -> Path:
    """The toplevel config of a fresh deployment, `server` keys replaced (values as TOML literals)."""
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "d")
    config = tmp_path / "d" / "toplevel.toml"
    text = config.read_text()
    for name, value in server.items():
        old = next(line for line in text.splitlines() if line.startswith(f"{name} = "))
        text = text.replace(old, f"{name} = {value}", 1)
    config.write_text(text)
    return config


def _other_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.mark.parametrize(("case", "key"), [
    ("garbage key", "server.tls_key"),
    ("missing key", "server.tls_key"),
    ("key of another certificate", "server.tls_key"),
    ("garbage certificate", "server.tls_cert"),
    ("key without certificate", "server.tls_cert"),
    ("key readable by others", "server.tls_key"),
    ("signing key readable by others", "tokens.private_key"),
])
def test_serve_refuses_a_tls_certificate_or_key_it_cannot_use(tmp_path, capsys, serve_attempts, case, key):
    """A garbage key: "Listening at https://..." and every handshake failed, nothing logged; a
    missing key or a key of another certificate: gunicorn's ValueError traceback."""
    from daemons.cli import main

    tls = tmp_path / "d" / "tls"
    values = {}
    if case == "missing key":
        values["tls_key"] = '"tls/missing.key"'
    if case == "key without certificate":
        values["tls_cert"] = '""'
    config = _toplevel_config(tmp_path, **values)
    if case == "garbage key":
        (tls / "server.key").write_bytes(b"garbage\n")
    elif case == "key of another certificate":
        (tls / "server.key").write_bytes(_other_key_pem())
    elif case == "garbage certificate":
        (tls / "server.pem").write_bytes(b"garbage\n")
    elif case == "key readable by others":
        (tls / "server.key").chmod(0o644)
    elif case == "signing key readable by others":
        (tmp_path / "d" / "keys" / "token_ed25519.pem").chmod(0o644)
    assert main(["serve", "toplevel", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert not serve_attempts, "it started serving"
    assert str(config) in error and key in error and len(error.strip().splitlines()) == 1, error
    if key.startswith("server.") and case != "key without certificate":
        assert str(tls) in error, error
    if "readable by others" in case:
        assert "readable by its owner only (chmod 600), is 0o644" in error, error


def test_serve_refuses_argon2_memory_too_small_for_its_lanes_before_serving(tmp_path, capsys, serve_attempts):
    """Each key within its bounds, together unusable: the worker gunicorn forked failed to boot, the
    reason in its log only, after "Listening at"."""
    from daemons.cli import main

    config = _toplevel_config(tmp_path)
    config.write_text(config.read_text().replace("argon2_memory_kib = 65536", "argon2_memory_kib = 16"))
    assert main(["serve", "toplevel", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert not serve_attempts, "it started serving"
    assert str(config) in error and "auth.argon2_memory_kib" in error and "auth.argon2_parallelism" in error, error


def test_serve_refuses_a_missing_proxy_secret_file_before_serving(tmp_path, capsys, serve_attempts):
    """The worker gunicorn forked failed with a message naming no config, after "Listening at"."""
    from daemons.cli import main

    config = _toplevel_config(tmp_path, trusted_proxies="1", proxy_secret_file='"keys/front.secret"')
    assert main(["serve", "toplevel", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert not serve_attempts, "it started serving"
    assert str(config) in error and "server.proxy_secret_file" in error and "front.secret" in error, error
    assert len(error.strip().splitlines()) == 1, error


def test_serve_of_a_usable_config_starts_gunicorn(tmp_path, serve_attempts):
    from daemons.cli import main

    config = _toplevel_config(tmp_path)
    with pytest.raises(SystemExit):
        main(["serve", "toplevel", "--config", str(config)])
    assert len(serve_attempts) == 1 and "--keyfile" in serve_attempts[0][1]


@pytest.mark.parametrize("content", ["folder", "latin-1"])
def test_a_config_that_is_a_folder_or_not_utf8_is_one_line_naming_it(tmp_path, capsys, content):
    """IsADirectoryError traceback; "'utf-8' codec can't decode ..." naming no file."""
    from daemons.cli import main

    config = tmp_path / "toplevel.toml"
    if content == "folder":
        config.mkdir()
    else:
        config.write_bytes('[server]\nhost = "h\u00f4te"\n'.encode("latin-1"))
    assert main(["db", "upgrade", "toplevel", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert str(config) in error and len(error.strip().splitlines()) == 1, error


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "-inf"])
def test_ready_refuses_a_wait_that_is_not_a_finite_number_of_seconds(tmp_path, wait):
    """`--wait nan` and `--wait inf` asked forever."""
    config = tmp_path / "toplevel.toml"
    config.write_text("[server]\nport = 1\n")  # nothing listens there
    try:
        result = subprocess.run([*SIVR, "ready", "toplevel", "--config", str(config), "--wait", wait],
                                capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--wait {wait} was still waiting after 20 s")
    assert result.returncode == 2 and "--wait" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_store_rewrap_of_a_local_store_without_its_key_file_refuses_and_creates_none(tmp_path, capsys):
    """It created a new key file (and printed "nothing to rewrap"): a new key opens none of the
    store's records, and the operator was told nothing was wrong."""
    from daemons.cli import main
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "d")
    config = tmp_path / "d" / "render-1-1.toml"
    key_file = tmp_path / "d" / "keys" / "render-1-1.store.key"
    key_file.unlink()
    assert main(["store", "rewrap", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert not key_file.exists()
    assert str(config) in error and str(key_file) in error and len(error.strip().splitlines()) == 1, error


@pytest.mark.parametrize("held", ["record", "key check only"])
def test_a_render_node_never_makes_a_new_key_for_a_store_that_has_one(tmp_path, held):
    """Serving a local store whose key file is gone: refused, and no key file made over the store."""
    from daemons.deployment import init_deployment
    from daemons.render.store.interface import open_store
    from shared.config import ConfigError

    init_deployment(tmp_path / "d")
    config = get_layer("render").load_config(tmp_path / "d" / "render-1-1.toml")
    store_dir, key_file = Path(config["storage"]["dir"]), Path(config["storage"]["key_file"])
    open_store(config)  # the store's key check is written
    if held == "record":
        (store_dir / ("ab" * 32)).mkdir()
        (store_dir / ".key-check").unlink()
    key_file.unlink()
    with pytest.raises(ConfigError, match="store key is missing"):
        get_layer("render").create_app(config)
    assert not key_file.exists()


def test_demo_over_an_unfinished_set_up_points_to_fresh(tmp_path, capsys):
    """A first `sivr demo` stopped after a store key and its store were written, before the layout:
    every later start refused with "choose another --dir", an option demo does not have."""
    from daemons.demo import run_demo

    state = tmp_path / "demo"
    (state / "keys").mkdir(parents=True)
    (state / "keys" / "render-1-1.store.key").write_bytes(b"k" * 32)
    (state / "data" / "render-1-1" / "store").mkdir(parents=True)
    with pytest.raises(SystemExit) as stopped:
        run_demo(state)
    assert "--fresh" in str(stopped.value) and str(state) in str(stopped.value)


def _file_size_limit(limit: int):
    """RLIMIT_FSIZE for a child: a write past `limit` bytes fails with EFBIG, as on a full disk."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# 10,000 bytes: the first front config (12.5 kB) fails; 100,000: the toplevel's database (147 kB),
# once deployment.json, the store keys and the store folders are written
@pytest.mark.parametrize("file_size_limit", [10_000, 100_000])
@pytest.mark.parametrize("prepared", [False, True], ids=["new-folder", "empty-folder"])
def test_init_stopped_by_a_full_disk_is_one_line_and_a_rerun_completes_it(tmp_path, file_size_limit, prepared):
    """A full disk during init was a traceback (`OSError: File too large`, naming no file, or peewee's
    "cannot rollback - no transaction is active" hiding "database or disk is full"), and left half a
    deployment whose store key and database every re-run refused to overwrite, even with --force."""
    root = tmp_path / "deployment"
    if prepared:
        root.mkdir()
    failed = subprocess.run([*SIVR, "init", "--dir", str(root)], capture_output=True, text=True, timeout=120,
                            preexec_fn=_file_size_limit(file_size_limit))
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith("sivr: init failed: ") and "free space" in failed.stderr
    assert str(root) in failed.stderr
    assert (list(root.iterdir()) == []) if prepared else not root.exists()
    again = run_sivr("init", "--dir", str(root))
    assert again.returncode == 0, again.stderr


def test_a_database_write_that_fails_is_one_line_saying_what_to_do(initialised):
    """`sivr user add` on a full disk (or a database not the caller's) was a peewee traceback."""
    done = subprocess.run([*SIVR, "user", "add", "--config", str(initialised / "toplevel.toml"), "--username",
                           "diskfull", "--role", "sysadmin", "--institution", "Clinic B", "--password-stdin"],
                          input="correct horse battery\n", capture_output=True, text=True, timeout=120,
                          # past SQLite's 32 kB shared-memory file: the schema check passes, the user's write fails
                          preexec_fn=_file_size_limit(40_000))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("sivr: database error: ") and "free space" in done.stderr


NOBODY = 65534


def _give_away(folder: Path) -> None:
    """Hand `folder` to another user (needs root: else the test is skipped)."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder to another user")
    os.chown(folder, NOBODY, NOBODY)


@pytest.mark.parametrize("whose", ["another user's", "writable by all", "below another user's"])
def test_init_refuses_a_folder_another_user_could_change_and_writes_nothing(tmp_path, capsys, whose):
    """`sivr init --dir` into a folder another user owns (or may write): init wrote there, then that
    user renamed keys/ and toplevel.toml away and put a signing key of their own in their place,
    which the toplevel then signed system administrators' tokens with (reproduced as root, the
    other user `nobody`)."""
    from daemons.cli import main

    parent = tmp_path / "shared"
    parent.mkdir()
    root = parent if whose != "below another user's" else parent / "deployment"
    if whose == "writable by all":
        parent.chmod(0o777)
    else:
        _give_away(parent)
    assert main(["init", "--dir", str(root)]) == 2
    error = capsys.readouterr().err
    assert str(parent) in error and "mktemp -d" in error
    assert list(parent.iterdir()) == []


def test_init_as_sudo_takes_the_folder_of_the_user_who_ran_sudo_only(tmp_path, capsys, monkeypatch):
    """`sudo sivr init` (or `sudo bash installers/quickstart.sh`) in the caller's own clone: the folder
    is the caller's, who could change the keys anyway. Another user's folder is still refused."""
    from daemons.cli import main

    mine = tmp_path / "clone"
    mine.mkdir()
    _give_away(mine)
    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    assert main(["init", "--dir", str(mine / "deployment"), "--no-front"]) == 0
    assert (mine / "deployment" / "keys" / "token_ed25519.pem").is_file()
    monkeypatch.setenv("SUDO_UID", str(NOBODY - 1))
    other = tmp_path / "other"
    other.mkdir()
    _give_away(other)
    assert main(["init", "--dir", str(other / "deployment"), "--no-front"]) == 2
    assert "belongs to" in capsys.readouterr().err and list(other.iterdir()) == []


def test_init_takes_a_new_folder_in_a_sticky_folder_all_may_write(tmp_path):
    """/tmp is writable by all, but with the sticky bit nobody else may rename what init makes there."""
    from daemons.cli import main

    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert main(["init", "--dir", str(sticky / "deployment"), "--no-front"]) == 0
    assert (sticky / "deployment" / "keys" / "token_ed25519.pem").is_file()


def test_demo_refuses_a_state_folder_of_another_user_before_reading_it(tmp_path):
    """`sivr demo --state-dir` in another user's folder read the layout that user had put there (the
    configs it names are what the demo starts), as init's keys there were theirs to swap."""
    from daemons.demo import run_demo

    state = tmp_path / "demo"
    state.mkdir()
    (state / "deployment.json").write_text("planted")
    _give_away(state)
    with pytest.raises(ValueError, match="belongs to"):
        run_demo(state)
    assert (state / "deployment.json").read_text() == "planted"


def test_demo_fresh_refuses_a_folder_holding_other_files_and_deletes_nothing(tmp_path):
    """`sivr demo --fresh --state-dir DIR` removed DIR whole before starting the demo there: a
    checkout, a home folder or a typo lost every file (a thesis in a sub-folder, reproduced)."""
    state = tmp_path / "work"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "thesis.txt").write_text("my thesis")
    (state / "deployment.json").write_text("{}")  # looks like a demo's too
    demo = subprocess.Popen([*SIVR, "demo", "--fresh", "--no-data", "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, error = demo.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # the old code: the demo started in the emptied folder
        demo.send_signal(signal.SIGINT)
        _, error = demo.communicate(timeout=120)
    assert demo.returncode == 2, error
    assert "'sub', which no demo writes" in error and "--state-dir" in error
    assert (state / "sub" / "thesis.txt").read_text() == "my thesis"


def test_demo_fresh_discards_what_a_demo_wrote_and_no_file_a_link_points_to(tmp_path):
    from daemons.demo import discard_state, seed_base, write_demo_json
    from daemons.deployment import LocalDeployment, init_deployment

    state, elsewhere = tmp_path / "demo", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kept.txt").write_text("kept")
    layout = init_deployment(state, front=True)
    seed_base(layout)
    (state / "logs").symlink_to(elsewhere)
    write_demo_json(LocalDeployment(layout), {})  # not started: its layout and configs are what it reads
    discard_state(state)
    assert list(state.iterdir()) == []
    assert (elsewhere / "kept.txt").read_text() == "kept"
