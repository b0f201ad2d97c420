"""Daemons that another process of the same user cannot look into (shared.dumpable)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable

import pytest

from shared.dumpable import PR_SET_DUMPABLE, is_dumpable, make_undumpable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")

NOBODY = 65534


def _in_child(work: Callable[[], bytes], as_nobody: bool) -> tuple[int, bytes]:
    """Run `work` in a forked child (as `nobody` when asked and this runs as root: root may read any
    process's /proc files); returns the child's pid and what `work` wrote back. The child lives
    until the caller reads from it, then waits for the pipe `hold` to close."""
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here, only os calls and _exit
        code = 0
        try:
            os.close(report_r)
            os.close(hold_w)
            if as_nobody and os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                # a change of user clears the mark; a daemon exec'd as its user starts dumpable
                ctypes.CDLL(ctypes.util.find_library("c")).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            os.write(report_w, work())
            os.close(report_w)
            os.read(hold_r, 1)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(report_w)
    os.close(hold_r)
    data = os.read(report_r, 4096)
    os.close(report_r)
    _CHILDREN.append((pid, hold_w))
    return pid, data


_CHILDREN: list[tuple[int, int]] = []


@pytest.fixture(autouse=True)
def _end_children():
    yield
    while _CHILDREN:
        pid, hold = _CHILDREN.pop()
        os.close(hold)
        os.waitpid(pid, 0)


def _environ_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb"):
            return b"read"
    except PermissionError:
        return b"refused"


@pytest.mark.parametrize("marked", [False, True])
def test_a_marked_process_hides_its_proc_files_from_its_own_user(marked):
    def target() -> bytes:
        if marked:
            make_undumpable()
        return b"dumpable" if is_dumpable() else b"not dumpable"

    pid, state = _in_child(target, as_nobody=True)
    assert state == (b"not dumpable" if marked else b"dumpable")
    _, seen = _in_child(lambda: _environ_of(pid), as_nobody=True)  # another process of the same user
    assert seen == (b"refused" if marked else b"read")


def test_every_gunicorn_arbiter_marks_itself_before_forking_its_workers():
    """`sivr serve` runs gunicorn with daemons.gunicorn_conf: its `on_starting` hook runs in the
    arbiter before any worker is forked, and fork keeps the mark."""
    from daemons import gunicorn_conf

    def arbiter() -> bytes:
        gunicorn_conf.on_starting(None)
        _, worker = _in_child(lambda: b"dumpable" if is_dumpable() else b"not dumpable", as_nobody=False)
        return worker

    _, worker_state = _in_child(arbiter, as_nobody=False)
    assert worker_state == b"not dumpable"
