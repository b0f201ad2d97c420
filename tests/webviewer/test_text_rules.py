"""The viewer shows as U+FFFD exactly what the servers refuse in typed one-line text (bidirectional
controls, C1 controls, line separators)
(`shared.shown_text.NOT_SHOWN`): the class is written in Python and in the viewer's JavaScript,
and this test holds the two to one definition."""

from __future__ import annotations

import re
from pathlib import Path

from shared.shown_text import NOT_SHOWN

API_JS = Path(__file__).resolve().parents[2] / "webviewer" / "static" / "js" / "api.js"


def test_the_viewer_neutralises_the_bidirectional_controls_the_servers_refuse():
    found = re.search(r"^const NOT_SHOWN = /(\[[^\]/]*\])/g;$", API_JS.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, "webviewer/static/js/api.js no longer defines NOT_SHOWN as one character class"
    viewer = re.compile(found.group(1))  # \uXXXX and ranges mean the same in both regex dialects
    differing = [f"U+{point:04X}" for point in range(0x110000)
                 if bool(viewer.fullmatch(chr(point))) != bool(NOT_SHOWN.fullmatch(chr(point)))]
    assert not differing, f"the viewer and the servers disagree on {differing[:10]}"
