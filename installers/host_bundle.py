"""Cut one host's share out of a `sivr init` folder: copy it to that host, install with --from.

`sivr init` runs once, on the machine that keeps the CA, and writes every key of the deployment.
A host must receive only what its own instances use, so that the toplevel's signing key, the CA's
key and other nodes' store keys never travel to it at all (not even to be discarded there).
The bundle is itself an init folder (configs with relative paths, deployment.json), so
`install.sh --from BUNDLE` treats it like the original.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from place_deployment import (
    ALWAYS_COPIED,
    bundled_database,
    copy_once,
    front_files,
    instance_config,
    named_files,
    private_from_now,
    refuse_unless_regular,
    select,
)

from daemons.deployment import Instance, Layout, require_private_folder


def bundle_copies(source_dir: Path, out: Path, chosen: list[tuple[Instance, Path, dict[str, Any]]]
                  ) -> list[tuple[Path, Path]]:
    """The files (from, to) the bundle of the chosen instances (configs read by instance_config)
    holds: decided before --out is made, so each file is checked first (`refuse_unless_regular`)."""
    copies = [(source_dir / name, out / name) for name in ALWAYS_COPIED]
    for instance, config, values in chosen:
        for relative in [*named_files(instance.layer, values, config), *front_files(source_dir, instance.name)]:
            copies.append((source_dir / relative, out / relative))
        database = bundled_database(values, config)
        if database is not None:
            # The toplevel's database already holds the institutions `sivr init` registered.
            copies.append((database, out / database.relative_to(source_dir)))
        copies.append((config, out / config.name))
    return copies


def write_bundle(out: Path, copies: list[tuple[Path, Path]], chosen: list[tuple[Instance, Path, dict[str, Any]]],
                 layout: Layout, source_dir: Path) -> None:
    """Fill `out` with the files `bundle_copies` chose and a deployment.json naming the chosen instances."""
    out.mkdir(parents=True, exist_ok=True)
    for source, target in copies:
        copy_once(source, target, source_dir)
    placed = [Instance(instance.layer, instance.name, str(out / config.name), instance.url, instance.institution)
              for instance, config, _ in chosen]
    (out / "keys").mkdir(exist_ok=True)
    os.chmod(out / "keys", 0o700)
    Layout(root=str(out), ca_cert=str(out / "tls/ca.pem"), instances=placed,
           institutions=layout.institutions, front=layout.front).save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="folder written by `sivr init`")
    parser.add_argument("--out", required=True, help="new folder for this host's share")
    parser.add_argument("--layers", default="web toplevel institution render",
                        help="layers the host runs, space-separated")
    parser.add_argument("--instances", default="", help="only these instance names (default: all)")
    args = parser.parse_args(argv)
    private_from_now()  # the bundle holds keys too: private until it is installed

    out = Path(args.out).resolve()
    try:  # the bundle carries keys: nobody else may swap them before it is installed
        require_private_folder(out)
    except ValueError as exc:
        raise SystemExit(f"host_bundle: {exc}") from None
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    source_dir = Path(args.source).resolve()
    try:  # everything read and checked before --out is made
        layout = Layout.load(source_dir)
        chosen = select(layout, args.layers.split(), args.instances.split())
        configs = [(instance, *instance_config(source_dir, instance)) for instance in chosen]
        copies = bundle_copies(source_dir, out, configs)
        for source, _ in copies:
            refuse_unless_regular(source, source_dir)
    except ValueError as exc:
        raise SystemExit(f"host_bundle: {exc}") from None
    if not chosen:
        raise SystemExit("no instance matches --layers/--instances")
    try:
        write_bundle(out, copies, configs, layout, source_dir)
    except ValueError as exc:
        raise SystemExit(f"host_bundle: {exc}; check who else can write to {source_dir}") from None
    for instance in chosen:
        print(instance.layer, instance.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
