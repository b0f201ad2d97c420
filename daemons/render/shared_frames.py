"""A record's decoded frames in memory every worker process of a render node maps: one copy per node.

A render node may be served by several gunicorn workers (`server.workers`), so that it uses every
core. Decoding a series in each of them would multiply its RAM by the number of workers and its
load time by as much CPU; instead the frames live in one file of the node's runtime folder
(`daemons.render.runtime`, on tmpfs: /dev/shm), which each worker maps:

    header (HEADER bytes: JSON shape and dtype) | state of each frame (uint8) | pixels (C order)

- A frame's state is PENDING, READY (its pixels are written) or FAILED (its reason is a line of the
  side file `<name>.errors`); a state is written after the pixels, so a reader never sees a READY
  frame half written. Two processes may decode the same frame (a viewer's request does not wait
  for another worker's queue): they write the same values.
- The worker that creates the file leads its loading and holds an exclusive `flock` on it until
  every frame is done; the kernel drops the lock when that process dies, so another worker sees
  a load left half done (`try_lead` succeeds on an incomplete file) and finishes it.
- The file is created beside its final name and linked into place whole (header written, lock
  held), so a worker that opens it never sees a header half written or a load without a leader.
- The file's memory is reserved when it is created (what the node's budget counts): a tmpfs
  without room refuses the load (OSError ENOSPC) instead of killing a worker with SIGBUS when it
  writes a frame. Unlinking it (eviction, a series that grew) frees the memory when the last
  worker mapping it lets go; workers notice with `gone`.

`private` gives the same interface over anonymous memory, for a record only one process reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import mmap
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
HEADER = 4096
PENDING, READY, FAILED = 0, 1, 2
SUFFIX = ".frames"
ERRORS_SUFFIX = ".errors"
TEMP_SUFFIX = ".tmp"  # a frames file being created, linked into place once reserved


def _pixel_offset(frames: int) -> int:
    """Pixels start on a page after the states, so that every frame is aligned for any dtype."""
    return HEADER + math.ceil(frames / mmap.PAGESIZE) * mmap.PAGESIZE


def pixel_bytes(shape: tuple[int, ...] | list[int], dtype: np.dtype) -> int:
    """The decoded bytes of frames of `shape` and `dtype`: what the node's memory budget counts."""
    return math.prod(shape) * np.dtype(dtype).itemsize


