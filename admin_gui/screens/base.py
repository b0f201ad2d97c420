"""The frame of every console screen: title, action buttons, message banner, content.

A screen reloads its data each time it is shown (so a new institution is offered at once in the
users' form) and on Refresh; all loading goes through the runner, with failures shown in the
screen's banner in the server's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from admin_gui.api_client import ApiError
from admin_gui.context import ConsoleContext
from admin_gui.server_text import one_line
from admin_gui.table_models import ResourceTableModel
from admin_gui.widgets import FormDialog, MessageBanner, TablePanel, confirm
from admin_gui.workers import LatestOnly


class Screen(QWidget):
    title = ""
    subtitle = ""

    def __init__(self, ctx: ConsoleContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName("screen")
        heading = QLabel(self.title)
        heading.setObjectName("screenTitle")
        sub = QLabel(self.subtitle)
        sub.setObjectName("muted")
        sub.setWordWrap(True)
        self.toolbar = QHBoxLayout()
        self.toolbar.setSpacing(8)
        self.banner = MessageBanner()
        self.body = QVBoxLayout()
        self.body.setSpacing(10)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 16)
        layout.setSpacing(12)
        layout.addWidget(heading)
        layout.addWidget(sub)
        layout.addLayout(self.toolbar)
        layout.addWidget(self.banner)
        layout.addLayout(self.body, 1)
        #: the loads of what the screen shows (`run(..., latest=name)`)
        self._loads = LatestOnly()

    def add_button(self, text: str, slot: Callable[[], None], primary: bool = False) -> QPushButton:
        button = QPushButton(text)
        if primary:
            button.setObjectName("primary")
            QShortcut(QKeySequence.StandardKey.New, self, slot)
            button.setToolTip(f"{text.lstrip('+ ')} ({QKeySequence(QKeySequence.StandardKey.New).toString()})")
        button.clicked.connect(slot)
        self.toolbar.addWidget(button)
        return button

    def refresh(self) -> None:
        raise NotImplementedError

    def run(self, fn: Callable[[], Any], on_done: Callable[[Any], None],
            on_error: Callable[[ApiError], None] | None = None, polling: bool = False,
            latest: str = "") -> None:
        """Run `fn` off the GUI thread (`polling`: a call made on a timer, `TaskRunner.submit`); a
        success clears an earlier error, a failure shows one.

        `latest` names a load of what the screen shows ("rows"): only the last one started of that
        name is answered. A screen loads when shown, on Refresh and after each change; from a slow
        server the first load could answer last, and its rows, read before the change, replaced
        the later load's: a created institution gone from the table under "Institution … saved.",
        a deleted user back."""
        def done(result: Any) -> None:
            self.banner.clear_error()
            on_done(result)

        failed = on_error or self.show_error
        if latest:
            done, failed = self._loads.guard(latest, done, failed)
        self.ctx.runner.submit(fn, done, failed, owner=self, polling=polling)

    def show_error(self, error: ApiError) -> None:
        self.banner.show_error(error.message)


class TableScreen(Screen):
    """A screen whose content is one filterable table; buttons needing a row follow the selection."""

    def __init__(self, ctx: ConsoleContext, model: ResourceTableModel, filter_hint: str,
                 parent: QWidget | None = None, empty_text: str = "Nothing here yet."):
        super().__init__(ctx, parent)
        self.table = TablePanel(model, filter_hint, empty_text)
        QShortcut(QKeySequence.StandardKey.Find, self, self.table.filter.setFocus)
        self.body.addWidget(self.table, 1)
        #: buttons acting on the selected row, each with its `refusal` (see add_row_button)
        self._row_buttons: list[tuple[QPushButton, Callable[[dict[str, Any]], str] | None]] = []
        self.dialog: FormDialog | None = None
        self.table.view.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table.model.modelReset.connect(self._selection_changed)

    def form_texts(self, row: dict[str, Any], keys: tuple[str, ...], what: str) -> dict[str, str] | None:
        """The text at each of `keys` of a server's `row`, as an edit form shows it ("" for none),
        or None with the problem in the banner.

        A form's fields take text only: another type in a row (a newer or hostile server's number)
        raised TypeError in the Edit button's slot, outside the runner's guard, which told the
        administrator nothing and left a half-built dialog behind. It is checked before any
        dialog exists."""
        texts: dict[str, str] = {}
        for key in keys:
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                self.banner.show_error(f"the server sent {key} {str(value)[:40]} ({type(value).__name__}, not text) "
                                       f"for this {what}; is this a SIVR server of the same version?")
                return None
            texts[key] = value or ""
        return texts

    def add_row_button(self, text: str, slot: Callable[[dict[str, Any]], None],
                       refusal: Callable[[dict[str, Any]], str] | None = None) -> QPushButton:
        """A button acting on the selected row; disabled while nothing is selected, and on a row
        for which `refusal(row)` gives a reason (then shown as the button's tooltip): the server
        would refuse it, and the administrator learns why before clicking, in words."""
        def clicked() -> None:
            row = self.table.selected()
            if row is not None and not (refusal and refusal(row)):
                slot(row)
        button = self.add_button(text, clicked)
        button.setEnabled(False)
        self._row_buttons.append((button, refusal))
        return button

    def finish_toolbar(self) -> None:
        self.toolbar.addStretch(1)
        self.refresh_button = self.add_button("⟳ Refresh", self.refresh)
        self.refresh_button.setToolTip("Reload from the server (F5)")
        QShortcut(QKeySequence.StandardKey.Refresh, self, self.refresh)

    def open_dialog(self, dialog: FormDialog, saved_message: Callable[[Any], str]) -> FormDialog:
        """Show `dialog`; once it has saved, the banner says `saved_message(answer)` and the table reloads."""
        dialog.saved.connect(lambda answer: self.done(saved_message(answer)))
        self.dialog = dialog
        dialog.open()
        return dialog

    def done(self, message: str) -> None:
        """A change went through: say so and show the server's state."""
        self.banner.show_info(message)
        self.reload()

    def reload(self) -> None:
        """Reload the table's rows after a change (the whole screen, unless a subclass knows better)."""
        self.refresh()

    def _selection_changed(self, *_: Any) -> None:
        row = self.table.selected()
        allowed = row is not None and self.may_act_on(row)
        for button, refusal in self._row_buttons:
            reason = refusal(row) if allowed and refusal else ""
            button.setEnabled(allowed and not reason)
            if refusal:
                button.setToolTip(reason)

    def may_act_on(self, row: dict[str, Any]) -> bool:
        """Whether the row buttons may act on `row` (the API would refuse the others)."""
        return True


class ResourceScreen(TableScreen):
    """A toplevel collection kept in one table and edited in one form: list, create, edit, delete.

    Institutions and record types differ only in their path, fields and checks, which subclasses
    give through the hooks below; the flow (form, save, banner, reload, confirmed delete) is here.
    """

    path = ""
    noun = ""
    label_field = "name"
    #: What the form shows of a row (`add_fields` gets their texts).
    form_fields: tuple[str, ...] = ()

    def __init__(self, ctx: ConsoleContext, model: ResourceTableModel, filter_hint: str,
                 empty_text: str, parent: QWidget | None = None):
        super().__init__(ctx, model, filter_hint, parent, empty_text)
        if self.editable():
            self.add_button(f"+ New {self.noun}", self.create, primary=True)
            self.add_row_button("Edit…", self.edit)
            self.add_row_button("Delete…", self.remove)
            self.table.activated_row.connect(self.edit)
        self.finish_toolbar()

    def editable(self) -> bool:
        """Whether the signed-in user may change this collection (else it is shown read-only)."""
        return True

    def check(self, values: dict[str, Any]) -> dict[str, str]:
        """Problems per field, found before anything is sent."""
        raise NotImplementedError

    def add_fields(self, dialog: FormDialog, texts: dict[str, str]) -> None:
        """The form's fields, filled with `texts` (each of `form_fields`: "" for a new row)."""
        raise NotImplementedError

    def request_body(self, values: dict[str, Any]) -> dict[str, Any]:
        """The request body for the form's values."""
        return values

    def delete_question(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def refresh(self) -> None:
        self.run(lambda: self.ctx.client.list_all(self.path), self.table.set_rows, latest="rows")

    def _open_form(self, title: str, row: dict[str, Any] | None) -> None:
        row = row or {}
        row_id = row.get("id")
        texts = self.form_texts(row, self.form_fields, self.noun)
        if texts is None:
            return

        def send(values: dict[str, Any]):
            body = self.request_body(values)
            if row_id:
                return lambda: self.ctx.client.put(f"{self.path}/{row_id}", body)
            return lambda: self.ctx.client.post(self.path, body)

        dialog = FormDialog(self, title, self.ctx.runner, self.check, send)
        self.add_fields(dialog, texts)
        self.open_dialog(dialog, lambda saved: self._message(saved, "saved"))

    def create(self) -> None:
        self._open_form(f"New {self.noun}", None)

    def edit(self, row: dict[str, Any]) -> None:
        self._open_form(f"Edit {self.noun} {one_line(row.get(self.label_field))}", row)

    def _message(self, row: Any, verb: str) -> str:
        label = row.get(self.label_field) if isinstance(row, dict) else None
        return f"{self.noun.capitalize()} {one_line(label)} {verb}."

    def remove(self, row: dict[str, Any]) -> None:
        def delete() -> None:
            self.run(lambda: self.ctx.client.delete(f"{self.path}/{row['id']}"),
                     lambda _: self.done(self._message(row, "deleted")))
        self.confirm_box = confirm(self, f"Delete {self.noun}", self.delete_question(row), delete)
