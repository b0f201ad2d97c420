"""Qt table models for the API's resources, and the proxy that sorts and filters them.

Each model is a `QAbstractTableModel` over a list of JSON objects (dicts, as the API returns
them) with a fixed list of `Column`s. A column gives a raw value (used for sorting, so numbers
and times sort as numbers and times, not as text) and the text shown. Screens keep the dicts and
get them back with `row_at()`, so an edit dialog always works on what the server sent.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor
from PySide6.QtGui import Qt as GuiQt

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
#: Full text of a cell for the filter box, so a pasted whole id matches a shortened one.
FILTER_ROLE = Qt.ItemDataRole.UserRole + 3
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
        # an exception raised here is a crash, not a traceback (PySide): a cell that cannot be shown is blank
        try:
            return self._data(index, role)
        except Exception:
            log.exception("cannot show row %s, column %s", index.row(), index.column())
            return None

    def _data(self, index: _Index, role: int) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        column = self.columns[index.column()]
        if role == SORT_ROLE:
            return _sortable(column.value(row))
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(column.value(row))
        if role == Qt.ItemDataRole.ToolTipRole:
            raw = column.value(row)
            tip = raw if isinstance(raw, str) and raw else column.text(raw)
            # a tooltip that looks like HTML is rendered as HTML; cell values are other users' text
            return GuiQt.convertFromPlainText(tip) if tip else None
        if role == FILTER_ROLE:
            raw = column.value(row)
            return f"{column.text(raw)} {_text(raw)}"
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return column.alignment()
        return self.row_role(row, index.column(), role)

    def row_role(self, row: dict[str, Any], column: int, role: int) -> Any:
        """Hook for colours and other per-row roles."""
        return None


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
            Column("Role", key("role")),
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


def _sortable(value: Any) -> Any:
    """A raw value as Qt can carry it to the sort proxy: PySide fails (a crash) to convert an
    integer beyond 64 bits, or a list or object holding one, to a QVariant after `data` returned."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return finite(value)
    return _text(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Blanks last, numbers by value, everything else as case-folded text."""
    if value is None or value == "":
        return (2, "")
    number = finite(value)
    if number is not None:
        return (0, number)
    return (1, _text(value).casefold())


class FilterProxyModel(QSortFilterProxyModel):
    """Case-insensitive filter over every column; sorts by the raw values of `SORT_ROLE`."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
        self.setSortRole(SORT_ROLE)
        self.setFilterRole(FILTER_ROLE)

    def lessThan(self, left: _Index, right: _Index) -> bool:
        try:  # as in `ResourceTableModel.data`: raising here would crash the console
            return _sort_key(left.data(SORT_ROLE)) < _sort_key(right.data(SORT_ROLE))
        except Exception:
            log.exception("cannot compare rows %s and %s", left.row(), right.row())
            return False

    def source_row(self, proxy_row: int) -> int:
        return self.mapToSource(self.index(proxy_row, 0)).row()
