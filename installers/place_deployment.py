"""Place the part of a `sivr init` deployment folder that one host runs into its /etc/sivr.

`sivr init` writes a whole deployment (every instance, every key, the CA) into one folder with
relative paths and SQLite files beside the configs. A host under systemd needs something else:
only its own instances' configs and only the keys they use (the toplevel's signing key never
leaves the toplevel host; each render node gets only its own store key; the CA's private key stays
where certificates are made), and its data under /var/lib/sivr/<instance>, the one folder its unit
may write. install.sh runs this with the installed virtual environment's Python.

An instance with a front (`sivr init --front`) also gets its `front/<instance>.conf` and the
server certificate and key that nginx reads (install.sh enables its `sivr-front@<instance>` unit).

Prints one line per placed instance: `<layer> <instance name>`.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import shutil
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

from daemons.deployment import FRONT_CERT, FRONT_KEY, Instance, Layout
from daemons.front import FOLDER as FRONT_FOLDER
from daemons.layers import LAYERS
from shared.config import COMMON_KEYS, Key, render_config_toml
from shared.files import PRIVATE, write_atomic

ALWAYS_COPIED = ("keys/token_ed25519.pub", "tls/ca.pem")
CA_KEY = "tls/ca.key"
FRONT_TLS = (FRONT_CERT, FRONT_KEY)
SQLITE = "sqlite:///"
# A render unit's CacheDirectory= (/var/cache/sivr-<instance>, installers/systemd/sivr-render*.service):
# the only writable folder on its local disk besides its data folder.
CACHE_ROOT = Path("/var/cache")


def private_from_now() -> None:
    """Create every file and folder of this process for its owner alone (umask 077).

    A key copied by `shutil.copy2` is written whole under the umask's mode and only then given its
    source's: under the usual 022 each key sat readable by every local user, in folders they could
    enter, for as long as its copy took, and a process watching the folder read the signing, store,
    CA and TLS keys that way. install.sh's `set_permissions` then grants each daemon what it reads.
    """
    os.umask(0o077)


def partial_name(target: Path) -> Path:
    """Where `target` is written before it is renamed into place: hidden from install.sh's globs
    (`*.toml`, `keys/*`), which must never take a file being written for a placed one."""
    return target.with_name(f".partial-{secrets.token_hex(8)}-{target.name}")


def refuse_unless_regular(source: Path, folder: Path) -> None:
    """Raise ValueError naming `source` unless it is missing or a regular file reached below
    `folder` through real folders only (`open_regular_below`, the one rule the copies use too).

    Called on every file to be copied before anything is written. `shutil.copy2` followed links and
    install.sh runs as root: a key in a bundle that was a link to /etc/shadow was placed with that
    file's bytes, then made the daemon's (sivr:sivr 0600); a FIFO named as a key hung the install.
    """
    try:
        os.close(open_regular_below(source, folder))
    except FileNotFoundError:
        return  # a missing file is not copied (`copy_once`)


def open_regular_below(source: Path, folder: Path) -> int:
    """A descriptor of `source` for reading, opened one folder at a time from `folder` without
    following any link, and only if it is a regular file (ValueError naming it otherwise;
    FileNotFoundError when it is missing).

    Opening each step with O_NOFOLLOW from the folder above means a file or folder swapped for a
    link after `refuse_unless_regular` checked it is not followed by the copy either; O_NONBLOCK keeps
    a FIFO from hanging the install."""
    if not source.is_relative_to(folder) or source == folder:
        raise ValueError(f"{source} is not a file below {folder}: nothing is copied from outside the folder")
    parts = source.relative_to(folder).parts
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for number, part in enumerate(parts[:-1], 1):
            try:
                step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise ValueError(f"{folder.joinpath(*parts[:number])} is a symbolic link or not a folder, so "
                                 f"{source} cannot be copied: nothing was placed. Put the folder itself there "
                                 "(the installers copy only regular files, never what a link points to)") from None
            os.close(descriptor)
            descriptor = step
        try:
            opened = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=descriptor)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise ValueError(f"{source} is a symbolic link: nothing was placed. Put the file itself there "
                             "(the installers copy only regular files, never what a link points to)") from None
    finally:
        os.close(descriptor)
    if not stat.S_ISREG(os.fstat(opened).st_mode):
        os.close(opened)
        raise ValueError(f"{source} is not a regular file: nothing was placed. Put the file itself there")
    return opened


def copy_once(source: Path, target: Path, folder: Path) -> None:
    """Copy a file of `folder` unless the target exists: a re-run must never replace a key or a database.

    The copy is made beside the target and renamed onto it once whole and synced: copied in place,
    a disk filling up (or an interrupted install) left an empty key, a truncated front config or an
    empty toplevel database under the target's name, which every re-run then kept as "existing".
    The source is read through `open_regular_below`, never through a link."""
    if target.exists():
        return
    try:
        descriptor = open_regular_below(source, folder)
    except FileNotFoundError:
        return  # a file the source lacks is not copied (an optional one, or a database not made yet)
    with os.fdopen(descriptor, "rb") as reading:
        status = os.fstat(reading.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_name(target)
        try:
            with open(partial, "xb") as writing:
                shutil.copyfileobj(reading, writing)
                writing.flush()
                os.fsync(writing.fileno())
            os.chmod(partial, stat.S_IMODE(status.st_mode))
            os.utime(partial, ns=(status.st_atime_ns, status.st_mtime_ns))
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def write_configs(configs: list[tuple[Path, str]]) -> None:
    """Write every placed config at once, last: install.sh takes a folder holding any config for a
    finished install ("keeping the existing configuration"), so configs written one by one between
    the copies left the instances after an interruption unplaced for good. Each is written beside
    its name and all are renamed once all are written; a config already there is kept."""
    partials = []
    try:
        for target, text in configs:
            if target.exists():
                continue
            partial = partial_name(target)
            partials.append((partial, target))
            write_atomic(partial, text.encode("utf-8"), PRIVATE)
        for partial, target in partials:
            os.replace(partial, target)
    except BaseException:
        for partial, _ in partials:
            partial.unlink(missing_ok=True)
        raise


def data_values(instance: Instance, values: dict[str, dict[str, Any]], data_dir: Path) -> None:
    """Point an instance's SQLite database and store at `data_dir/<instance>` (absolute paths)."""
    own = data_dir / instance.name
    url = values.get("database", {}).get("url")
    if instance.layer != "web" and (url is None or url.startswith(SQLITE)):
        values.setdefault("database", {})["url"] = f"{SQLITE}{own / (instance.layer + '.db')}"
    if instance.layer == "render":
        values.setdefault("storage", {})["dir"] = str(own / "store")
        s3 = values.get("s3", {})
        if s3.get("cache_dir"):
            s3["cache_dir"] = str(CACHE_ROOT / f"sivr-{instance.name}" / "s3")


