"""install.sh and uninstall.sh into throwaway roots: files, modes, configs, units, key placement.

The virtual environment reuses the test interpreter's packages (--use-system-packages), so an
install takes seconds and needs no network for SIVR's dependencies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemons.layers import LAYERS
from shared.config import COMMON_KEYS, build_config, load_config
from tests.installers.systemd_check import REPO, UNIT_SOURCES, parse_unit, prepare_verify_root, systemd_verify

pytestmark = pytest.mark.slow

INSTALL = REPO / "installers" / "install.sh"
UNINSTALL = REPO / "installers" / "uninstall.sh"
SINGLE_HOST_INSTANCES = {
    "toplevel", "web", "institution-1", "institution-2",
    "render-1-1", "render-1-2", "render-2-1", "render-2-2",
}


def run_script(script: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"{script.name} {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script(INSTALL, "--root", str(root), "--use-system-packages",
                      "--python", sys.executable, *args)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def layer_of(instance: str) -> str:
    return instance.split("-", 1)[0]


def unit_of(instance: str) -> str:
    layer = layer_of(instance)
    return f"sivr-{layer}.service" if instance == layer else f"sivr-{layer}@{instance[len(layer) + 1:]}.service"


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def single_host(tmp_path_factory) -> Path:
    """Every layer on one host, two institutions with two render nodes each, default paths (each
    instance behind its own front, the default)."""
    root = tmp_path_factory.mktemp("single-host")
    install(root, "--no-systemctl", "--hostname", "sivr.example.org",
            "--institution-name", "North Hospital", "--institution-name", "South Clinic",
            "--nodes-per-institution", "2")
    return root


def test_venv_holds_a_working_sivr_command(single_host):
    sivr = single_host / "opt/sivr/venv/bin/sivr"
    assert os.access(sivr, os.X_OK)
    done = subprocess.run([str(sivr), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "{toplevel,institution,render,web}" in done.stdout
    python = single_host / "opt/sivr/venv/bin/python"
    where = subprocess.run([str(python), "-c", "import daemons.cli; print(daemons.cli.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert where.stdout.startswith(str(single_host / "opt/sivr/venv/lib")), where
    assert os.readlink(single_host / "usr/local/bin/sivr") == "/opt/sivr/venv/bin/sivr"


def test_one_config_per_instance(single_host):
    etc = single_host / "etc/sivr"
    assert {p.stem for p in etc.glob("*.toml")} == SINGLE_HOST_INSTANCES


def test_secret_keys_are_0600_and_configs_are_not_world_readable(single_host):
    etc = single_host / "etc/sivr"
    secrets = [etc / "keys/token_ed25519.pem", etc / "tls/server.key", etc / "tls/ca.key",
               *etc.glob("keys/*.store.key")]
    assert len(secrets) == 7
    receipt_keys = sorted(etc.glob("keys/*.receipt.pem"))  # each render node's upload-receipt key
    assert len(receipt_keys) == len(list(etc.glob("keys/*.store.key")))
    for path in secrets + receipt_keys:
        assert mode(path) == 0o600, path
    assert mode(etc / "keys/token_ed25519.pub") == 0o644
    assert mode(etc / "tls/ca.pem") == 0o644
    for config in etc.glob("*.toml"):
        assert mode(config) == 0o640, config
    assert mode(etc) == 0o750 and mode(etc / "keys") == 0o750


def test_configs_parse_and_keep_their_data_in_the_instance_data_folder(single_host):
    etc = single_host / "etc/sivr"
    for name in SINGLE_HOST_INSTANCES:
        layer = layer_of(name)
        config = load_config(etc / f"{name}.toml", layer, LAYERS[layer].keys)
        assert config["tokens"]["public_key"] == str(etc / "keys/token_ed25519.pub")
        assert Path(config.get_key("tokens.public_key")).is_file(), name
        # behind its own front, the default: TLS is the front's, gunicorn listens on loopback only
        assert config["server"]["host"] == "127.0.0.1" and not config["server"]["tls_cert"], name
        assert (etc / "front" / f"{name}.conf").is_file(), name
        if layer == "web":
            continue
        assert config["database"]["url"] == f"sqlite:////var/lib/sivr/{name}/{layer}.db"
        assert (single_host / "var/lib/sivr" / name).is_dir()
        assert mode(single_host / "var/lib/sivr" / name) == 0o700
        if layer == "render":
            assert config["storage"]["dir"] == f"/var/lib/sivr/{name}/store"
            # the name the unit lets the node see (sivr-render@.service binds keys/render-%i.store.key)
            assert config["storage"]["key_file"] == str(etc / f"keys/{name}.store.key")
            assert config["node"]["receipt_key"] == str(etc / f"keys/{name}.receipt.pem")
    assert not (single_host / "var/lib/sivr/web").exists()


def test_toplevel_database_keeps_the_institutions_sivr_init_registered(single_host):
    from daemons.toplevel.admin_ops import list_institutions

    database = single_host / "var/lib/sivr/toplevel/toplevel.db"
    assert mode(database) == 0o600
    config = build_config("toplevel", LAYERS["toplevel"].keys,
                          {"database": {"url": f"sqlite:///{database}"}})
    names = {i["name"] for i in list_institutions(config)}
    assert names == {"North Hospital", "South Clinic"}


def test_installed_units_are_the_shipped_ones_and_verify(single_host, systemd_analyze):
    units = single_host / "etc/systemd/system"
    for source in UNIT_SOURCES.glob("*.service"):
        assert (units / source.name).read_text() == source.read_text()
        assert mode(units / source.name) == 0o644
    prepare_verify_root(single_host)
    for name in sorted(SINGLE_HOST_INSTANCES):
        result = systemd_verify(single_host, unit_of(name))
        assert result.returncode == 0 and result.output == "", (name, result.output)


def test_console_desktop_entry_is_installed(single_host):
    entry = REPO / "admin_gui/resources/sivr-admin.desktop"
    if not entry.exists():
        pytest.skip("the console's desktop entry is not in this tree")
    installed = single_host / "usr/share/applications/sivr-admin.desktop"
    assert installed.read_text() == entry.read_text()


def test_rerun_changes_no_key_config_or_database_and_enables_offline(single_host):
    etc, data = single_host / "etc/sivr", single_host / "var/lib/sivr"
    before = {**digests(etc), **digests(data)}
    done = install(single_host, "--front")  # this time without --no-systemctl: `systemctl --root` enables
    assert "keeping the existing configuration" in done.stdout
    assert "warning: --front ignored: they shape a first install" in done.stderr, done.stderr
    assert {**digests(etc), **digests(data)} == before
    wants = single_host / "etc/systemd/system/multi-user.target.wants"
    assert {p.name for p in wants.iterdir()} == ({unit_of(n) for n in SINGLE_HOST_INSTANCES}
                                                 | {f"sivr-front@{n}.service" for n in SINGLE_HOST_INSTANCES})


def test_uninstall_keeps_data_and_keys(single_host, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(single_host, root, symlinks=True)
    before = digests(root / "var/lib/sivr")
    keys = digests(root / "etc/sivr/keys")
    run_script(UNINSTALL, "--root", str(root))
    assert not (root / "opt/sivr").exists()
    assert not list((root / "etc/systemd/system").rglob("sivr-*"))
    assert not (root / "usr/local/bin/sivr").exists()
    assert not (root / "usr/share/applications/sivr-admin.desktop").exists()
    assert not list((root / "etc/sivr").glob("*.toml")) and not (root / "etc/sivr/tls").exists()
    assert digests(root / "etc/sivr/keys") == keys
    assert digests(root / "var/lib/sivr") == before
    assert (root / "var/lib/sivr/render-2-2/store").is_dir()

    # A fresh deployment must not be paired with the kept keys and data.
    again = run_script(INSTALL, "--root", str(root), "--no-systemctl", check=False)
    assert again.returncode == 2 and "holds keys but there is no config" in again.stderr
    assert digests(root / "etc/sivr/keys") == keys


def test_uninstall_purge_data_removes_everything(single_host, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(single_host, root, symlinks=True)
    run_script(UNINSTALL, "--root", str(root), "--purge-data")
    assert not (root / "var/lib/sivr").exists()
    assert not (root / "etc/sivr").exists()
    assert not (root / "opt/sivr").exists()


def test_a_host_bundle_carries_only_that_hosts_keys_and_installs(tmp_path, systemd_analyze):
    """Institution 2's server host: no signing key, no CA key, only its own nodes' store keys."""
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "init", hostnames=["inst2.example.org"],
                    institution_names=["North", "South"], nodes_per_institution=2)
    bundle = tmp_path / "south"
    subprocess.run([sys.executable, str(REPO / "installers/host_bundle.py"), "--from", str(tmp_path / "init"),
                    "--out", str(bundle), "--layers", "institution render",
                    "--instances", "institution-2 render-2-1 render-2-2"], check=True, timeout=120)
    shipped = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert shipped == {
        "deployment.json", "institution-2.toml", "render-2-1.toml", "render-2-2.toml",
        "keys/token_ed25519.pub", "keys/render-2-1.store.key", "keys/render-2-2.store.key",
        "keys/render-2-1.receipt.pem", "keys/render-2-2.receipt.pem",
        "tls/ca.pem", "tls/server.pem", "tls/server.key",
    }
    assert mode(bundle / "keys") == 0o700 and mode(bundle / "keys/render-2-1.store.key") == 0o600

    root = tmp_path / "root"
    done = install(root, "--no-systemctl", "--prefix", "/srv/sivr", "--etc", "/srv/sivr-etc",
                   "--data", "/srv/sivr-data", "--from", str(bundle), "--layers", "institution render")
    etc = root / "srv/sivr-etc"
    assert {p.stem for p in etc.glob("*.toml")} == {"institution-2", "render-2-1", "render-2-2"}
    assert {p.name for p in (etc / "keys").iterdir()} == {
        "token_ed25519.pub", "render-2-1.store.key", "render-2-2.store.key",
        "render-2-1.receipt.pem", "render-2-2.receipt.pem"}
    assert {p.name for p in (etc / "tls").iterdir()} == {"ca.pem", "server.pem", "server.key"}
    for name in ("render-2-1", "render-2-2"):
        config = load_config(etc / f"{name}.toml", "render", LAYERS["render"].keys)
        assert config["storage"]["dir"] == f"/srv/sivr-data/{name}/store"
        assert (root / "srv/sivr-data" / name / "store").is_dir()
    assert "sivr-institution@2.service sivr-render@2-1.service sivr-render@2-2.service" in done.stdout

    unit = (root / "etc/systemd/system/sivr-render@.service").read_text()
    assert "ExecStart=/srv/sivr/venv/bin/sivr serve render --config /srv/sivr-etc/render-%i.toml" in unit
    assert "ReadWritePaths=/srv/sivr-data/render-%i" in unit
    assert "/opt/sivr" not in unit.replace("# Installed by installers/install.sh, which rewrites /opt/sivr", "")
    prepare_verify_root(root)
    for unit_name in ("sivr-institution@2.service", "sivr-render@2-1.service"):
        result = systemd_verify(root, unit_name)
        assert result.returncode == 0 and result.output == "", result.output


BAD_SHARED_OPTIONS = [
    (["--prefix", "relative/path"], "plain absolute path"),
    (["--data", "/"], "other than /"),
    (["--bogus"], "unknown option --bogus"),
]
BAD_INSTALL_OPTIONS = [
    (["--layers", "toplevel bogus"], "unknown layer bogus"),
    (["--instances", "render-1-1"], "--instances needs --from"),
]


@pytest.mark.parametrize("script, args, message", [
    *[(INSTALL, args, message) for args, message in BAD_SHARED_OPTIONS + BAD_INSTALL_OPTIONS],
    *[(UNINSTALL, args, message) for args, message in BAD_SHARED_OPTIONS],
])
def test_scripts_refuse_bad_options_before_touching_anything(tmp_path, script, args, message):
    done = run_script(script, "--root", str(tmp_path / "root"), *args, check=False)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "root").exists()


def test_a_new_deployment_without_its_toplevel_is_refused(tmp_path):
    """A render host with a signing key of its own would accept no token any toplevel issues."""
    done = run_script(INSTALL, "--root", str(tmp_path / "root"), "--use-system-packages",
                      "--python", sys.executable, "--no-systemctl", "--layers", "render", check=False)
    assert done.returncode == 2 and "needs the toplevel layer" in done.stderr
    assert not (tmp_path / "root").exists()


def test_toplevel_bundle_has_the_signing_key_and_registered_institutions_but_no_store_key(tmp_path):
    from daemons.cli import register_institutions
    from daemons.deployment import init_deployment

    register_institutions(init_deployment(tmp_path / "init", institution_names=["North", "South"]))
    bundle = tmp_path / "top"
    subprocess.run([sys.executable, str(REPO / "installers/host_bundle.py"), "--from", str(tmp_path / "init"),
                    "--out", str(bundle), "--layers", "toplevel web"], check=True, timeout=120)
    assert {p.name for p in (bundle / "keys").iterdir()} == {"token_ed25519.pem", "token_ed25519.pub"}
    assert not (bundle / "tls/ca.key").exists()
    assert {p.stem for p in bundle.glob("*.toml")} == {"toplevel", "web"}
    from daemons.toplevel.admin_ops import list_institutions

    config = load_config(bundle / "toplevel.toml", "toplevel", LAYERS["toplevel"].keys)
    assert {i["name"] for i in list_institutions(config)} == {"North", "South"}


@pytest.fixture(scope="module")
def front_host(tmp_path_factory) -> Path:
    """Every layer on one host, each behind its own nginx front (`install.sh --front`)."""
    root = tmp_path_factory.mktemp("front-host")
    install(root, "--no-systemctl", "--front", "--hostname", "sivr.example.org")
    return root


@pytest.fixture(scope="module")
def s3_render_host(tmp_path_factory) -> Path:
    """One render node of a deployment whose stores share an S3 bucket, installed from its bundle."""
    from daemons.deployment import ObjectStore, init_deployment

    work = tmp_path_factory.mktemp("s3-render-host")
    init_deployment(work / "init", hostnames=["sivr.example.org"],
                    object_store=ObjectStore("https://s3.example.org:8333", "b", "AK", "SK"))
    subprocess.run([sys.executable, str(REPO / "installers/host_bundle.py"), "--from", str(work / "init"),
                    "--out", str(work / "bundle"), "--layers", "render", "--instances", "render-1-1"],
                   check=True, timeout=120, capture_output=True)
    root = work / "root"
    install(root, "--no-systemctl", "--from", str(work / "bundle"), "--layers", "render")
    return root


def unit_sandbox(root: Path, instance: str) -> tuple[set[Path], set[Path], set[Path], set[Path]]:
    """The installed unit of `instance` as the daemon sees the file system: folders replaced by an
    empty tmpfs, files bound back into them, paths made inaccessible, and writable folders."""
    unit_name = unit_of(instance)
    template, _, rest = unit_name.partition("@")
    file = f"{template}@.service" if rest else unit_name
    suffix = rest.removesuffix(".service")
    text = (root / "etc/systemd/system" / file).read_text().replace("%i", suffix)
    svc = parse_unit(text)["Service"]

    def paths(key: str) -> set[Path]:
        return {Path(p.lstrip("-").split(":", 1)[0]) for p in " ".join(svc.get(key, [])).split()}

    writable = paths("ReadWritePaths") | {Path("/var/cache") / c for c in paths("CacheDirectory")}
    bound = paths("BindReadOnlyPaths") | paths("BindPaths")
    return paths("TemporaryFileSystem"), bound, paths("InaccessiblePaths"), writable


WRITTEN_PATHS = ("storage.dir", "s3.cache_dir")


@pytest.mark.parametrize("host", ["single_host", "front_host", "s3_render_host"])
def test_every_file_a_placed_config_names_is_visible_to_its_unit(host, request):
    """A key file the config names but the unit's sandbox hides stops the layer at boot (a front's
    secret, an S3 node's KEK and credentials were forgotten once); a folder it writes must be writable."""
    root: Path = request.getfixturevalue(host)
    etc = root / "etc/sivr"
    checked = 0
    for config_file in sorted(etc.glob("*.toml")):
        instance = config_file.stem
        layer = layer_of(instance)
        config = load_config(config_file, layer, LAYERS[layer].keys)
        hidden, bound, inaccessible, writable = unit_sandbox(root, instance)
        named: list[tuple[str, str]] = []
        for key in (*COMMON_KEYS, *LAYERS[layer].keys):
            value = config.get_key(key.dotted)
            if key.is_path and value:
                named += [(key.dotted, v) for v in (value if isinstance(value, list) else [value])]
        url = config.get("database", {}).get("url", "")
        if url.startswith("sqlite:///"):
            named.append(("database.url", str(Path(url.removeprefix("sqlite:///")).parent)))
        for dotted, value in named:
            # the path the daemon sees: the config names it inside --root
            path = Path(value)
            seen = Path("/") / path.relative_to(root) if path.is_relative_to(root) else path
            assert not any(seen.is_relative_to(p) for p in inaccessible), (instance, dotted, seen)
            if dotted in WRITTEN_PATHS or dotted == "database.url":
                assert any(seen.is_relative_to(p) for p in writable), (instance, dotted, seen, writable)
            if any(seen.is_relative_to(p) for p in hidden):
                assert any(seen.is_relative_to(p) for p in bound), (instance, dotted, seen, sorted(bound))
            checked += 1
    assert checked


