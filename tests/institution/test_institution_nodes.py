"""`/api/v1/nodes`: the render-node registry, managed only by admins of this institution."""

from __future__ import annotations

import uuid

import pytest

from daemons.institution.models import Node, database_proxy
from shared.errors import ApiError
from shared.validation import parse_service_url as parse_node_url

from .conftest import INSTITUTION_A, INSTITUTION_B, at_once

NEW_NODE = {"name": "node-2", "url": "https://render2.hospital-a.example:5003/"}


def test_admin_manages_nodes_full_cycle(api, users):
    admin = users["admin"]
    status, created = api.call("POST", "/api/v1/nodes", admin, NEW_NODE)
    assert status == 201
    assert created["name"] == "node-2"
    assert created["url"] == "https://render2.hospital-a.example:5003"  # trailing slash dropped
    assert created["institution_id"] == INSTITUTION_A
    assert str(uuid.UUID(created["id"])) == created["id"]
    assert created["created_at"].endswith("Z")

    status, read = api.call("GET", f"/api/v1/nodes/{created['id']}", admin)
    assert status == 200 and read == created

    status, updated = api.call("PUT", f"/api/v1/nodes/{created['id']}", admin, {"name": "renamed"})
    assert status == 200 and updated["name"] == "renamed" and updated["url"] == created["url"]

    status, listed = api.call("GET", "/api/v1/nodes", admin)
    assert status == 200 and listed["total"] == 1 and listed["items"] == [updated]

    status, _ = api.call("DELETE", f"/api/v1/nodes/{created['id']}", admin)
    assert status == 204
    status, body = api.call("GET", f"/api/v1/nodes/{created['id']}", admin)
    assert status == 404 and body["error"]["code"] == "not_found"
    assert api.call("GET", "/api/v1/nodes", admin)[1]["total"] == 0


@pytest.mark.parametrize("who", ["admin", "physician", "admin_b", "physician_b"])
def test_any_user_lists_and_reads_nodes(api, users, node, who):
    """Viewers need the URL of the node holding a record linked from any institution's finding."""
    status, body = api.call("GET", "/api/v1/nodes", users[who])
    assert status == 200 and body == {"items": [node], "total": 1}
    status, body = api.call("GET", f"/api/v1/nodes/{node['id']}", users[who])
    assert status == 200 and body == node


@pytest.mark.parametrize("who", ["physician", "admin_b", "physician_b"])
def test_only_admins_of_this_institution_change_nodes(api, users, node, db_state, who):
    before = db_state()
    caller = users[who]
    for method, path, body in [
        ("POST", "/api/v1/nodes", NEW_NODE),
        ("PUT", f"/api/v1/nodes/{node['id']}", {"url": "https://attacker.example"}),
        ("DELETE", f"/api/v1/nodes/{node['id']}", None),
    ]:
        status, answer = api.call(method, path, caller, body)
        assert status == 403, (who, method, answer)
        assert answer["error"]["code"] == "forbidden"
    assert db_state() == before


def test_admin_of_institution_b_cannot_manage_nodes_of_this_institution(api, users, node, db_state):
    """The attack named in the issue: an admin elsewhere tries to take over our render node."""
    before = db_state()
    evil = users["admin_b"]
    status, _ = api.call("PUT", f"/api/v1/nodes/{node['id']}", evil, {"url": "https://evil.example"})
    assert status == 403
    status, _ = api.call("DELETE", f"/api/v1/nodes/{node['id']}", evil)
    assert status == 403
    status, _ = api.call("POST", "/api/v1/nodes", evil, {"name": "evil", "url": "https://evil.example"})
    assert status == 403
    assert db_state() == before
    assert api.call("GET", f"/api/v1/nodes/{node['id']}", users["admin"])[1]["url"] == node["url"]


def test_nodes_of_another_institution_in_a_shared_database_are_invisible(api, users, node, db_state):
    """Two institution servers may share one database; each sees and manages only its own nodes."""
    foreign = Node.create(name="their-node", url="https://render.hospital-b.example", institution_id=INSTITUTION_B)
    database_proxy.close()
    before = db_state()
    admin = users["admin"]
    listed = api.call("GET", "/api/v1/nodes", admin)[1]
    assert [n["id"] for n in listed["items"]] == [node["id"]]
    for method, body in [("GET", None), ("PUT", {"name": "mine now"}), ("DELETE", None)]:
        status, answer = api.call(method, f"/api/v1/nodes/{foreign.id}", admin, body)
        assert status == 404 and answer["error"]["code"] == "not_found"
    assert db_state() == before


@pytest.mark.parametrize("bad_id", ["", "%20", "not-a-uuid", "1", "' OR 1=1 --",
                                    "11111111-1111-4111-8111-11111111111",
                                    "{11111111-1111-4111-8111-111111111111}",
                                    "11111111111141118111111111111111"])
def test_blank_or_malformed_node_id_is_400_and_deletes_nothing(api, users, node, db_state, bad_id):
    before = db_state()
    admin = users["admin"]
    for method, body in [("DELETE", None), ("GET", None), ("PUT", {"name": "x"})]:
        status, answer = api.call(method, f"/api/v1/nodes/{bad_id}", admin, body)
        assert status == 400, (method, bad_id, answer)
        assert answer["error"]["code"] == "invalid_id"
    assert db_state() == before


