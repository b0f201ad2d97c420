"""The physician workflow end to end across two institutions and three render nodes on PostgreSQL."""

from __future__ import annotations

import pytest

from daemons.demo import (
    ApiClient,
    find_or_create_patient,
    new_user,
    register_nodes,
    register_record,
    write_finding,
)
from tests.ops.helpers import demo_slices, upload_and_load, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_physicians_of_two_institutions_share_one_patient(topology):
    layout = topology.layout
    north, south = layout.institutions
    top = topology.url("toplevel")
    admin_north = topology.client("admin")
    admin_south = ApiClient(topology, **new_user(admin_north, top, south["id"], "admin.south", "instadmin"))
    doctor_north = topology.client("physician")
    doctor_south = ApiClient(topology, **new_user(admin_north, top, south["id"], "dr.south", "physician"))

    north_nodes = register_nodes(admin_north, north)
    south_nodes = register_nodes(admin_south, south)
    assert len(north_nodes) == 2 and len(south_nodes) == 1

    patient = find_or_create_patient(doctor_north, top, {
        "first_name": "Ada", "last_name": "Lovelace", "sex": "F",
        "birth_date": "1950-12-10", "insurance_number": "TOPO-0001"})
    assert doctor_south.call("GET", f"{top}/api/v1/patients",
                             params={"q": "lovel"}).json()["items"][0]["id"] == patient["id"]

    node_a, node_b = list(north_nodes.values())
    node_c = next(iter(south_nodes.values()))
    slices = demo_slices()
    meta_north = upload_and_load(doctor_north, node_a["url"], slices[:6])
    meta_south = upload_and_load(doctor_south, node_c["url"], slices[6:])
    register_record(doctor_north, north["server_url"], meta_north, node_a["id"], patient["id"], "CT", "north CT",
                    confirm_mismatch=True)
    register_record(doctor_south, south["server_url"], meta_south, node_c["id"], patient["id"], "CT", "south CT",
                    confirm_mismatch=True)

    write_finding(doctor_north, north["server_url"], patient["id"],
                  [{"record_id": meta_north["id"], "institution_id": north["id"], "node_id": node_a["id"]}],
                  description="north reading", findings="Normal.", conclusion="No abnormality.")
    write_finding(doctor_south, south["server_url"], patient["id"], [
        {"record_id": meta_south["id"], "institution_id": south["id"], "node_id": node_c["id"]},
        {"record_id": meta_north["id"], "institution_id": north["id"], "node_id": node_a["id"]},
    ], description="south comparison", findings="Unchanged against the north study.",
                  conclusion="Stable.")

    seen = {}
    for inst in (north, south):
        items = doctor_north.call("GET", f"{inst['server_url']}/api/v1/findings",
                                  params={"patient_id": patient["id"]}).json()["items"]
        seen[inst["name"]] = {f["description"] for f in items}
    assert seen == {"North Hospital": {"north reading"}, "South Clinic": {"south comparison"}}

    # a south physician reads the north record on the north node, where it is stored
    assert wait_ready(doctor_south, node_a["url"], meta_north["id"])["state"] == "ready"
    image = doctor_south.call("GET", f"{node_a['url']}/api/v1/records/{meta_north['id']}/frames/0",
                              params={"format": "png", "window": "40,400"})
    assert image.headers["Content-Type"] == "image/png" and image.content[:8] == b"\x89PNG\r\n\x1a\n"

    # uploads stay inside one's own institution; node management too
    refused = doctor_south.session.post(f"{node_a['url']}/api/v1/records", timeout=60,
                                        files=[("files", ("x.dcm", slices[0].read_bytes()))])
    assert refused.status_code == 403
    refused = admin_south.session.put(f"{north['server_url']}/api/v1/nodes/{node_b['id']}",
                                      json={"name": "stolen"}, timeout=30)
    assert refused.status_code == 403
    names = {n["name"] for n in admin_north.call("GET", f"{north['server_url']}/api/v1/nodes").json()["items"]}
    assert "stolen" not in names
