"""Qt table models for the API's resources, and the proxy that sorts and filters them.

Each model is a `QAbstractTableModel` over a list of JSON objects (dicts, as the API returns
them) with a fixed list of `Column`s. A column gives a raw value (used for sorting, so numbers
and times sort as numbers and times, not as text) and the text shown. Screens keep the dicts and
get them back with `row_at()`, so an edit dialog always works on what the server sent.

`FilterProxyModel` sorts and filters them for a view in Python, on keys and texts the model
computes once per row: a table holds up to tens of thousands of rows (the audit log, users,
patients), and Qt's own proxy would call into Python for every comparison and every cell.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QAbstractProxyModel,
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtGui import QBrush, QColor
from PySide6.QtGui import Qt as GuiQt

from admin_gui.server_text import one_line, tooltip_text
from shared.roles import ROLE_LABELS

#: Role giving `(used, budget)` to the memory bar delegate of the node health table.
BAR_ROLE = Qt.ItemDataRole.UserRole + 2

_MUTED = QColor("#8a94a6")
_BAD = QColor("#c0392b")
_GOOD = QColor("#1e8449")

log = logging.getLogger(__name__)

_Index = QModelIndex | QPersistentModelIndex
_TOP_LEVEL = QModelIndex()  # the invalid index: a flat table's rows have no parent


def finite(value: Any) -> float | None:
    """`value` as a finite float when it is a JSON number, else None. A server's figures are shown
    and sorted through this: a string, an infinity or an integer too large for a float raised in
    Qt's calls into the models, which PySide turns into a crash of the whole console."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def human_bytes(value: Any) -> str:
    """`1536` -> `1.5 KiB`; blank for an unknown value."""
    size = finite(value)
    if size is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def short_time(value: Any) -> str:
    """`2026-11-24T19:56:27Z` -> `2026-11-24 19:56:27 UTC`, readable in a narrow column."""
    if not isinstance(value, str) or not value:
        return ""
    return value.replace("T", " ").replace("Z", " UTC")


def short_id(value: Any) -> str:
    """First block of a UUID (`32526580…`): enough to tell rows apart, the tooltip has it all."""
    text = _text(value)
    return text[:8] + "…" if len(text) == 36 and text.count("-") == 4 else text


def _text(value: Any) -> str:
    if isinstance(value, str):  # first: most cells, and every cell of a 50,000-row filter
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@dataclass(frozen=True)
class Column:
    """One table column: header, raw value of a row, and how to show it."""

    header: str
    value: Callable[[dict[str, Any]], Any]
    text: Callable[[Any], str] = _text
    align_right: bool = False
    tip: str = ""

    def alignment(self) -> int:
        """Numbers right-aligned (cells and header alike), text left."""
        horizontal = Qt.AlignmentFlag.AlignRight if self.align_right else Qt.AlignmentFlag.AlignLeft
        return int(horizontal | Qt.AlignmentFlag.AlignVCenter)


def key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(name)


def role_label(role: Any) -> Any:
    """A role as the users' form names it ("System administrator"), so the table and the filter
    speak the form's words and not the API's codes; a role this console does not know, as sent."""
    return ROLE_LABELS.get(role, role) if isinstance(role, str) else role


