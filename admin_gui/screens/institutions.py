"""Institutions: name, address and the URL of the institution's own server (toplevel CRUD)."""

from __future__ import annotations

from typing import Any

from admin_gui.context import ConsoleContext
from admin_gui.form_checks import check_required, check_server_url
from admin_gui.screens.base import ResourceScreen
from admin_gui.server_text import one_line
from admin_gui.table_models import InstitutionsModel
from admin_gui.widgets import FormDialog
from shared.roles import is_system_admin


def check_institution(values: dict[str, Any]) -> dict[str, str]:
    problems = {
        "name": check_required(values["name"], "Name"),
        "address": None if len(values["address"]) <= 500 else "Address must be at most 500 characters.",
        "server_url": check_server_url(values["server_url"]),
    }
    return {field: problem for field, problem in problems.items() if problem}


class InstitutionsScreen(ResourceScreen):
    title = "Institutions"
    subtitle = ("Hospitals and clinics taking part, each with its own institution server "
                "(findings, records and render nodes live there).")
    path = "/api/v1/institutions"
    noun = "institution"
    form_fields = ("name", "address", "server_url")

    def __init__(self, ctx: ConsoleContext, parent=None):
        super().__init__(ctx, InstitutionsModel(), "Filter institutions by name, address or URL…",
                         "No institutions yet — add the first one with + New institution.", parent)

    def editable(self) -> bool:
        return is_system_admin(self.ctx.caller)

    def check(self, values: dict[str, Any]) -> dict[str, str]:
        return check_institution(values)

    def add_fields(self, dialog: FormDialog, texts: dict[str, str]) -> None:
        dialog.add_line("name", "Name", texts["name"], "e.g. University Hospital Ljubljana")
        dialog.add_line("address", "Address", texts["address"], "Street, city, country (optional)")
        dialog.add_line("server_url", "Server URL", texts["server_url"], "https://institution.example.org:5002")

    def delete_question(self, row: dict[str, Any]) -> str:
        return f"Delete the institution {one_line(row.get('name'))}? This is refused while users still belong to it."
