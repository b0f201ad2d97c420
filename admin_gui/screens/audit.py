"""Audit log: who read or changed what, searched by user, patient, action and time range.

Each layer keeps its own log (backends never call each other), so the administrator picks where
to search: the toplevel (logins, users, patients), an institution server (records, findings,
nodes) or a render node (uploads, record lists, loads, and one `record.view` entry per viewing
session with its image counts). A patient can be found by name — that search is itself audited
by the toplevel.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QDateTime, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from admin_gui.api_client import INSTITUTION_KEYS, ApiClient, ApiError
from admin_gui.context import ConsoleContext
from admin_gui.form_checks import check_uuid
from admin_gui.screens.base import TableScreen
from admin_gui.server_text import one_line
from admin_gui.table_models import AuditModel, PatientsModel
from admin_gui.widgets import MessageBanner, TablePanel, plain_label
from admin_gui.workers import LatestOnly
from shared.roles import may_administer_institution

AUDIT_PAGE = 500
#: Actions the layers write (the list is editable: a newer server may write others).
ACTIONS = ["", "access.denied", "auth.login", "auth.login_failed", "auth.logout",
           "patient.read", "patient.search", "patient.create", "patient.update", "patient.delete",
           "user.create", "user.update", "user.delete", "user.password_reset", "user.password_change",
           "user.password_change_failed", "institution.create", "institution.update", "institution.delete",
           "record_type.create", "record_type.update", "record_type.delete",
           "node.create", "node.update", "node.delete",
           "record.upload", "record.create", "record.read", "record.search", "record.load",
           "record.view", "record.original", "record.delete",
           "finding.create", "finding.read", "finding.search", "finding.update", "finding.link",
           "finding.unlink", "finding.delete"]
TOPLEVEL = "toplevel"
REGISTRY_THREADS = 8


def render_node_sources(client_for, institution: dict[str, Any]) -> list[dict[str, Any]]:
    """The render nodes of one institution as audit sources; none if its server cannot be asked."""
    try:
        nodes = client_for(institution["server_url"]).list_all("/api/v1/nodes", text_keys=("id", "name", "url"))
    except ApiError:
        return []  # an unreachable institution server: its nodes are simply not offered
    return [{"id": node["id"], "name": f"{institution['name']} › {node['name']}", "server_url": node["url"]}
            for node in nodes]


def to_iso_utc(value: QDateTime) -> str:
    """A QDateTime (any zone) as the API's ISO 8601 UTC string."""
    return value.toUTC().toString("yyyy-MM-ddTHH:mm:ss") + "Z"


def audit_query(username: str, patient_id: str, action: str,
                since: QDateTime | None, until: QDateTime | None) -> dict[str, str]:
    """The `GET /api/v1/audit` query for the filled-in filters (blank ones left out)."""
    query = {"username": username.strip(), "patient_id": patient_id.strip(), "action": action.strip()}
    if since is not None:
        query["since"] = to_iso_utc(since)
    if until is not None:
        query["until"] = to_iso_utc(until)
    return {k: v for k, v in query.items() if v}


class PatientPicker(QDialog):
    """Find a patient by name or insurance number and hand back their id."""

    def __init__(self, parent: QWidget, ctx: ConsoleContext, text: str):
        super().__init__(parent)
        self.ctx = ctx
        self.setWindowTitle("Find patient")
        self.setMinimumSize(700, 420)
        self.chosen: dict[str, Any] | None = None
        #: only the last search's answer is shown (a slower earlier one's is dropped)
        self._searches = LatestOnly()
        self.query = QLineEdit(text)
        self.query.setPlaceholderText("Part of the name, or the exact insurance number")
        search = QPushButton("Search")
        search.setObjectName("primary")
        search.clicked.connect(self.search)
        self.query.returnPressed.connect(self.search)
        self.banner = MessageBanner()
        self.table = TablePanel(PatientsModel(), "Filter results…")
        self.table.activated_row.connect(self._choose)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(lambda: self._choose(self.table.selected()))
        self.buttons.rejected.connect(self.reject)
        top = QHBoxLayout()
        top.addWidget(self.query, 1)
        top.addWidget(search)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.buttons)

    def search(self) -> None:
        text = self.query.text().strip()
        if not text:
            self.banner.show_error("Type part of the patient's name or their insurance number.")
            return
        client = self.ctx.client

        def find() -> list[dict[str, Any]]:
            # a chosen patient's id goes into the patient field: text, checked here and not in that slot
            found = client.list_all("/api/v1/patients", q=text, text_keys=("id",))
            if not found:
                found = client.list_all("/api/v1/patients", insurance_number=text, text_keys=("id",))
            return found

        def done(rows: list[dict[str, Any]]) -> None:
            self.table.set_rows(rows)
            if rows:
                self.banner.hide()
                self.table.view.selectRow(0)
            else:
                self.banner.show_error(f"No patient matches {text!r}.")

        shown, failed = self._searches.guard("patients", done, lambda e: self.banner.show_error(e.message))
        self.ctx.runner.submit(find, shown, failed, owner=self)

    def _choose(self, row: dict[str, Any] | None) -> None:
        if row is None:
            self.banner.show_error("Select a patient first.")
            return
        self.chosen = row
        self.accept()