class ResourceTableModel(QAbstractTableModel):
    """Rows of JSON objects shown through `columns`; subclasses choose the columns."""

    columns: tuple[Column, ...] = ()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[dict[str, Any]] = []

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def row_at(self, row: int) -> dict[str, Any]:
        return self._rows[row]

    def update_row(self, row: int, values: dict[str, Any]) -> None:
        """Merge `values` into one row and repaint it (node health fills rows as answers come)."""
        self._rows[row] = {**self._rows[row], **values}
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.columns) - 1))

    def rowCount(self, parent: _Index = _TOP_LEVEL) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = _TOP_LEVEL) -> int:
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].header
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.columns[section].tip or None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self.columns[section].alignment()
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        return self.cell_data(index.row(), index.column(), role) if index.isValid() else None

    def cell_data(self, row: int, column: int, role: int) -> Any:
        """`data` of the cell at (`row`, `column`): also what `FilterProxyModel.data` answers with,
        in one call from Qt (a view asks some ten roles of each cell it lays out)."""
        # an exception raised here is a crash, not a traceback (PySide): a cell that cannot be shown is blank
        try:
            return self._data(row, column, role)
        except Exception:
            log.exception("cannot show row %s, column %s", row, column)
            return None

    def _data(self, row_number: int, column_number: int, role: int) -> Any:
        row = self._rows[row_number]
        column = self.columns[column_number]
        if role == Qt.ItemDataRole.DisplayRole:  # a server's text, as every label shows it
            return one_line(column.text(column.value(row)))
        if role == Qt.ItemDataRole.ToolTipRole:
            raw = column.value(row)
            tip = tooltip_text(raw if isinstance(raw, str) and raw else column.text(raw))
            # a tooltip that looks like HTML is rendered as HTML; cell values are other users' text
            return GuiQt.convertFromPlainText(tip) if tip else None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return column.alignment()
        return self.row_role(row, column_number, role)

    def row_role(self, row: dict[str, Any], column: int, role: int) -> Any:
        """Hook for colours and other per-row roles."""
        return None

    def sort_key(self, row: int, column: int) -> tuple[int, Any]:
        """Where one cell sorts (`_sort_key` of its raw value), for `FilterProxyModel`.

        Computed in Python from the row, never carried through a QVariant: PySide crashes on an
        integer beyond 64 bits there, and loses a reference to None for every blank cell read
        with `index.data()` (a few thousand blanks aborted the console). A value that cannot be
        read sorts as a blank, as `data` shows it blank: raising here would be a crash too.
        """
        try:
            return _sort_key(self.columns[column].value(self._rows[row]))
        except Exception:
            log.exception("cannot sort row %s by column %s", row, column)
            return _BLANK

    def filter_text(self, row: int) -> tuple[str, ...]:
        """One row's cells as the filter box matches them, case-folded, for `FilterProxyModel`.

        A cell is its shown text and, where that is shortened or reworded, its whole raw value
        too, so a pasted whole id matches a shortened one. A cell that cannot be read is blank.
        """
        record, cells = self._rows[row], []
        for column in self.columns:
            try:
                raw = column.value(record)
                shown = column.text(raw)
                cells.append((shown if column.text is _text else f"{shown} {_text(raw)}").casefold())
            except Exception:
                log.exception("cannot filter row %s, column %s", row, column.header)
                cells.append("")
        return tuple(cells)


class InstitutionsModel(ResourceTableModel):
    columns = (
        Column("Name", key("name")),
        Column("Address", key("address")),
        Column("Server URL", key("server_url")),
    )


class RecordTypesModel(ResourceTableModel):
    columns = (
        Column("Code", key("code")),
        Column("Name", key("name")),
    )


