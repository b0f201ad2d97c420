"""Institution-scoped administration (issue 13, item 1): the attacks of an admin of institution B.

`admin_b` is the institution admin of B, `admin` a system admin (in A). Every attack the
assessment reproduced is tried here against the real app; each must be refused with 403 and
leave the database as it was.
"""

from __future__ import annotations

import pytest

from .support import PASSWORDS, Api


def _user_body(institution_id: str, role: str = "physician", username: str = "dr.new") -> dict:
    return {"username": username, "password": "new-user-pass-1", "full_name": "Nora New",
            "role": role, "institution_id": institution_id}


@pytest.mark.parametrize("role", ["sysadmin", "instadmin", "physician"])
def test_institution_admin_cannot_create_users_elsewhere(api: Api, tokens, seed, db_state, role):
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/users", tokens["admin_b"],
                               _user_body(seed.institution_a["id"], role))
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert db_state() == before


def test_institution_admin_cannot_create_a_system_admin_even_at_home(api: Api, tokens, seed, db_state):
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/users", tokens["admin_b"],
                               _user_body(seed.institution_b["id"], "sysadmin"))
    assert status == 403 and "system administrator" in body["error"]["message"]
    assert db_state() == before


@pytest.mark.parametrize("role", ["instadmin", "physician"])
def test_institution_admin_creates_users_of_their_institution(api: Api, tokens, seed, role):
    status, body, _ = api.call("POST", "/api/v1/users", tokens["admin_b"],
                               _user_body(seed.institution_b["id"], role))
    assert status == 201 and body["role"] == role and body["institution_id"] == seed.institution_b["id"]


@pytest.mark.parametrize("victim", ["physician", "admin"])
def test_institution_admin_cannot_reset_passwords_elsewhere(api: Api, tokens, seed, db_state, victim):
    before = db_state()
    status, body, _ = api.call("POST", f"/api/v1/users/{seed.users[victim]['id']}/password",
                               tokens["admin_b"], {"new_password": "taken-over-pw-1"})
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert db_state() == before
    assert api.login(seed.users[victim]["username"], PASSWORDS[victim])


def test_institution_admin_cannot_reset_a_system_admin_of_their_institution(api: Api, tokens, seed, db_state):
    status, created, _ = api.call("POST", "/api/v1/users", tokens["admin"],
                                  _user_body(seed.institution_b["id"], "sysadmin", "root.b"))
    assert status == 201
    before = db_state()
    for method, path, body in (
        ("POST", f"/api/v1/users/{created['id']}/password", {"new_password": "taken-over-pw-1"}),
        ("PUT", f"/api/v1/users/{created['id']}", {"active": False}),
        ("PUT", f"/api/v1/users/{created['id']}", {"role": "physician"}),
        ("DELETE", f"/api/v1/users/{created['id']}", None),
        ("GET", f"/api/v1/users/{created['id']}", None),
    ):
        status, answer, _ = api.call(method, path, tokens["admin_b"], body)
        assert status == 403 and answer["error"]["code"] == "forbidden", (method, path)
    assert db_state() == before


def test_institution_admin_manages_their_own_users(api: Api, tokens, seed):
    uid = seed.users["physician_b"]["id"]
    assert api.call("GET", f"/api/v1/users/{uid}", tokens["admin_b"])[0] == 200
    status, body, _ = api.call("PUT", f"/api/v1/users/{uid}", tokens["admin_b"], {"full_name": "Dr. B"})
    assert status == 200 and body["full_name"] == "Dr. B"
    assert api.call("POST", f"/api/v1/users/{uid}/password", tokens["admin_b"],
                    {"new_password": "reset-by-admin-b"})[0] == 204
    assert api.login("dr.b", "reset-by-admin-b")


@pytest.mark.parametrize("change", [
    {"server_url": "https://attacker.example:5002"},
    {"name": "Taken Over"},
])
def test_institution_admin_cannot_change_institutions(api: Api, tokens, seed, db_state, change):
    before = db_state()
    for inst in (seed.institution_a, seed.institution_b):
        status, body, _ = api.call("PUT", f"/api/v1/institutions/{inst['id']}", tokens["admin_b"], change)
        assert status == 403 and body["error"]["code"] == "forbidden"
    assert api.call("POST", "/api/v1/institutions", tokens["admin_b"], {"name": "Fake"})[0] == 403
    assert api.call("DELETE", f"/api/v1/institutions/{seed.institution_a['id']}", tokens["admin_b"])[0] == 403
    assert db_state() == before


def test_institution_admin_cannot_change_record_types(api: Api, tokens, db_state):
    before = db_state()
    status, _, _ = api.call("POST", "/api/v1/record-types", tokens["admin_b"], {"code": "XX", "name": "X"})
    assert status == 403
    assert db_state() == before
    assert api.call("POST", "/api/v1/record-types", tokens["admin"], {"code": "XX", "name": "X"})[0] == 201


