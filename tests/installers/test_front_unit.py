"""The TLS/HTTP/2 front as installed: its unit (`sivr-front@.service`) and a host bundle with fronts.

The unit runs the same nginx command line `sivr demo` and the tests run (daemons/front.py), as
`sivr`, hardened like the layers' units and seeing no key of the keys folder; install.sh places
each fronted instance's nginx config with the certificate it names and enables its front.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemons import front as fronts
from tests.installers.systemd_check import (
    UNIT_SOURCES,
    parse_unit,
    prepare_verify_root,
    systemd_exposure,
    systemd_verify,
)
from tests.installers.test_install import REPO, install, mode

UNIT = "sivr-front@.service"


def service() -> dict[str, list[str]]:
    return parse_unit((UNIT_SOURCES / UNIT).read_text())["Service"]


def test_the_unit_runs_the_command_the_demo_runs():
    expected = fronts.command(Path("/etc/sivr/front/%i.conf"), Path("/run/sivr-front-%i"))
    expected[0] = "/usr/sbin/nginx"  # the unit names Debian's path; command() looks nginx up
    assert service()["ExecStart"] == [" ".join(expected).replace("daemon off;", '"daemon off;"')]
    assert service()["RuntimeDirectory"] == ["sivr-front-%i"]


def test_the_unit_runs_as_sivr_hardened_and_sees_no_key():
    svc = service()
    assert svc["User"] == ["sivr"] and svc["Group"] == ["sivr"]
    assert svc["KillSignal"] == ["SIGQUIT"]  # nginx's graceful stop
    required = {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "LockPersonality": "yes", "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "", "MemoryDenyWriteExecute": "yes",
        "PrivateDevices": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for key, value in required.items():
        assert svc.get(key) == [value], f"{key}={svc.get(key)}"
    assert "ReadWritePaths" not in svc
    # the host's /dev/shm (a render node's decoded series) replaced by an empty, read-only one
    assert svc["TemporaryFileSystem"] == ["/dev/shm:ro", "/etc/sivr/keys:ro", "/etc/sivr/front:ro"]
    assert svc["BindReadOnlyPaths"] == ["/etc/sivr/front/%i.conf"]  # of the fronts' configs, its own alone
    assert svc["InaccessiblePaths"] == ["-/etc/sivr/tls/ca.key -/var/lib/sivr -/etc/sivr/pgpass"]


@pytest.fixture
def verify_root(tmp_path, systemd_analyze) -> Path:
    prepare_verify_root(tmp_path)
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    (units / UNIT).write_text((UNIT_SOURCES / UNIT).read_text())
    nginx = tmp_path / "usr" / "sbin" / "nginx"  # a stand-in: verify checks the command exists
    nginx.parent.mkdir(parents=True, exist_ok=True)
    nginx.write_text("#!/bin/sh\n")
    nginx.chmod(0o755)
    return tmp_path


def test_the_unit_verifies_and_its_exposure_is_ok(verify_root):
    result = systemd_verify(verify_root, "sivr-front@render-1-2.service")
    assert result.returncode == 0 and result.output == "", result.output
    rated = systemd_exposure(verify_root, "sivr-front@render-1-2.service", threshold=20)
    assert rated.returncode == 0, rated.stdout[-3000:] + rated.stderr


def test_a_host_bundle_with_fronts_installs_them(tmp_path):
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "init", hostnames=["inst2.example.org"], institution_names=["North", "South"],
                    front=True)
    bundle = tmp_path / "south"
    subprocess.run([sys.executable, str(REPO / "installers/host_bundle.py"), "--from", str(tmp_path / "init"),
                    "--out", str(bundle), "--layers", "institution render",
                    "--instances", "institution-2 render-2-1"], check=True, timeout=120)
    shipped = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert {"tls/server.pem", "tls/server.key"} <= shipped
    assert {n for n in shipped if n.startswith("front/")} == {"front/institution-2.conf", "front/render-2-1.conf"}

    root = tmp_path / "root"
    done = install(root, "--no-systemctl", "--etc", "/srv/sivr-etc", "--from", str(bundle),
                   "--layers", "institution render")
    etc = root / "srv/sivr-etc"
    assert {p.name for p in (etc / "front").iterdir()} == {"institution-2.conf", "render-2-1.conf"}
    assert mode(etc / "front") == 0o750 and mode(etc / "front/render-2-1.conf") == 0o640
    assert mode(etc / "tls/server.key") == 0o600
    assert "sivr-render@2-1.service sivr-front@render-2-1.service" in done.stdout
    unit = (root / "etc/systemd/system" / UNIT).read_text()
    assert "-c /srv/sivr-etc/front/%i.conf" in unit and "/etc/sivr/front" not in unit.split("[Unit]")[1]
    # nginx accepts the placed config: its certificate paths are relative to it
    run = tmp_path / "run"
    run.mkdir()
    argv = [a for a in fronts.command(etc / "front/render-2-1.conf", run) if a not in ("-g", "daemon off;")]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
