"""Text from servers, as the console shows it: any length of it leaves every screen its room, and
names cannot rewrite the sentences they are put into."""

from __future__ import annotations

import pytest
from driving import WAIT_MS
from fake_servers import SYSTEM_ADMIN_USER
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextLayout
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableView,
    QWidget,
)

from admin_gui.api_client import ApiError
from admin_gui.screens.audit import AuditScreen
from admin_gui.screens.institutions import InstitutionsScreen
from admin_gui.screens.node_health import NodeHealthScreen
from admin_gui.screens.nodes import NodesScreen
from admin_gui.screens.record_types import RecordTypesScreen
from admin_gui.screens.users import UsersScreen
from admin_gui.server_text import SHOWN_TEXT_MAX, TOOLTIP_TEXT_MAX, one_line
from admin_gui.table_models import NodesModel
from admin_gui.widgets import FormDialog
from admin_gui.workers import TaskRunner

pytestmark = pytest.mark.gui

#: 2.6 KB of server words: as a label, 4800 px high (a reviewer's finding).
MANY_LINES = "\n".join(f"line {i}" for i in range(300))


def _settled() -> None:
    """Layout requests posted, then those they post in turn (a scroll bar shown or hidden)."""
    for _ in range(3):
        QApplication.processEvents()


def test_a_long_message_scrolls_in_its_banner_and_the_table_keeps_its_room(qtbot, fake_context):
    """A banner grew with its message: 300 lines made it 4800 px high, the window taller than any
    monitor, and left the table beneath no room. It stops at a few lines and scrolls; all of the
    message is still there to read and select."""
    screen = UsersScreen(fake_context)
    qtbot.addWidget(screen)
    screen.resize(1280, 800)
    screen.show()
    qtbot.waitExposed(screen)
    screen.show_error(ApiError(MANY_LINES, "conflict", 409))
    _settled()
    line = screen.banner.fontMetrics().lineSpacing()
    assert screen.banner.text() == "L" + MANY_LINES[1:]
    assert screen.banner.height() < 10 * line
    assert screen.banner.text_box.verticalScrollBar().maximum() > 0  # the rest is a scroll away
    assert screen.minimumSizeHint().height() < 800
    assert screen.table.view.viewport().height() > 400

    screen.show_error(ApiError("the server refused", "conflict", 409))  # and a short one takes one line
    _settled()
    assert screen.banner.text_box.height() < 2 * line
    assert screen.banner.text_box.verticalScrollBar().maximum() == 0


def test_a_long_error_in_a_form_scrolls_and_leaves_the_form_on_the_screen(qtbot):
    parent = QWidget()
    qtbot.addWidget(parent)
    dialog = FormDialog(parent, "Edit user", TaskRunner(parent), lambda values: {}, lambda values: None)
    dialog.add_line("full_name", "Full name")
    dialog.show_error(MANY_LINES)
    assert dialog.error.text() == "L" + MANY_LINES[1:]
    assert dialog.minimumSizeHint().height() < 400


#: A node name as an institution administrator may register it through an honest institution
#: server (which accepts U+2028), with what a hostile server may add (a line feed, U+0085, U+2029,
#: a right-to-left override, an isolate).
SPOOF = ("old-ct\u2028\u2028No records are stored on this node; removing it is safe.\nAlso\u0085this\u2029and"
         "\u202egnp.exe\u2066.")
SPOOF_SHOWN = ("old-ct No records are stored on this node; removing it is safe. Also this and\ufffdgnp.exe\ufffd.")
HEBREW = "\u05e9\u05e8\u05ea"  # a right-to-left name


def _line_x(text: str, font) -> list[float]:
    """Where each position of `text` is drawn, laid out on one line as a label lays it out."""
    layout = QTextLayout(text, font)
    layout.beginLayout()
    line = layout.createLine()
    line.setLineWidth(100000)
    layout.endLayout()
    return [line.cursorToX(position)[0] for position in range(len(text) + 1)]