def _size(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return _pixel_offset(shape[0]) + pixel_bytes(shape, dtype)


class SharedFrames:
    """One record's frame states and pixels, mapped from a file of the node's runtime folder
    (`open`) or held in this process alone (`private`)."""

    def __init__(self, buffer: mmap.mmap, shape: tuple[int, ...], dtype: np.dtype,
                 path: Path | None = None, fd: int | None = None, leading: bool = True):
        self.path = path
        self._fd = fd
        self._buffer = buffer
        self.leading = leading
        self._inode = os.fstat(fd).st_ino if fd is not None else None
        self._errors: dict[int, str] = {}
        frames = shape[0]
        self.states = np.frombuffer(buffer, np.uint8, count=frames, offset=HEADER)
        self.pixels = np.frombuffer(buffer, dtype, count=math.prod(shape),
                                    offset=_pixel_offset(frames)).reshape(shape)

    @classmethod
    def private(cls, shape: tuple[int, ...], dtype: np.dtype) -> SharedFrames:
        """Frames in this process's anonymous memory (zero pages until written), always led by it."""
        dtype = np.dtype(dtype)
        return cls(mmap.mmap(-1, _size(shape, dtype)), shape, dtype)

    @classmethod
    def open(cls, folder: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> SharedFrames:
        """The frames named `name` in `folder`, created (and led by the caller) when no worker has
        them yet. ValueError if a file of that name holds another shape or dtype."""
        dtype = np.dtype(dtype)
        path = folder / f"{name}{SUFFIX}"
        header = json.dumps({"shape": list(shape), "dtype": dtype.str}).encode()
        if len(header) > HEADER:
            raise ValueError(f"{name}: a header of {len(header)} bytes does not fit in {HEADER}")
        size = _size(shape, dtype)
        leading = False
        for attempt in range(3):
            try:
                fd = os.open(path, os.O_RDWR)
                break
            except FileNotFoundError:
                try:
                    fd, leading = cls._create(folder, path, header, size)
                    break
                except FileNotFoundError:  # another worker linked it and it was evicted meanwhile
                    if attempt == 2 or not folder.is_dir():
                        raise
        try:
            if not leading:
                stored = json.loads(os.pread(fd, HEADER, 0).rstrip(b"\0"))
                if stored != {"shape": list(shape), "dtype": dtype.str} or os.fstat(fd).st_size != size:
                    raise ValueError(f"{path} holds frames of shape {stored.get('shape')} and dtype "
                                     f"{stored.get('dtype')}, not {list(shape)} {dtype.str}")
            buffer = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(buffer, shape, dtype, path, fd, leading)

    @staticmethod
    def _create(folder: Path, path: Path, header: bytes, size: int) -> tuple[int, bool]:
        """Create the file aside (header, size, lock) and link it into place; (fd, True) if this
        call's file took the name, else the file another worker linked first, opened, and False."""
        temp = folder / f".{uuid.uuid4().hex}{TEMP_SUFFIX}"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.pwrite(fd, header, 0)
            # reserved now: a full tmpfs is an error at load, not a SIGBUS at the first write of a frame
            os.posix_fallocate(fd, 0, size)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.link(temp, path)
        except FileExistsError:
            os.close(fd)
            return os.open(path, os.O_RDWR), False  # FileNotFoundError if evicted meanwhile: `open` retries
        except BaseException:
            os.close(fd)
            raise
        finally:
            temp.unlink(missing_ok=True)
        return fd, True

    # --- loading --------------------------------------------------------------------------------
    def try_lead(self) -> bool:
        """Take the lead of an incomplete load nobody leads (its leader died); True if this process
        leads it now. A complete load needs no leader: False."""
        if self.leading:
            return True
        if self._fd is None or self.done() >= len(self.states):
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.leading = True
        return True

    def release_lead(self) -> None:
        """The load is complete: other workers need no leader any more."""
        if self.leading and self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.leading = False

    def mark(self, index: int, error: str | None) -> None:
        """Frame `index` is decoded (its pixels written) or failed for `error`. The state is set
        whatever happens to the reason's line: a frame left PENDING would keep its load "loading"
        for ever (another worker then shows the failure without its reason).

        A failure never replaces a frame another worker has decoded meanwhile (both claimed it):
        this worker's error (a store timeout, say) says nothing of the pixels already there."""
        if error is not None and self.states[index] == READY:
            return
        if error is not None:
            self._errors[index] = error
            if self.path is not None and not self.gone():
                line = f"{index}\t{' '.join(error.split())}\n".encode()
                try:
                    fd = os.open(self.path.with_suffix(ERRORS_SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    try:
                        os.write(fd, line)  # one write of one line: appended whole
                    finally:
                        os.close(fd)
                except OSError as exc:
                    log.warning("%s: the reason frame %d failed was not kept for other workers: %s",
                                self.path, index, exc)
        self.states[index] = READY if error is None else FAILED

    def done(self) -> int:
        """Frames decoded or failed, by any worker."""
        return int(np.count_nonzero(self.states))

    def ready(self) -> int:
        return int(np.count_nonzero(self.states == READY))

    def errors(self) -> dict[int, str]:
        """Why each failed frame failed (frame index -> reason), whichever worker decoded it. Only
        frames failed now: a reason line an eviction race left for the same content's earlier file
        names a frame that may have decoded since."""
        failed = set(np.flatnonzero(self.states == FAILED).tolist())
        if self.path is not None and not failed <= self._errors.keys():
            with contextlib.suppress(FileNotFoundError):
                for line in self.path.with_suffix(ERRORS_SUFFIX).read_text(encoding="utf-8").splitlines():
                    index, _, reason = line.partition("\t")
                    self._errors[int(index)] = reason  # the latest line of a frame is its reason
        return {index: reason for index, reason in self._errors.items() if index in failed}

    # --- life -----------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def touch(self) -> None:
        """Mark the frames as just used: the node's eviction takes the file used least recently."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.utime(self._fd)

    def gone(self) -> bool:
        """Whether the file was unlinked (evicted, or its series changed) by any worker."""
        if self.path is None:
            return False
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def close(self) -> None:
        """Let go of the file (the mapping stays until the arrays over it are gone)."""
        self.release_lead()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class HeldFrames:
    """A frames file of the node's runtime folder: when it was last used, and its decoded bytes."""

    path: Path
    used_at: float
    pixel_bytes: int


def remove(path: Path) -> None:
    """Take a frames file (and its errors) out of the node: workers mapping it keep its memory
    until they let go of it (`SharedFrames.gone` tells them)."""
    path.unlink(missing_ok=True)
    path.with_suffix(ERRORS_SUFFIX).unlink(missing_ok=True)


def frames_on_node(folder: Path) -> list[HeldFrames]:
    """The frames files in a node's runtime folder, least recently used first."""
    found = []
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.read(HEADER).rstrip(b"\0"))
                stat = os.fstat(handle.fileno())
        except (FileNotFoundError, ValueError):  # unlinked meanwhile, or being created
            continue
        pixels = pixel_bytes(header["shape"], header["dtype"])
        found.append(HeldFrames(path, stat.st_mtime, pixels))
    return sorted(found, key=lambda held: held.used_at)