class UsersModel(ResourceTableModel):
    """Users, with the institution shown by name; inactive users greyed out."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.institution_names: dict[str, str] = {}
        self.columns = (
            Column("Username", key("username")),
            Column("Full name", key("full_name")),
            Column("Email", key("email")),
            Column("Role", lambda r: role_label(r.get("role"))),
            Column("Institution",
                   lambda r: self.institution_names.get(r.get("institution_id"), r.get("institution_id"))),
            Column("Active", key("active")),
            Column("Created", key("created_at"), short_time),
        )

    def row_role(self, row: dict[str, Any], column: int, role: int) -> Any:
        if role == Qt.ItemDataRole.ForegroundRole and not row.get("active", True):
            return QBrush(_MUTED)
        return None


class NodesModel(ResourceTableModel):
    columns = (
        Column("Name", key("name")),
        Column("URL", key("url")),
        Column("Shared store", key("store")),
        Column("Registered", key("created_at"), short_time),
    )


def _latency(kind: str) -> Callable[[dict[str, Any]], Any]:
    def value(row: dict[str, Any]) -> Any:
        latency = row.get("render_latency_ms")
        return latency.get(kind) if isinstance(latency, dict) else None
    return value


def _ms(value: Any) -> str:
    number = finite(value)
    return "" if number is None else f"{number:.0f} ms"


def _memory_text(value: Any) -> str:
    number = finite(value)
    return "" if number is None else f"{number:.0%}"


def memory_fraction(used: Any, budget: Any) -> float | None:
    """Memory used against the budget, None when either is not a finite number or the budget is not positive."""
    used, budget = finite(used), finite(budget)
    if used is None or budget is None or budget <= 0:
        return None
    return used / budget


def _memory_fraction(row: dict[str, Any]) -> float | None:
    return memory_fraction(row.get("memory_used_bytes"), row.get("memory_budget_bytes"))


#: Node health row states and how they read in the table.
STATUS_TEXT = {"up": "● reachable", "down": "● unreachable", "checking": "… checking",
               "no_access": "○ not visible to you"}
_STATUS_COLOUR = {"up": _GOOD, "down": _BAD, "no_access": _MUTED}


class NodeHealthModel(ResourceTableModel):
    """One row per render node: its registry entry merged with its `GET /api/v1/node` answer.

    Rows carry `status` (a key of STATUS_TEXT) and `problem` (words) besides the node's own
    fields.
    """

    MEMORY_COLUMN = 5

    columns = (
        Column("Institution", key("institution_name")),
        Column("Node", key("name")),
        Column("Status", key("status"), lambda v: STATUS_TEXT.get(v, "")),
        Column("Stored", key("records_stored"), align_right=True, tip="DICOM records stored on the node"),
        Column("Loaded", key("records_loaded"), align_right=True, tip="Records loaded in memory, ready to render"),
        Column("Memory", _memory_fraction, _memory_text, tip="Memory used by loaded records against the node's budget"),
        Column("Storage", key("storage_used_bytes"), human_bytes, align_right=True,
               tip="Disk used by the encrypted store"),
        Column("p50", _latency("p50"), _ms, align_right=True, tip="Median render latency, recent requests"),
        Column("p95", _latency("p95"), _ms, align_right=True, tip="95th percentile render latency, recent requests"),
        Column("3D", key("backend_3d"), tip="3D rendering back end"),
        Column("URL / problem", lambda r: r.get("problem") or r.get("url")),
    )

    def row_role(self, row: dict[str, Any], column: int, role: int) -> Any:
        if role == BAR_ROLE and column == self.MEMORY_COLUMN:
            return finite(row.get("memory_used_bytes")), finite(row.get("memory_budget_bytes"))
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == 2 and row.get("status") in _STATUS_COLOUR:
                return QBrush(_STATUS_COLOUR[row["status"]])
            if column == 10 and row.get("problem"):
                return QBrush(_MUTED if row.get("status") == "no_access" else _BAD)
        return None


class AuditModel(ResourceTableModel):
    columns = (
        Column("Time", key("at"), short_time),
        Column("User", key("username")),
        Column("Action", key("action")),
        Column("Object", key("object_type")),
        Column("Object id", key("object_id"), short_id),
        Column("Patient", key("patient_id"), short_id),
        Column("Client IP", key("client_ip")),
        Column("Detail", key("detail")),
        Column("Server", key("source")),
    )


class PatientsModel(ResourceTableModel):
    columns = (
        Column("Last name", key("last_name")),
        Column("First name", key("first_name")),
        Column("Sex", key("sex")),
        Column("Birth date", key("birth_date")),
        Column("Insurance number", key("insurance_number")),
    )


#: Where a blank sorts: last (first when descending).
_BLANK = (2, "")
#: Between a row's cells in the text the filter searches: the filter box holds line breaks only
#: when pasted, and a needle holding one is checked against each cell.
_CELLS = "\n"


def _sort_key(value: Any) -> tuple[int, Any]:
    """Blanks last, numbers by value, everything else as case-folded text.

    A number that is not finite (an infinity, an integer beyond a float) sorts as a blank, as
    the columns of figures show it (`finite`). The keys of one column always compare (an int
    with a float, a str with a str), so `sorted` cannot raise on them.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = finite(value)
        return _BLANK if number is None else (0, number)
    if value is None or value == "":
        return _BLANK
    return (1, _text(value).casefold())


