"""The DICOMweb service modules: importing one registers its routes on the blueprint."""

from __future__ import annotations

import importlib

#: every module that adds routes to `daemons.render.dicomweb.bp` (each owns its own paths)
SERVICE_MODULES: tuple[str, ...] = ("stow", "wado", "rendered", "qido")


def load() -> None:
    """Import the service modules (their routes join the blueprint before its first registration)."""
    for name in SERVICE_MODULES:
        importlib.import_module(f"daemons.render.dicomweb.{name}")
