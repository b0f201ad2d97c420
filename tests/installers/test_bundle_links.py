"""A `sivr init` folder or host bundle holding a link (or a FIFO) where a key, a certificate or a
database belongs is refused by name, before anything is placed.

install.sh --from runs place_deployment.py as root, and `shutil.copy2` followed links: a bundle whose
signing key was a link to /etc/shadow had that file placed as the key (then made sivr:sivr 0600, for
the daemon, and anyone who can read its keys, to read). A stand-in secret outside the bundle plays
/etc/shadow here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "root:$6$not-for-the-daemon:19000:0:99999:7:::\n"


def run(script: str, source: Path, out: Path) -> subprocess.CompletedProcess:
    """installers/<script> as install.sh (place_deployment.py) or an operator (host_bundle.py) runs it."""
    if script == "host_bundle.py":
        args = ["--out", str(out / "etc"), "--layers", "toplevel web"]
    else:
        args = ["--etc", str(out / "etc"), "--data", str(out / "data"), "--data-real", str(out / "data"),
                "--layers", "toplevel web"]
    return subprocess.run([sys.executable, str(REPO / "installers" / script), "--from", str(source), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'installers'}"})


def _link_file(init: Path, secret: Path) -> Path:
    key = init / "keys" / "token_ed25519.pem"
    key.unlink()
    key.symlink_to(secret)
    return key


def _link_folder(init: Path, secret: Path) -> Path:
    elsewhere = secret.parent / "keys-elsewhere"
    (init / "keys").rename(elsewhere)
    (elsewhere / "token_ed25519.pem").write_text(SECRET)
    (init / "keys").symlink_to(elsewhere)
    return init / "keys"


def _link_database(init: Path, secret: Path) -> Path:
    database = init / "data" / "toplevel.db"
    database.unlink()
    database.symlink_to(secret)
    return database


def _fifo(init: Path, secret: Path) -> Path:
    key = init / "keys" / "token_ed25519.pem"
    key.unlink()
    os.mkfifo(key)
    return key


@pytest.mark.parametrize("script", ["place_deployment.py", "host_bundle.py"])
@pytest.mark.parametrize("plant", [_link_file, _link_folder, _link_database, _fifo])
def test_a_link_or_special_file_in_the_source_is_refused_by_name_and_nothing_placed(tmp_path, script, plant):
    from daemons.cli import register_institutions
    from daemons.deployment import init_deployment

    init = tmp_path / "init"
    register_institutions(init_deployment(init))
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    planted = plant(init, secret)

    done = run(script, init, tmp_path / "out")
    placed = [str(p) for p in (tmp_path / "out").rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert done.returncode != 0, f"{script} took {planted.relative_to(init)} ({plant.__name__}); placed: {placed}"
    assert "Traceback" not in done.stderr and str(planted) in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists(), "something was placed"


@pytest.mark.parametrize("script", ["place_deployment.py", "host_bundle.py"])
def test_a_folder_reached_through_a_link_is_still_taken_as_the_source(tmp_path, script):
    """The folder named by --from may itself be a link (the operator's choice): only what lies in it is checked."""
    from daemons.deployment import init_deployment

    init_deployment(tmp_path / "init")
    (tmp_path / "named").symlink_to(tmp_path / "init")
    done = run(script, tmp_path / "named", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "etc" / "keys" / "token_ed25519.pem").read_bytes() == \
        (tmp_path / "init" / "keys" / "token_ed25519.pem").read_bytes()


@pytest.mark.parametrize("script", ["place_deployment.py", "host_bundle.py"])
@pytest.mark.parametrize("named", ["absolute", "relative"])
def test_a_database_outside_the_configs_folder_is_refused_by_name_and_nothing_placed(tmp_path, script, named):
    """install.sh --from placed a config's SQLite file wherever it lay, as root, into the daemon's data
    folder: `/etc/shadow` named as the toplevel's database became the daemon's to read. A host bundle
    left such a database behind. Both refuse it now, naming the config."""
    from daemons.cli import register_institutions
    from daemons.deployment import init_deployment

    init = tmp_path / "init"
    register_institutions(init_deployment(init))
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    config = init / "toplevel.toml"
    url = f"sqlite:///{secret}" if named == "absolute" else "sqlite:///../shadow"
    config.write_text(config.read_text().replace('url = "sqlite:///data/toplevel.db"', f'url = "{url}"'))

    done = run(script, init, tmp_path / "out")
    placed = [str(p) for p in (tmp_path / "out").rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert done.returncode != 0 and not placed, f"{script} placed {placed}: {done.stderr}"
    assert "Traceback" not in done.stderr and str(config) in done.stderr and "outside" in done.stderr, done.stderr
    assert not (tmp_path / "out" / "etc").exists() or not any((tmp_path / "out" / "etc").rglob("*.toml"))


def test_a_file_swapped_for_a_link_after_the_check_is_not_copied(tmp_path, monkeypatch):
    """The copies come after every file was checked (`refuse_unless_regular`): a key, or a folder on
    its way, swapped for a link in between was still followed by the copy, as root."""
    monkeypatch.syspath_prepend(str(REPO / "installers"))
    from place_deployment import copy_once

    folder = tmp_path / "init"
    (folder / "keys").mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    (folder / "keys" / "token.pem").symlink_to(secret)  # the file itself swapped
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "store.key").write_text(SECRET)
    (folder / "tls").symlink_to(elsewhere)  # a folder on the way swapped
    os.mkfifo(folder / "keys" / "fifo.pem")  # would hang a plain open
    out = tmp_path / "out"
    for relative in ("keys/token.pem", "tls/store.key", "keys/fifo.pem"):
        with pytest.raises(ValueError, match="symbolic link|not a regular file"):
            copy_once(folder / relative, out / relative, folder)
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True

    (folder / "keys" / "real.pem").write_text("a key\n")
    os.chmod(folder / "keys" / "real.pem", 0o640)
    copy_once(folder / "keys" / "real.pem", out / "keys" / "real.pem", folder)
    assert (out / "keys" / "real.pem").read_text() == "a key\n"
    assert (out / "keys" / "real.pem").stat().st_mode & 0o777 == 0o640
    copy_once(folder / "keys" / "missing.pem", out / "keys" / "missing.pem", folder)  # absent: not copied
    assert not (out / "keys" / "missing.pem").exists()
