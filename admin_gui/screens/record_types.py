"""DICOM record types (CT, MR, …) that physicians choose when registering a record."""

from __future__ import annotations

from typing import Any

from admin_gui.context import ConsoleContext
from admin_gui.form_checks import check_record_type_code, check_required
from admin_gui.screens.base import TableScreen
from admin_gui.table_models import RecordTypesModel
from admin_gui.widgets import FormDialog, confirm


def check_record_type(values: dict[str, Any]) -> dict[str, str]:
    problems = {
        "code": check_record_type_code(values["code"]),
        "name": check_required(values["name"], "Name"),
    }
    return {field: problem for field, problem in problems.items() if problem}


class RecordTypesScreen(TableScreen):
    title = "DICOM record types"
    subtitle = "The kinds of imaging record physicians can register, e.g. CT — Computed tomography."

    def __init__(self, ctx: ConsoleContext, parent=None):
        super().__init__(ctx, RecordTypesModel(), "Filter record types…", parent,
                         "No record types yet — add CT, MR, … with + New record type.")
        self.add_button("+ New record type", self.create, primary=True)
        self.add_row_button("Edit…", self.edit)
        self.add_row_button("Delete…", self.remove)
        self.finish_toolbar()
        self.table.activated_row.connect(self.edit)
        self.dialog: FormDialog | None = None

    def refresh(self) -> None:
        self.run(lambda: self.ctx.client.list_all("/api/v1/record-types"), self.table.set_rows)

    def _open_form(self, title: str, row: dict[str, Any] | None) -> FormDialog:
        row = row or {}
        type_id = row.get("id")

        def send(values: dict[str, Any]):
            body = {"code": values["code"].upper(), "name": values["name"]}
            if type_id:
                return lambda: self.ctx.client.put(f"/api/v1/record-types/{type_id}", body)
            return lambda: self.ctx.client.post("/api/v1/record-types", body)

        def check(values: dict[str, Any]) -> dict[str, str]:
            return check_record_type({**values, "code": values["code"].upper()})

        dialog = FormDialog(self, title, self.ctx.runner, check, send)
        dialog.add_line("code", "Code", row.get("code", ""), "e.g. CT")
        dialog.add_line("name", "Name", row.get("name", ""), "e.g. Computed tomography")
        dialog.saved.connect(lambda saved: self._done(saved, "saved"))
        self.dialog = dialog
        dialog.open()
        return dialog

    def create(self) -> None:
        self._open_form("New record type", None)

    def edit(self, row: dict[str, Any]) -> None:
        self._open_form(f"Edit record type {row.get('code', '')}", row)

    def _done(self, row: Any, verb: str) -> None:
        code = row.get("code", "") if isinstance(row, dict) else ""
        self.banner.show_info(f"Record type {code} {verb}.")
        self.refresh()

    def remove(self, row: dict[str, Any]) -> None:
        def delete() -> None:
            self.run(lambda: self.ctx.client.delete(f"/api/v1/record-types/{row['id']}"),
                     lambda _: self._done(row, "deleted"))
        self.confirm_box = confirm(self, "Delete record type",
                                   f"Delete the record type {row.get('code')} — {row.get('name')}?", delete)
