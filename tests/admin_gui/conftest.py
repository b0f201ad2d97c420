"""Fixtures for driving the console with pytest-qt against real SIVR daemons.

`QT_QPA_PLATFORM=offscreen` is set here, before any QApplication exists, so the tests run
without a display; screenshots still render (`QWidget.grab()`). To run them on a real X server
(the screenshots then come from Xvfb): `QT_QPA_PLATFORM=xcb xvfb-run -a pytest tests/admin_gui`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from driving import WAIT_MS
from fake_servers import FakeSivr, serving
from PySide6.QtCore import QSettings

from admin_gui.context import ConsoleContext
from admin_gui.gc_on_gui_thread import GuiThreadCollector
from admin_gui.main_window import ConsoleWindow
from admin_gui.style import apply_style
from daemons.demo import RunningDeployment, start_deployment
from daemons.deployment import Layout
from daemons.layers import LAYERS
from shared.config import render_config_toml
from tests.conftest import cheap_password_hashing

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "admin_gui"


INSTITUTIONS = ["Demo Hospital", "Second Clinic"]


def _override_toplevel(tokens: dict) -> Callable[[Layout], None]:
    """A `before_start` hook that changes the toplevel's token settings (short lifetimes)."""

    def override(layout: Layout) -> None:
        path = Path(layout.first("toplevel").config)
        values = tomllib.loads(path.read_text())
        values["tokens"].update(tokens)
        path.write_text(render_config_toml("toplevel", LAYERS["toplevel"].keys, values))

    return override


@pytest.fixture(scope="session")
def gui_deployment(tmp_path_factory) -> Iterator[RunningDeployment]:
    """Real toplevel and institution daemons (and render nodes when that layer exists) shared by
    the console tests; tests that change data use names of their own and clean up."""
    running = start_deployment(tmp_path_factory.mktemp("gui-deployment"), institution_names=INSTITUTIONS,
                               before_start=cheap_password_hashing)
    yield running
    running.stop()


@pytest.fixture
def private_deployment(make_deployment) -> Callable[..., RunningDeployment]:
    """Deployments a test may break (stop a daemon) or configure (short tokens); `nodes=False`
    leaves out the render nodes (most of a deployment's start-up) for tests of sessions alone."""

    def make(toplevel_tokens: dict | None = None, nodes: bool = True) -> RunningDeployment:
        before_start = _override_toplevel(toplevel_tokens) if toplevel_tokens else None
        return make_deployment(before_start=before_start, institution_names=INSTITUTIONS,
                               nodes_per_institution=1 if nodes else 0)

    return make


@pytest.fixture(autouse=True)
def collect_on_gui_thread(qapp) -> Iterator[None]:
    """As in the console itself: no cycle collection on worker threads (it would crash Qt)."""
    collector = GuiThreadCollector()
    yield
    collector.stop()


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


@pytest.fixture
def fake_sivr() -> Iterator[FakeSivr]:
    """A loopback stand-in for every layer, answering what the test sets (fake_servers.py)."""
    with serving() as server:
        yield server


@pytest.fixture
def fake_context(qapp, fake_sivr) -> Iterator[ConsoleContext]:
    """A signed-in system administrator's console context whose servers are `fake_sivr`."""
    ctx = fake_sivr.context()
    yield ctx
    ctx.runner.wait_for_done(WAIT_MS)


def screenshot(widget, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    return path
