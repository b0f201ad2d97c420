"""What bodies being stored (browser uploads, STOW-RS, C-STORE) take at once in one server
process: memory, bounded by `limits.upload_memory_mb`, and over HTTP request threads, bounded per
user by `limits.uploads_per_user` (`UploadsPerUser`).

A body is held in memory while it is stored: the bytes received, each instance's copy for the
ingest and the ingest's own, about `BODY_COPIES` times the body at its peak (docs/conformance.md).
A render worker serves 16 requests at once and its DICOM listener as many associations, so bodies
near `limits.max_upload_mb` (2 GiB) arriving together could ask for tens of GiB, and the kernel
would kill the worker with every request it serves.

Three choices keep the bound from becoming a denial of service of its own:

- A body reserves its share as its bytes arrive, never ahead of them from its announced length: a
  client trickling a body in (chunked, or with a large Content-Length) holds only what it sent.
- It reserves after the request's cheap checks (token, role, institution, media types), inside
  the reading of the body, so a request refused for those is answered as before, never "busy".
- There is no waiting for room: a body that finds none is refused at once (503 `busy` with
  Retry-After over HTTP; over DIMSE its association is aborted, the only way to stop a C-STORE's
  bytes), so no worker thread is held waiting, and what it reserved is freed.

A body alone is always admitted (its size is bounded by `limits.max_upload_mb` elsewhere): only
bodies at once are bounded.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from flask import Request

from shared.errors import ApiError

MIB = 1024 * 1024
#: Copies of a body held at the peak of storing it (the body, its instances, the ingest's).
BODY_COPIES = 3
RETRY_AFTER_S = "10"
#: What an upload refused for its sender's uploads at once is answered (`UploadsPerUser`).
TOO_MANY_UPLOADS = 429

log = logging.getLogger(__name__)


class UploadMemoryFull(Exception):
    """No room for more of a body now; nothing of it is stored, and the sender may retry."""


class UploadMemory:
    """A budget of bytes shared by the bodies being stored in one server process."""

    def __init__(self, budget_bytes: int):
        self.budget = max(1, budget_bytes)
        self.used = 0
        self._lock = threading.Lock()

    @contextmanager
    def reservation(self) -> Iterator[Reservation]:
        """A body's reservation, empty at first and freed when the body has been stored or refused."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            reservation.release()


class Reservation:
    """What one body holds of its process's `UploadMemory`."""

    def __init__(self, memory: UploadMemory):
        self.memory = memory
        self.held = 0
        self.released = False

    def grow_to(self, body_bytes: int) -> None:
        """Hold room for a body of which `body_bytes` have arrived; `UploadMemoryFull` when other
        bodies hold so much that it does not fit (it keeps what it held: release it or end the
        `reservation` block). Once released it holds nothing more: a thread still receiving the
        body must not reserve room that nothing would free."""
        memory = self.memory
        with memory._lock:
            need = body_bytes * BODY_COPIES - self.held
            if need <= 0 or self.released:
                return
            alone = memory.used == self.held
            if not alone and memory.used + need > memory.budget:
                raise UploadMemoryFull(
                    f"this server process is storing as many bodies as its memory allows: "
                    f"{memory.used // MIB} of {memory.budget // MIB} MiB reserved (limits.upload_memory_mb), "
                    f"this one would need {(self.held + need) // MIB} MiB so far")
            memory.used += need
            self.held += need

    def release(self) -> None:
        with self.memory._lock:
            self.memory.used -= self.held
            self.held = 0
            self.released = True


class UploadsPerUser:
    """How many bodies each user sends to one server process at once, bounded.

    The front streams a DICOM upload to the node as it arrives (daemons/front.py), so each one holds
    a request thread of the node until its last byte, and a client may send its bytes as slowly as it
    likes. Without a bound, one account (a stolen password, a runaway script) sending as many uploads
    as the process has threads, each a byte now and then, left it answering nobody (attack 114). With
    it, one user holds at most `most` of a process's threads with uploads (half of them by default,
    `limits.uploads_per_user`); one more is refused at once, before its body is read, with 429
    `too_many_uploads` and Retry-After, and may be sent again when one of the others has ended.
    C-STORE is not counted here: its associations are bounded per address (`dimse.admission`).
    """

    def __init__(self, most: int):
        self.most = max(1, most)
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, user_id: str) -> Iterator[None]:
        """Hold one of `user_id`'s upload slots while the block runs; ApiError 429 when none is free."""
        with self._lock:
            held = self._held.get(user_id, 0)
            if held >= self.most:
                raise ApiError(TOO_MANY_UPLOADS, "too_many_uploads",
                               f"you are already sending {held} uploads to this server process at once, the most "
                               "it takes from one user (limits.uploads_per_user); nothing of this one was read or "
                               "stored: send it again when one of the others has ended",
                               headers={"Retry-After": RETRY_AFTER_S})
            self._held[user_id] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._held.pop(user_id) - 1
                if left:
                    self._held[user_id] = left


@contextmanager
def stored_body(memory: UploadMemory, uploads: UploadsPerUser, user_id: str) -> Iterator[Reservation]:
    """For a view that stores its request body, before it reads any of it: one of the sender's
    upload slots (`Ingest.uploads`, 429 when none is free) and the body's reservation in the
    process's memory budget (`Ingest.memory`), both freed when the view is done; no room is 503
    `busy` with Retry-After."""
    with uploads.slot(user_id), memory.reservation() as reservation:
        try:
            yield reservation
        except UploadMemoryFull as exc:
            log.warning("a body to store was refused: %s", exc)
            raise ApiError(503, "busy", f"{exc}; nothing was stored, retry shortly",
                           headers={"Retry-After": RETRY_AFTER_S}) from exc


class SpoolingRequest(Request):
    """The render node's request: every file of a form goes to a temporary file as it arrives.
    werkzeug keeps a file of up to 500 KiB in memory while the form is parsed, so a form of
    thousands of small files was held whole before the view could count it; on disk it counts only
    as each file is read (`api.records`)."""

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return tempfile.TemporaryFile("rb+")
