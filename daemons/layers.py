"""Where each layer's settings, application factory and schema live.

The `sivr` command, gunicorn and the tests find a layer's code only through this table, so a layer
is added in one place. A layer whose package is not installed is simply absent (`available`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from shared.config import Config, Key, load_config

LAYER_NAMES = ("toplevel", "institution", "render", "web")


@dataclass(frozen=True)
class Layer:
    name: str
    package: str
    has_schema: bool

    @property
    def keys(self) -> tuple[Key, ...]:
        return importlib.import_module(f"{self.package}.settings").KEYS

    @property
    def streamed_locations(self) -> tuple[str, ...]:
        """The nginx locations whose request bodies the layer's front streams (`settings.STREAMED_LOCATIONS`)."""
        return getattr(importlib.import_module(f"{self.package}.settings"), "STREAMED_LOCATIONS", ())

    def create_app(self, config: Config) -> Flask:
        return importlib.import_module(f"{self.package}.app").create_app(config)

    def upgrade_schema(self, config: Config) -> int | None:
        """Create or upgrade this layer's tables; None for layers without a database."""
        if not self.has_schema:
            return None
        upgrade: Callable[[Config], int] = importlib.import_module(f"{self.package}.models").upgrade
        return upgrade(config)

    def copy_database(self, config: Config, url: str) -> dict[str, int]:
        """Copy this layer's rows into the empty database at `url`; rows copied per table."""
        copy: Callable[[Config, str], dict[str, int]] = importlib.import_module(f"{self.package}.models").copy
        return copy(config, url)

    def load_config(self, path: str) -> Config:
        return load_config(path, self.name, self.keys)


LAYERS: dict[str, Layer] = {
    "toplevel": Layer("toplevel", "daemons.toplevel", True),
    "institution": Layer("institution", "daemons.institution", True),
    "render": Layer("render", "daemons.render", True),
    "web": Layer("web", "webviewer", False),
}


def get_layer(name: str) -> Layer:
    try:
        return LAYERS[name]
    except KeyError as exc:
        raise ValueError(f"unknown layer {name!r}; choose one of {', '.join(LAYER_NAMES)}") from exc
