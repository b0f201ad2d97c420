"""DICOM record types (CT, MR, …) that physicians choose when registering a record."""

from __future__ import annotations

from typing import Any

from admin_gui.context import ConsoleContext
from admin_gui.form_checks import check_record_type_code, check_required
from admin_gui.screens.base import ResourceScreen
from admin_gui.server_text import one_line
from admin_gui.table_models import RecordTypesModel
from admin_gui.widgets import FormDialog
from shared.roles import is_system_admin


def check_record_type(values: dict[str, Any]) -> dict[str, str]:
    problems = {
        "code": check_record_type_code(values["code"]),
        "name": check_required(values["name"], "Name"),
    }
    return {field: problem for field, problem in problems.items() if problem}


class RecordTypesScreen(ResourceScreen):
    title = "DICOM record types"
    subtitle = "The kinds of imaging record physicians can register, e.g. CT — Computed tomography."
    path = "/api/v1/record-types"
    noun = "record type"
    label_field = "code"
    form_fields = ("code", "name")

    def __init__(self, ctx: ConsoleContext, parent=None):
        super().__init__(ctx, RecordTypesModel(), "Filter record types…",
                         "No record types yet — add CT, MR, … with + New record type.", parent)

    def editable(self) -> bool:
        return is_system_admin(self.ctx.caller)

    def check(self, values: dict[str, Any]) -> dict[str, str]:
        return check_record_type(self.request_body(values))

    def request_body(self, values: dict[str, Any]) -> dict[str, Any]:
        """Codes are upper-case (CT, MR), however they were typed."""
        return {"code": values["code"].upper(), "name": values["name"]}

    def add_fields(self, dialog: FormDialog, texts: dict[str, str]) -> None:
        dialog.add_line("code", "Code", texts["code"], "e.g. CT")
        dialog.add_line("name", "Name", texts["name"], "e.g. Computed tomography")

    def delete_question(self, row: dict[str, Any]) -> str:
        return f"Delete the record type {one_line(row.get('code'))} — {one_line(row.get('name'))}?"