class FilterProxyModel(QAbstractProxyModel):
    """The rows of a `ResourceTableModel` for a view: sorted by one column, filtered by a text.

    Not a QSortFilterProxyModel: that sorts by calling `lessThan` n·log n times and filters by
    asking `data()` of every cell, each a call from C++ into Python — 50,000 audit entries
    took 10 s to sort and seconds per filter keystroke, with the GUI frozen. Here the model
    computes each row's sort key (`ResourceTableModel.sort_key`) and folded cell texts
    (`filter_text`, on the first filter after a reset) once, in Python; a sort is one `sorted()`
    and a filter one pass over the texts. Like QSortFilterProxyModel's, the sort is stable over
    the order shown before (sort by user after time: each user's rows stay in time order).

    Changes reach views as one layout change, in which persistent indexes (the selection, the
    current row) follow their rows, or become invalid when their row is filtered out. The source
    changes by reset (`set_rows`) and in place (`update_row`: dataChanged), which re-filters the
    rows changed and moves them where they now sort.
    """

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._model: ResourceTableModel | None = None
        self._column = -1
        self._descending = False
        self._needle = ""
        #: Per source row: its sort key in `_column` (its own number while unsorted) and, once
        #: a filter has been typed, its cells' folded texts.
        self._keys: list[Any] = []
        self._texts: list[str] | None = None
        #: Every source row in sort order; those shown (the filter's) in that order; each source
        #: row's place among those shown (-1: filtered out).
        self._sorted: list[int] = []
        self._shown: list[int] = []
        self._place: list[int] = []

    def setSourceModel(self, model: QAbstractItemModel) -> None:
        """Show `model` (a `ResourceTableModel`, set once)."""
        assert isinstance(model, ResourceTableModel), model
        self.beginResetModel()
        super().setSourceModel(model)
        self._model = model
        model.modelAboutToBeReset.connect(self.beginResetModel)
        model.modelReset.connect(self._source_reset)
        model.dataChanged.connect(self._source_changed)
        self._arrange_all()
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by `column` (-1: the source's order), as a click on its header asks."""
        if column != self._column:
            self._column = column
            self._keys = self._sort_keys(range(self._row_count()))
        self._descending = order == Qt.SortOrder.DescendingOrder
        self._sorted = self._in_order(self._sorted)
        self._show(self._accepted(self._sorted))

    def setFilterFixedString(self, text: str) -> None:
        """Show only the rows with a cell containing `text`, case-insensitively (as Qt's of that
        name; the filter box's textChanged calls it at each keystroke)."""
        self._needle = text.casefold()
        self._show(self._accepted(self._sorted))

    def source_row(self, proxy_row: int) -> int:
        return self._shown[proxy_row]

    def _row_count(self) -> int:
        return self._model.rowCount() if self._model is not None else 0

    def _sort_keys(self, rows: range) -> list[Any]:
        if self._column < 0 or self._model is None:
            return list(rows)
        sort_key, column = self._model.sort_key, self._column
        return [sort_key(row, column) for row in rows]

    def _in_order(self, rows: list[int]) -> list[int]:
        """`rows` sorted, stably: rows of one key stay in the order given."""
        return sorted(rows, key=self._keys.__getitem__, reverse=self._descending)

    def _accepted(self, rows: list[int]) -> list[int]:
        """Those of `rows` that pass the filter, in their order."""
        if not self._needle or self._model is None:
            return rows
        if self._texts is None:
            self._texts = [self._row_text(row) for row in range(self._row_count())]
        needle, texts = self._needle, self._texts
        found = [row for row in rows if needle in texts[row]]
        if _CELLS in needle:  # it may span two cells there: look at each
            filter_text = self._model.filter_text
            found = [row for row in found if any(needle in cell for cell in filter_text(row))]
        return found

    def _row_text(self, row: int) -> str:
        """A row's folded cells on one line, searched with one `in` per row and keystroke."""
        assert self._model is not None
        return _CELLS.join(self._model.filter_text(row))

    def _arrange_all(self) -> None:
        """After a reset: every row's key, rows of one key in the source's order."""
        count = self._row_count()
        self._keys = self._sort_keys(range(count))
        self._texts = None
        self._sorted = self._in_order(list(range(count)))
        self._shown = self._accepted(self._sorted)
        self._place = self._places()

    def _places(self) -> list[int]:
        place = [-1] * self._row_count()
        for proxy_row, row in enumerate(self._shown):
            place[row] = proxy_row
        return place

    def _source_reset(self) -> None:
        self._arrange_all()
        self.endResetModel()

    def _source_changed(self, top_left: QModelIndex, bottom_right: QModelIndex) -> None:
        """Rows updated in place: their keys and texts anew, then they move (or hide) as their
        new values sort and filter, and are repainted where they are."""
        assert self._model is not None
        rows = range(top_left.row(), bottom_right.row() + 1)
        self._keys[rows.start:rows.stop] = self._sort_keys(rows)
        if self._texts is not None:
            self._texts[rows.start:rows.stop] = [self._row_text(row) for row in rows]
        self._sorted = self._sorted.copy()  # `_shown` may be the same list
        for row in rows:
            self._move_into_place(row)
        self._show(self._accepted(self._sorted))
        last = self.columnCount() - 1
        for row in rows:
            if self._place[row] >= 0:
                self.dataChanged.emit(self.index(self._place[row], 0), self.index(self._place[row], last))

    def _move_into_place(self, row: int) -> None:
        """Move `row`, whose key changed, to where it now sorts, as QSortFilterProxyModel does:
        nowhere while it still sorts between its neighbours, else after the rows it ties with
        (a node's answer does not reorder rows of equal keys)."""
        keys, order, key = self._keys, self._sorted, self._keys[row]

        def before(a: Any, b: Any) -> bool:
            return a > b if self._descending else a < b

        at = order.index(row)
        if not ((at > 0 and before(key, keys[order[at - 1]]))
                or (at + 1 < len(order) and before(keys[order[at + 1]], key))):
            return
        del order[at]
        order.insert(bisect.bisect_left(order, True, key=lambda other: before(key, keys[other])), row)

    def _show(self, shown: list[int]) -> None:
        """Show `shown` (source rows in order) as one layout change, moving persistent indexes
        with their rows."""
        if shown == self._shown:
            return
        self.layoutAboutToBeChanged.emit()
        before = self.persistentIndexList()
        rows = [self._shown[index.row()] for index in before]
        self._shown = shown
        self._place = self._places()
        self.changePersistentIndexList(
            before, [self.index(self._place[row], index.column()) for row, index in zip(rows, before, strict=True)])
        self.layoutChanged.emit()

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """The source's cell, read without the three Python calls of QAbstractProxyModel's
        (mapToSource, the source's index, its data): a view sizing its columns reads 1,000 rows."""
        if not index.isValid() or self._model is None:
            return None
        return self._model.cell_data(self._shown[index.row()], index.column(), role)

    def mapToSource(self, proxy_index: _Index) -> QModelIndex:
        if not proxy_index.isValid() or self._model is None:
            return QModelIndex()
        return self._model.index(self._shown[proxy_index.row()], proxy_index.column())

    def mapFromSource(self, source_index: _Index) -> QModelIndex:
        if not source_index.isValid():
            return QModelIndex()
        return self.index(self._place[source_index.row()], source_index.column())

    def index(self, row: int, column: int, parent: _Index = _TOP_LEVEL) -> QModelIndex:
        """The index at (`row`, `column`); the invalid index out of range (row -1: filtered out)."""
        if parent.isValid() or not 0 <= row < len(self._shown) or not 0 <= column < self._column_count:
            return QModelIndex()
        return self.createIndex(row, column)

    def parent(self, child: _Index | None = None) -> Any:
        """No index has a parent in a table; without an index, the QObject's parent (same name)."""
        return QObject.parent(self) if child is None else QModelIndex()

    def rowCount(self, parent: _Index = _TOP_LEVEL) -> int:
        return 0 if parent.isValid() else len(self._shown)

    def columnCount(self, parent: _Index = _TOP_LEVEL) -> int:
        return 0 if parent.isValid() else self._column_count

    @property
    def _column_count(self) -> int:
        return len(self._model.columns) if self._model is not None else 0

    def hasChildren(self, parent: _Index = _TOP_LEVEL) -> bool:
        return not parent.isValid() and bool(self._shown)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """The source's headers: columns are not moved, and rows keep the source's numbers.
        (QAbstractProxyModel's maps a column through row 0, which a filter may have hidden.)"""
        if self._model is None:
            return None
        if orientation == Qt.Orientation.Vertical and 0 <= section < len(self._shown):
            section = self._shown[section]
        return self._model.headerData(section, orientation, role)
