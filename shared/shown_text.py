"""How a text that came from outside (DICOM values, names other users typed) is shown: its
bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069), its C1
controls and line separators as U+FFFD.

One of them in a name reorders the text shown after it (the birth date and id beside a patient's
name read reversed). The servers refuse them in what users type (`shared.validation`); DICOM values
come as the images carry them, so the viewer (webviewer/static/js/api.js, held to this class by
tests/webviewer/test_text_rules.py) and the console (`admin_gui.widgets.one_line`) show them
replaced. A module of its own, without Flask, so that the console imports it alone.
"""

from __future__ import annotations

import re

#: The class of the controls, for the servers' refusals too.
BIDI = "\u202a-\u202e\u2066-\u2069"
#: What is shown as U+FFFD: the bidirectional controls, the C1 controls and the line and paragraph
#: separators. The servers refuse all of them in typed one-line text (`shared.validation`), and a
#: DICOM value carries C1 controls as a matter of course: a Windows modality's `O’Brien` (byte 0x92
#: of Windows-1252, under ISO_IR 100) reads as U+0092. A client that echoes what it showed (the work
#: list filing a series under the image's description and patient) is then accepted.
NOT_SHOWN = re.compile(f"[{BIDI}\x80-\x9f\u2028\u2029]")
#: Python's line boundaries (str.splitlines), where plain-text displays (Qt's) break lines too, and
#: tabs; a run of them is one break.
LINE_BREAKS = re.compile("[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")


def as_shown(text: str) -> str:
    """`text` with what is not shown (NOT_SHOWN) as U+FFFD, visibly, so that a client may echo what it showed."""
    return NOT_SHOWN.sub("\ufffd", text)


def on_one_line(text: str) -> str:
    """`text` with each run of line breaks (and tabs) as one space: a sentence that quotes it stays one
    line (a node name with line separators wrote sentences of its own into a confirmation)."""
    return LINE_BREAKS.sub(" ", text)
