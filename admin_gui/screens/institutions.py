"""Institutions: name, address and the URL of the institution's own server (toplevel CRUD)."""

from __future__ import annotations

from typing import Any

from admin_gui.context import ConsoleContext
from admin_gui.form_checks import check_required, check_server_url
from admin_gui.screens.base import TableScreen
from admin_gui.table_models import InstitutionsModel
from admin_gui.widgets import FormDialog, confirm


def check_institution(values: dict[str, Any]) -> dict[str, str]:
    problems = {
        "name": check_required(values["name"], "Name"),
        "address": None if len(values["address"]) <= 500 else "Address must be at most 500 characters.",
        "server_url": check_server_url(values["server_url"]),
    }
    return {field: problem for field, problem in problems.items() if problem}


class InstitutionsScreen(TableScreen):
    title = "Institutions"
    subtitle = ("Hospitals and clinics taking part, each with its own institution server "
                "(findings, records and render nodes live there).")

    def __init__(self, ctx: ConsoleContext, parent=None):
        super().__init__(ctx, InstitutionsModel(), "Filter institutions by name, address or URL…", parent,
                         "No institutions yet — add the first one with + New institution.")
        self.add_button("+ New institution", self.create, primary=True)
        self.add_row_button("Edit…", self.edit)
        self.add_row_button("Delete…", self.remove)
        self.finish_toolbar()
        self.table.activated_row.connect(self.edit)
        self.dialog: FormDialog | None = None

    def refresh(self) -> None:
        self.run(lambda: self.ctx.client.list_all("/api/v1/institutions"), self.table.set_rows)

    def _open_form(self, title: str, row: dict[str, Any] | None) -> FormDialog:
        row = row or {}
        institution_id = row.get("id")

        def send(values: dict[str, Any]):
            if institution_id:
                return lambda: self.ctx.client.put(f"/api/v1/institutions/{institution_id}", values)
            return lambda: self.ctx.client.post("/api/v1/institutions", values)

        dialog = FormDialog(self, title, self.ctx.runner, check_institution, send)
        dialog.add_line("name", "Name", row.get("name", ""), "e.g. University Hospital Ljubljana")
        dialog.add_line("address", "Address", row.get("address", ""), "Street, city, country (optional)")
        dialog.add_line("server_url", "Server URL", row.get("server_url", ""),
                        "https://institution.example.org:5002")
        dialog.saved.connect(lambda saved: self._saved(saved, "saved"))
        self.dialog = dialog
        dialog.open()
        return dialog

    def create(self) -> None:
        self._open_form("New institution", None)

    def edit(self, row: dict[str, Any]) -> None:
        self._open_form(f"Edit institution {row.get('name', '')}", row)

    def _saved(self, saved: Any, verb: str) -> None:
        name = saved.get("name", "") if isinstance(saved, dict) else ""
        self.banner.show_info(f"Institution {name} {verb}.")
        self.refresh()

    def remove(self, row: dict[str, Any]) -> None:
        def delete() -> None:
            self.run(lambda: self.ctx.client.delete(f"/api/v1/institutions/{row['id']}"),
                     lambda _: self._saved(row, "deleted"))
        self.confirm_box = confirm(
            self, "Delete institution",
            f"Delete the institution {row.get('name')}? This is refused while users still belong to it.",
            delete)
