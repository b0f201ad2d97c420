"""The locked requirements (requirements/*.txt) agree with pyproject.toml, offline.

installers/update-lock.sh writes the locks; these tests catch a pyproject.toml edited without
re-running it (a dependency missing or outside its range), a pin without a hash (pip's
--require-hashes would refuse the whole file), and locks that disagree with each other (CI must
test the versions install.sh installs).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import metadata

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.installers.systemd_check import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# lock name -> the extras it holds (installers/update-lock.sh locks the same)
LOCKS = {"runtime": ["gl", "console"], "test": ["gl", "console", "test"]}


@dataclass
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: list[str] = field(default_factory=list)


def parse_lock(name: str) -> list[Pin]:
    """The pins of requirements/NAME.txt: `name==version ; marker` lines and their `--hash` lines."""
    pins: list[Pin] = []
    for raw in (REPO / "requirements" / f"{name}.txt").read_text().splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            pins[-1].hashes.append(line.removeprefix("--hash="))
            continue
        assert not raw[0].isspace(), f"unexpected line in {name}.txt: {raw!r}"
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{line!r} is not an exact pin"
        pins.append(Pin(canonicalize_name(requirement.name), Version(spec.version), requirement.marker))
    return pins


def direct_requirements(extras: list[str]) -> list[Requirement]:
    project = PYPROJECT["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    names += PYPROJECT["build-system"]["requires"]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_is_exact_and_hashed(lock):
    pins = parse_lock(lock)
    assert pins
    for pin in pins:
        assert pin.hashes, f"{pin.name}=={pin.version} in requirements/{lock}.txt has no hash"
        assert all(h.startswith("sha256:") and len(h) == 71 for h in pin.hashes), pin


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_dependency_of_pyproject_is_locked_within_its_range(lock):
    pins = parse_lock(lock)
    for requirement in direct_requirements(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        found = [pin for pin in pins if pin.name == name]
        assert found, f"{requirement} is not in requirements/{lock}.txt: run installers/update-lock.sh"
        for pin in found:
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"requirements/{lock}.txt pins {name}=={pin.version} outside {requirement}: "
                "run installers/update-lock.sh")


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_holds_nothing_else_than_the_dependency_closure(lock):
    """Every pin is needed by pyproject.toml, directly or through a locked package's metadata.

    The metadata comes from this environment, so only packages installed at their locked version
    are followed; in CI (installed from requirements/test.txt) that is all of them. Pins for other
    platforms or Python versions are checked against pyproject.toml only.
    """
    parsed = parse_lock(lock)
    locked = {pin.name for pin in parsed}
    # the pins for this platform and Python (a universal lock forks some versions by marker)
    pins = {pin.name: pin for pin in parsed if pin.marker is None or pin.marker.evaluate()}
    needed = {canonicalize_name(r.name) for r in direct_requirements(LOCKS[lock])}
    queue = [(canonicalize_name(r.name), set(r.extras)) for r in direct_requirements(LOCKS[lock])]
    followed: set[tuple[str, frozenset[str]]] = set()
    unknown = 0
    while queue:
        name, extras = queue.pop()
        if (name, frozenset(extras)) in followed:
            continue
        followed.add((name, frozenset(extras)))
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            unknown += 1
            continue
        if name in pins and Version(installed.version) != pins[name].version:
            unknown += 1
            continue
        for text in installed.requires or []:
            child = Requirement(text)
            if child.marker and not _maybe(child.marker, extras):
                continue
            child_name = canonicalize_name(child.name)
            needed.add(child_name)
            assert child_name in locked, f"{name} needs {child}, absent from requirements/{lock}.txt"
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras or {""}):
                queue.append((child_name, set(child.extras)))  # installed here: its needs are known
    if unknown:
        pytest.skip(f"{unknown} locked packages are not installed at their locked version here, so what "
                    "they need is unknown (CI installs requirements/test.txt and checks it all)")
    extra = set(pins) - needed
    assert not extra, f"requirements/{lock}.txt pins what nothing needs: {sorted(extra)}"


def _environments() -> list[dict[str, str]]:
    """The platforms the lock serves (it is universal): CPython 3.11+ on Linux, macOS, Windows."""
    base = default_environment()
    platforms = [("linux", "Linux", "posix", "x86_64"), ("linux", "Linux", "posix", "aarch64"),
                 ("darwin", "Darwin", "posix", "arm64"), ("win32", "Windows", "nt", "AMD64")]
    return [{**base, "python_version": f"3.{minor}", "python_full_version": f"3.{minor}.0",
             "sys_platform": sys_platform, "platform_system": system, "os_name": os_name,
             "platform_machine": machine, "implementation_name": "cpython",
             "platform_python_implementation": "CPython"}
            for minor in (11, 12, 13, 14) for sys_platform, system, os_name, machine in platforms]


ENVIRONMENTS = _environments()


def _maybe(marker: Marker, extras: set[str]) -> bool:
    """Whether a dependency's marker holds on some platform the lock serves, given the extras."""
    return any(marker.evaluate({**env, "extra": extra}) for env in ENVIRONMENTS for extra in extras or {""})


def test_both_locks_pin_the_same_versions():
    """CI tests exactly what install.sh and the quickstart install."""
    test: dict[str, set[Version]] = {}
    for pin in parse_lock("test"):
        test.setdefault(pin.name, set()).add(pin.version)
    for pin in parse_lock("runtime"):
        assert pin.version in test.get(pin.name, set()), (
            f"{pin.name}: runtime {pin.version}, test {test.get(pin.name)}: run installers/update-lock.sh")


def test_installers_use_the_locks():
    scripts = {name: (REPO / "installers" / name).read_text()
               for name in ("locked-pip.sh", "dev-common.sh", "install.sh", "quickstart.sh", "run-tests.sh")}
    assert "--require-hashes" in scripts["locked-pip.sh"] and "--no-deps" in scripts["locked-pip.sh"]
    assert "pip_install_locked" in scripts["dev-common.sh"]
    assert 'pip_install_locked "$VENV/bin/python" runtime' in scripts["install.sh"]
    assert "ensure_venv runtime" in scripts["quickstart.sh"]
    assert "ensure_venv test" in scripts["run-tests.sh"]
    updater = (REPO / "installers" / "update-lock.sh").read_text()
    for lock, extras in LOCKS.items():
        assert f"lock {lock} {' '.join(extras)}" in updater
