"""Building blocks every screen shares: message banner, filterable table, form dialog, confirm box.

Dialogs are opened with `open()` (window-modal, non-blocking) rather than `exec()`, so the event
loop keeps running — background answers still arrive while a dialog is up, and tests can drive
the dialog like any other widget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from admin_gui.api_client import ApiError
from admin_gui.server_text import one_line
from admin_gui.table_models import FilterProxyModel, ResourceTableModel
from admin_gui.workers import TaskRunner

#: Lines of a message banner and of a form's error shown before they scroll (BoundedText).
BANNER_LINES = 5
FORM_ERROR_LINES = 8
def plain_label(text: str = "", object_name: str = "") -> QLabel:
    """A label that shows `text` literally.

    Names, URLs and error messages come from servers and, through them, from other users; a
    QLabel would render anything that looks like HTML as rich text (spoofed messages, images).
    """
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    if object_name:
        label.setObjectName(object_name)
    return label


class BoundedText(QScrollArea):
    """Plain, selectable, word-wrapped text that grows with its content up to `lines` lines, then scrolls.

    A server's words have no length of their own (an error message, one line per unreachable node):
    a label grows with them until nothing beside it has room (300 lines made a banner 4800 px high and
    the window taller than any monitor; 40 unreachable nodes left the node table one row). All of the
    text stays readable and selectable, by scrolling.
    """

    def __init__(self, lines: int, object_name: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.label = plain_label()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._lines = lines
        if object_name:
            self.setObjectName(object_name)
        self.setWidget(self.label)
        self.label.setAutoFillBackground(False)  # setWidget() set it: the banner's colour shows through
        self.viewport().setAutoFillBackground(False)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def setText(self, text: str) -> None:
        """Show `text` from its top; the same text again keeps where the reader has scrolled to."""
        if text == self.label.text():
            return
        self.label.setText(text)
        self.verticalScrollBar().setValue(0)
        self.updateGeometry()  # the label's new height is the layout's business, not only the viewport's

    def text(self) -> str:
        return self.label.text()

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        """The text's height at `width`, at most `lines` lines, plus the frame (a style sheet's border)."""
        frame, margins = self.contentsMargins(), self.label.contentsMargins()
        most = self.label.fontMetrics().boundingRect(0, 0, 1 << 20, 1 << 20, 0, "\n" * (self._lines - 1)).height()
        return (min(self.label.heightForWidth(width - frame.left() - frame.right()),
                    most + margins.top() + margins.bottom()) + frame.top() + frame.bottom())

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(hint.width(), self.heightForWidth(self.width() or hint.width()))

    def minimumSizeHint(self) -> QSize:
        """As high as the text needs (up to `lines`): a window sizes itself by minimum sizes, not by
        height for width, and a scroll area's own minimum is a scroll bar's."""
        return QSize(super().minimumSizeHint().width(), self.sizeHint().height())


class MessageBanner(QFrame):
    """A coloured line above a screen's table: errors in red, confirmations in green."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("banner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 8, 8)
        self.text_box = BoundedText(BANNER_LINES)
        self.label = self.text_box.label
        close = QPushButton("✕")
        close.setObjectName("bannerClose")
        close.setFlat(True)
        close.setFixedWidth(28)
        close.clicked.connect(self.hide)
        layout.addWidget(self.text_box, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_error(self, message: str) -> None:
        self._show(message, "error")

    def show_info(self, message: str) -> None:
        self._show(message, "info")

    def _show(self, message: str, kind: str) -> None:
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.text_box.setText(message[:1].upper() + message[1:])
        self.show()

    def clear_error(self) -> None:
        """An error is stale once a later call succeeded; a confirmation stays."""
        if self.property("kind") == "error":
            self.hide()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class TablePanel(QWidget):
    """A filter box over a sortable table view of a `ResourceTableModel`."""

    activated_row = Signal(dict)

    def __init__(self, model: ResourceTableModel, placeholder: str = "Filter…",
                 empty_text: str = "Nothing to show yet.", parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.proxy = FilterProxyModel(self)
        self.proxy.setSourceModel(model)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText(placeholder)
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.count = QLabel()
        self.count.setObjectName("muted")
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.setShowGrid(False)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(30)
        header = self.view.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        # `activated`, not `doubleClicked`: a double-click and Enter on the current row alike (a
        # keyboard user chose a row with the arrow keys, and Enter did nothing)
        self.view.activated.connect(lambda index: self.activated_row.emit(
            model.row_at(self.proxy.mapToSource(index).row())))
        self._empty_text = empty_text
        self.empty = QLabel(empty_text, self.view.viewport())
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.view.viewport().installEventFilter(self)
        for signal in (model.modelReset, self.proxy.rowsInserted, self.proxy.rowsRemoved,
                       self.proxy.layoutChanged, self.proxy.modelReset):
            signal.connect(self._update_count)

        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.count)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        self._update_count()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.view.viewport() and event.type() == QEvent.Type.Resize:
            self.empty.setGeometry(self.view.viewport().rect().adjusted(20, 20, -20, -20))
        return False

    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count.setText(f"{total} shown" if shown == total else f"{shown} of {total} shown")
        if total and not shown:
            self.empty.setText("No row matches the filter.")
        elif not total:
            self.empty.setText(self._empty_text)
        self.empty.setVisible(shown == 0)

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        selected = self.selected()
        self.model.set_rows(rows)
        self.view.resizeColumnsToContents()
        if selected is not None and "id" in selected:
            self.select_where(lambda row: row.get("id") == selected["id"])

    def selected(self) -> dict[str, Any] | None:
        rows = self.view.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.row_at(self.proxy.mapToSource(rows[0]).row())

    def select_where(self, predicate: Callable[[dict[str, Any]], bool]) -> bool:
        """Select the first shown row matching `predicate` (tests and post-save focus use it)."""
        for proxy_row in range(self.proxy.rowCount()):
            if predicate(self.model.row_at(self.proxy.source_row(proxy_row))):
                self.view.selectRow(proxy_row)
                return True
        return False


class FormDialog(QDialog):
    """A form that checks its fields, then sends them in the background and stays open on error.

    `check(values)` returns `{field: problem}` for local validation; `send(values)` returns the
    callable to run off the GUI thread. The server's error message is shown in the dialog, so the
    administrator can fix the field and try again without retyping the rest.
    """

    saved = Signal(object)

    def __init__(self, parent: QWidget, title: str, runner: TaskRunner,
                 check: Callable[[dict[str, Any]], dict[str, str]],
                 send: Callable[[dict[str, Any]], Callable[[], Any]],
                 intro: str = ""):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setObjectName("formDialog")
        self.setMinimumWidth(460)
        self._runner = runner
        self._check = check
        self._send = send
        self.fields: dict[str, QWidget] = {}
        #: fields shown but neither editable nor sent (`hold`)
        self._held: set[str] = set()
        heading = plain_label(title, "dialogTitle")
        self.error = BoundedText(FORM_ERROR_LINES, "formError")
        self.error.hide()
        self.form = QFormLayout()
        self.form.setHorizontalSpacing(16)
        self.form.setVerticalSpacing(10)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 18, 20, 16)
        layout.setSpacing(12)
        layout.addWidget(heading)
        if intro:
            note = plain_label(intro, "muted")
            note.setWordWrap(True)
            layout.addWidget(note)
        layout.addWidget(self.error)
        layout.addLayout(self.form)
        layout.addWidget(self.buttons)

    def add_line(self, name: str, label: str, text: str = "", placeholder: str = "",
                 password: bool = False) -> QLineEdit:
        edit = QLineEdit(text)
        edit.setPlaceholderText(placeholder)
        if password:
            edit.setEchoMode(QLineEdit.EchoMode.Password)
        return self._add(name, label, edit)

    def add_combo(self, name: str, label: str, choices: list[tuple[str, Any]],
                  current: Any = None) -> QComboBox:
        combo = QComboBox()
        for text, data in choices:
            combo.addItem(text, data)
        if current is not None and combo.findData(current) < 0:
            # Never let an unknown current value silently become the first choice on save.
            combo.addItem(f"{one_line(current)} (unknown)", current)
        if current is not None:
            combo.setCurrentIndex(combo.findData(current))
        return self._add(name, label, combo)

    def add_check(self, name: str, label: str, checked: bool) -> QCheckBox:
        return self._add(name, "", QCheckBox(label, checked=checked))

    def _add(self, name: str, label: str, widget: QWidget):
        widget.setObjectName(f"field_{name}")
        self.fields[name] = widget
        self.form.addRow(label, widget)
        return widget

    def hold(self, name: str, reason: str) -> None:
        """Show the field `name` disabled, `reason` as its tooltip, and leave it out of `values()`:
        the server refuses any change of it here, so the form neither offers nor sends one."""
        widget = self.fields[name]
        widget.setEnabled(False)
        widget.setToolTip(reason)
        self._held.add(name)

    def values(self) -> dict[str, Any]:
        """What the fields hold, as sent; a held field (`hold`) is not among them."""
        out: dict[str, Any] = {}
        for name, widget in self.fields.items():
            if name in self._held:
                continue
            if isinstance(widget, QLineEdit):
                out[name] = widget.text() if widget.echoMode() == QLineEdit.EchoMode.Password \
                    else widget.text().strip()
            elif isinstance(widget, QComboBox):
                out[name] = widget.currentData()
            elif isinstance(widget, QCheckBox):
                out[name] = widget.isChecked()
        return out

    def submit(self) -> None:
        values = self.values()
        problems = self._check(values)
        for name, widget in self.fields.items():
            widget.setProperty("invalid", name in problems)
            widget.style().unpolish(widget)
            widget.style().polish(widget)
        if problems:
            self.show_error("\n".join(problems.values()))
            next(w for n, w in self.fields.items() if n in problems).setFocus()
            return
        self.error.hide()
        self._set_busy(True)
        self._runner.submit(self._send(values), self._on_saved, self._on_failed, owner=self)

    def show_error(self, message: str) -> None:
        self.error.setText(message[:1].upper() + message[1:])
        self.error.show()

    def _set_busy(self, busy: bool) -> None:
        self.buttons.setEnabled(not busy)
        save = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        save.setText("Saving…" if busy else "Save")

    def _on_saved(self, result: Any) -> None:
        self._set_busy(False)
        self.saved.emit(result)
        self.accept()

    def _on_failed(self, error: ApiError) -> None:
        self._set_busy(False)
        self.show_error(error.message)


def confirm(parent: QWidget, title: str, text: str, on_yes: Callable[[], None]) -> QMessageBox:
    """A non-blocking Yes/No question; `on_yes` runs only on Yes. Returns the box (tests click it).
    The names in `text` are the caller's to pass through `one_line`."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text,
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)  # the question names things other users typed
    box.setDefaultButton(QMessageBox.StandardButton.No)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

    def finished(_result: int) -> None:
        if box.standardButton(box.clickedButton()) == QMessageBox.StandardButton.Yes:
            on_yes()

    box.finished.connect(finished)
    box.open()
    return box
