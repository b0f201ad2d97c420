"""A real SeaweedFS on loopback and a deployment whose two render nodes share one bucket."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.demo import RunningDeployment, register_nodes, start_deployment
from daemons.deployment import Instance, ObjectStore
from tests.conftest import cheap_password_hashing
from tests.s3.seaweed import SeaweedS3, started_seaweed


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[SeaweedS3]:
    store = started_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    yield store
    store.stop()


def object_store_for(seaweed: SeaweedS3) -> ObjectStore:
    bucket = seaweed.create_bucket(f"sivr-{secrets.token_hex(4)}")
    return ObjectStore(seaweed.endpoint_url, bucket, seaweed.access_key, seaweed.secret_key)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, seaweed) -> Iterator[RunningDeployment]:
    """Every layer, one institution with two render nodes on one bucket prefix; nodes registered."""
    running = start_deployment(tmp_path_factory.mktemp("s3-deployment"), nodes_per_institution=2,
                               object_store=object_store_for(seaweed), before_start=cheap_password_hashing)
    register_nodes(running.client("admin"), running.layout.institutions[0])
    yield running
    running.stop()


def render_instances(deployment: RunningDeployment) -> list[Instance]:
    return [i for i in deployment.instances if i.layer == "render"]


def set_config_values(instance: Instance, **values: str) -> None:
    """Rewrite `name = value` lines of an instance's config file (values as TOML literals)."""
    path = Path(instance.config)
    text = path.read_text()
    for name, literal in values.items():
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {literal}", text, count=1, flags=re.M)
        assert count == 1, f"{name} not in {path}"
    path.write_text(text)


def restart(deployment: RunningDeployment, *instances: Instance) -> None:
    """Stop the instances at once, then start them together (their start-ups overlap) and wait for each."""
    deployment.stop([instance.name for instance in instances])
    for instance in instances:
        deployment.start_instance(instance)
    for instance in instances:
        deployment.wait_healthy(instance)


def bucket_node_settings(seaweed: SeaweedS3, bucket: str, tmp_path: Path) -> tuple[Path, tuple[Path, Path], dict]:
    """A render node's folder, token keys and settings for `build_node` on `bucket`: its store key
    (the key-encryption key every node sharing the bucket has) and the bucket, manifests read anew at
    every request."""
    from daemons.render.store.local import create_key_file
    from shared.tokens import generate_signing_keypair

    private, public = tmp_path / "token.pem", tmp_path / "token.pub"
    generate_signing_keypair(private, public)
    root = tmp_path / "node"
    root.mkdir()
    create_key_file(root / "store.key")
    settings = {"storage__backend": "s3", "s3__endpoint_url": seaweed.endpoint_url, "s3__bucket": bucket,
                "s3__prefix": "inst/", "s3__credentials_file": str(seaweed.write_credentials(tmp_path / "s3.json")),
                "storage__manifest_refresh_s": 0}
    return root, (private, public), settings
