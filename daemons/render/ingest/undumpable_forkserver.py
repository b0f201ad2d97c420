"""Imported first by the decode pool's forkserver (`isolation.PRELOAD`): marks that process not dumpable.

The forkserver is a Python started with execve, which resets the mark `sivr serve` gave gunicorn's
arbiter (`shared.dumpable`), and it lives as long as the node. Dumpable, any process of the `sivr`
user (another unit's, taken over) could open its /proc files, and `/proc/<pid>/root` is the render
unit's own view of the file system: its store key, its receipt key, its database, whatever the
unit hides from the others. multiprocessing runs none of the node's code in the forkserver but the
imports it preloads, so this import is where the mark is set; every worker it forks inherits it.
"""

from shared.dumpable import make_undumpable

make_undumpable()
