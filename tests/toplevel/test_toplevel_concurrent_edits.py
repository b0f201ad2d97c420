"""Two changes of one patient, institution or record type at once (docs/operations.md, the attack
table: concurrent edits), and what a patient's audit entries keep of the values changed.

A view read the row, another request changed it, then the view saved every column it had read:
the change saved first was undone, though both answered 200 and both were audited as changes (two
physicians correcting a patient's first and last name at once: 10 in 30 lost). Two deletions both
answered 204 and were audited twice. Each edit and deletion now reads and writes its row under a
lock on it (`daemons.toplevel.context.edited_row`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee
import pytest

from daemons.toplevel.models import AuditEntry, Institution, Patient, RecordType, database_proxy
from shared.names import name_search_key

from .conftest import Seed
from .support import Api, Other, patient_body

#: (caller, model, path, the first edit, the other edit made while the first saves, what both leave)
Case = tuple[str, type[peewee.Model], str, dict[str, Any], dict[str, Any], dict[str, Any]]


def _created(api: Api, token: str, path: str, body: dict[str, Any]) -> str:
    status, created, _ = api.call("POST", path, token, body)
    assert status == 201, created
    return created["id"]


def _patient(api: Api, tokens: dict[str, str], seed: Seed) -> Case:
    ident = _created(api, tokens["physician"], "/api/v1/patients", patient_body(last_name="Horvat"))
    return ("physician_b", Patient, f"/api/v1/patients/{ident}", {"first_name": "Anna"}, {"last_name": "Kovač"},
            {"first_name": "Anna", "last_name": "Kovač"})


def _institution(api: Api, tokens: dict[str, str], seed: Seed) -> Case:
    return ("admin", Institution, f"/api/v1/institutions/{seed.institution_b['id']}", {"address": "New Road 1"},
            {"server_url": "https://inst-b2.example:5002"},
            {"address": "New Road 1", "server_url": "https://inst-b2.example:5002"})


def _record_type(api: Api, tokens: dict[str, str], seed: Seed) -> Case:
    ident = _created(api, tokens["admin"], "/api/v1/record-types", {"code": "PET", "name": "PET"})
    return ("admin", RecordType, f"/api/v1/record-types/{ident}", {"name": "PET-CT"}, {"code": "PT"},
            {"name": "PET-CT", "code": "PT"})


CASES: dict[str, Callable[[Api, dict[str, str], Seed], Case]] = {
    "patient": _patient, "institution": _institution, "record type": _record_type,
}


def _row(model: type[peewee.Model], path: str) -> peewee.Model | None:
    with database_proxy.connection_context():
        return model.get_or_none(model.id == path.rsplit("/", 1)[1])


@pytest.mark.parametrize("case", list(CASES))
def test_two_edits_of_one_row_at_once_keep_both(app, api: Api, tokens, seed, monkeypatch, case: str):
    caller, model, path, first, second, kept = CASES[case](api, tokens, seed)
    other = Other(app, monkeypatch, model, "save", (tokens[caller], "PUT", path, second))
    status, answer, _ = api.call("PUT", path, tokens[caller], first)
    monkeypatch.undo()
    other_status, other_answer = other.answer()
    assert (status, other_status) == (200, 200), (answer, other_answer)
    row = _row(model, path)
    assert {field: getattr(row, field) for field in kept} == kept
    if model is Patient:  # the search finds the patient by the names it has
        assert row.name_key == name_search_key(f"{row.first_name} {row.last_name}")


@pytest.mark.parametrize("case", list(CASES))
def test_two_deletions_of_one_row_at_once_delete_it_once(app, api: Api, tokens, seed, monkeypatch, case: str):
    _caller, model, path, _first, _second, _kept = CASES[case](api, tokens, seed)
    if model is Institution:  # one without users, which may be deleted
        path = f"/api/v1/institutions/{_created(api, tokens['admin'], '/api/v1/institutions', {'name': 'Empty'})}"
    other = Other(app, monkeypatch, model, "delete_instance", (tokens["admin"], "DELETE", path, None))
    status, answer, _ = api.call("DELETE", path, tokens["admin"])
    monkeypatch.undo()
    other_status, other_answer = other.answer()
    assert sorted([status, other_status]) == [204, 404], (answer, other_answer)
    with database_proxy.connection_context():
        deletions = AuditEntry.select().where(AuditEntry.action.endswith(".delete")
                                              & (AuditEntry.object_id == path.rsplit("/", 1)[1])).count()
    assert deletions == 1


def test_a_patients_changes_and_deletion_are_audited_with_the_values_they_replace(api: Api, tokens, seed):
    """Before, the entry named the fields (`changed: first_name, insurance_number`) and a deletion
    the insurance number alone: a patient's former names, birth date or number were found nowhere."""
    ident = _created(api, tokens["physician"], "/api/v1/patients", patient_body())
    status, _, _ = api.call("PUT", f"/api/v1/patients/{ident}", tokens["physician_b"],
                            {"first_name": "Anna", "insurance_number": "HR-654321", "sex": "F"})
    assert status == 200
    status, _, _ = api.call("DELETE", f"/api/v1/patients/{ident}", tokens["admin"])
    assert status == 204
    with database_proxy.connection_context():
        details = {entry.action: entry.detail for entry in AuditEntry.select().where(AuditEntry.patient_id == ident)}
    assert details["patient.update"] == ('first_name: "Ana" -> "Anna"; '
                                         'insurance_number: "HR-123456" -> "HR-654321"')
    assert details["patient.delete"] == ('first_name: "Anna"; last_name: "Šimić"; sex: "F"; '
                                         'birth_date: "1970-03-15"; insurance_number: "HR-654321"')
