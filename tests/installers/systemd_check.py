"""Checking systemd units without systemd running (containers, CI).

`systemd-analyze verify --root=DIR` loads units the way PID 1 would, but resolves every path —
the targets a unit is ordered after and its ExecStart binary — inside DIR. So the throwaway root
gets a copy of this machine's unit library (sysinit.target, network-online.target, ...) and,
where the units were not really installed, a stand-in `sivr` executable.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT_SOURCES = REPO / "installers" / "systemd"
HOST_UNIT_LIBRARY = Path("/usr/lib/systemd/system")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """`section -> key -> [values]`; systemd keys may repeat, so every value is kept in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def instance_name(unit_file: str) -> str:
    """The unit name to verify: templates need an instance (`sivr-render@.service` -> `@1-2`)."""
    return unit_file.replace("@.", "@1-2.") if "@." in unit_file else unit_file


def prepare_verify_root(root: Path) -> None:
    """Give `root` the host's unit library so ordering targets resolve inside it."""
    target = root / "usr" / "lib" / "systemd" / "system"
    if not target.exists():
        shutil.copytree(HOST_UNIT_LIBRARY, target, symlinks=True)


@dataclass
class Verification:
    returncode: int
    output: str


def systemd_verify(root: Path, unit: str) -> Verification:
    """Run `systemd-analyze verify` on one unit inside `root`; warnings count as output."""
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", unit],
        capture_output=True, text=True, timeout=60, cwd=root,
    )
    return Verification(done.returncode, (done.stdout + done.stderr).strip())


def systemd_exposure(root: Path, unit: str, threshold: int) -> subprocess.CompletedProcess:
    """`systemd-analyze security --offline`: fails when the exposure exceeds threshold/10."""
    return subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}",
         f"--threshold={threshold}", "--no-pager", unit],
        capture_output=True, text=True, timeout=60, cwd=root,
    )
