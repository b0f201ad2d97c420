"""How many refused connections of one address reach the audit log.

Every refusal of the listener (a calling AE title not listed or from another address, the wrong
called AE title, too many associations from one address or in all) is audited `dicom.reject`
with its reason. A refusal costs the peer one packet and the node one database row, so a peer
repeating it as fast as the network carries it would fill the audit table (and the disk) at
thousands of rows a second; it is never an association, which the issue asks to audit each of.
So one address gets at most `per_window` entries per `window_s`; the first entry of its next
window says how many were left out meanwhile. The listener's log keeps a line for every one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Entries one address may write per window, and the window.
PER_WINDOW = 10
WINDOW_S = 60.0
#: Addresses remembered before those whose window ended are forgotten.
ADDRESSES_KEPT = 4096


@dataclass
class _Window:
    started: float
    written: int = 0
    left_out: int = 0


class RefusalAudit:
    """Decides, per refusal, whether it is audited, and what its entry says of those left out."""

    def __init__(self, per_window: int = PER_WINDOW, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def detail(self, address: str, reason: str) -> str | None:
        """The audit detail of this refusal, or None when it is left out of the audit."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(address)
            carried = 0
            if window is None or now - window.started >= self.window_s:
                carried = window.left_out if window is not None else 0
                window = self._windows[address] = _Window(now)
                if len(self._windows) > ADDRESSES_KEPT:
                    self._windows = {key: kept for key, kept in self._windows.items()
                                     if now - kept.started < self.window_s}
            if window.written >= self.per_window:
                window.left_out += 1
                return None
            window.written += 1
        if carried:
            return f"{reason} ({carried} more refusals of {address} in the window before were not audited one by one)"
        return reason
