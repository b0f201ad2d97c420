"""Folders the node deletes in are claimed first, and never taken when they hold what is not SIVR's.

Why: the local store removes at start-up what an interrupted write left behind (any folder without
a manifest), and the S3 blob cache deletes files to stay within its size. Set by mistake to a
folder that holds other things (`/etc`, a home folder, the root of a mounted disk), `storage.dir`
made a node delete every sub-folder of `/etc` at its first start. A folder is the node's when it
was empty when first used, or carries the marker the node wrote then; one filled by a release
before the marker is recognised by its layout alone, and then marked. A mounted disk's
`lost+found` is no obstacle (the guide mounts a NAS share at the store's folder): the node deletes
only what it makes, and never that.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shared.config import ConfigError

MARKER = ".sivr-folder"
MOUNT_ENTRIES = frozenset({"lost+found"})  # what a file system puts at the root of a mount
SHOWN = 5  # entries named in a refusal


def shown(names: list[str]) -> str:
    """The first entries of a refusal's list, and how many more (a folder may hold thousands)."""
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def claim_folder(folder: Path, kind: str, setting: str, laid_out: Callable[[Path], bool]) -> None:
    """Make `folder` (created if missing, mode 0700) this node's `kind` folder, or refuse it.

    `laid_out(entry)`: whether an entry of the folder is one the `kind` itself makes (how a folder
    filled before the marker existed is recognised). ConfigError names `setting` and what is foreign.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker = folder / MARKER
    if marker.is_file():
        claimed = marker.read_text(encoding="utf-8", errors="replace").strip()
        if claimed != kind:
            raise ConfigError(f"{setting} = {folder}: the folder is SIVR's {claimed}, not its {kind}; "
                              "give each its own folder")
        return
    foreign = sorted(entry.name for entry in folder.iterdir()
                     if not (entry.name.startswith(MARKER) or entry.name in MOUNT_ENTRIES or laid_out(entry)))
    if foreign:
        raise ConfigError(f"{setting} = {folder}: the folder holds what is not a SIVR {kind} ({shown(foreign)}); "
                          f"the node deletes in this folder, so {setting} must name an empty folder of its own")
    temporary = folder / f"{MARKER}.{os.getpid()}"
    temporary.write_text(kind + "\n", encoding="utf-8")
    os.replace(temporary, marker)
