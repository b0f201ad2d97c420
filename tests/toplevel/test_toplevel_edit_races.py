"""An edit racing a deletion of the row it edits (docs/operations.md, attack 58).

The view reads the row, another request deletes it, then the view saves: the UPDATE changes no
row. Every edit path must then answer the 404 of an unknown id and audit nothing as changed
(`shared.errors.save_edit`), where it answered 200 with the row's body and audited the edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee
import pytest

from daemons.toplevel import admin_ops
from daemons.toplevel.models import AuditEntry, Institution, Patient, RecordType, User, database_proxy
from tests.row_races import deleted_when_saved

from .conftest import Seed
from .support import PASSWORDS, Api, patient_body

Edit = tuple[str, str, str, dict[str, Any]]  # the edited row's id, method, path, body


def _created(api: Api, token: str, path: str, body: dict[str, Any]) -> str:
    status, created, _ = api.call("POST", path, token, body)
    assert status == 201, created
    return created["id"]


def _institution(api: Api, tokens: dict[str, str], seed: Seed) -> Edit:
    ident = _created(api, tokens["admin"], "/api/v1/institutions", {"name": "Closing Clinic"})
    return ident, "PUT", f"/api/v1/institutions/{ident}", {"name": "Renamed Clinic", "address": "Road 9"}


def _record_type(api: Api, tokens: dict[str, str], seed: Seed) -> Edit:
    ident = _created(api, tokens["admin"], "/api/v1/record-types", {"code": "PET", "name": "PET"})
    return ident, "PUT", f"/api/v1/record-types/{ident}", {"name": "PET-CT"}


def _patient(api: Api, tokens: dict[str, str], seed: Seed) -> Edit:
    ident = _created(api, tokens["physician"], "/api/v1/patients", patient_body())
    return ident, "PUT", f"/api/v1/patients/{ident}", {"first_name": "Anna"}


def _user(api: Api, tokens: dict[str, str], seed: Seed) -> Edit:
    ident = seed.users["physician"]["id"]
    return ident, "PUT", f"/api/v1/users/{ident}", {"full_name": "G. House"}


def _password_reset(api: Api, tokens: dict[str, str], seed: Seed) -> Edit:
    ident = seed.users["physician"]["id"]
    return ident, "POST", f"/api/v1/users/{ident}/password", {"new_password": "a-new-long-password"}


def _own_profile(api: Api, tokens: dict[str, str], seed: Seed) -> Edit:
    return seed.users["physician"]["id"], "PUT", "/api/v1/me", {"full_name": "G. House"}


def _own_password(api: Api, tokens: dict[str, str], seed: Seed) -> Edit:
    return (seed.users["physician"]["id"], "POST", "/api/v1/me/password",
            {"old_password": PASSWORDS["physician"], "new_password": "a-new-long-password"})


#: Each edit path: (caller, model, what its 404 names, audit action, the edit).
EDITS: dict[str, tuple[str, type[peewee.Model], str, str, Callable[[Api, dict[str, str], Seed], Edit]]] = {
    "institution": ("admin", Institution, "institution", "institution.update", _institution),
    "record type": ("admin", RecordType, "record type", "record_type.update", _record_type),
    "patient": ("physician", Patient, "patient", "patient.update", _patient),
    "user": ("admin", User, "user", "user.update", _user),
    "password reset": ("admin", User, "user", "user.password_reset", _password_reset),
    "own profile": ("physician", User, "user", "user.update", _own_profile),
    "own password": ("physician", User, "user", "user.password_change", _own_password),
}


def _audited(action: str, object_id: str) -> int:
    with database_proxy.connection_context():
        return AuditEntry.select().where((AuditEntry.action == action) & (AuditEntry.object_id == object_id)).count()


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edit_of_a_row_deleted_meanwhile_is_a_404_and_audits_no_change(api: Api, tokens, seed, monkeypatch,
                                                                          edit: str):
    caller, model, what, action, setup = EDITS[edit]
    ident, method, path, body = setup(api, tokens, seed)
    with monkeypatch.context() as patch:
        deleted_when_saved(patch, model)
        status, answer, _ = api.call(method, path, tokens[caller], body)
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"
    assert answer["error"]["message"] == f"{what} {ident} does not exist"
    assert _audited(action, ident) == 0


def test_a_role_set_from_the_command_line_on_a_user_deleted_meanwhile_is_refused(config, seed, monkeypatch):
    """`sivr user set-role` takes the same path (`admin_ops.set_role`): its error says the user is gone."""
    physician = seed.users["physician"]
    deleted_when_saved(monkeypatch, User)
    with pytest.raises(ValueError, match=f"user {physician['id']} does not exist"):
        admin_ops.set_role(config, physician["username"], "instadmin")
