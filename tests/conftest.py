"""Fixtures that bring up real SIVR deployments: gunicorn processes with TLS on loopback ports.

`deployment` is one shared deployment (SQLite) for the whole session; tests that stop or break
a daemon use `make_deployment` to get a private one. `pg_database_urls` gives fresh PostgreSQL
databases when `SIVR_TEST_PG_URL` names a server (as `.ci/run` does).
"""

from __future__ import annotations

import os
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from daemons.demo import RunningDeployment, start_deployment
from daemons.deployment import Layout
from daemons.layers import LAYERS
from shared.config import render_config_toml
from shared.tokens import generate_signing_keypair
from tests.module_order import ModuleSeconds, load_seconds, longest_modules_first
from tests.toplevel.conftest import FAST_ARGON2

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ARTIFACTS = REPO / "test-artifacts"
DEMO_CT = REPO / "demo_data" / "ct-chest-100"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--module-seconds-out", type=Path, default=None,
                     help="write each test module's wall seconds here (tests/module_order.py)")


def pytest_configure(config: pytest.Config) -> None:
    out = config.getoption("--module-seconds-out")
    if out is not None and not hasattr(config, "workerinput"):  # the controller sees every report
        config.pluginmanager.register(ModuleSeconds(out), "module-seconds")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items[:] = longest_modules_first(items, load_seconds())


@pytest.fixture(autouse=True)
def _pydicom_validation_is_left_as_found() -> Iterator[None]:
    """Fails the test after which pydicom's process-wide validation modes differ: they are shared
    by every thread of a daemon, and a leaked RAISE once made later tests (and, in a node, every
    later upload) refuse valid values far from the code that leaked it."""
    from pydicom import config

    def modes() -> tuple[object, object]:
        return config.settings._reading_validation_mode, config.settings._writing_validation_mode

    before = modes()
    yield
    assert modes() == before, f"pydicom validation modes changed from {before} to {modes()}"


@pytest.fixture(scope="session")
def playwright_instance():
    """The one Playwright of this test process: its sync API refuses to start a second one while a
    first is running, so every browser test (viewer, OHIF, failover) launches Chromium from this."""
    from tests.webviewer.browser import CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM})")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The developers' real DICOM set beside the repository, or a skip on a fresh clone."""
    if not (SHARED_DATA / "dicom").is_dir():
        pytest.skip(f"real DICOM test data absent: {SHARED_DATA}/dicom (fresh clone without ../shared)")
    return SHARED_DATA / "dicom"


@pytest.fixture(scope="session")
def ct_series() -> Path:
    """A real 100-slice CT series folder: the developers' copy beside the repository, else the same
    series bundled in `demo_data/` (JPEG 2000 lossless, pixel-identical), so tests that need only
    a real CT run on a fresh clone too."""
    shared = SHARED_DATA / "dicom" / "tcia-cmb-crc-ct-100"
    return shared if shared.is_dir() else DEMO_CT


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> tuple[Path, Path]:
    """(private, public) token key files for apps built in-process; daemons under test get the public one."""
    folder = tmp_path_factory.mktemp("token-keys")
    private, public = folder / "token_private.pem", folder / "token_public.pem"
    generate_signing_keypair(private, public)
    return private, public


def _postgres_admin_url() -> str | None:
    return os.environ.get("SIVR_TEST_PG_URL") or None


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextmanager
def _pg_databases() -> Iterator[Callable[[], str]]:
    """A factory of uniquely named PostgreSQL databases, all dropped when the context ends."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip("PostgreSQL not configured: set SIVR_TEST_PG_URL (.ci/run does)")
    import psycopg

    created: list[str] = []

    def create() -> str:
        name = f"sivr_test_{uuid.uuid4().hex[:12]}"
        conn = psycopg.connect(admin_url, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        created.append(name)
        return _with_database(admin_url, name)

    try:
        yield create
    finally:
        conn = psycopg.connect(admin_url, autocommit=True)
        with conn.cursor() as cur:
            for name in created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="module")
def pg_database_factory() -> Iterator[Callable[[], str]]:
    """Create uniquely named PostgreSQL databases; all are dropped after the test module."""
    with _pg_databases() as create:
        yield create


@pytest.fixture(scope="session")
def pg_session_database_factory() -> Iterator[Callable[[], str]]:
    """Like `pg_database_factory`, but the databases live until the end of the test session.

    Creating a PostgreSQL database costs about a second (a checkpoint), so API suites create one
    per session and empty it before each test instead.
    """
    with _pg_databases() as create:
        yield create


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path) -> Callable[[], str]:
    """A factory of URLs of empty databases of the kind the test is parametrised with."""
    if request.param == "sqlite":
        names = iter(range(100))
        return lambda: f"sqlite:///{tmp_path}/copy-{next(names)}.db"
    return request.getfixturevalue("pg_database_factory")


def cheap_password_hashing(layout: Layout) -> None:
    """`before_start` of the shared deployments: their toplevel hashes passwords at argon2id's least
    cost (`FAST_ARGON2`). Their tests log in about a thousand times a run (each browser test, each API
    client), and at the production cost (3 passes over 64 MiB) a login took 0.2 s of a core on the
    2-core CI machine, spent on nothing those tests check. The toplevel redoes a hash made at another
    cost at its next login, so the users seeded before the start become cheap at their first login.
    Hashing at the production cost stays tested where it is the subject (tests/toplevel, the login
    burst of tests/ops)."""
    for instance in layout.instances:
        if instance.layer == "toplevel":
            path = Path(instance.config)
            values = tomllib.loads(path.read_text())
            values.setdefault("auth", {}).update(FAST_ARGON2)
            path.write_text(render_config_toml("toplevel", LAYERS["toplevel"].keys, values))


@pytest.fixture(scope="session")
def deployment(tmp_path_factory) -> Iterator[RunningDeployment]:
    """Every available layer, two institutions, one render node each, SQLite databases."""
    running = start_deployment(
        tmp_path_factory.mktemp("deployment"), institution_names=["Demo Hospital", "Second Clinic"],
        before_start=cheap_password_hashing,
    )
    yield running
    running.stop()


@pytest.fixture
def make_deployment(tmp_path_factory) -> Iterator[Callable[..., RunningDeployment]]:
    """A private deployment a test may break (stop a daemon, fill a disk); stopped after it."""
    started: list[RunningDeployment] = []

    def make(**kwargs) -> RunningDeployment:
        running = start_deployment(tmp_path_factory.mktemp("private-deployment"),
                                   **{"before_start": cheap_password_hashing, **kwargs})
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()