def test_s3_render_node_gets_the_institutions_secrets_under_its_own_name(s3_render_host):
    """The unit binds only names of its own instance; the cache goes to its CacheDirectory=, not /etc."""
    etc, init_keys = s3_render_host / "etc/sivr", s3_render_host.parent / "init/keys"
    config = load_config(etc / "render-1-1.toml", "render", LAYERS["render"].keys)
    assert config["storage"]["key_file"] == str(etc / "keys/render-1-1.store-kek.key")
    assert config["s3"]["credentials_file"] == str(etc / "keys/render-1-1.s3.json")
    assert config["s3"]["cache_dir"] == "/var/cache/sivr-render-1-1/s3"
    for placed, given in (("render-1-1.store-kek.key", "institution-1.store-kek.key"),
                          ("render-1-1.s3.json", "institution-1.s3.json")):
        assert (etc / "keys" / placed).read_bytes() == (init_keys / given).read_bytes()
        assert mode(etc / "keys" / placed) == 0o600


def run_installer(script: str, *args: str) -> subprocess.CompletedProcess:
    """installers/<script> as install.sh runs it, importing this tree's packages."""
    return subprocess.run([sys.executable, str(REPO / "installers" / script), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def installer_args(script: str, source: Path, target: Path) -> list[str]:
    if script == "host_bundle.py":
        return ["--from", str(source), "--out", str(target), "--layers", "toplevel web"]
    return ["--from", str(source), "--etc", str(target), "--data", str(target.parent / "data"),
            "--data-real", str(target.parent / "data"), "--layers", "toplevel web"]


@pytest.mark.parametrize("script", ["host_bundle.py", "place_deployment.py"])
def test_installers_refuse_a_file_named_outside_the_configs_folder(tmp_path, script):
    """`token_file = "../secret/x.key"` was copied to <out>/../secret/x.key (as root in a real
    install: /etc/secret/x.key), outside the folder being filled, which then lacked it."""
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "src" / "init")
    (tmp_path / "src" / "secret").mkdir()
    (tmp_path / "src" / "secret" / "x.key").write_text("a metrics token of enough length\n")
    config = tmp_path / "src" / "init" / "toplevel.toml"
    config.write_text(config.read_text().replace('token_file = ""', 'token_file = "../secret/x.key"', 1))
    target = tmp_path / "out" / "etc"
    done = run_installer(script, *installer_args(script, tmp_path / "src" / "init", target))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert str(config) in done.stderr and "metrics.token_file" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()  # nothing placed: neither the escaped file nor the rest


@pytest.mark.parametrize("script", ["host_bundle.py", "place_deployment.py"])
@pytest.mark.parametrize("layout", [None, "{not json", '{"root": "x"}'])
def test_installers_name_a_missing_or_invalid_deployment_json(tmp_path, script, layout):
    """FileNotFoundError, JSONDecodeError or KeyError tracebacks."""
    source = tmp_path / "init"
    source.mkdir()
    if layout is not None:
        (source / "deployment.json").write_text(layout)
    done = run_installer(script, *installer_args(script, source, tmp_path / "out" / "etc"))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert str(source / "deployment.json") in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_config_path_that_is_its_own_folder_is_no_traceback(tmp_path):
    """`keys/..` normalises to ".", whose path has no parts: an IndexError in the installers."""
    from installers.place_deployment import named_files

    assert isinstance(named_files("toplevel", {"metrics": {"token_file": "keys/.."}}, tmp_path / "toplevel.toml"), list)


#: Runs an installer script with an audit hook that notes, at each chmod, the mode the file had until
#: then: a copied key's mode before `shutil.copy2` gives it its source's.
_WATCHED_RUN = """
import os, runpy, stat, sys
seen = []
def hook(event, args):
    if event == "os.chmod" and isinstance(args[0], (str, bytes, os.PathLike)) and os.path.isfile(args[0]):
        seen.append((os.fspath(args[0]), stat.S_IMODE(os.stat(args[0]).st_mode)))
sys.addaudithook(hook)
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
for path, mode in seen:
    print(oct(mode), path)
"""


@pytest.mark.parametrize("script", ["host_bundle.py", "place_deployment.py"])
def test_no_placed_key_is_ever_readable_by_others_under_the_usual_umask(tmp_path, script):
    """Under umask 022 each key was written whole as 0644, in 0755 folders, before its 0600 came:
    a local user watching the folder read the signing, store, CA and TLS keys."""
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "init")
    target = tmp_path / "out" / "etc"
    args = installer_args(script, tmp_path / "init", target)
    if script == "place_deployment.py":
        args += ["--layers", "toplevel institution render web", "--with-ca-key"]
    previous = os.umask(0o022)
    try:
        done = subprocess.run([sys.executable, "-c", _WATCHED_RUN, str(REPO / "installers" / script), *args],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'installers'}"})
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    modes = [line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith("0o")]
    assert any(path.endswith("token_ed25519.pem") for _, path in modes), done.stdout
    assert [(mode, path) for mode, path in modes if int(mode, 8) & 0o077] == []
    made = tmp_path / "out"
    folders = [made, *(path for path in made.rglob("*") if path.is_dir())]
    assert [str(folder) for folder in folders if stat.S_IMODE(folder.stat().st_mode) & 0o077] == []
