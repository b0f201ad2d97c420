"""The console's table proxy: sort order, filter, selection and in-place updates (no timing here:
`python -m bench.console_table` measures a 50,000-row table)."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import Qt

from admin_gui.table_models import Column, FilterProxyModel, ResourceTableModel, key, short_id
from admin_gui.widgets import TablePanel

pytestmark = pytest.mark.gui


def _broken(row: dict[str, Any]) -> Any:
    if row.get("broken"):
        raise ValueError("a value the console cannot read")
    return row.get("note")


class ThingsModel(ResourceTableModel):
    columns = (
        Column("Name", key("name")),
        Column("Value", key("value")),
        Column("Id", key("id"), short_id),
        Column("Note", _broken),
    )


#: (name, value) in source order, with the ascending order by value they must sort into from the
#: panel's first order (by name): numbers by value (an int with floats), then text case-folded (a
#: numeric string, a boolean's "yes" are text), then blanks — None, "", and numbers not finite or
#: too large for a float — in the order shown before (by name).
MIXED = [("blank-none", None), ("ten", 10), ("text-Abd", "Abd"), ("blank-empty", ""), ("minus", -1),
         ("text-10", "10"), ("blank-huge", 10**400), ("nine-and-a-half", 9.5), ("text-abc", "abc"),
         ("blank-inf", float("inf")), ("two", 2), ("yes", True)]
ASCENDING = ["minus", "two", "nine-and-a-half", "ten", "text-10", "text-abc", "text-Abd", "yes",
             "blank-empty", "blank-huge", "blank-inf", "blank-none"]


def _rows() -> list[dict[str, Any]]:
    return [{"id": f"{i:08d}-0000-4000-8000-{i:012d}", "name": name, "value": value}
            for i, (name, value) in enumerate(MIXED)]


def _names(proxy: FilterProxyModel) -> list[str]:
    return [proxy.index(row, 0).data() for row in range(proxy.rowCount())]


def _panel(qtbot, rows: list[dict[str, Any]]) -> TablePanel:
    panel = TablePanel(ThingsModel())
    qtbot.addWidget(panel)
    panel.resize(800, 600)
    panel.set_rows(rows)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def _selected_names(panel: TablePanel) -> list[str]:
    return [index.data() for index in panel.view.selectionModel().selectedRows()]


def test_sort_puts_numbers_by_value_then_text_then_blanks_stably(qtbot):
    panel = _panel(qtbot, _rows())
    proxy = panel.proxy
    panel.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    assert _names(proxy) == ASCENDING
    panel.view.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    groups = ASCENDING[8:], ASCENDING[4:8], ASCENDING[:4]  # blanks keep their (ascending) order
    assert _names(proxy) == groups[0] + groups[1][::-1] + groups[2][::-1]
    # stable over the order shown: by id (the source's order here), then by value
    panel.view.sortByColumn(2, Qt.SortOrder.AscendingOrder)
    panel.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    assert _names(proxy) == ASCENDING[:8] + ["blank-none", "blank-empty", "blank-huge", "blank-inf"]
    # the source model is not reordered: the screens address its rows by their index
    assert [row["name"] for row in panel.model.rows()] == [name for name, _ in MIXED]
    for proxy_row in range(proxy.rowCount()):
        source = proxy.mapToSource(proxy.index(proxy_row, 2))
        assert proxy.index(proxy_row, 2).data() == source.data() == panel.model.index(
            proxy.source_row(proxy_row), 2).data()
        assert proxy.mapFromSource(source).row() == proxy_row


def test_filter_matches_any_shown_cell_case_insensitively(qtbot):
    panel = _panel(qtbot, _rows())
    panel.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    panel.filter.setText("TEXT-A")
    assert _names(panel.proxy) == ["text-abc", "text-Abd"]
    panel.filter.setText("00000005-0000-4000-8000-000000000005")  # a pasted whole id: its short cell
    assert _names(panel.proxy) == ["text-10"]
    panel.filter.setText("00000005…")  # the shortened text as shown
    assert _names(panel.proxy) == ["text-10"]
    panel.filter.setText("9.5")  # the value column
    assert _names(panel.proxy) == ["nine-and-a-half"]
    panel.filter.setText("ten\n10")  # not across two cells
    assert _names(panel.proxy) == []
    assert panel.count.text() == f"0 of {len(MIXED)} shown"
    assert panel.proxy.headerData(1, Qt.Orientation.Horizontal) == "Value"  # with no row left
    assert panel.view.verticalHeader().count() == 0
    panel.filter.setText("")
    assert _names(panel.proxy) == ASCENDING
    assert panel.view.verticalHeader().count() == len(MIXED)
    panel.grab()


def test_selection_and_current_row_follow_sort_and_filter(qtbot):
    panel = _panel(qtbot, _rows())
    assert panel.select_where(lambda row: row["name"] == "text-abc")
    panel.view.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    assert _selected_names(panel) == ["text-abc"]
    assert panel.view.currentIndex().data() == "text-abc"
    assert panel.selected()["name"] == "text-abc"
    panel.filter.setText("text")
    assert _names(panel.proxy) == ["text-Abd", "text-abc", "text-10"]
    assert _selected_names(panel) == ["text-abc"] and panel.view.currentIndex().row() == 1
    panel.filter.setText("text-1")  # filtered out: no longer selected, as when Qt's proxy removes it
    assert panel.selected() is None and not panel.view.currentIndex().isValid()


def test_a_row_updated_in_place_moves_and_filters_as_its_new_value_does(qtbot):
    panel = _panel(qtbot, _rows())
    model, proxy = panel.model, panel.proxy
    panel.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    two = [name for name, _ in MIXED].index("two")
    panel.select_where(lambda row: row["name"] == "two")
    model.update_row(two, {"value": 9.75})  # by its index in the source, as node health does
    assert _names(proxy) == ["minus", "nine-and-a-half", "two", "ten", *ASCENDING[4:]]
    assert _selected_names(panel) == ["two"]
    assert proxy.index(2, 1).data() == "9.75"
    ten = [name for name, _ in MIXED].index("ten")
    model.update_row(ten, {"name": "ten!"})  # its key unchanged: it stays where it is
    assert _names(proxy)[3] == "ten!"
    model.update_row(ten, {"name": "ten"})
    panel.filter.setText("t")
    assert _names(proxy) == ["two", "ten", "text-10", "text-abc", "text-Abd", "blank-empty"]
    model.update_row(two, {"name": "deux"})  # no longer matches: hidden, selection gone
    assert _names(proxy) == ["ten", "text-10", "text-abc", "text-Abd", "blank-empty"]
    assert panel.selected() is None
    model.update_row(two, {"name": "trois", "value": None})  # matches again: after the blanks it ties with
    assert _names(proxy) == ["ten", "text-10", "text-abc", "text-Abd", "blank-empty", "trois"]
    panel.filter.setText("")
    assert _names(proxy)[-5:] == ["blank-empty", "blank-huge", "blank-inf", "blank-none", "trois"]
    panel.view.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    model.update_row(ten, {"value": float("nan")})  # a blank now: after the blanks, descending too
    assert _names(proxy)[:6] == ["blank-empty", "blank-huge", "blank-inf", "blank-none", "trois", "ten"]


def test_unreadable_values_and_many_blanks_neither_raise_nor_crash(qtbot, caplog):
    """A value whose column raises shows, sorts (as a blank) and filters (as empty) without
    raising into Qt, which PySide makes a crash. Thousands of blanks sorted: Qt's proxy read each
    through `index.data()`, which in PySide 6.12 loses a reference to None per blank cell until
    the interpreter aborts ("deallocating None")."""
    rows = [{"id": str(i), "name": f"row-{i}", "value": None, "note": "fine"} for i in range(20_000)]
    rows[3] = {**rows[3], "broken": True, "value": 1}
    panel = _panel(qtbot, rows)
    for column in range(len(ThingsModel.columns)):
        for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
            panel.view.sortByColumn(column, order)
            assert panel.proxy.rowCount() == len(rows)
    panel.view.sortByColumn(3, Qt.SortOrder.AscendingOrder)
    assert panel.proxy.index(len(rows) - 1, 0).data() == "row-3"  # blank: last
    panel.filter.setText("FINE")
    assert panel.proxy.rowCount() == len(rows) - 1
    assert "cannot sort row 3" in caplog.text and "cannot filter row 3" in caplog.text
