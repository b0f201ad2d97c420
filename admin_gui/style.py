"""The console's look: Fusion style, a light palette and one stylesheet for spacing and colours.

Kept in one place so every screen looks the same; object names set in the widgets
(`primary`, `muted`, `banner`, …) are the hooks.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#2563eb"
CHEVRON = (Path(__file__).with_name("resources") / "chevron-down.svg").as_posix()

STYLESHEET = f"""
QMainWindow, QWidget#screen, QWidget#loginScreen {{ background: #f4f6fa; }}
QWidget {{ color: #1d2433; }}
QLabel#muted {{ color: #6b7487; }}
QLabel#screenTitle {{ font-size: 20pt; font-weight: 600; }}
QLabel#loginTitle {{ font-size: 20pt; font-weight: 600; color: {ACCENT}; }}
QLabel#dialogTitle {{ font-size: 14pt; font-weight: 600; }}
QLabel#summary {{ font-weight: 600; }}
QLabel#emptyState {{ color: #8a94a6; font-size: 11pt; background: transparent; }}
QScrollArea#problems {{
    background: white; border: 1px solid #dde2ec; border-left: 3px solid #d04437; border-radius: 6px;
    padding: 8px 10px;
}}
QScrollArea#problems QLabel {{ color: #4a5468; }}
QLabel#busy {{ color: {ACCENT}; }}
QFrame#loginCard {{ background: white; border: 1px solid #dde2ec; border-radius: 10px; }}
QFrame#sidebar {{ background: #1e293b; }}
QFrame#sidebar QLabel {{ color: #cbd5e1; }}
QFrame#sidebar QLabel#brand {{ color: white; font-size: 22pt; font-weight: 700; padding-left: 6px; }}
QFrame#sidebar QLabel#brandSub {{ color: #94a3b8; padding-left: 8px; }}
QFrame#sidebar QLabel#sideUser {{ color: #cbd5e1; padding: 6px; }}
QFrame#filterCard {{ background: white; border: 1px solid #dde2ec; border-radius: 8px; }}
QListWidget#nav {{ background: transparent; border: none; outline: none; font-size: 11pt; }}
QListWidget#nav::item {{ color: #cbd5e1; padding: 6px 12px; border-radius: 6px; margin: 1px 0; }}
QListWidget#nav::item:hover {{ background: #334155; }}
QListWidget#nav::item:selected {{ background: {ACCENT}; color: white; }}
QPushButton {{
    background: white; border: 1px solid #cfd6e4; border-radius: 6px; padding: 6px 14px;
}}
QPushButton:hover {{ border-color: {ACCENT}; }}
QPushButton:disabled {{ color: #a3abbb; background: #eef1f6; }}
QPushButton#primary {{ background: {ACCENT}; color: white; border: 1px solid {ACCENT}; font-weight: 600; }}
QPushButton#primary:hover {{ background: #1d4ed8; }}
QPushButton#primary:disabled {{ background: #93b0ee; border-color: #93b0ee; }}
QPushButton#signOut {{ background: #334155; color: #e2e8f0; border: none; }}
QPushButton#signOut:hover {{ background: #475569; }}
QPushButton#bannerClose {{ border: none; background: transparent; padding: 0; }}
QLineEdit, QComboBox, QDateTimeEdit {{
    background: white; border: 1px solid #cfd6e4; border-radius: 6px; padding: 5px 8px;
    min-height: 20px;
}}
QLineEdit:focus, QComboBox:focus, QDateTimeEdit:focus {{ border-color: {ACCENT}; }}
QComboBox::drop-down, QDateTimeEdit::drop-down {{
    subcontrol-origin: padding; subcontrol-position: center right; width: 24px; border: none;
}}
QComboBox::down-arrow, QDateTimeEdit::down-arrow {{ image: url({CHEVRON}); width: 12px; height: 12px; }}
QComboBox QAbstractItemView {{
    background: white; border: 1px solid #cfd6e4; selection-background-color: #dbe6fd;
    selection-color: #1d2433; outline: none;
}}
QLineEdit[invalid="true"], QComboBox[invalid="true"] {{ border: 1px solid #d04437; background: #fff5f4; }}
QLineEdit:disabled, QDateTimeEdit:disabled {{ background: #eef1f6; color: #a3abbb; }}
QFrame#banner[kind="error"] {{ background: #fdecea; border: 1px solid #f5b7b1; border-radius: 6px; }}
QFrame#banner[kind="error"] QLabel {{ color: #922b21; }}
QFrame#banner[kind="info"] {{ background: #e8f6ee; border: 1px solid #a9dfbf; border-radius: 6px; }}
QFrame#banner[kind="info"] QLabel {{ color: #1e6b3f; }}
QScrollArea#formError {{ background: #fdecea; border: 1px solid #f5b7b1; border-radius: 6px; padding: 8px; }}
QScrollArea#formError QLabel {{ color: #922b21; }}
QTableView {{
    background: white; alternate-background-color: #f8fafc; border: 1px solid #dde2ec;
    border-radius: 8px; selection-background-color: #dbe6fd; selection-color: #1d2433;
}}
QTableView::item {{ padding: 0 8px; }}
QHeaderView::section {{
    background: #eef1f6; color: #4a5468; border: none; border-bottom: 1px solid #dde2ec;
    padding: 6px 8px 6px 9px; font-weight: 600;
}}
QStatusBar {{ background: white; border-top: 1px solid #dde2ec; }}
QStatusBar QLabel {{ padding: 0 10px; color: #4a5468; }}
QDialog {{ background: #f4f6fa; }}
"""


def apply_style(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = app.palette()
    palette.setColor(QPalette.ColorRole.Window, QColor("#f4f6fa"))
    palette.setColor(QPalette.ColorRole.Base, QColor("white"))
    palette.setColor(QPalette.ColorRole.Highlight, QColor("#dbe6fd"))
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#1d2433"))
    app.setPalette(palette)
    font = QFont(app.font())
    font.setPointSize(10)
    app.setFont(font)
    app.setStyleSheet(STYLESHEET)
