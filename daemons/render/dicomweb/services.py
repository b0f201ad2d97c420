"""The DICOMweb service modules: importing one registers its routes on the blueprint."""

from __future__ import annotations

import importlib

from daemons.render.dicomweb import bp, cors

#: every module that adds routes to `daemons.render.dicomweb.bp` (each owns its own paths)
SERVICE_MODULES: tuple[str, ...] = ("stow", "wado", "rendered", "qido")

cors.attach(bp)


def load() -> None:
    """Import the service modules (their routes join the blueprint before its first registration)."""
    for name in SERVICE_MODULES:
        importlib.import_module(f"daemons.render.dicomweb.{name}")
