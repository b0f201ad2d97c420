"""Processes that other processes of the same user cannot look into.

Every SIVR daemon runs as one system user (`sivr`), and a render node parses hostile files. Code
that took over one of its processes could, as the same user, open any other daemon's
`/proc/<pid>/mem` (the toplevel's token signing key, a node's store key), `/proc/<pid>/environ`,
or `/proc/<pid>/fd/<n>`, which reopens a file the daemon holds open (its SQLite database)
whatever the unit's `InaccessiblePaths=` hide from the mount namespace. The units' system call
filter already refuses `ptrace`; these files are read with plain `open` and `read`.

A process marked not dumpable (prctl PR_SET_DUMPABLE 0, as OpenSSH's and gpg-agent's are) has
those files owned by root, so only root (CAP_SYS_PTRACE) may open them; it also writes no core
dump, which would hold the same secrets. The mark is kept across fork (gunicorn's workers, once
the arbiter has it) and reset by execve (each process that execs sets it again).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, value: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    result = libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}, {value}) failed: {os.strerror(errno)}")
    return result


def make_undumpable() -> None:
    """Mark this process (and the children it forks) not dumpable; a no-op where there is no prctl
    (the daemons are deployed on Linux; a developer's macOS runs them without the mark)."""
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_DUMPABLE, 0)


def is_dumpable() -> bool:
    """Whether this process is dumpable (always True where there is no prctl)."""
    return not sys.platform.startswith("linux") or _prctl(PR_GET_DUMPABLE) != 0