def node_secret_names(instance: Instance, values: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Give a render node its own names for the S3 secrets its institution's nodes share.

    `sivr init` writes one KEK and one credentials file per institution, but a render unit can
    only bind key files named after its own instance (systemd has no specifier for the institution
    a node belongs to), so each node gets `keys/<instance>.store-kek.key` and `keys/<instance>.s3.json`
    (copies: same bytes). Rewrites `values` and returns {name in the init folder: name placed}.
    """
    if instance.layer != "render" or values.get("storage", {}).get("backend") != "s3":
        return {}
    renamed = {}
    for section, name, suffix in (("storage", "key_file", "store-kek.key"), ("s3", "credentials_file", "s3.json")):
        given = values.get(section, {}).get(name)
        if given and not Path(given).is_absolute():
            renamed[given] = values[section][name] = f"keys/{instance.name}.{suffix}"
    return renamed


def sqlite_file(values: dict[str, dict[str, Any]], config_dir: Path) -> Path | None:
    url = values.get("database", {}).get("url", "")
    if not url.startswith(SQLITE) or url == f"{SQLITE}:memory:":
        return None
    # absolute, not resolved: a database file that is a link is refused (`refuse_unless_regular`), not followed
    return Path(os.path.abspath(config_dir / url[len(SQLITE):]))


def bundled_database(values: dict[str, dict[str, Any]], config: Path) -> Path | None:
    """The SQLite file `config` names, which travels with the config's folder (install.sh --from, host
    bundles); None for another database. A ValueError names the config when the file lies outside
    that folder: install.sh copied such a path as root into the daemon's data folder (`/etc/shadow`
    named as a toplevel database was placed for the daemon to read), and a host bundle left it behind."""
    database = sqlite_file(values, config.parent)
    if database is not None and not database.is_relative_to(config.parent):
        raise ValueError(f"{config}: database.url names {database}, outside the config's folder, so it cannot "
                         "travel with it: move the database file below that folder (nothing was placed)")
    return database


def named_files(layer: str, values: dict[str, dict[str, Any]], config: Path) -> list[str]:
    """Key and certificate files a config names relative to its folder (they travel with it).

    A ValueError names the config and the key of a file outside that folder: `../secret/x.key`
    was copied to `<target>/../secret/x.key`, beside the folder being filled (as root: into /etc),
    which then lacked it.
    """
    keys: tuple[Key, ...] = (*COMMON_KEYS, *LAYERS[layer].keys)
    found = []
    for key in keys:
        value = values.get(key.section, {}).get(key.name)
        if not key.is_path or not value or key.dotted == "storage.dir":
            continue
        for item in value if isinstance(value, list) else [value]:
            if Path(item).is_absolute():
                continue
            if Path(os.path.normpath(item)).parts[:1] == ("..",):  # "keys/.." is "." and has no parts
                raise ValueError(f"{config}: {key.dotted} = {item!r} is outside the config's folder, so it "
                                 "cannot travel with it: move the file below that folder or name it by an "
                                 "absolute path")
            found.append(item)
    return found


def instance_config(source_dir: Path, instance: Instance) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The instance's config file and values, read and checked before anything is written.

    The config is looked up in `source_dir` by name, so an init folder copied to another machine
    works although deployment.json records where it was written. A ValueError names the file.
    """
    source = source_dir / Path(instance.config).name
    try:
        values = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{source}: cannot read the config: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{source}: not a valid TOML config: {exc}") from exc
    named_files(instance.layer, values, source)
    return source, values


