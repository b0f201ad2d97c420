"""Admission of request bodies that are stored (uploads, STOW-RS) by the memory they will take.

A body is held in memory while it is stored: the bytes read, each instance's copy for the ingest
and the ingest's own, about three times the body at its peak (docs/conformance.md). A render
worker serves 16 requests at once, so 16 bodies near `limits.max_upload_mb` (2 GiB) could ask for
96 GiB: a burst of uploads, or one caller sending many, would have the kernel kill the worker
and every request it serves. Each such request therefore reserves its share of
`limits.upload_memory_mb` (per server process) before its body is read. One that finds no room
within a few seconds gets `503 busy` with `Retry-After`, as 3D renderings do: waiting longer
would hold a worker thread that viewers' image requests need.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from flask import Flask, current_app, request

from shared.config import Config
from shared.errors import ApiError

MIB = 1024 * 1024
#: Copies of a body held at the peak of storing it (the body, its instances, the ingest's).
BODY_COPIES = 3
#: How long a body waits for room before 503; short, as the waiting request holds a worker thread.
WAIT_S = 5.0
RETRY_AFTER_S = "10"
EXTENSION = "sivr_upload_memory"

F = TypeVar("F", bound=Callable[..., Any])


class UploadMemory:
    """A budget of bytes shared by the bodies being stored in one server process.

    A body's reservation is clamped to the whole budget, so a body alone is always admitted (its
    size is bounded by `limits.max_upload_mb` elsewhere) and only bodies at once are bounded.
    """

    def __init__(self, budget_bytes: int):
        self.budget = max(1, budget_bytes)
        self.used = 0
        self._room = threading.Condition()

    @contextmanager
    def reserved(self, nbytes: int, wait_s: float = WAIT_S) -> Iterator[None]:
        """Hold `nbytes` (at most the budget) while the body is stored; 503 busy when there is no
        room within `wait_s`."""
        need = min(max(0, nbytes), self.budget)
        with self._room:
            if not self._room.wait_for(lambda: self.used + need <= self.budget, timeout=wait_s):
                raise ApiError(
                    503, "busy", f"this node is storing as many uploads as its memory allows ({self.used // MIB} of "
                    f"{self.budget // MIB} MiB reserved, this one needs {need // MIB} MiB); retry shortly",
                    headers={"Retry-After": RETRY_AFTER_S})
            self.used += need
        try:
            yield
        finally:
            with self._room:
                self.used -= need
                self._room.notify_all()


def install_upload_memory(app: Flask, config: Config) -> UploadMemory:
    """The app's budget for stored bodies (`limits.upload_memory_mb`)."""
    budget = app.extensions[EXTENSION] = UploadMemory(int(config["limits"]["upload_memory_mb"]) * MIB)
    return budget


def body_reservation(content_length: int | None, budget: int, max_body: int) -> int:
    """What a body will take at its peak: its announced length times the copies held, the whole
    budget when its length is not announced (chunked: it may grow to the limit), nothing when the
    length is over `max_body` (the view refuses it with 413 before reading a byte)."""
    if content_length is None:
        return budget
    if content_length > max_body:
        return 0
    return content_length * BODY_COPIES


def within_upload_memory(view: F) -> F:
    """Run a view that stores its request body inside the process's upload memory budget (placed
    after the authentication check: an unauthenticated caller never waits for, nor holds, room)."""

    @functools.wraps(view)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        memory: UploadMemory = current_app.extensions[EXTENSION]
        need = body_reservation(request.content_length, memory.budget, current_app.config["MAX_CONTENT_LENGTH"])
        with memory.reserved(need):
            return view(*args, **kwargs)

    return bounded  # type: ignore[return-value]
