"""Running network calls off the GUI thread so the window never freezes.

A `TaskRunner` lives in the GUI thread. `submit(fn, on_done, on_error)` runs `fn` on a
`QThreadPool` worker; the worker reports back through a signal connected to the runner's own slots,
so Qt queues the callback into the GUI thread (a plain Python callable connected directly could
run on the worker thread and touch widgets from there). Callbacks whose owner widget has been
deleted in the meantime are dropped instead of crashing (a screen of a session that has ended
cannot end the next one either).

Calls made on a timer (Node health's checks of every render node) run on a pool of their own:
a node that hangs holds a thread until the polling timeout, and with one pool for everything, 40
hung nodes kept the Users list waiting 15 s behind them.

A refused token is everybody's business: any task failing with `SessionEnded` also emits
`session_ended`, which the window answers by going back to the login screen.

A callback that raises (an answer of a shape its screen did not expect) never reaches Qt: an
exception escaping a slot took the whole console down (`Fatal Python error: none_dealloc`). It is
logged, and the task counts as failed with `bad_response`: its error handler runs, so a screen
waiting on it (a busy login button) is released, and without one the status bar says it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import shiboken6
from PySide6.QtCore import QDeadlineTimer, QObject, QRunnable, QThreadPool, Signal, Slot

from admin_gui.api_client import ApiError, SessionEnded

log = logging.getLogger(__name__)

#: Threads of the pool for calls made on a timer (`submit(..., polling=True)`).
POLLING_THREADS = 8


class _TaskSignals(QObject):
    done = Signal(int, object)
    failed = Signal(int, object)


class _Task(QRunnable):
    def __init__(self, task_id: int, fn: Callable[[], Any], signals: _TaskSignals):
        super().__init__()
        self._id = task_id
        self._fn = fn
        self._signals = signals

    def run(self) -> None:
        try:
            result = self._fn()
        except ApiError as exc:
            self._signals.failed.emit(self._id, exc)
        except Exception as exc:
            self._signals.failed.emit(self._id, ApiError(f"Unexpected error: {exc!r}", "client_error"))
        else:
            self._signals.done.emit(self._id, result)


@dataclass
class _Pending:
    on_done: Callable[[Any], None]
    on_error: Callable[[ApiError], None] | None
    owner: QObject | None


class TaskRunner(QObject):
    """Submits callables to a thread pool and delivers their outcome in the GUI thread."""

    busy_changed = Signal(bool)
    session_ended = Signal(str)
    #: Any failure without its own handler, for the status bar.
    unhandled_error = Signal(str)

    def __init__(self, parent: QObject | None = None, max_threads: int = 8):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._polling_pool = QThreadPool(self)
        self._polling_pool.setMaxThreadCount(POLLING_THREADS)
        self._signals = _TaskSignals()
        self._signals.done.connect(self._on_done)
        self._signals.failed.connect(self._on_failed)
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)

    @property
    def pending(self) -> int:
        """Tasks submitted whose callback has not run yet (tests wait for 0)."""
        return len(self._pending)

    def submit(
        self,
        fn: Callable[[], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[ApiError], None] | None = None,
        owner: QObject | None = None,
        polling: bool = False,
    ) -> None:
        """Run `fn` off the GUI thread; `polling` for a call made on a timer (its own pool)."""
        task_id = next(self._ids)
        self._pending[task_id] = _Pending(on_done, on_error, owner)
        if len(self._pending) == 1:
            self.busy_changed.emit(True)
        (self._polling_pool if polling else self._pool).start(_Task(task_id, fn, self._signals))

    def wait_for_done(self, msecs: int = -1) -> bool:
        """Block until both pools are idle, `msecs` in all (used at shutdown so no thread outlives the app)."""
        deadline = QDeadlineTimer(msecs)
        return all(pool.waitForDone(deadline.remainingTime()) for pool in (self._pool, self._polling_pool))

    def _take(self, task_id: int) -> _Pending | None:
        pending = self._pending.pop(task_id, None)
        if not self._pending:
            self.busy_changed.emit(False)
        if pending is None or (pending.owner is not None and not shiboken6.isValid(pending.owner)):
            return None
        return pending

    @Slot(int, object)
    def _on_done(self, task_id: int, result: Any) -> None:
        pending = self._take(task_id)
        if pending is None:
            return
        try:
            pending.on_done(result)
        except Exception as exc:
            log.exception("a screen could not take a server's answer")
            self._fail(pending, ApiError(f"The server's answer could not be shown ({exc!r}); is this a SIVR "
                                         "server of the same version?", "bad_response"))

    @Slot(int, object)
    def _on_failed(self, task_id: int, error: ApiError) -> None:
        pending = self._take(task_id)
        if pending is None:
            return
        if isinstance(error, SessionEnded):
            self.session_ended.emit(error.message)
            return
        self._fail(pending, error)

    def _fail(self, pending: _Pending, error: ApiError) -> None:
        if pending.on_error is None:
            self.unhandled_error.emit(error.message)
            return
        try:
            pending.on_error(error)
        except Exception:
            log.exception("a screen could not show an error")
            self.unhandled_error.emit(error.message)


class LatestOnly:
    """Answers only the last call started of each name, for whatever shows one call's answer.

    A slow server can answer an earlier call after a later one: a screen's first load, read
    before a change, replaced the later load's rows (a deleted user back), and in "Find patient"
    the first search's patients replaced the second's. One rule for both: each `guard` starts a
    new call of `name`, and the callbacks it returns run only while that call is the last one
    started of `name`.
    """

    def __init__(self) -> None:
        self._started: dict[str, int] = {}

    def guard(self, name: str, *callbacks: Callable[[Any], None]) -> tuple[Callable[[Any], None], ...]:
        """`callbacks`, each run only while this call is the last one started of `name`."""
        self._started[name] = ticket = self._started.get(name, 0) + 1

        def latest_only(callback: Callable[[Any], None]) -> Callable[[Any], None]:
            def answered(result: Any) -> None:
                if self._started.get(name) == ticket:
                    callback(result)
            return answered

        return tuple(latest_only(callback) for callback in callbacks)
