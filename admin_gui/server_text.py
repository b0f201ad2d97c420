"""A server's text as the console shows it: in a sentence, a table cell or a tooltip.

Names, URLs and messages come from servers and, through them, from other users; a hostile server
may send any characters and any length of them. Every place the console shows such text takes it
through this module.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from shared.shown_text import as_shown, on_one_line

#: The most of a server's text `one_line` puts into a sentence: more than any name a server
#: accepts (200 characters), far less than a hostile server's megabyte "name", laid out whole.
SHOWN_TEXT_MAX = 256
#: The other C0 and C1 controls, DEL, and lone surrogates (JSON carries "\ud800"; Qt drops them).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: Bidirectional classes of right-to-left letters and Arabic digits (unicodedata.bidirectional).
_RIGHT_TO_LEFT = frozenset({"R", "AL", "AN"})


def one_line(value: Any) -> str:
    """A server's text (a name, a URL, a node's problem) as it may be put into a sentence: on one
    line, in its place.

    Qt's plain text still obeys the characters that lay text out, and names come from servers
    and, through them, from other users: a line separator in a node's name (which the servers
    accepted) wrote statements of its own into the "Remove render node" confirmation, and a
    right-to-left override turned the rest of a sentence around. So line breaks become a space,
    other controls U+FFFD, bidirectional embeddings, overrides and isolates U+FFFD as the viewer
    shows them (`as_shown`), a text with right-to-left letters is isolated (U+2068 … U+2069) so
    that it cannot reorder the words around it, and one longer than SHOWN_TEXT_MAX ends in "…".
    A value that is not text (a newer or hostile server's number) is shown as Python writes it.
    """
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if len(text) > SHOWN_TEXT_MAX:
        text = text[:SHOWN_TEXT_MAX - 1] + "…"
    return in_its_place(on_one_line(text))


def in_its_place(line: str) -> str:
    """A server's text already on one line, as it may be put into a sentence: controls,
    bidirectional embeddings, overrides and isolates as U+FFFD, and isolated when it holds
    right-to-left letters (`one_line`). Also the rule of a server's error messages
    (`api_client.server_text`), which are cut by a length of their own: a right-to-left override
    in one turned the console's words after it around in the banner, and ESC and NUL reached the
    screen as sent."""
    text = _CONTROLS.sub("\ufffd", as_shown(line))
    if any(unicodedata.bidirectional(char) in _RIGHT_TO_LEFT for char in text):
        return f"\u2068{text}\u2069"
    return text


#: The most of a server's text a table cell's tooltip shows: the whole of any value a server
#: accepts, where a hostile server's megabyte froze the console for seconds at every hover.
TOOLTIP_TEXT_MAX = 4096


def tooltip_text(text: str) -> str:
    """A cell's whole value for its tooltip: its lines kept, controls that reorder text shown as
    U+FFFD (`as_shown`), and at most TOOLTIP_TEXT_MAX characters."""
    if len(text) > TOOLTIP_TEXT_MAX:
        text = text[:TOOLTIP_TEXT_MAX - 1] + "…"
    return as_shown(text)
