"""Fixtures for driving the console with pytest-qt against real SIVR daemons.

`QT_QPA_PLATFORM=offscreen` is set here, before any QApplication exists, so the tests run
without a display; screenshots still render (`QWidget.grab()`). To run them on a real X server
(the screenshots then come from Xvfb): `QT_QPA_PLATFORM=xcb xvfb-run -a pytest tests/admin_gui`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Callable, Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from admin_gui.main_window import ConsoleWindow  # noqa: E402
from admin_gui.style import apply_style  # noqa: E402
from daemons.demo import seed_base  # noqa: E402
from daemons.deployment import Layout, LocalDeployment, init_deployment  # noqa: E402
from daemons.layers import LAYERS  # noqa: E402
from shared.config import render_config_toml  # noqa: E402

from driving import WAIT_MS  # noqa: E402  (this folder is on sys.path: it has no __init__.py)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "admin_gui"


class Deployment(LocalDeployment):
    users: dict[str, dict[str, str]]


def start(root: Path, toplevel_tokens: dict | None = None) -> Deployment:
    """A deployment with two institutions; `toplevel_tokens` overrides token settings."""
    layout = init_deployment(root, pick_free_ports=True, institution_names=["Demo Hospital", "Second Clinic"])
    if toplevel_tokens:
        _override_toplevel(layout, toplevel_tokens)
    users = seed_base(layout)
    running = Deployment(layout)
    running.users = users
    try:
        running.start()
    except BaseException:
        running.stop()
        raise
    return running


def _override_toplevel(layout: Layout, tokens: dict) -> None:
    path = Path(layout.first("toplevel").config)
    values = tomllib.loads(path.read_text())
    values["tokens"].update(tokens)
    path.write_text(render_config_toml("toplevel", LAYERS["toplevel"].keys, values))


@pytest.fixture(scope="session")
def gui_deployment(tmp_path_factory) -> Iterator[Deployment]:
    """Real toplevel and institution daemons (and render nodes when that layer exists) shared by
    the console tests; tests that change data use names of their own and clean up."""
    running = start(tmp_path_factory.mktemp("gui-deployment"))
    yield running
    running.stop()


@pytest.fixture
def private_deployment(tmp_path_factory) -> Iterator[Callable[..., Deployment]]:
    """Deployments a test may break (stop a daemon) or configure (short tokens)."""
    started: list[Deployment] = []

    def make(**kwargs) -> Deployment:
        running = start(tmp_path_factory.mktemp("gui-private"), **kwargs)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def window(qtbot, qapp, tmp_path) -> Iterator[ConsoleWindow]:
    apply_style(qapp)
    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    win = ConsoleWindow(settings)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    yield win
    win.renew_timer.stop()
    win.runner.wait_for_done(WAIT_MS)


def screenshot(widget, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    return path
