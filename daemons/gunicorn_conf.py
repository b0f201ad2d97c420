"""gunicorn settings every layer shares (`sivr serve` passes `--config python:daemons.gunicorn_conf`).

- Its error log writes the same JSON lines as the apps (`shared.logs.JsonFormatter`); the access
  line comes from the app, which knows the route, the user and the request id.
- In prometheus_client's multiprocess mode (several workers; `sivr serve` sets
  PROMETHEUS_MULTIPROC_DIR to a fresh folder per start), a dead worker's live figures are dropped
  and the folder is removed when gunicorn exits, as is a render node's runtime folder
  (`daemons.render.runtime`: its workers' decoded series), whose dead worker's latency ring goes
  at its death. prometheus_client is imported only inside the
  hooks: the arbiter must not pick its value class before the environment is final.
- Each worker, once its app is loaded, takes the app's objects out of the garbage collector's
  passes (`post_worker_init`).
- Log records leave out the fields no line writes (`shared.logs.leave_out_unwritten_fields`), in
  the arbiter and so in every worker it forks.
- The arbiter, and so every worker it forks, is not dumpable (`shared.dumpable`): another process
  of the `sivr` user, a render node's taken over by a hostile file, cannot read its memory or
  reopen its files through /proc.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

from gunicorn.glogging import Logger

from shared.dumpable import make_undumpable
from shared.logs import JsonFormatter, leave_out_unwritten_fields

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

leave_out_unwritten_fields()


class JsonLogger(Logger):
    """gunicorn's logger with its handlers writing JSON lines; the layer comes from `--name sivr-<layer>`."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        formatter = JsonFormatter(str(cfg.proc_name).removeprefix("sivr-"))
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter)


logger_class = "daemons.gunicorn_conf.JsonLogger"


def on_starting(server) -> None:
    make_undumpable()


def child_exit(server, worker) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
    from daemons.render.runtime import RUNTIME_ENV, NodeRuntime

    if os.environ.get(RUNTIME_ENV):
        NodeRuntime.forget_worker(Path(os.environ[RUNTIME_ENV]), worker.pid)


def on_exit(server) -> None:
    from daemons.render.runtime import RUNTIME_ENV

    for variable in (MULTIPROC_ENV, RUNTIME_ENV):
        folder = os.environ.get(variable)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def post_worker_init(worker) -> None:
    """Leave the objects of the loaded app (modules, the app, compiled kernels' wrappers) out of the
    garbage collector's full passes: they live as long as the worker, and each full pass walked
    them all again; a render node taking a series by C-STORE ran one every few dozen instances
    (1.6 s of full passes over 1,000 instances, 0.7 s with this). The start-up's garbage is
    collected first, so none of it is kept for good."""
    gc.collect()
    gc.freeze()
