"""How a text that came from outside (DICOM values, names other users typed) is shown: its
bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069) as U+FFFD.

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
BIDI_CONTROLS = re.compile(f"[{BIDI}]")
#: Python's line boundaries (str.splitlines), where plain-text displays (Qt's) break lines too, and
#: tabs; a run of them is one break.
LINE_BREAKS = re.compile("[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")


def as_shown(text: str) -> str:
    """`text` with its bidirectional controls as U+FFFD, visibly, so that a client may echo what it showed."""
    return BIDI_CONTROLS.sub("\ufffd", text)


def on_one_line(text: str) -> str:
    """`text` with each run of line breaks (and tabs) as one space: a sentence that quotes it stays one
    line (a node name with line separators wrote sentences of its own into a confirmation)."""
    return LINE_BREAKS.sub(" ", text)
