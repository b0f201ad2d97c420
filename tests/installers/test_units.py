"""The systemd units as shipped: valid for systemd, hardened, and each limited to what its layer needs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.installers.systemd_check import (
    REPO,
    UNIT_SOURCES,
    instance_name,
    parse_unit,
    prepare_verify_root,
    systemd_exposure,
    systemd_verify,
)

# unit file -> (layer, config file stem, data folder or None, key files it may see; the front secret
# exists only behind a front, `sivr init --front`, a node's KEK and S3 credentials only with an S3 store)
PUBLIC = {"token_ed25519.pub", "token_ed25519.next.pub", "token_ed25519.old.pub"}  # current, and during a rotation
UNITS = {
    "sivr-web.service": ("web", "web", None, {"web.front-secret", *PUBLIC}),
    "sivr-toplevel.service": ("toplevel", "toplevel", "toplevel",
                              {"token_ed25519.pem", "toplevel.front-secret", "toplevel.pgpass", *PUBLIC}),
    "sivr-institution.service": ("institution", "institution", "institution",
                                 {"institution.front-secret", "institution.pgpass", *PUBLIC}),
    "sivr-institution@.service": ("institution", "institution-%i", "institution-%i",
                                  {"institution-%i.front-secret", "institution-%i.pgpass", *PUBLIC}),
    "sivr-render.service": ("render", "render", "render",
                            {"render.store.key", "render.receipt.pem", "render.front-secret", "render.pgpass",
                             "render.store-kek.key", "render.store-kek.old.key", "render.s3.json", *PUBLIC}),
    "sivr-render@.service": ("render", "render-%i", "render-%i",
                             {"render-%i.store.key", "render-%i.receipt.pem", "render-%i.front-secret",
                              "render-%i.pgpass",
                              "render-%i.store-kek.key", "render-%i.store-kek.old.key", "render-%i.s3.json", *PUBLIC}),
}


def service(unit_file: str) -> dict[str, list[str]]:
    return parse_unit((UNIT_SOURCES / unit_file).read_text())["Service"]


def test_every_shipped_unit_is_listed_here():
    # the nginx front's unit runs no layer: tests/installers/test_front_unit.py checks it
    assert sorted(p.name for p in UNIT_SOURCES.glob("*.service")) == sorted([*UNITS, "sivr-front@.service"])


@pytest.fixture(scope="module")
def verify_root(tmp_path_factory, systemd_analyze) -> Path:
    """A root holding the shipped units as installed at the default paths, and a stand-in `sivr`."""
    root = tmp_path_factory.mktemp("verify-root")
    prepare_verify_root(root)
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for unit in UNITS:
        (units / unit).write_text((UNIT_SOURCES / unit).read_text())
    sivr = root / "opt" / "sivr" / "venv" / "bin" / "sivr"
    sivr.parent.mkdir(parents=True)
    sivr.write_text("#!/bin/sh\n")
    sivr.chmod(0o755)
    return root


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_unit_passes_systemd_analyze_verify(verify_root, unit_file):
    result = systemd_verify(verify_root, instance_name(unit_file))
    assert result.returncode == 0, result.output
    assert result.output == "", f"systemd warns about {unit_file}:\n{result.output}"


def test_verify_catches_a_broken_unit(verify_root):
    """The check above is only worth something if it fails on a unit systemd would not accept."""
    units = verify_root / "etc" / "systemd" / "system"
    broken = (UNIT_SOURCES / "sivr-web.service").read_text().replace(
        "ExecStart=/opt/sivr/venv/bin/sivr", "ExecStart=/opt/sivr/venv/bin/missing"
    ).replace("ProtectSystem=strict", "ProtectSystem=strict\nProtectSystm=full")
    (units / "sivr-broken.service").write_text(broken)
    try:
        result = systemd_verify(verify_root, "sivr-broken.service")
    finally:
        (units / "sivr-broken.service").unlink()
    assert result.returncode != 0
    assert "ProtectSystm" in result.output and "missing" in result.output


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_unit_exposure_is_rated_ok(verify_root, unit_file):
    """systemd's own rating of the sandbox: at most 2.0 of 10 ("OK"); an unhardened unit is 9.6."""
    result = systemd_exposure(verify_root, instance_name(unit_file), threshold=20)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_unit_runs_the_layer_as_sivr_with_the_required_hardening(unit_file):
    layer, config, _, _ = UNITS[unit_file]
    unit = parse_unit((UNIT_SOURCES / unit_file).read_text())
    svc = unit["Service"]
    assert svc["ExecStart"] == [f"/opt/sivr/venv/bin/sivr serve {layer} --config /etc/sivr/{config}.toml"]
    # the unit is started once the layer can serve (test_notify.py runs this check against `sivr serve`)
    assert svc["ExecStartPost"] == [
        f"/opt/sivr/venv/bin/sivr ready {layer} --config /etc/sivr/{config}.toml --wait 120"]
    assert int(svc["TimeoutStartSec"][0]) > 120
    assert svc["User"] == ["sivr"] and svc["Group"] == ["sivr"]
    assert svc["Restart"] == ["on-failure"]
    # test_notify.py shows `sivr serve` sends READY from its main process, as these need
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"]
    assert svc["KillMode"] == ["mixed"]
    required = {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "LockPersonality": "yes", "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for key, value in required.items():
        assert svc.get(key) == [value], f"{unit_file}: {key}={svc.get(key)}"
    assert "network-online.target" in unit["Unit"]["After"]
    assert "network-online.target" in unit["Unit"]["Wants"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_only_the_layers_own_data_folder_is_writable(unit_file):
    _, _, data, _ = UNITS[unit_file]
    svc = service(unit_file)
    expected = [f"/var/lib/sivr/{data}"] if data else []
    assert svc.get("ReadWritePaths", []) == expected
    for key in ("StateDirectory", "LogsDirectory", "ConfigurationDirectory"):
        assert key not in svc, f"{unit_file}: {key} would add a writable path"


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_each_unit_sees_only_its_own_keys(unit_file):
    """Only the toplevel may read the signing key; a render node only its own store key."""
    _, _, _, keys = UNITS[unit_file]
    svc = service(unit_file)
    assert "/etc/sivr/keys:ro" in svc["TemporaryFileSystem"]
    visible = {p.lstrip("-").rsplit("/", 1)[1] for p in " ".join(svc["BindReadOnlyPaths"]).split()}
    assert visible == keys
    assert "-/etc/sivr/tls/ca.key" in " ".join(svc["InaccessiblePaths"]).split()


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_each_unit_sees_only_its_own_data_and_no_fronts_config(unit_file):
    """Every layer runs as `sivr`: the web layer could read the toplevel's database (patients,
    password hashes), any unit every front's config (its proxy secret) and the password file of the
    databases it does not use."""
    layer, _, data, _ = UNITS[unit_file]
    svc = service(unit_file)
    hidden = " ".join(svc["InaccessiblePaths"]).split()
    assert "-/etc/sivr/front" in hidden
    assert ("-/etc/sivr/pgpass" in hidden) == (layer not in ("toplevel", "institution"))
    if data:
        assert "/var/lib/sivr:ro" in svc["TemporaryFileSystem"]
        assert svc["BindPaths"] == [f"/var/lib/sivr/{data}"]
    else:
        assert "-/var/lib/sivr" in hidden and "BindPaths" not in svc


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_no_unit_sees_the_hosts_shared_memory(unit_file):
    """A render node's decoded series are files of `sivr` in /dev/shm: on the host's /dev/shm every
    other unit (the internet-facing web layer, another institution's node) could read them."""
    layer, _, _, _ = UNITS[unit_file]
    private = [entry for entry in service(unit_file)["TemporaryFileSystem"] if entry.startswith("/dev/shm")]
    # systemd sizes a TemporaryFileSystem= a tenth of the RAM unless told: the host's /dev/shm is half
    assert private == (["/dev/shm:mode=1777,size=50%"] if layer == "render" else ["/dev/shm:ro"])


@pytest.mark.parametrize("unit_file", sorted(UNITS))
def test_write_execute_memory_is_denied_except_to_render_nodes(unit_file):
    layer = UNITS[unit_file][0]
    svc = service(unit_file)
    if layer == "render":
        assert "MemoryDenyWriteExecute" not in svc
        assert svc["Environment"] and any("NUMBA_CACHE_DIR=" in e for e in svc["Environment"])
    else:
        assert svc["MemoryDenyWriteExecute"] == ["yes"]
        assert svc["PrivateDevices"] == ["yes"]


def _syscalls(systemd_analyze: str, names: list[str]) -> set[str]:
    """The system calls in these filter sets (expanded recursively), as this systemd defines them."""
    listing = subprocess.run([systemd_analyze, "syscall-filter", *names], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    calls = set()
    for line in listing.splitlines():
        word = line.strip()
        if not word or word.startswith("#") or line[:1] == "@":
            continue
        calls |= _syscalls(systemd_analyze, [word]) if word.startswith("@") else {word}
    return calls


@pytest.mark.parametrize("unit_file", [u for u, spec in UNITS.items() if spec[0] == "render"])
def test_render_units_let_decode_workers_limit_themselves(unit_file, systemd_analyze):
    """Issue 13, item 3: decode workers set RLIMIT_AS and RLIMIT_CPU on themselves (setrlimit, which
    glibc issues as prlimit64). systemd puts setrlimit in @resources and prlimit64 in @default, both
    inside @system-service and neither in @privileged; a filter change that denied them would turn
    every upload into a failure of the decode pool, so the unit's effective filter is checked."""
    filters = service(unit_file)["SystemCallFilter"]
    allowed = _syscalls(systemd_analyze, [f for f in filters if not f.startswith("~")])
    denied = _syscalls(systemd_analyze, [f.lstrip("~") for f in filters if f.startswith("~")])
    for call in ("setrlimit", "prlimit64", "getrlimit"):
        assert call in allowed - denied, f"{unit_file}: {call} is filtered out ({filters})"


def _mdwe_run(body: str) -> subprocess.CompletedProcess:
    """Run `body` in a Python whose memory may never become writable and executable at once.

    Linux's PR_SET_MDWE (6.3+) refuses the same W+X mappings as systemd's MemoryDenyWriteExecute=,
    so this shows what the units' setting does to our code without systemd running.
    """
    prologue = textwrap.dedent("""
        import ctypes, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            sys.exit(77)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    if done.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    return done


def test_numba_jit_fails_without_write_execute_memory():
    """Why the render units do not set MemoryDenyWriteExecute=."""
    done = _mdwe_run("""
        import numba
        numba.njit(lambda x: x + 1)(1)
    """)
    assert done.returncode != 0
    assert "executable memory" in done.stderr


def test_non_render_layers_work_without_write_execute_memory(tmp_path):
    """What the toplevel, institution and web layers do (apps, argon2, EdDSA, TLS) needs no W+X memory."""
    done = _mdwe_run(f"""
        from pathlib import Path
        import argon2, ssl
        from daemons.deployment import init_deployment
        from daemons.layers import LAYERS
        from shared.tokens import TokenIssuer, load_private_key

        layout = init_deployment(Path({str(tmp_path)!r}), pick_free_ports=True)
        argon2.PasswordHasher().verify(argon2.PasswordHasher().hash("correct horse"), "correct horse")
        issuer = TokenIssuer(load_private_key(Path({str(tmp_path)!r}) / "keys/token_ed25519.pem"),
                             "sivr-toplevel", "sivr", 60)
        issuer.issue("u", "name", "physician", "i")
        context = ssl.create_default_context(cafile=layout.ca_cert)
        context.load_cert_chain(Path({str(tmp_path)!r}) / "tls/server.pem",
                                Path({str(tmp_path)!r}) / "tls/server.key")
        served = []
        for instance in layout.instances:
            layer = LAYERS[instance.layer]
            if instance.layer == "render":
                continue
            config = layer.load_config(instance.config)
            layer.upgrade_schema(config)
            answer = layer.create_app(config).test_client().get("/healthz")
            assert answer.status_code == 200, answer.data
            served.append(instance.layer)
        print("served", sorted(served))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served" in done.stdout