@pytest.mark.parametrize("target", ["admin_b", "physician_b"])
def test_nobody_is_moved_to_another_institution_by_an_institution_admin(api: Api, tokens, seed, db_state, target):
    before = db_state()
    status, body, _ = api.call("PUT", f"/api/v1/users/{seed.users[target]['id']}", tokens["admin_b"],
                               {"institution_id": seed.institution_a["id"]})
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert db_state() == before


def test_institution_admin_cannot_promote_anyone_to_system_admin(api: Api, tokens, seed, db_state):
    before = db_state()
    status, _, _ = api.call("PUT", f"/api/v1/users/{seed.users['physician_b']['id']}", tokens["admin_b"],
                            {"role": "sysadmin"})
    assert status == 403
    assert db_state() == before


def test_institution_admin_sees_full_records_of_their_users_only(api: Api, tokens, seed):
    status, body, _ = api.call("GET", "/api/v1/users", tokens["admin_b"])
    assert status == 200
    full = {u["username"] for u in body["items"] if "role" in u}
    assert full == {"admin.b", "dr.b"}
    assert api.call("GET", f"/api/v1/users/{seed.users['physician']['id']}", tokens["admin_b"])[0] == 403


def test_refused_administration_is_audited_as_access_denied(api: Api, tokens, seed):
    """Each refusal leaves one entry naming who tried what on whom: the system admin sees them all,
    the institution admin of the user tried on too (it is their user's entry). A refused password
    change, already audited as a failed attempt by its view, is not audited twice."""
    admin_b, doc_a, root = seed.users["admin_b"], seed.users["physician"], seed.users["admin"]
    attacks = [
        ("POST", f"/api/v1/users/{doc_a['id']}/password", {"new_password": "taken-over-123"}, doc_a["id"]),
        ("POST", "/api/v1/users", _user_body(seed.institution_b["id"], "sysadmin", "evil"), None),
        ("PUT", f"/api/v1/users/{admin_b['id']}", {"role": "sysadmin"}, admin_b["id"]),
        ("PUT", f"/api/v1/users/{seed.users['physician_b']['id']}", {"institution_id": seed.institution_a["id"]},
         seed.users["physician_b"]["id"]),
        ("GET", f"/api/v1/users/{root['id']}", None, root["id"]),
    ]
    for method, path, body, _ in attacks:
        status, answer, _ = api.call(method, path, tokens["admin_b"], body)
        assert status == 403 and answer["error"]["code"] == "forbidden", (method, path, answer)
    status, answer, _ = api.call("POST", "/api/v1/me/password", tokens["physician"],
                                 {"old_password": "not-my-password", "new_password": "new-password-12"})
    assert status == 403 and answer["error"]["code"] == "wrong_password"

    status, body, _ = api.call("GET", "/api/v1/audit?action=access.denied", tokens["admin"])
    assert status == 200
    assert body["total"] == len(attacks)  # none for the wrong old password (user.password_change_failed)
    entries = {e["detail"].partition(": ")[0]: e for e in body["items"]}  # the order of equal times is open
    for method, path, _, object_id in attacks:
        entry = entries[f"{method} {path}"]
        assert (entry["user_id"], entry["username"], entry["client_ip"]) == (admin_b["id"], "admin.b", "127.0.0.1")
        assert (entry["object_type"], entry["object_id"]) == ("user" if object_id else "request", object_id)
        assert entry["detail"].partition(": ")[2]  # why it was refused
    assert entries["POST /api/v1/users"]["detail"].endswith("only a system administrator may give the role sysadmin")
    _, own, _ = api.call("GET", "/api/v1/audit?action=access.denied", tokens["admin_b"])
    assert own["total"] == len(attacks)


def test_toplevel_audit_of_an_institution_admin_is_their_institutions(api: Api, tokens, seed):
    api.call("GET", "/api/v1/patients?q=x", tokens["physician"])
    api.call("GET", "/api/v1/patients?q=x", tokens["physician_b"])
    status, body, _ = api.call("GET", "/api/v1/audit?action=patient.search", tokens["admin_b"])
    assert status == 200 and {e["username"] for e in body["items"]} == {"dr.b"}
    status, body, _ = api.call("GET", "/api/v1/audit?action=patient.search", tokens["admin"])
    assert {e["username"] for e in body["items"]} == {"dr.b", "dr.house"}