def test_a_server_s_text_is_put_into_a_sentence_on_one_line_and_in_its_place(qapp):
    assert one_line(SPOOF) == SPOOF_SHOWN
    assert one_line("a\tb\r\nc\x0bd\x0ce\x1cf\x1dg\x1eh") == "a b c d e f g h"  # every line boundary
    assert one_line("a\x00b\x7fc\x9bd\ud800e") == "a\ufffdb\ufffdc\ufffdd\ufffde"
    assert one_line("".join(chr(point) for point in range(0x202A, 0x202F))) == "\ufffd" * 5
    assert one_line("".join(chr(point) for point in range(0x2066, 0x206A))) == "\ufffd" * 4
    assert one_line("Demo Hospital") == "Demo Hospital"  # left-to-right text stays as it is
    assert one_line(HEBREW) == f"\u2068{HEBREW}\u2069"
    assert one_line("a\u200fb") == "\u2068a\u200fb\u2069"  # a right-to-left mark is right-to-left too
    assert one_line(1234) == "1234" and one_line(None) == ""
    long = one_line("x" * 10**6)
    assert len(long) == SHOWN_TEXT_MAX and long.endswith("…")

    font = QApplication.font()
    for name, stays_put in ((HEBREW, False), (one_line(HEBREW), True)):
        sentence = f"Remove {name} 42 nodes"
        x = _line_x(sentence, font)
        name_right = max(x[sentence.index(HEBREW):sentence.index(HEBREW) + len(HEBREW) + 1])
        after = sentence.index("42")
        # without the isolate, the number after the name is drawn left of it, as part of it
        assert (x[after] >= name_right and x[after] < x[after + 1]) is stays_put, (name, x)


def _node_screen(qtbot, fake_sivr, fake_context, name: str) -> NodesScreen:
    node = {**fake_sivr.node(0, name), "url": "https://10.0.0.9:5003"}
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution(f"{HEBREW} Hospital\u2028")]
    fake_sivr.answers["/api/v1/nodes"] = [node]
    fake_sivr.answers[f"/api/v1/nodes/{node['id']}"] = (200, node)
    screen = NodesScreen(fake_context)
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: screen.table.model.rowCount() == 1, timeout=WAIT_MS)
    screen.table.view.selectRow(0)
    return screen


def _shown_texts(screen) -> list[str]:
    """Every text the screen and its dialogs show: labels, message boxes, titles, combo boxes, the
    cells of its tables."""
    texts = [label.text() for label in screen.findChildren(QLabel)]
    for view in screen.findChildren(QTableView):
        model = view.model()
        texts += [model.data(model.index(row, column), Qt.ItemDataRole.DisplayRole) or ""
                  for row in range(model.rowCount()) for column in range(model.columnCount())]
    texts += [dialog.windowTitle() for dialog in screen.findChildren(QDialog)]
    texts += [combo.itemText(i) for combo in screen.findChildren(QComboBox) for i in range(combo.count())]
    return texts


