"""Node names that read the same are one name in an institution's node registry.

An institution admin registered `NODE-1`, full-width `ｎｏｄｅ－１`, `node‑1` (U+2011), `node  -1` and
`node-1` + U+200B beside `node-1`: all 201, so the console's node list and the viewer's upload
choice showed several "node-1" pointing at different URLs (one of them the admin's to choose for
every upload). The registry compares names by `shared.names.name_search_key(..., keep_accents=True)`,
the fold the toplevel uses for institution names (attack table row 60), under its lock.
"""

from __future__ import annotations

import pytest

from daemons.institution.models import Node, database_proxy

from .conftest import at_once

LOOKALIKES = {
    "upper case": "NODE-1",
    "full width": "\uff4e\uff4f\uff44\uff45\uff0d\uff11",
    "non-breaking hyphen": "node\u20111",
    "en dash": "node\u20131",
    "minus sign": "node\u22121",
    "spaces around the dash": "node  -1",
    "a space before the dash": "node -1",
    "zero-width space": "node-1\u200b",
    "zero-width joiner inside": "no\u200dde-1",
    "soft hyphen": "no\u00adde-1",
    "no-break space": "node\u00a0-\u00a01",
    "braille blank after": "node-1\u2800",
    "hangul filler as a space": "node\u3164-1",
}


def _create(api, users, name: str, number: int):
    return api.call("POST", "/api/v1/nodes", users["admin"], {"name": name, "url": f"https://render{number}.example"})


@pytest.mark.parametrize("kind", list(LOOKALIKES))
def test_a_name_read_as_a_registered_one_is_refused(api, users, node, db_state, kind):
    before = db_state()
    status, answer = _create(api, users, LOOKALIKES[kind], 2)
    assert status == 409 and answer["error"]["code"] == "conflict", (kind, answer)
    assert "'node-1'" in answer["error"]["message"] and node["id"] in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("kind", list(LOOKALIKES))
def test_renaming_a_node_to_a_name_read_as_another_is_refused(api, users, node, kind):
    status, other = _create(api, users, "node-2", 2)
    assert status == 201
    status, answer = api.call("PUT", f"/api/v1/nodes/{other['id']}", users["admin"], {"name": LOOKALIKES[kind]})
    assert status == 409 and answer["error"]["code"] == "conflict", (kind, answer)
    assert api.call("GET", f"/api/v1/nodes/{other['id']}", users["admin"])[1]["name"] == "node-2"


def test_names_that_read_differently_are_two_nodes(api, users, node):
    for number, name in enumerate(["node-2", "node 1", "node1", "nöde-1", "node_1", "node-1 north"], start=2):
        status, answer = _create(api, users, name, number)
        assert status == 201, (name, answer)


def test_a_node_keeps_its_own_name_read_differently(api, users, node):
    """Renaming a node to another spelling of its own name is no conflict with itself."""
    status, answer = api.call("PUT", f"/api/v1/nodes/{node['id']}", users["admin"], {"name": "NODE-1"})
    assert status == 200 and answer["name"] == "NODE-1"


def test_another_institution_may_use_the_name(api, users, node, make_user):
    """The registry is per institution (as the unique index): B's node-1 is no conflict with A's."""
    node_b = {"name": "NODE-1", "url": "https://render-b.example"}
    # institution B's registry is the same table on another server: rows of another institution_id
    with database_proxy.atomic():
        Node.create(institution_id="22222222-2222-4222-8222-222222222222", **node_b)
    status, answer = api.call("PUT", f"/api/v1/nodes/{node['id']}", users["admin"], {"name": "node-1"})
    assert status == 200, answer
    status, answer = _create(api, users, "node-9", 9)
    assert status == 201, answer


def test_a_registry_holding_names_read_the_same_keeps_working(api, users, node, db_state):
    """Rows stored before the rule stay: each is read, listed, edited (its URL, its own name sent
    again, as the console's form does) and deleted as before, and may be renamed to another name."""
    with database_proxy.atomic():
        twin = Node.create(institution_id=node["institution_id"], name="NODE-1", url="https://twin.example")
    status, listed = api.call("GET", "/api/v1/nodes", users["admin"])
    assert status == 200 and listed["total"] == 2
    status, answer = api.call("PUT", f"/api/v1/nodes/{twin.id}", users["admin"],
                              {"name": "NODE-1", "url": "https://twin2.example"})
    assert status == 200 and answer["url"] == "https://twin2.example", answer
    status, answer = api.call("PUT", f"/api/v1/nodes/{node['id']}", users["admin"], {"name": "node-1"})
    assert status == 200, answer
    status, answer = api.call("PUT", f"/api/v1/nodes/{twin.id}", users["admin"], {"name": "node-1 (old)"})
    assert status == 200 and answer["name"] == "node-1 (old)"
    assert api.call("DELETE", f"/api/v1/nodes/{twin.id}", users["admin"])[0] == 204


def test_lookalike_names_created_at_once_are_one_node(app, api, users):
    """Two admins at once: the names are compared and written under the registry's lock."""
    names = ["node-7", "NODE\u20117", "\uff4e\uff4f\uff44\uff45\uff0d\uff17", "node -7"]
    requests = [("POST", "/api/v1/nodes", {"name": name, "url": f"https://render{20 + number}.example"})
                for number, name in enumerate(names)]
    assert at_once(app, requests, users["admin"]) == [201, 409, 409, 409]
    assert api.call("GET", "/api/v1/nodes", users["admin"])[1]["total"] == 1
