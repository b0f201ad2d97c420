"""Python's cycle collector, run only on the GUI thread.

Network calls run on pool threads (`admin_gui.workers`) and allocate there. Left automatic, the
cycle collector can start on one of those threads and finalize Qt objects caught in reference
cycles (old screens, widgets captured by lambdas) on it, which crashes Qt: a QObject must be
destroyed in its own thread. So while the console runs, automatic collection is off and a timer
on the GUI thread collects with the same thresholds the interpreter would use.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


def collect_due_generation() -> None:
    """Collect the generation automatic collection would collect now, if any."""
    counts, thresholds = gc.get_count(), gc.get_threshold()
    if counts[0] <= thresholds[0]:
        return
    generation = 0
    if counts[1] > thresholds[1]:
        generation = 2 if counts[2] > thresholds[2] else 1
    gc.collect(generation)


class GuiThreadCollector(QObject):
    """Owns the process's cycle collection while the Qt application runs."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = 500):
        super().__init__(parent)
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.timeout.connect(collect_due_generation)
        self._timer.start(interval_ms)

    def stop(self) -> None:
        """Collect everything left on this thread and give collection back to the interpreter."""
        self._timer.stop()
        gc.collect()
        if self._was_enabled:
            gc.enable()
