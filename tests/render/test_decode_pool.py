"""The decode worker pool on its own: every way a job can go wrong costs one worker, which is replaced."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from daemons.render.ingest.isolation import DecodePool, IsolatedFailure, IsolationLimits


def _pid() -> int:
    return os.getpid()


def _abort() -> None:
    os.abort()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _spin() -> None:
    while True:
        pass


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _allocate(mib: int) -> int:
    return int(np.ones(mib * 2**20, dtype=np.uint8).sum())


def _niceness() -> int:
    return os.nice(0)


def _panic() -> None:
    from rle.rle import decode_segment

    decode_segment(b"")  # pylibjpeg-rle 2.2 panics on an empty segment


@pytest.fixture
def pool():
    the_pool = DecodePool(IsolationLimits(workers=1, memory_mb=256, cpu_s=2, timeout_s=3.0, nice=5, codec_threads=1))
    yield the_pool
    the_pool.close()


@pytest.mark.parametrize(("job", "args", "reason"), [
    (_abort, (), "crashed (SIGABRT)"),
    (_sleep, (30,), "longer than 3 s"),
    (_allocate, (1024,), "more than the 256 MiB"),
    (_panic, (), "panicked"),
])
def test_a_failing_job_costs_one_worker(pool, job, args, reason):
    first = pool.call(_pid)
    assert first != os.getpid()
    with pytest.raises(IsolatedFailure) as failure:
        pool.call(job, *args)
    assert reason in failure.value.reason
    assert pool.call(_allocate, 16) == 16 * 2**20  # the pool still works (with a fresh worker if it died)
    if "panicked" in reason or "MiB" in reason:
        assert pool.call(_pid) == first  # caught inside the worker: the process lives on
    else:
        assert pool.call(_pid) != first and pool.stats()["replaced"] == 1


def test_workers_yield_the_cores_to_the_node(pool):
    """Uploads' checks run below the node's priority (decode.nice), so that on busy cores the
    viewers' rendering in the node is scheduled first (bench/upload_interference.py)."""
    assert pool.call(_niceness) == min(os.nice(0) + 5, 19)


def test_cpu_time_is_limited_per_job():
    """RLIMIT_CPU counts from each job's start, so a long-lived worker is not killed for its past work."""
    pool = DecodePool(IsolationLimits(workers=1, memory_mb=256, cpu_s=1, timeout_s=120.0, nice=0, codec_threads=1))
    try:
        first = pool.call(_pid)
        for _ in range(3):
            pool.call(_burn, 0.6)  # 1.8 s of CPU in all, 0.6 s per job
        assert pool.call(_pid) == first
        with pytest.raises(IsolatedFailure, match="more than 1 s of CPU time"):
            pool.call(_spin)
        assert pool.call(_pid) != first
    finally:
        pool.close()


def test_map_reports_each_item_in_order(pool):
    results = pool.map(_allocate, [(1,), (2,)], failed=lambda r: False)
    assert results == [2**20, 2 * 2**20]


@pytest.mark.parametrize("override, message", [
    ({"decode__workers": 0}, "decode.workers must be at least 1, got 0"),
    ({"decode__memory_mb": 8}, "decode.memory_mb must be at least 64, got 8"),
    ({"decode__timeout_s": 0}, "decode.timeout_s must be above 0, got 0.0"),
    ({"decode__nice": -5}, "decode.nice must be from 0 to 19, got -5"),
    ({"decode__nice": 20}, "decode.nice must be from 0 to 19, got 20"),
    ({"decode__codec_threads": 0}, "decode.codec_threads must be from 1 to 64, got 0"),
])
def test_decode_limits_are_checked_at_start(make_node, override, message):
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_node(**override)


def test_a_worker_taken_over_by_one_file_cannot_read_another_through_proc(pool):
    """Every worker runs as the node's user: one that a hostile file took over could read another
    worker's memory (the next upload's pixels) through /proc, were the workers dumpable."""
    from shared.dumpable import is_dumpable

    assert pool.call(is_dumpable) is False


def _report_dumpable(conn) -> None:
    from shared.dumpable import is_dumpable

    conn.send(is_dumpable())  # as forked, before any code of the worker's own
    conn.close()


def test_the_forkserver_the_workers_come_from_is_not_dumpable(pool):
    """The forkserver is exec'd (the mark reset) and lives as long as the node: dumpable, another
    unit's process of the same user could read the render unit's keys through its /proc/<pid>/root.
    A process it forks keeps its mark, so one that sets none of its own shows the forkserver's."""
    import multiprocessing

    from shared.dumpable import is_dumpable

    assert pool.call(is_dumpable) is False  # the pool's forkserver is running, with its preloads
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("forkserver").Process(target=_report_dumpable, args=(send,))
    child.start()
    send.close()
    assert receive.poll(30), "the process forked by the forkserver never reported"
    assert receive.recv() is False
    child.join(10)
