"""Fixtures for render-node tests: a real node app (Flask test client) with real tokens and store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemons.render.app import create_app
from daemons.render.ingest.service import INGEST_EXTENSION
from daemons.render.models import upgrade
from daemons.render.settings import KEYS
from shared.config import build_config
from shared.tokens import MAX_EXCHANGED_TTL_S, TokenIssuer, generate_signing_keypair, load_private_key

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "data" / "dicom"
#: The node's own audience: tokens are minted for it as the toplevel's exchange would.
NODE_AUDIENCE = "https://render-1.test:5003"


def need_data() -> Path:
    if not DICOM.is_dir():
        pytest.skip(f"real DICOM data absent: {DICOM} (/work/shared/data absent (fresh clone))")
    return DICOM


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    return need_data()


@pytest.fixture(scope="session")
def token_keys(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("token-keys")
    private, public = folder / "token.pem", folder / "token.pub"
    generate_signing_keypair(private, public)
    return private, public


class NodeHarness:
    """A render node app plus a way to mint tokens for any role and institution."""

    def __init__(self, app, issuer: TokenIssuer, institution_id: str, root: Path):
        self.app = app
        self.client = app.test_client()
        self.issuer = issuer
        self.institution_id = institution_id
        self.root = root
        self._users: dict[str, str] = {}  # one user per role unless a test names another


    def headers(self, role: str = "physician", institution_id: str | None = None,
                user_id: str | None = None) -> dict[str, str]:
        token, _ = self.issuer.issue(user_id or self._users.setdefault(role, str(uuid.uuid4())), f"{role}-user", role,
                                     institution_id or self.institution_id)
        return {"Authorization": f"Bearer {token}"}

    def upload(self, paths_or_blobs, headers=None):
        files = []
        for item in paths_or_blobs:
            if isinstance(item, Path):
                files.append((item.open("rb"), item.name))
            else:
                name, data = item
                import io
                files.append((io.BytesIO(data), name))
        return self.client.post("/api/v1/records", data={"files": files},
                                headers=headers or self.headers(), content_type="multipart/form-data")

    def load(self, paths_or_blobs) -> tuple[str, dict]:
        """Upload one record and load it whole: its id and RecordMeta."""
        reply = self.upload(paths_or_blobs)
        assert reply.status_code == 201, reply.json
        record_id = reply.json["id"]
        assert self.client.post(f"/api/v1/records/{record_id}/load", headers=self.headers()).status_code == 202
        assert self.registry.get_loaded(record_id).wait_complete(60)
        return record_id, self.client.get(f"/api/v1/records/{record_id}", headers=self.headers()).json

    @property
    def registry(self):
        return self.app.extensions["sivr_records"]


def database_overrides(request, backend: str) -> dict[str, str]:
    """`build_node` overrides for a node whose catalogue is on `backend` ("sqlite", the default, or
    "postgresql": a fresh database, skipped without one), for fixtures parametrized over both."""
    if backend == "postgresql":
        return {"database__url": request.getfixturevalue("pg_database_factory")()}
    return {}


def build_node(root: Path, token_keys: tuple[Path, Path], **overrides) -> NodeHarness:
    """A node app in `root` trusting tokens of `token_keys` (`section__key=value` overrides config);
    `make_node` for one test, or called directly by a module-scoped fixture."""
    private, public = token_keys
    issuer = TokenIssuer(load_private_key(private), "sivr-toplevel", NODE_AUDIENCE, MAX_EXCHANGED_TTL_S)
    institution_id = overrides.pop("institution_id", str(uuid.uuid4()))
    values = {
        "tokens": {"public_key": str(public), "audience": NODE_AUDIENCE},
        "database": {"url": f"sqlite:///{root}/render.db"},
        "node": {"institution_id": institution_id, "receipt_key": str(root / "receipt.pem")},
        "storage": {"dir": str(root / "store"), "key_file": str(root / "store.key")},
        "render": {"load_threads": 2},
    }
    for dotted, value in overrides.items():
        section, name = dotted.split("__", 1)
        values.setdefault(section, {})[name] = value
    config = build_config("render", KEYS, values, None)
    upgrade(config)
    app = create_app(config)
    app.config["TESTING"] = True
    return NodeHarness(app, issuer, institution_id, root)


def close_node(harness: NodeHarness) -> None:
    """Stop what the node runs in the background (safe to call twice): its series-complete watcher
    left running would analyse its series in the middle of a later test of this process, and a DICOM
    listener left open kept its port: a node made on port 1 answered every later test of the process
    that connects there to find nothing (a database URL's 10 s connect timeout, six times a run)."""
    listener = harness.app.extensions.get("sivr_dimse")
    if listener is not None:
        listener.stop()
    harness.app.extensions[INGEST_EXTENSION].close()
    harness.registry.shutdown()
    harness.app.extensions["sivr_view_audit"].close()
    harness.app.extensions["sivr_node"].decoder.close()


@pytest.fixture
def make_node(tmp_path_factory, token_keys) -> Iterator[Callable[..., NodeHarness]]:
    """Nodes for one test, each closed at its end."""
    made: list[NodeHarness] = []

    def make(root: Path | None = None, **overrides) -> NodeHarness:
        made.append(build_node(root or tmp_path_factory.mktemp("render-node"), token_keys, **overrides))
        return made[-1]

    yield make
    for harness in made:
        close_node(harness)


@pytest.fixture
def node(make_node) -> NodeHarness:
    return make_node()
