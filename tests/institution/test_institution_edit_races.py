"""An edit racing a deletion of the row it edits (docs/operations.md, attack 58).

The institution's edits run under a lock their deletions take too, but a row may still go between
the read and the write (another deletion path, CockroachDB, which orders transactions without the
lock): the UPDATE then changes no row, and every edit path must answer the 404 of an unknown id
and audit nothing as changed (`shared.errors.save_edit`), where it answered 200 or 201 and
audited the edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee
import pytest

from daemons.institution.models import AuditEntry, Finding, Node, Record, database_proxy
from tests.row_races import deleted_when_saved

from .conftest import Api, finding_body, local_link, record_body


@dataclass
class Rows:
    """What the fixtures registered: a node with a record, and a finding linking it."""

    api: Api
    users: dict[str, Any]
    node: dict[str, Any]
    record: dict[str, Any]
    finding: dict[str, Any]
    patient_id: str

    def second_record(self) -> dict[str, Any]:
        status, body = self.api.call("POST", "/api/v1/records", self.users["physician"],
                                     record_body(self.node["id"], self.patient_id, content=b"ct-series-2"))
        assert status == 201, body
        return body


Edit = tuple[str, str, str, dict[str, Any] | None]  # the edited row's id, method, path, body


def _node(rows: Rows) -> Edit:
    """A node no record is registered on (the fixture's record would keep it from being deleted)."""
    status, node = rows.api.call("POST", "/api/v1/nodes", rows.users["admin"],
                                 {"name": "node-2", "url": "https://render2.hospital-a.example:5003"})
    assert status == 201, node
    return node["id"], "PUT", f"/api/v1/nodes/{node['id']}", {"name": "node-renamed"}


def _record(rows: Rows) -> Edit:
    return rows.record["id"], "PATCH", f"/api/v1/records/{rows.record['id']}", {"description": "Chest CT"}


def _finding(rows: Rows) -> Edit:
    return rows.finding["id"], "PUT", f"/api/v1/findings/{rows.finding['id']}", {"conclusion": "Cyst."}


def _link(rows: Rows) -> Edit:
    ident = rows.finding["id"]
    return ident, "POST", f"/api/v1/findings/{ident}/records", local_link(rows.second_record())


def _unlink(rows: Rows) -> Edit:
    second = rows.second_record()
    status, finding = rows.api.call("POST", "/api/v1/findings", rows.users["physician"],
                                    finding_body(rows.patient_id, [local_link(rows.record), local_link(second)]))
    assert status == 201, finding
    return finding["id"], "DELETE", f"/api/v1/findings/{finding['id']}/records/{second['id']}", None


#: Each edit path: (caller, model, what its 404 names, audit action, the edit).
EDITS: dict[str, tuple[str, type[peewee.Model], str, str, Callable[[Rows], Edit]]] = {
    "node": ("admin", Node, "node", "node.update", _node),
    "record": ("physician", Record, "record", "record.update", _record),
    "finding": ("physician", Finding, "finding", "finding.update", _finding),
    "finding link": ("physician", Finding, "finding", "finding.link", _link),
    "finding unlink": ("physician", Finding, "finding", "finding.unlink", _unlink),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edit_of_a_row_deleted_meanwhile_is_a_404_and_audits_no_change(api: Api, users, node, record, finding,
                                                                          patient_id, monkeypatch, edit: str):
    caller, model, what, action, setup = EDITS[edit]
    ident, method, path, body = setup(Rows(api, users, node, record, finding, patient_id))
    with monkeypatch.context() as patch:
        deleted_when_saved(patch, model)
        status, answer = api.call(method, path, users[caller], body)
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"
    assert answer["error"]["message"] == f"{what} {ident} does not exist"
    with database_proxy.connection_context():
        assert not AuditEntry.select().where((AuditEntry.action == action) & (AuditEntry.object_id == ident)).exists()
