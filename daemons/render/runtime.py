"""What the worker processes of one render node share besides the store and the database.

`sivr serve render` makes a fresh folder for the node's run (on tmpfs: /dev/shm) and names it in
SIVR_RENDER_RUNTIME_DIR for the gunicorn workers it starts (gunicorn removes it when it exits:
`daemons.gunicorn_conf`). It holds:

- the decoded frames of loaded records (`daemons.render.shared_frames`), one copy per node;
- the change board: a counter per record (hashed into a fixed table) that a worker bumps when it
  changes a record (append, analysis, deletion), so that the others drop what they cached of it at
  their next request instead of after `storage.manifest_refresh_s`;
- lock files: a series' appends are serialised across workers (`folder_lock`), and exactly one
  worker serves DICOM (`try_hold`);
- each worker's most recent render latencies (`note_latency`), so that the node's health figures
  (`GET /api/v1/node`, the console) give the node's percentiles whichever worker answers.

An app built in a process of its own (the tests, a single-process server) gets a private folder:
its decoded series are unlinked when the registry shuts down, the folder is removed when the
runtime is collected or the process exits. The same code serves one worker or several.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

from daemons.render.shared_frames import SUFFIX, remove
from shared.errors import ApiError

log = logging.getLogger(__name__)
RUNTIME_ENV = "SIVR_RENDER_RUNTIME_DIR"
BOARD_SLOTS = 4096  # a record shares its counter with 1/4096 of the others: at worst a needless recheck
LATENCY_SAMPLES = 2000  # the most recent render latencies each worker keeps
LATENCY_PREFIX = "latency-"


def make_runtime_folder(prefix: str) -> str:
    """A fresh folder for one run of a node's workers, in memory (/dev/shm) where there is one.

    Its name carries this process's id (`sivr serve` becomes the gunicorn master, whose exit hook
    removes it). A master killed outright cannot: folders of this prefix whose process is gone
    are removed here, so their memory comes back at the next start instead of at the next boot.
    """
    shm = Path("/dev/shm")
    parent = Path(str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir())
    for stale in parent.glob(f"{prefix}*-*"):
        pid = stale.name.removeprefix(prefix).split("-", 1)[0]
        try:
            ours = stale.stat().st_uid == os.getuid()
        except FileNotFoundError:  # another node starting now removed it first
            continue
        if pid.isdigit() and ours and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class NodeRuntime:
    """The runtime folder of this node's workers, its change board and its locks."""

    def __init__(self, folder: Path, shared: bool):
        self.folder = folder
        self.shared = shared
        fd = os.open(folder / "changes", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = BOARD_SLOTS * 8
            os.posix_fallocate(fd, 0, size)  # reserved: a full tmpfs fails the start, not a later change's write
            self._board = np.frombuffer(mmap.mmap(fd, size), np.uint64)
        finally:
            os.close(fd)
        self._held: list[int] = []
        self._board_lock = FolderLock(folder / "changes.lock")
        self._latency_lock = threading.Lock()
        # pid, count, samples (None, None: the ring could not be made)
        self._latency_ring: tuple[int, np.ndarray | None, np.ndarray | None] | None = None

    @classmethod
    def from_environment(cls) -> NodeRuntime:
        """The folder `sivr serve` made for this node's workers, else a private one for this process."""
        named = os.environ.get(RUNTIME_ENV)
        if named:
            return cls(Path(named), shared=True)
        runtime = cls(Path(make_runtime_folder("sivr-render-private-")), shared=False)
        # its decoded series are memory (tmpfs): freed with the node, not only when the process ends
        weakref.finalize(runtime, shutil.rmtree, runtime.folder, ignore_errors=True)
        return runtime

    def close(self) -> None:
        """The node stops serving: a private folder's decoded series go now (their memory comes
        back), its locks when the runtime is collected or the process exits (an ingest closing
        at exit still takes them). A shared folder is the node's: gunicorn removes it at exit."""
        if not self.shared:
            for path in self.folder.glob(f"*{SUFFIX}"):
                remove(path)

    def check(self) -> None:
        """Refuse (503) before a change the other workers must be told of, if they can no longer be."""
        if not self.folder.is_dir():
            raise folder_gone(self.folder, "it no longer exists")

    # --- the change board ----------------------------------------------------------------------
    @staticmethod
    def _slot(record_id: str) -> int:
        return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "little") % BOARD_SLOTS

    def changed(self, record_id: str) -> None:
        """Tell every worker that this record changed (changes are rare: the bump is locked, so two
        workers bumping at once both count)."""
        slot = self._slot(record_id)
        with self._board_lock:
            self._board[slot] = self._board[slot] + 1

    def change_count(self, record_id: str) -> int:
        """The record's counter: a different value than before means it may have changed."""
        return int(self._board[self._slot(record_id)])

    # --- render latencies ------------------------------------------------------------------------
    def note_latency(self, ms: float) -> None:
        """Keep one render's latency in this worker's ring (a file of the folder, mapped: no system
        call per request). The ring is made by the process that first notes one: a worker forked
        after the app was built writes its own, not its parent's."""
        with self._latency_lock:
            ring, pid = self._latency_ring, os.getpid()
            if ring is None or ring[0] != pid:
                try:
                    ring = (pid, *_map_ring(self.folder / f"{LATENCY_PREFIX}{pid}", True))
                except OSError as exc:  # the folder is gone (`check` refuses changes): a figure is not worth a 500
                    log.warning("this worker's render latencies are not kept: %s", exc)
                    ring = (pid, None, None)
                self._latency_ring = ring
            _, count, samples = ring
            if count is None or samples is None:
                return
            at = int(count[0])
            samples[at % LATENCY_SAMPLES] = ms
            count[0] = at + 1

    def latencies(self) -> np.ndarray:
        """The recent render latencies of every live worker of the node (ms, in no order). gunicorn
        removes a dead worker's ring (`forget_worker`); one still found here whose process is gone
        (a private folder's, a master killed outright) is removed too."""
        found = []
        for path in self.folder.glob(f"{LATENCY_PREFIX}*"):
            pid = path.name.removeprefix(LATENCY_PREFIX)
            if not pid.isdigit():
                continue
            if not _alive(int(pid)):
                path.unlink(missing_ok=True)
                continue
            try:
                count, samples = _map_ring(path, False)
            except (OSError, ValueError):  # removed meanwhile, not yet its full size, or unreadable now
                continue
            found.append(samples[:min(int(count[0]), LATENCY_SAMPLES)].copy())
        return np.concatenate(found) if found else np.empty(0, np.float32)

    @staticmethod
    def forget_worker(folder: Path, pid: int) -> None:
        """A worker died (gunicorn's `child_exit`): its ring goes before another process takes its pid."""
        (folder / f"{LATENCY_PREFIX}{pid}").unlink(missing_ok=True)

    # --- growth of a series ----------------------------------------------------------------------
    def grew(self, name: str) -> None:
        """Series `name` grew now, through whichever worker: its "series complete" age starts again
        for every worker (the one that completes it may not be the one that took the last instance)."""
        try:
            (self.folder / f"{name}.grew").touch()
        except FileNotFoundError as exc:
            raise folder_gone(self.folder, str(exc.strerror)) from exc

    def forget_growth(self, name: str) -> None:
        """Series `name` is complete: its growth file goes (the folder keeps only growing series)."""
        (self.folder / f"{name}.grew").unlink(missing_ok=True)

    def grown_at(self, name: str) -> float | None:
        """When (wall-clock seconds) series `name` last grew on this node; None if not in this run."""
        try:
            return (self.folder / f"{name}.grew").stat().st_mtime
        except FileNotFoundError:
            return None

    # --- locks ---------------------------------------------------------------------------------
    def lock(self, name: str) -> FolderLock:
        return FolderLock(self.folder / f"{name}.lock")

    def try_hold(self, name: str) -> bool:
        """Hold the lock `name` for the life of this process, if no other worker holds it."""
        fd = os.open(self.folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held.append(fd)  # released by the kernel when this process ends
        return True


def _map_ring(path: Path, create: bool) -> tuple[np.ndarray, np.ndarray]:
    """A worker's latency ring mapped: its count of latencies noted (uint64), then LATENCY_SAMPLES
    float32 slots. Another worker's is mapped read-only."""
    size = 8 + 4 * LATENCY_SAMPLES
    fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o600)
    try:
        if create:  # reserved now: a full tmpfs is an error here, not a SIGBUS at a later render's write
            os.posix_fallocate(fd, 0, size)
        if os.fstat(fd).st_size < size:
            raise ValueError(f"{path} is not a latency ring yet")
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE if create else mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return np.frombuffer(mapped, np.uint64, 1), np.frombuffer(mapped, np.float32, LATENCY_SAMPLES, 8)


class FolderLock:
    """A lock held across the node's workers (flock) and, re-entrantly, across this process's threads:
    `with lock:`."""

    def __init__(self, path: Path):
        self._path = path
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self._threads.acquire()
        if self._depth == 0:
            try:
                try:
                    fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                except FileNotFoundError as exc:
                    raise folder_gone(self._path.parent, str(exc.strerror)) from exc
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            except BaseException:
                self._threads.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
        self._threads.release()


def folder_gone(folder: Path, reason: str) -> ApiError:
    """The runtime folder was removed under the running node (by hand, or a cleaner of /dev/shm):
    its workers no longer share locks or changes, so nothing is done until it is restarted."""
    return ApiError(503, "runtime_unavailable", f"the node's runtime folder {folder} is gone ({reason}); "
                    "restart the node", headers={"Retry-After": "5"})