def test_a_node_s_name_cannot_rewrite_the_remove_confirmation_nor_any_other_text(qtbot, fake_sivr, fake_context):
    """A line separator in a node's name wrote statements of its own into the "Remove render
    node" confirmation (the servers accept it), and a right-to-left override from a hostile server
    turned the rest of the sentence around. Names are put into sentences through `one_line`: in
    the confirmation, the dialogs' titles and headings, the banners and the institution chooser."""
    screen = _node_screen(qtbot, fake_sivr, fake_context, SPOOF)
    screen.remove(screen.table.selected())
    box = screen.confirm_box
    assert box.text() == (f"Remove {SPOOF_SHOWN} (https://10.0.0.9:5003) from \u2068{HEBREW} Hospital \u2069's "
                          "registry? Records registered on it become unreachable.")
    x = _line_x(box.text(), box.findChild(QLabel, "qt_msgbox_label").font())
    isolate = range(box.text().index("\u2068") + 1, box.text().index("\u2069") + 1)
    outside = [x[position] for position in range(len(x)) if position not in isolate]
    assert outside == sorted(outside)  # drawn left to right, all but the isolated Hebrew name
    texts = _shown_texts(screen)
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    assert screen.banner.text() == f"Node {SPOOF_SHOWN} removed from the registry."

    screen.table.view.selectRow(0)
    screen.edit(screen.table.selected())
    texts += _shown_texts(screen)
    qtbot.mouseClick(screen.dialog.buttons.button(QDialogButtonBox.StandardButton.Save), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    assert screen.banner.text() == f"Node {SPOOF_SHOWN} saved."
    texts += _shown_texts(screen)
    assert f"Edit render node {SPOOF_SHOWN}" in texts
    assert f"\u2068{HEBREW} Hospital \u2069" in texts  # the institution chooser
    _assert_one_line(texts)


def _assert_one_line(texts: list[str]) -> None:
    """SPOOF was shown, and everywhere as `one_line` shows it."""
    assert any(SPOOF_SHOWN in text for text in texts)
    for text in texts:
        assert not set(text) & set("\u2028\u2029\u0085\u202e\u2066"), text
        assert "old-ct" not in text or SPOOF_SHOWN in text, text


def _loaded(qtbot, screen):
    qtbot.addWidget(screen)
    screen.show()
    screen.refresh()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    screen.table.view.selectRow(0)
    return screen


def _answer_no(box: QMessageBox) -> None:
    box.button(QMessageBox.StandardButton.No).click()


def test_a_user_s_and_an_institution_s_names_are_one_line_in_the_users_screen(qtbot, fake_sivr, fake_context):
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution(SPOOF)]
    fake_sivr.answers["/api/v1/users"] = [{**SYSTEM_ADMIN_USER, "id": "u1", "username": SPOOF}]
    screen = _loaded(qtbot, UsersScreen(fake_context))
    user = screen.table.selected()
    texts = []
    for question in (screen.toggle_active, screen.remove):
        question(user)
        texts += _shown_texts(screen)
        _answer_no(screen.confirm_box)
    for form in (screen.edit, screen.reset_password, lambda _: screen.create()):
        form(user)
        texts += _shown_texts(screen)
        screen.dialog.reject()
    assert f"Edit user {SPOOF_SHOWN}" in texts and f"Reset password of {SPOOF_SHOWN}" in texts
    _assert_one_line(texts)


@pytest.mark.parametrize("screen_class", [InstitutionsScreen, RecordTypesScreen])
def test_names_are_one_line_in_the_toplevel_s_collections(qtbot, fake_sivr, fake_context, screen_class):
    fake_sivr.answers[screen_class.path] = [{"id": "r1", "name": SPOOF, "code": SPOOF, "address": "",
                                             "server_url": "https://clinic.example.org:5002"}]
    screen = _loaded(qtbot, screen_class(fake_context))
    screen.remove(screen.table.selected())
    texts = _shown_texts(screen)
    _answer_no(screen.confirm_box)
    screen.edit(screen.table.selected())
    texts += _shown_texts(screen)
    screen.dialog.reject()
    _assert_one_line(texts)


def test_audit_sources_and_a_patient_s_name_are_one_line(qtbot, fake_sivr, fake_context):
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution(SPOOF)]
    fake_sivr.answers["/api/v1/nodes"] = [fake_sivr.node(0, SPOOF)]
    fake_sivr.answers["/api/v1/audit"] = []
    fake_sivr.answers["/api/v1/patients"] = [{"id": "44444444-4444-4444-8444-444444444444", "last_name": SPOOF,
                                              "first_name": HEBREW, "birth_date": "1970-03-02"}]
    screen = _loaded(qtbot, AuditScreen(fake_context))
    screen.find_patient()
    screen.picker.query.setText("old")
    screen.picker.search()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    screen.picker.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert screen.patient_name.text() == f"{SPOOF_SHOWN}, \u2068{HEBREW}\u2069 · born 1970-03-02"
    texts = _shown_texts(screen)
    assert f"{SPOOF_SHOWN} › {SPOOF_SHOWN} (render node)" in texts
    _assert_one_line(texts)


