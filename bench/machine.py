"""The machine a benchmark ran on, in one line for its results: CPUs, system, and the Python
interpreter that ran SIVR's servers (each benchmark starts them with its own `sys.executable`).

The interpreter's build is part of the figure: about half of a render node's CPU for an image is
the interpreter's own work, and two CPython 3.11 builds on one machine (Debian's, with the
interpreter in the executable, and a self-built one with a shared libpython) gave the node's
request path measurably different costs (docs/benchmarks-2d.md, "Which interpreter ran the node").
"""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    with open("/proc/cpuinfo") as handle:
        return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "cpu")


def interpreter() -> str:
    """`Python 3.11.2 (/usr/bin/python3.11, libpython linked in)`: the version, the executable
    behind the virtual environment, and whether this process runs the interpreter from a shared
    libpython (read from its own memory map)."""
    with open("/proc/self/maps") as handle:
        shared = any("/libpython" in line for line in handle)
    executable = os.path.realpath(sys._base_executable)
    return (f"Python {platform.python_version()} ({executable}, "
            f"{'shared libpython' if shared else 'libpython linked in'})")


def describe() -> str:
    """CPUs, system and interpreter, for a benchmark's `machine` field."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}, {platform.platform()}, {interpreter()}"