def front_files(source_dir: Path, name: str) -> list[str]:
    """The instance's front config and the certificate and key it names, if it has a front
    (`sivr init --front`; the config names them relative to its folder, front/)."""
    conf = f"{FRONT_FOLDER}/{name}.conf"
    return [conf, *FRONT_TLS] if (source_dir / conf).is_file() else []


def plan_instance(
    instance: Instance, source: Path, values: dict[str, dict[str, Any]], etc_dir: Path, data_final: Path,
    data_real: Path,
) -> tuple[list[tuple[Path, Path]], tuple[Path, str]]:
    """The files (from, to) that placing the instance (its config `source`, read by instance_config)
    copies into `etc_dir` and its data folder, and where its config goes with its text (for
    `write_configs`): decided before anything is written, so each file is checked first."""
    named = [*named_files(instance.layer, values, source), *front_files(source.parent, instance.name)]
    placed_as = node_secret_names(instance, values)
    copies = [(source.parent / relative, etc_dir / placed_as.get(relative, relative)) for relative in named]
    old_db = bundled_database(values, source)
    data_values(instance, values, data_final)
    new_db = sqlite_file(values, source.parent)
    if old_db is not None and new_db is not None:
        real_db = data_real / new_db.relative_to(data_final)
        copies += [(Path(f"{old_db}{suffix}"), Path(f"{real_db}{suffix}")) for suffix in ("", "-wal", "-shm")]
    return copies, (etc_dir / source.name, render_config_toml(instance.layer, LAYERS[instance.layer].keys, values))


def place_instance(instance: Instance, copies: list[tuple[Path, Path]], data_real: Path,
                   source_dir: Path) -> None:
    """Make the copies `plan_instance` decided and the instance's data folders."""
    for source, target in copies:
        copy_once(source, target, source_dir)
    if instance.layer != "web":
        (data_real / instance.name).mkdir(parents=True, exist_ok=True, mode=0o700)
    if instance.layer == "render":
        (data_real / instance.name / "store").mkdir(exist_ok=True, mode=0o700)


def select(layout: Layout, layers: list[str], names: list[str]) -> list[Instance]:
    chosen = [i for i in layout.instances if i.layer in layers and (not names or i.name in names)]
    unknown = set(names) - {i.name for i in layout.instances}
    if unknown:
        raise SystemExit(f"no instance named {', '.join(sorted(unknown))} in this deployment")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="folder written by `sivr init`")
    parser.add_argument("--etc", required=True, help="config folder to fill (inside --root if any)")
    parser.add_argument("--data", required=True, help="data folder as the daemons will see it")
    parser.add_argument("--data-real", required=True, help="the same folder as seen now (inside --root)")
    parser.add_argument("--layers", required=True, help="layers this host runs, space-separated")
    parser.add_argument("--instances", default="", help="only these instance names (default: all)")
    parser.add_argument("--with-ca-key", action="store_true",
                        help="also copy the CA's private key (single-host installs that issue their own)")
    args = parser.parse_args(argv)
    private_from_now()

    source_dir = Path(args.source).resolve()
    etc_dir = Path(args.etc)
    try:  # everything read and checked before anything is written
        layout = Layout.load(source_dir)
        chosen = select(layout, args.layers.split(), args.instances.split())
        configs = [instance_config(source_dir, instance) for instance in chosen]
        names = ALWAYS_COPIED + ((CA_KEY,) if args.with_ca_key else ())
        shared = [(source_dir / name, etc_dir / name) for name in names]
        plans = [plan_instance(instance, source, values, etc_dir, Path(args.data), Path(args.data_real))
                 for instance, (source, values) in zip(chosen, configs, strict=True)]
        for source, _ in [*shared, *(copy for copies, _ in plans for copy in copies)]:
            refuse_unless_regular(source, source_dir)
    except ValueError as exc:
        raise SystemExit(f"place_deployment: {exc}") from None
    etc_dir.mkdir(parents=True, exist_ok=True)
    try:
        for source, target in shared:
            copy_once(source, target, source_dir)
        for instance, (copies, _) in zip(chosen, plans, strict=True):
            place_instance(instance, copies, Path(args.data_real), source_dir)
    except ValueError as exc:
        raise SystemExit(f"place_deployment: {exc}; check who else can write to {source_dir}") from None
    write_configs([config for _, config in plans])
    for instance in chosen:
        print(instance.layer, instance.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