class AuditScreen(TableScreen):
    title = "Audit log"
    subtitle = "Every read and change of patient data, every login and user change — newest first."

    def __init__(self, ctx: ConsoleContext, parent=None):
        super().__init__(ctx, AuditModel(), "Filter the results shown…", parent,
                         "No audit entries match these filters.")
        self.table.view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.source = QComboBox()
        self.source.setObjectName("auditSource")
        self.source.addItem("Toplevel server", TOPLEVEL)
        self.username = QLineEdit()
        self.username.setPlaceholderText("part of a username")
        self.patient = QLineEdit()
        self.patient.setPlaceholderText("patient id — or use Find…")
        find = QPushButton("Find…")
        find.clicked.connect(self.find_patient)
        self.patient_name = plain_label(object_name="muted")
        self.action = QComboBox()
        self.action.setEditable(True)
        self.action.addItems(ACTIONS)
        now = QDateTime.currentDateTime()
        self.use_since, self.since = QCheckBox("From"), QDateTimeEdit(now.addDays(-7))
        self.use_until, self.until = QCheckBox("To"), QDateTimeEdit(now)
        for edit, check in ((self.since, self.use_since), (self.until, self.use_until)):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setEnabled(False)
            check.toggled.connect(edit.setEnabled)
        self.search_button = QPushButton("Search")
        self.search_button.setObjectName("primary")
        self.search_button.clicked.connect(self.search)
        self.more_button = QPushButton("Load more")
        self.more_button.clicked.connect(self.load_more)
        self.more_button.hide()
        self._search: tuple[ApiClient, str, dict[str, str]] | None = None
        self.result_label = plain_label(object_name="muted")

        card = QFrame()
        card.setObjectName("filterCard")
        grid = QGridLayout(card)
        grid.setContentsMargins(14, 12, 14, 12)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(8)
        grid.addWidget(QLabel("Server"), 0, 0)
        grid.addWidget(self.source, 0, 1)
        grid.addWidget(QLabel("User"), 0, 2)
        grid.addWidget(self.username, 0, 3)
        grid.addWidget(QLabel("Action"), 0, 4)
        grid.addWidget(self.action, 0, 5)
        grid.addWidget(QLabel("Patient"), 1, 0)
        patient_row = QHBoxLayout()
        patient_row.addWidget(self.patient, 1)
        patient_row.addWidget(find)
        grid.addLayout(patient_row, 1, 1, 1, 3)
        grid.addWidget(self.patient_name, 1, 4, 1, 2)
        times = QHBoxLayout()
        for widget in (self.use_since, self.since, self.use_until, self.until):
            times.addWidget(widget)
        times.addStretch(1)
        times.addWidget(self.result_label)
        times.addWidget(self.more_button)
        times.addWidget(self.search_button)
        grid.addLayout(times, 2, 0, 1, 6)
        grid.setColumnStretch(1, 2)
        grid.setColumnStretch(3, 2)
        grid.setColumnStretch(5, 1)
        self.toolbar.addWidget(card, 1)
        for edit in (self.username, self.patient):
            edit.returnPressed.connect(self.search)
        self.patient.textEdited.connect(lambda _: self.patient_name.clear())
        self.picker: PatientPicker | None = None

    def refresh(self) -> None:
        """Fill the server list from the institutions and their render nodes, then search."""
        client, polling_client, caller = self.ctx.client, self.ctx.polling_client, self.ctx.caller

        def sources() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            """The institutions the caller administers and their render nodes: the logs of the others
            (institution server and nodes alike) refuse them, and audit the refusal."""
            institutions = [inst for inst in client.list_all("/api/v1/institutions", text_keys=INSTITUTION_KEYS)
                            if may_administer_institution(caller, inst["id"])]
            with ThreadPoolExecutor(max_workers=REGISTRY_THREADS) as pool:
                nodes = [node for found in pool.map(lambda inst: render_node_sources(polling_client, inst),
                                                    institutions) for node in found]
            return institutions, nodes

        def loaded(found: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
            institutions, nodes = found
            current = self.source.currentData()
            self.source.clear()
            self.source.addItem("Toplevel server", TOPLEVEL)
            for inst in sorted(institutions, key=lambda i: i["name"].casefold()):
                self.source.addItem(f"{one_line(inst['name'])} (institution server)", inst)
            for node in sorted(nodes, key=lambda n: n["name"].casefold()):
                self.source.addItem(f"{one_line(node['name'])} (render node)", node)
            found_index = next((i for i in range(self.source.count())
                                if self._source_key(self.source.itemData(i)) == self._source_key(current)), 0)
            self.source.setCurrentIndex(found_index)
            self.search()

        self.run(sources, loaded)

    @staticmethod
    def _source_key(data: Any) -> str:
        return data["id"] if isinstance(data, dict) else str(data)

    def find_patient(self) -> None:
        picker = PatientPicker(self, self.ctx, "" if check_uuid(self.patient.text(), "") is None
                               else self.patient.text())
        picker.accepted.connect(lambda: self._patient_chosen(picker.chosen))
        self.picker = picker
        picker.open()
        if picker.query.text():
            picker.search()

    def _patient_chosen(self, patient: dict[str, Any] | None) -> None:
        if patient:
            self.patient.setText(patient["id"])
            self.patient_name.setText(f"{one_line(patient.get('last_name'))}, {one_line(patient.get('first_name'))} "
                                      f"· born {one_line(patient.get('birth_date'))}")

    def search(self) -> None:
        problem = check_uuid(self.patient.text(), "Patient")
        since = self.since.dateTime() if self.use_since.isChecked() else None
        until = self.until.dateTime() if self.use_until.isChecked() else None
        if problem is None and since is not None and until is not None and since > until:
            problem = "The 'From' time is after the 'To' time."
        if problem:
            self.banner.show_error(problem)
            return
        query = audit_query(self.username.text(), self.patient.text(), self.action.currentText(),
                            since, until)
        source = self.source.currentData()
        if isinstance(source, dict):
            client, label = self.ctx.server_client(source["server_url"]), source["name"]
        else:
            client, label = self.ctx.client, "toplevel"
        self._search = (client, label, query)
        self._fetch([])

    def load_more(self) -> None:
        """The next page of the last search, appended below what is shown."""
        if self._search is not None:
            self._fetch(self.table.model.rows())

    def _fetch(self, shown: list[dict[str, Any]]) -> None:
        client, label, query = self._search
        self.search_button.setEnabled(False)
        self.more_button.setEnabled(False)

        def done(page: tuple[list[dict[str, Any]], int]) -> None:
            found, total = page
            items = shown + [{**item, "source": label} for item in found]
            self.search_button.setEnabled(True)
            self.more_button.setEnabled(True)
            self.more_button.setVisible(len(items) < total)
            self.table.set_rows(items)
            self.result_label.setText(f"{total} matching entries" if total <= len(items)
                                      else f"newest {len(items)} of {total} matching entries")

        def failed(error: ApiError) -> None:
            self.search_button.setEnabled(True)
            self.more_button.setEnabled(True)
            self.show_error(error)

        offset = len(shown)
        # only the last search (or page) asked is shown: Enter in a filter box searches while an
        # earlier search is under way, and its late answer showed under the later search's filters
        self.run(lambda: client.page("/api/v1/audit", limit=AUDIT_PAGE, offset=offset, **query), done, failed,
                 latest="rows")