def test_unknown_node_id_is_404(api, users, node, db_state):
    before = db_state()
    unknown = str(uuid.uuid4())
    for method, body in [("GET", None), ("PUT", {"name": "x"}), ("DELETE", None)]:
        status, answer = api.call(method, f"/api/v1/nodes/{unknown}", users["admin"], body)
        assert status == 404 and answer["error"]["code"] == "not_found"
    assert db_state() == before


@pytest.mark.parametrize("body, fragment", [
    ({"url": "https://a.example"}, "name is required"),
    ({"name": "n"}, "url is required"),
    ({"name": "", "url": "https://a.example"}, "name must not be empty"),
    ({"name": "   ", "url": "https://a.example"}, "name must not be empty"),
    ({"name": "n" * 121, "url": "https://a.example"}, "name is longer"),
    ({"name": 7, "url": "https://a.example"}, "name must be of type str"),
    ({"name": "n", "url": "http://render.example:5003"}, "https"),
    ({"name": "n", "url": "ftp://render.example"}, "https"),
    ({"name": "n", "url": "render.example"}, "https"),
    ({"name": "n", "url": "javascript:alert(1)"}, "https"),
    ({"name": "n", "url": "https://user:pw@render.example"}, "user name or password"),
    ({"name": "n", "url": "https://render.example/?a=1"}, "query"),
    ({"name": "n", "url": "https://render.example:99999"}, "url"),
    ({"name": "n", "url": "https://a.example", "institution_id": INSTITUTION_B}, "unknown field"),
    ({"name": "a\u0000b", "url": "https://a.example"}, "control characters"),
    ({"name": "a\nb", "url": "https://a.example"}, "line breaks"),
    ({"name": "a\ud800b", "url": "https://a.example"}, "invalid Unicode"),
    ({"name": "n", "url": "https://a\udfff.example"}, "control characters"),
    ({"name": "n", "url": "https://a.example\u0000"}, "control characters"),
    ({"name": "n", "url": "https://a.exa\tmple"}, "control characters"),
])
def test_invalid_node_bodies_are_refused(api, users, db_state, body, fragment):
    before = db_state()
    status, answer = api.call("POST", "/api/v1/nodes", users["admin"], body)
    assert status == 400 and answer["error"]["code"] == "validation_error"
    assert fragment in answer["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("url", ["https://" + "\u0130" * 2000, "https://b\u00fccher.example:5003"])
def test_a_node_url_with_a_host_beyond_ascii_is_refused_for_its_idna_form(api, users, node, db_state, url):
    """`İ` is two characters lower-cased: a URL of 2,008 measured as sent was stored as 4,008 in a
    column of 2,048, a 500 on PostgreSQL. Browsers send such a host in its IDNA form (`xn--`), so
    that form is asked for."""
    before = db_state()
    for method, path, body in (("POST", "/api/v1/nodes", {"name": "idn", "url": url}),
                               ("PUT", f"/api/v1/nodes/{node['id']}", {"url": url})):
        status, answer = api.call(method, path, users["admin"], body)
        assert status == 400 and answer["error"]["code"] == "validation_error", (method, answer)
        assert "xn--" in answer["error"]["message"]
    assert db_state() == before


def test_non_json_and_broken_json_bodies(api, users, node, db_state):
    before = db_state()
    admin = users["admin"]
    response = api.client.post("/api/v1/nodes", data="name=x", headers=admin.headers)
    assert response.status_code == 415 and response.get_json()["error"]["code"] == "unsupported_media_type"
    response = api.client.post("/api/v1/nodes", data="{broken", content_type="application/json",
                               headers=admin.headers)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_json"
    status, answer = api.call("PUT", f"/api/v1/nodes/{node['id']}", admin, ["name"])
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, answer = api.call("PUT", f"/api/v1/nodes/{node['id']}", admin, {})
    assert status == 400 and answer["error"]["code"] == "validation_error"
    assert db_state() == before


def test_duplicate_name_or_url_is_409(api, users, node, db_state):
    admin = users["admin"]
    status, other = api.call("POST", "/api/v1/nodes", admin, NEW_NODE)
    assert status == 201
    before = db_state()
    status, answer = api.call("POST", "/api/v1/nodes", admin, {"name": node["name"], "url": "https://x.example"})
    assert status == 409 and answer["error"]["code"] == "conflict"
    status, answer = api.call("POST", "/api/v1/nodes", admin, {"name": "fresh", "url": node["url"]})
    assert status == 409
    status, answer = api.call("PUT", f"/api/v1/nodes/{other['id']}", admin, {"name": node["name"]})
    assert status == 409
    assert db_state() == before
    status, _ = api.call("PUT", f"/api/v1/nodes/{node['id']}", admin, {"name": node["name"]})
    assert status == 200  # keeping its own name is not a conflict


@pytest.mark.parametrize("spelling", ["https://RENDER1.Hospital-A.example:5003", "https://render1.hospital-a.example:5003/",
                                      "HTTPS://render1.hospital-a.example:5003"])
def test_a_registered_url_spelled_otherwise_is_the_same_node(api, users, node, db_state, spelling):
    """The registry's URLs are unique, but only as typed: the node at `https://render1.…:5003` was
    registered again as `https://RENDER1.…:5003`, a second entry taking the same upload receipts
    (they name the node by its normalized URL). URLs are kept as the audience they are."""
    admin = users["admin"]
    before = db_state()
    status, answer = api.call("POST", "/api/v1/nodes", admin, {"name": "again", "url": spelling})
    assert status == 409 and answer["error"]["code"] == "conflict", answer
    assert db_state() == before
    status, other = api.call("POST", "/api/v1/nodes", admin, {"name": "n2", "url": "https://Render9.example:443/"})
    assert status == 201 and other["url"] == "https://render9.example", other
    status, answer = api.call("PUT", f"/api/v1/nodes/{other['id']}", admin, {"url": spelling})
    assert status == 409, answer


def test_node_with_registered_records_cannot_be_deleted(api, users, record, db_state):
    before = db_state()
    status, answer = api.call("DELETE", f"/api/v1/nodes/{record['node_id']}", users["admin"])
    assert status == 409 and "record" in answer["error"]["message"]
    assert db_state() == before


def test_node_list_pagination(api, users):
    admin = users["admin"]
    for number in range(3):
        api.call("POST", "/api/v1/nodes", admin, {"name": f"n{number}", "url": f"https://n{number}.example"})
    status, page = api.call("GET", "/api/v1/nodes?limit=2&offset=1", admin)
    assert status == 200 and page["total"] == 3 and [n["name"] for n in page["items"]] == ["n1", "n2"]
    for bad in ("limit=0", "limit=501", "limit=x", "offset=-1"):
        status, answer = api.call("GET", f"/api/v1/nodes?{bad}", admin)
        assert status == 400 and answer["error"]["code"] == "validation_error"


def test_node_changes_are_audited(api, users, node):
    status, audit = api.call("GET", "/api/v1/audit?action=node.create", users["admin"])
    assert status == 200 and audit["total"] == 1
    assert audit["items"][0]["object_id"] == node["id"]
    assert audit["items"][0]["user_id"] == users["admin"].id


@pytest.mark.parametrize("url, expected", [
    ("https://render.example", "https://render.example"),
    ("https://render.example:5003/", "https://render.example:5003"),
    ("https://10.0.0.7:5003/prefix", "https://10.0.0.7:5003/prefix"),
    ("https://[::1]:5003", "https://[::1]:5003"),
    ("https://Render.Example:443/", "https://render.example"),
    ("HTTPS://render.example:5003/Prefix/", "https://render.example:5003/Prefix"),
    ("http://127.0.0.1:5003", "http://127.0.0.1:5003"),
    ("http://127.8.9.10:5003", "http://127.8.9.10:5003"),
    ("http://localhost:5003", "http://localhost:5003"),
    ("http://[::1]:5003", "http://[::1]:5003"),
])
def test_parse_node_url_accepts(url, expected):
    assert parse_node_url(url) == expected


@pytest.mark.parametrize("url", [
    "http://render.example", "http://10.0.0.7", "http://localhost.evil.example", "http://127.0.0.1.nip.io",
    "https://", "https:///path", "//render.example", "file:///etc/passwd", "https://a b.example",
    "https://render.example#x", "https://render.example?", "https://u@render.example", "https://render.example:0",
    "https://render.example\n", "https://render.\u00adexample",
    "https://" + "a" * 2050 + ".example",
])
def test_parse_node_url_refuses(url):
    with pytest.raises(ApiError) as caught:
        parse_node_url(url)
    assert caught.value.status == 400 and caught.value.code == "validation_error"


def test_a_system_admin_of_any_institution_manages_nodes_here(api, make_user, node):
    """`shared.roles`: system admins administer every institution, institution admins only theirs."""
    root = make_user("sysadmin", INSTITUTION_B)
    status, _ = api.call("PUT", f"/api/v1/nodes/{node['id']}", root, {"name": "renamed by root"})
    assert status == 200
    status, created = api.call("POST", "/api/v1/nodes", root, NEW_NODE)
    assert status == 201 and created["institution_id"] == INSTITUTION_A


def test_registry_changes_at_once_answer_no_500(app, api, users):
    """Registrations of one node name at once, and renames of one node: each reads the registry
    (duplicates), then writes it, one at a time (`nodes.REGISTRY_LOCK`)."""
    admin = users["admin"]
    for round_number in range(3):
        url = f"https://race-{round_number}.hospital-a.example:5003"
        creates = [("POST", "/api/v1/nodes", {"name": f"race-{round_number}", "url": url})] * 3
        assert at_once(app, creates, admin) == [201, 409, 409]
        node_id = Node.get(Node.name == f"race-{round_number}").id
        renames = [("PUT", f"/api/v1/nodes/{node_id}", {"name": f"renamed-{round_number}-{n}"}) for n in range(3)]
        assert at_once(app, renames, admin) == [200] * 3
