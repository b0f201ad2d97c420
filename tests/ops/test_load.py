"""Concurrency proof in short form: simulated viewers across render nodes and a burst of logins,
with zero server errors. (Latency figures come from `python -m bench.load`, not from tests.)"""

from __future__ import annotations

import pytest

from bench.load import ViewTarget, run_logins, run_viewers
from daemons.demo import ApiClient, new_user, register_nodes
from tests.ops.helpers import demo_slices, upload_and_load, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_viewers_across_nodes_and_a_login_burst_get_no_server_error(topology):
    north = topology.layout.institutions[0]
    top = topology.url("toplevel")
    admin = topology.client("admin")
    doctor = topology.client("physician")
    nodes = list(register_nodes(admin, north).values())
    targets = []
    for node, files in zip(nodes, (demo_slices(8), demo_slices(10)), strict=True):
        meta = upload_and_load(doctor, node["url"], files)
        assert wait_ready(doctor, node["url"], meta["id"])["state"] == "ready"
        targets.append(ViewTarget(node["url"], meta["id"], meta["frames"]))

    viewers = run_viewers(doctor.auth, topology.ca_cert, targets, viewers=32, duration_s=8)
    assert viewers.server_errors == 0, viewers.failures[:5]
    assert viewers.statuses.get(200, 0) > 32

    credentials = [new_user(admin, top, north["id"], f"load.user{n}", "physician") for n in range(10)]
    logins = run_logins(top, topology.ca_cert, credentials, concurrency=100)
    assert logins.server_errors == 0, logins.failures[:5]
    assert logins.statuses.get(200, 0) == 100, logins.statuses
    ApiClient(topology, **credentials[0])  # the accounts still work after the burst