def test_toplevel_audit_shows_an_institution_admin_what_concerns_the_users_they_administer(api: Api, tokens, seed):
    """Not what a system admin of their institution did elsewhere (nor the system admin's logins):
    what the users they administer did, and what was done to those users, by anyone."""
    root, users = tokens["admin"], seed.users
    status, admin_a, _ = api.call("POST", "/api/v1/users", root,
                                  _user_body(seed.institution_a["id"], "instadmin", "admin.a"))
    assert status == 201
    for user in ("physician", "physician_b"):
        assert api.call("POST", f"/api/v1/users/{users[user]['id']}/password", root,
                        {"new_password": "reset-by-root-1"})[0] == 204
    status, dr_new, _ = api.call("POST", "/api/v1/users", root, _user_body(seed.institution_b["id"]))
    assert status == 201
    token_a = api.login("admin.a", "new-user-pass-1")["access_token"]

    def by_root(token: str) -> set[tuple[str, str]]:
        status, body, _ = api.call("GET", f"/api/v1/audit?user_id={users['admin']['id']}", token)
        assert status == 200
        return {(e["action"], e["object_id"]) for e in body["items"]}

    assert by_root(token_a) == {("user.create", admin_a["id"]), ("user.password_reset", users["physician"]["id"])}
    assert by_root(tokens["admin_b"]) == {("user.password_reset", users["physician_b"]["id"]),
                                          ("user.create", dr_new["id"])}
    assert ("auth.login", users["admin"]["id"]) in by_root(root)


def test_toplevel_audit_follows_where_a_user_acted_not_where_the_user_is_now(api: Api, tokens, seed):
    """A physician moved from A to B took his A history to B's admin, a demoted system admin's
    reads elsewhere reached A's admin, and A's admin could hide a colleague's trail from A by
    deleting them (found by an authorization attack): the entry keeps its actor's institution and role."""
    root = tokens["admin"]
    a, b = seed.institution_a["id"], seed.institution_b["id"]
    status, admin_a, _ = api.call("POST", "/api/v1/users", root, _user_body(a, "instadmin", "admin.a"))
    assert status == 201
    token_a = api.login("admin.a", "new-user-pass-1")["access_token"]
    people = {}
    for name, role in (("mover", "physician"), ("leaver", "physician"), ("demoted", "sysadmin")):
        status, people[name], _ = api.call("POST", "/api/v1/users", root, _user_body(a, role, name))
        assert status == 201
        token = api.login(name, "new-user-pass-1")["access_token"]
        assert api.call("GET", f"/api/v1/patients?q={name}", token)[0] == 200  # acted while in A, in that role

    def searches(token: str, name: str) -> int:
        status, body, _ = api.call("GET", f"/api/v1/audit?user_id={people[name]['id']}&action=patient.search", token)
        assert status == 200
        return body["total"]

    assert (searches(token_a, "mover"), searches(token_a, "leaver"), searches(token_a, "demoted")) == (1, 1, 0)
    assert api.call("PUT", f"/api/v1/users/{people['mover']['id']}", root, {"institution_id": b})[0] == 200
    assert api.call("PUT", f"/api/v1/users/{people['demoted']['id']}", root, {"role": "physician"})[0] == 200
    assert api.call("DELETE", f"/api/v1/users/{people['leaver']['id']}", token_a)[0] == 204

    assert searches(tokens["admin_b"], "mover") == 0  # B's admin does not get what he did in A
    assert searches(token_a, "mover") == 1  # A's admin keeps it
    assert searches(token_a, "leaver") == 1  # deleting him hid nothing
    assert searches(token_a, "demoted") == 0  # what a system admin did stays a system admin's
    mover = api.login("mover", "new-user-pass-1")["access_token"]
    assert api.call("GET", "/api/v1/patients?q=again", mover)[0] == 200  # in B now
    assert (searches(tokens["admin_b"], "mover"), searches(token_a, "mover")) == (1, 1)
    assert searches(root, "mover") == 2


def test_toplevel_audit_entries_from_before_actors_were_kept_follow_present_membership(api: Api, tokens, seed):
    """Entries of schema 3 have no actor columns: an institution admin sees those of the users it
    administers now, and denied requests written now carry their actor like every other entry."""
    from daemons.toplevel.models import AuditEntry

    for role in ("physician", "physician_b"):
        user = seed.users[role]
        AuditEntry.create(user_id=user["id"], username=user["username"], action="patient.read",
                          object_type="patient", object_id="p-old", client_ip="10.0.0.1")
    for admin, expected in (("admin_b", {"dr.b"}), ("admin", {"dr.b", "dr.house"})):
        status, body, _ = api.call("GET", "/api/v1/audit?object_id=p-old", tokens[admin])
        assert status == 200 and {e["username"] for e in body["items"]} == expected, admin

    assert api.call("DELETE", f"/api/v1/users/{seed.users['admin']['id']}", tokens["admin_b"])[0] == 403
    denied = AuditEntry.get(AuditEntry.action == "access.denied")
    assert (denied.actor_institution_id, denied.actor_role) == (seed.institution_b["id"], "instadmin")


def test_system_admin_administers_every_institution(api: Api, tokens, seed):
    status, body, _ = api.call("POST", "/api/v1/users", tokens["admin"],
                               _user_body(seed.institution_b["id"], "instadmin"))
    assert status == 201
    assert api.call("PUT", f"/api/v1/users/{body['id']}", tokens["admin"],
                    {"institution_id": seed.institution_a["id"]})[0] == 200
    assert api.call("PUT", f"/api/v1/institutions/{seed.institution_b['id']}", tokens["admin"],
                    {"address": "New St 3"})[0] == 200
