"""Render nodes of one institution, managed on that institution's own server (`/api/v1/nodes`).

The toplevel only knows each institution's `server_url`; the node registry lives on the
institution server, so this screen talks to it directly with the same token (vertical
independence). Only administrators of that institution may change its nodes — the server says
so in words if the logged-in administrator belongs elsewhere.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel

from admin_gui.api_client import INSTITUTION_KEYS
from admin_gui.context import ConsoleContext
from admin_gui.form_checks import check_required, check_server_url
from admin_gui.screens.base import TableScreen
from admin_gui.server_text import one_line
from admin_gui.table_models import NodesModel
from admin_gui.widgets import FormDialog, confirm, plain_label
from shared.receipts import parse_public_key
from shared.roles import may_administer_institution


def _check_receipt_key(value: str) -> str | None:
    """Empty (set later, or removed: the server then registers no upload on the node) or the node's
    public receipt key; the server checks the same rule."""
    if not value.strip():
        return None
    try:
        parse_public_key(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_node(values: dict[str, Any]) -> dict[str, str]:
    problems = {
        "name": check_required(values["name"], "Name", 150),
        "url": check_server_url(values["url"], "Node URL"),
        "store": "Shared store must be at most 512 characters." if len(values.get("store", "")) > 512 else None,
        "receipt_key": _check_receipt_key(values.get("receipt_key", "")),
    }
    return {field: problem for field, problem in problems.items() if problem}


def _saved_message(node: dict[str, Any]) -> str:
    """What the banner says once a node is saved: a node without a receipt key takes no upload's
    record (the institution refuses it, 422 node_receipt_key_missing), which the administrator who
    just cleared or left out the key must know."""
    name = one_line(node.get("name"))
    if node.get("receipt_key"):
        return f"Node {name} saved."
    return (f"Node {name} saved without a receipt key: no upload on it is registered until its key "
            "(receipt_key.public_key from the node's GET /api/v1/node) is set.")


class NodesScreen(TableScreen):
    title = "Render nodes"
    subtitle = ("Render nodes store and render an institution's DICOM records. They are registered "
                "on the institution's own server.")

    def __init__(self, ctx: ConsoleContext, parent=None):
        super().__init__(ctx, NodesModel(), "Filter nodes by name or URL…", parent,
                         "No render nodes registered on this institution's server yet.")
        self.institution = QComboBox()
        self.institution.setObjectName("institutionChooser")
        self.institution.setMinimumWidth(280)
        self.institution.currentIndexChanged.connect(self.load_nodes)
        self.server_label = plain_label(object_name="muted")
        chooser = QHBoxLayout()
        chooser.addWidget(QLabel("Institution:"))
        chooser.addWidget(self.institution)
        chooser.addWidget(self.server_label, 1)
        self.body.insertLayout(0, chooser)
        self.new_button = self.add_button("+ New node", self.create, primary=True)
        self.add_row_button("Edit…", self.edit)
        self.add_row_button("Delete…", self.remove)
        self.finish_toolbar()
        self.table.activated_row.connect(lambda row: self.edit(row) if self.may_act_on(row) else None)

    def may_act_on(self, row: dict[str, Any]) -> bool:
        return may_administer_institution(self.ctx.caller, str(row.get("institution_id", "")))

    def current_institution(self) -> dict[str, Any] | None:
        return self.institution.currentData()

    def refresh(self) -> None:
        self.run(lambda: self.ctx.client.list_all("/api/v1/institutions", text_keys=INSTITUTION_KEYS),
                 self._institutions_loaded, latest="institutions")

    def _institutions_loaded(self, institutions: list[dict[str, Any]]) -> None:
        current = self.current_institution()
        wanted = current["id"] if current else self.ctx.user.get("institution_id")
        self.institution.blockSignals(True)
        self.institution.clear()
        for inst in sorted(institutions, key=lambda i: i["name"].casefold()):
            self.institution.addItem(one_line(inst["name"]), inst)
        index = next((i for i in range(self.institution.count())
                      if self.institution.itemData(i)["id"] == wanted), 0)
        self.institution.setCurrentIndex(index)
        self.institution.blockSignals(False)
        self.load_nodes()

    def load_nodes(self) -> None:
        inst = self.current_institution()
        self.table.set_rows([])
        if inst is None:
            self.server_label.setText("No institutions yet — create one first.")
            return
        self.server_label.setText(one_line(inst["server_url"]))
        self.new_button.setEnabled(may_administer_institution(self.ctx.caller, inst["id"]))
        server = self.ctx.server_client(inst["server_url"])
        self.run(lambda: server.list_all("/api/v1/nodes"), self._nodes_loaded_for(inst["id"]), latest="rows")

    def _nodes_loaded_for(self, institution_id: str):
        def loaded(nodes: list[dict[str, Any]]) -> None:
            current = self.current_institution()
            if current is not None and current["id"] == institution_id:
                self.table.set_rows(nodes)
        return loaded

    def _open_form(self, title: str, row: dict[str, Any] | None) -> None:
        inst = self.current_institution()
        if inst is None:
            self.banner.show_error("Choose an institution first.")
            return
        row = row or {}
        texts = self.form_texts(row, ("name", "url", "store", "receipt_key"), "render node")
        if texts is None:
            return
        server = self.ctx.server_client(inst["server_url"])
        node_id = row.get("id")

        def send(values: dict[str, Any]):
            values = {**values, "receipt_key": values["receipt_key"].strip() or None}
            if values["receipt_key"] is None and not row.get("receipt_key"):
                del values["receipt_key"]  # none to remove: a new node, or one registered without a key
            if node_id:
                return lambda: server.put(f"/api/v1/nodes/{node_id}", values)
            return lambda: server.post("/api/v1/nodes", values)

        dialog = FormDialog(self, title, self.ctx.runner, check_node, send,
                            intro=f"Registered on {one_line(inst['name'])} ({one_line(inst['server_url'])}).")
        dialog.add_line("name", "Name", texts["name"], "e.g. render-1")
        dialog.add_line("url", "Node URL", texts["url"], "https://render1.example.org:5003")
        # nodes declaring the same store serve each other's records (docs/deployment.md)
        dialog.add_line("store", "Shared store", texts["store"],
                        "empty for the node's own disk, else the `store` its health shows (s3:…)")
        # records are registered on the node only with receipts this key verifies (shared.receipts)
        dialog.add_line("receipt_key", "Receipt key", texts["receipt_key"],
                        "receipt_key.public_key from the node's GET /api/v1/node")
        self.open_dialog(dialog, _saved_message)

    def create(self) -> None:
        self._open_form("New render node", None)

    def edit(self, row: dict[str, Any]) -> None:
        self._open_form(f"Edit render node {one_line(row.get('name'))}", row)

    def remove(self, row: dict[str, Any]) -> None:
        inst = self.current_institution()
        if inst is None:
            return
        server = self.ctx.server_client(inst["server_url"])

        def delete() -> None:
            self.run(lambda: server.delete(f"/api/v1/nodes/{row['id']}"),
                     lambda _: self.done(f"Node {one_line(row.get('name'))} removed from the registry."))
        self.confirm_box = confirm(self, "Remove render node",
                                   f"Remove {one_line(row.get('name'))} ({one_line(row.get('url'))}) from "
                                   f"{one_line(inst['name'])}'s registry? Records registered on it become "
                                   "unreachable.", delete)

    def reload(self) -> None:
        """After a change only the chosen institution's nodes need reloading."""
        self.load_nodes()