def test_node_health_s_problems_are_one_line_each(qtbot, fake_sivr, fake_context):
    fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution(SPOOF)]
    fake_sivr.answers["/api/v1/nodes"] = [fake_sivr.node(0, SPOOF)]
    fake_sivr.answers["/node-0/api/v1/node"] = (503, {"error": {"code": "unavailable", "message": SPOOF}})
    screen = NodeHealthScreen(fake_context)
    screen.auto.setChecked(False)
    _loaded(qtbot, screen)
    assert screen.problems.text() == f"{SPOOF_SHOWN} · {SPOOF_SHOWN}: {SPOOF_SHOWN}"


@pytest.mark.parametrize(("screen_class", "path", "row", "sent"), [
    (NodesScreen, "/api/v1/nodes", {"name": 1234}, "name 1234 (int, not text) for this render node"),
    (UsersScreen, "/api/v1/users", {**SYSTEM_ADMIN_USER, "full_name": ["Root"]},
     "full_name ['Root'] (list, not text) for this user"),
    (InstitutionsScreen, "/api/v1/institutions", {"name": "Clinic", "address": {"street": 1}},
     "address {'street': 1} (dict, not text) for this institution"),
    (RecordTypesScreen, "/api/v1/record-types", {"code": 7, "name": "CT"},
     "code 7 (int, not text) for this record type"),
])
def test_a_field_of_another_type_than_text_is_a_message_not_a_half_built_dialog(qtbot, fake_sivr, fake_context,
                                                                                 screen_class, path, row, sent):
    """A number where a form shows text raised TypeError in the Edit button's slot (pytest-qt
    fails a test on it): the administrator was told nothing, and a half-built dialog was left
    behind at each click."""
    if path != "/api/v1/institutions":
        fake_sivr.answers["/api/v1/institutions"] = [fake_sivr.institution()]
    fake_sivr.answers[path] = [{"id": "r1", **row}]
    screen = _loaded(qtbot, screen_class(fake_context))
    edit = next(button for button in screen.findChildren(QPushButton) if button.text() == "Edit…")
    qtbot.mouseClick(edit, Qt.MouseButton.LeftButton)
    assert screen.banner.text() == f"The server sent {sent}; is this a SIVR server of the same version?"
    assert screen.findChildren(FormDialog) == []


def test_a_patient_listed_without_a_textual_id_is_the_picker_s_message(qtbot, fake_sivr, fake_context):
    """The chosen patient's id went into the patient field in the dialog's accepted slot: a number
    raised TypeError there."""
    fake_sivr.answers["/api/v1/audit"] = []
    fake_sivr.answers["/api/v1/patients"] = [{"id": 5, "last_name": "Kovač", "first_name": "Ana"}]
    screen = _loaded(qtbot, AuditScreen(fake_context))
    screen.find_patient()
    screen.picker.query.setText("kova")
    screen.picker.search()
    qtbot.waitUntil(lambda: screen.ctx.runner.pending == 0, timeout=WAIT_MS)
    assert "listed at /api/v1/patients an item without id" in screen.picker.banner.text()
    assert screen.picker.table.model.rowCount() == 0


def test_a_cell_shows_a_server_s_text_on_one_line_and_its_tooltip_is_bounded(qapp):
    """A hostile institution server's node named with line separators and an override, its store
    three million characters: the cells showed both raw (statements of their own in the name, the
    text after the override reversed), and a hover over the store laid out the whole value as a
    tooltip, the console frozen for seconds each time."""
    model = NodesModel()
    model.set_rows([{"name": SPOOF, "url": "https://10.0.0.9:5003", "store": "x" * 3_000_000,
                     "created_at": "2026-12-06T06:00:00Z"}])
    cell = {column: model.index(0, column) for column in range(model.columnCount())}
    assert model.data(cell[0], Qt.ItemDataRole.DisplayRole) == SPOOF_SHOWN
    assert len(model.data(cell[2], Qt.ItemDataRole.DisplayRole)) == SHOWN_TEXT_MAX
    tip = model.data(cell[2], Qt.ItemDataRole.ToolTipRole)
    assert TOOLTIP_TEXT_MAX <= len(tip) < TOOLTIP_TEXT_MAX + 100  # as Qt's rich text: a few tags around it
    assert "\u202e" not in model.data(cell[0], Qt.ItemDataRole.ToolTipRole)
