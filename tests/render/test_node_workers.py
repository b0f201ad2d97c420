"""Several worker processes serve one render node: one decoded copy of a series, seen by all.

Two apps built over the same folder, database, store and runtime folder are two workers of one
node as `sivr serve` runs them (`daemons.render.runtime`); flock and the mapped frames behave
between two open files of one process as between two processes. The real gunicorn node with two
workers is in `test_render_daemon_workers.py`.
"""

from __future__ import annotations

import gc
import io
import json
import os
import time
import uuid
import weakref
from pathlib import Path

import numpy as np
import pydicom
import pytest

from daemons.render import records
from daemons.render.runtime import LATENCY_SAMPLES, RUNTIME_ENV, NodeRuntime
from daemons.render.shared_frames import FAILED, READY, SharedFrames, frames_on_node
from daemons.render.store.manifest import Manifest
from tests.render.conftest import build_node, close_node
from tests.render.synthetic import stack
from tests.render.test_api import _as_new_series


class _NoPool:
    """A loader pool that runs nothing: the worker leading a load decodes no frame (as if it hung)."""

    def submit(self, fn):
        return None

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


@pytest.fixture()
def workers(tmp_path, token_keys, monkeypatch):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv(RUNTIME_ENV, str(runtime))
    (tmp_path / "node").mkdir()
    institution = str(uuid.uuid4())
    pair = [build_node(tmp_path / "node", token_keys, institution_id=institution) for _ in range(2)]
    yield pair
    for harness in pair:
        close_node(harness)


@pytest.fixture()
def ct_files(ct_series) -> list[Path]:
    return sorted(ct_series.glob("*.dcm"))[:10]


def _frames_files(harness) -> list[Path]:
    return [held.path for held in frames_on_node(harness.registry.runtime.folder)]


def test_a_series_loaded_by_one_worker_is_served_by_the_other_from_the_same_memory(workers, ct_files):
    first, second = workers
    record_id = first.upload(ct_files).json["id"]
    assert first.client.post(f"/api/v1/records/{record_id}/load", headers=first.headers()).status_code == 202
    # the other worker serves it at once (it was "not loaded" there: 409)
    reply = second.client.get(f"/api/v1/records/{record_id}/frames/3?format=png", headers=second.headers())
    assert reply.status_code == 200, reply.json
    assert second.client.get(f"/api/v1/records/{record_id}/status", headers=second.headers()).json["state"] in (
        "loading", "ready")
    loaded_first, loaded_second = first.registry.get_loaded(record_id), second.registry.get_loaded(record_id)
    assert loaded_first.wait_complete(60) and loaded_second.wait_complete(60)
    assert loaded_first.shared.leading is False  # done: nobody leads a complete load
    (path,) = _frames_files(first)
    assert loaded_second.shared.path == path  # one file, mapped by both
    loaded_first.pixels[0, 0, 0] += 1  # the same memory, not a copy
    assert loaded_second.pixels[0, 0, 0] == loaded_first.pixels[0, 0, 0]
    loaded_first.pixels[0, 0, 0] -= 1
    assert first.registry.memory_used() == second.registry.memory_used() == loaded_first.pixels.nbytes
    assert first.registry.loaded_count() == second.registry.loaded_count() == 1


def test_a_load_whose_leading_worker_died_is_finished_by_another(workers, ct_files):
    first, second = workers
    record_id = first.upload(ct_files).json["id"]
    first.registry._pool = _NoPool()  # the leader decodes nothing, then dies
    leading = first.registry.load(record_id)
    assert leading.shared.leading and leading.frames_ready == 0
    follower = second.registry.get_loaded(record_id)
    assert not follower.shared.leading
    assert not follower.wait_frame(5, 0.2)  # nobody decodes it; the leader is alive
    first.registry.let_go(record_id)  # the leading process is gone: the kernel drops its lock
    assert follower.wait_complete(60), follower.status()  # the follower found the stalled load and took it over
    assert follower.status()["state"] == "ready" and follower.frames_ready == len(ct_files)


def test_a_frame_that_fails_in_one_worker_is_failed_with_its_reason_in_the_other(tmp_path):
    folder = tmp_path / "runtime"
    folder.mkdir()
    one = SharedFrames.open(folder, "record.content", (3, 4, 4), np.dtype(np.int16))
    other = SharedFrames.open(folder, "record.content", (3, 4, 4), np.dtype(np.int16))
    assert one.leading and not other.leading
    one.pixels[0] = 7
    one.mark(0, None)
    one.mark(1, "ValueError: broken\nsecond line")
    assert other.states.tolist() == [READY, FAILED, 0]
    assert other.pixels[0].tolist() == [[7] * 4] * 4
    assert other.errors() == {1: "ValueError: broken second line"}
    assert not other.try_lead()  # the leader lives
    one.close()
    assert other.try_lead()  # it died: the load is the other's now
    with pytest.raises(ValueError, match="holds frames of shape"):
        SharedFrames.open(folder, "record.content", (4, 4, 4), np.dtype(np.int16))


def test_a_series_grown_through_one_worker_is_seen_grown_by_the_other_at_once(workers, ct_files):
    first, second = workers
    series = _as_new_series(ct_files)
    record_id = first.upload(series[:6]).json["id"]
    assert second.client.get(f"/api/v1/records/{record_id}", headers=second.headers()).json["frames"] == 6
    assert second.client.post(f"/api/v1/records/{record_id}/load", headers=second.headers()).status_code == 202
    assert second.registry.get_loaded(record_id).wait_complete(60)
    grown = first.upload(series[6:])
    assert grown.status_code in (200, 201), grown.json
    # well within storage.manifest_refresh_s (2 s): the change board, not the timer
    assert second.client.get(f"/api/v1/records/{record_id}", headers=second.headers()).json["frames"] == 10
    status = second.client.get(f"/api/v1/records/{record_id}/status", headers=second.headers()).json
    assert status["state"] == "unloaded"  # the old frames are gone from the node; viewers load it again
    assert _frames_files(first) == []


def test_workers_taking_turns_at_one_series_parse_only_what_the_other_added(workers, ct_files, monkeypatch):
    """Two workers appending to one series in turn (STOW-RS requests sent at once): each found the
    series changed by the other, parsed every stored file again and analysed the whole series, at
    every turn. Now a worker parses only the files the other added and leaves the analysis to the
    journal bound and to readers; the series ends whole on both."""
    from daemons.render.ingest import service
    from tests.dicomweb.test_stow_wado import body_of, stow

    parsed: list[str] = []
    analysed: list[int] = []
    real_parse, real_analyse = service.parse_stored_file, service.analyse_files

    def counting_parse(name, raw, limits):
        parsed.append(name)
        return real_parse(name, raw, limits)

    def counting_analyse(files, *args, **kwargs):
        analysed.append(len(files))
        return real_analyse(files, *args, **kwargs)

    monkeypatch.setattr(service, "parse_stored_file", counting_parse)
    monkeypatch.setattr(service, "analyse_files", counting_analyse)
    first, second = workers
    series = [raw for _, raw in _as_new_series(ct_files)]
    assert stow(first, body_of(series[:2])).status_code == 200
    # the files each turn parses: at its first append a worker reads the series whole (the one that
    # created it keeps nothing of the creation); later, only the two files the other worker added
    turns = [(second, series[2:4], 2), (first, series[4:6], 4), (second, series[6:8], 2), (first, series[8:], 2)]
    for worker, files, expected in turns:
        parsed.clear()
        analysed.clear()
        reply = stow(worker, body_of(files))
        assert reply.status_code == 200, reply.get_data(as_text=True)
        assert len(parsed) == expected, f"parsed {sorted(parsed)} for an append of {len(files)}"
        assert analysed == [], f"an append analysed the series ({analysed} files)"
    record_id = first.client.get("/api/v1/worklist", headers=first.headers()).json["items"][0]["id"]
    for worker in workers:  # a reader analyses the grown series: every instance, in one stack
        meta = worker.client.get(f"/api/v1/records/{record_id}", headers=worker.headers()).json
        assert meta["files"] == meta["frames"] == len(ct_files), meta
    # what a worker parsed of a series another changed is kept for its next append a while, not for ever
    ingest = second.app.extensions[service.INGEST_EXTENSION]
    ingest._outdate_parsed(record_id)
    assert ingest.complete_due(time.monotonic(), derive=False) == [] and record_id in ingest._parsed
    assert ingest.complete_due(time.monotonic() + ingest.complete_s, derive=False) == []
    assert record_id not in ingest._parsed


def test_a_series_deleted_through_one_worker_is_gone_from_the_other_at_once(workers, ct_files):
    first, second = workers
    record_id, _ = first.load(ct_files)
    assert second.client.get(f"/api/v1/records/{record_id}/frames/0", headers=second.headers()).status_code == 200
    assert first.client.delete(f"/api/v1/records/{record_id}", headers=first.headers()).status_code == 204
    reply = second.client.get(f"/api/v1/records/{record_id}/frames/0", headers=second.headers())
    assert reply.status_code == 404, reply.json
    assert _frames_files(second) == []


def test_the_memory_budget_is_the_nodes_and_an_evicted_series_leaves_every_worker(workers, ct_files, monkeypatch):
    monkeypatch.setattr(records, "CHECK_S", 0.0)
    first, second = workers
    for registry in (first.registry, second.registry):
        registry.budget_bytes = 6 * 2**20  # 0.5 MiB per slice: one 10-slice series fits, two do not
    old, _ = first.load(_as_new_series(ct_files))
    assert second.registry.get_loaded(old) is not None
    time.sleep(0.01)  # the files' times order their use
    new = second.upload(_as_new_series(ct_files)).json["id"]
    assert second.client.post(f"/api/v1/records/{new}/load", headers=second.headers()).status_code == 202
    assert second.registry.get_loaded(old) is None  # the other worker's record was the least recently used
    assert first.registry.get_loaded(old) is None  # ... and the worker that loaded it lets go too
    assert first.registry.get_loaded(new).wait_complete(60)
    assert first.registry.memory_used() <= 6 * 2**20 and len(_frames_files(first)) == 1


def test_exactly_one_worker_holds_a_named_lock(tmp_path):
    one, other = NodeRuntime(tmp_path, shared=True), NodeRuntime(tmp_path, shared=True)
    assert one.try_hold("dicom-listener")
    assert not other.try_hold("dicom-listener")
    one.changed("r1")
    assert other.change_count("r1") == 1 and other.change_count("r2") in (0, 1)


def test_a_runtime_folder_without_room_refuses_the_load_instead_of_killing_the_worker(node, ct_files, monkeypatch):
    """Pages of a full tmpfs fail at their first write with SIGBUS: the file's room is reserved when
    it is created, so a full /dev/shm is a 507 naming the folder, and the worker lives on."""
    import errno
    import os

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    record_id = node.upload(ct_files).json["id"]
    monkeypatch.setattr(os, "posix_fallocate", full)
    reply = node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers())
    assert reply.status_code == 507 and reply.json["error"]["code"] == "insufficient_memory"
    assert "has no room left" in reply.json["error"]["message"]
    assert _frames_files(node) == [] and list(node.registry.runtime.folder.glob("*.tmp")) == []
    monkeypatch.undo()
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202


def test_the_nodes_render_latencies_are_those_of_every_live_worker(tmp_path):
    """GET /api/v1/node (the console's node health) reads the node's render latencies from every
    worker's ring in the runtime folder. Each worker kept its own in memory, so the figures were
    those of whichever worker answered: none at all from one that had rendered nothing."""
    import subprocess
    import sys

    ours = NodeRuntime(tmp_path, shared=True)
    for ms in range(LATENCY_SAMPLES + 5):  # a ring keeps its worker's newest LATENCY_SAMPLES
        ours.note_latency(float(ms))
    note_three = ("import sys, time; from pathlib import Path; from daemons.render.runtime import NodeRuntime; "
                  "r = NodeRuntime(Path(sys.argv[1]), shared=True); [r.note_latency(9000.0) for _ in range(3)]; "
                  "print('noted', flush=True); time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", note_three, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "noted"
        values = ours.latencies()
        assert len(values) == LATENCY_SAMPLES + 3 and values.min() == 5 and (values == 9000).sum() == 3
        assert NodeRuntime(tmp_path, shared=True).latencies().size == LATENCY_SAMPLES + 3  # any reader
    finally:
        other.kill()
        other.wait()
    assert len(ours.latencies()) == LATENCY_SAMPLES  # a dead worker's ring goes with it
    assert not (tmp_path / f"latency-{other.pid}").exists()


def test_a_worker_whose_runtime_folder_is_gone_still_renders(tmp_path):
    """The ring is made at a worker's first render: a folder removed before then (by hand, a
    cleaner of /dev/shm) must cost the figure, not the image."""
    import shutil

    folder = tmp_path / "gone"
    folder.mkdir()
    runtime = NodeRuntime(folder, shared=True)
    shutil.rmtree(folder)
    runtime.note_latency(12.0)
    runtime.note_latency(13.0)
    assert runtime.latencies().size == 0


def test_a_runtime_folder_left_by_a_killed_node_is_removed_at_the_next_start(tmp_path, monkeypatch):
    """gunicorn removes its node's folder when it exits; a master killed outright leaves it in
    /dev/shm, holding memory until the next boot, unless the next start removes it."""
    import subprocess

    import daemons.render.runtime as runtime

    monkeypatch.setattr(runtime.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(runtime, "Path", lambda name: tmp_path / "no-shm" if name == "/dev/shm" else Path(name))
    finished = subprocess.Popen(["true"])
    finished.wait()
    left = tmp_path / f"sivr-render-{finished.pid}-abc"
    left.mkdir()
    (left / "x.frames").write_bytes(b"0" * 10)
    alive = tmp_path / f"sivr-render-{os.getpid()}-def"
    alive.mkdir()
    made = Path(runtime.make_runtime_folder("sivr-render-"))
    assert made.parent == tmp_path and made.name.startswith(f"sivr-render-{os.getpid()}-")
    assert not left.exists() and alive.exists()


def test_a_worker_that_notices_a_change_keeps_the_new_frames_another_worker_loaded(workers, ct_files):
    """The worker that grew a series unlinks its old frames and the node loads the new ones; a
    worker noticing the change afterwards lets go of its own mapping, not of the new frames."""
    first, second = workers
    series = _as_new_series(ct_files)
    record_id = first.upload(series[:6]).json["id"]
    for harness in (first, second):  # both hold the 6-frame series
        assert harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers()).json["frames"] == 6
    assert first.client.post(f"/api/v1/records/{record_id}/load", headers=first.headers()).status_code == 202
    assert second.registry.get_loaded(record_id).wait_complete(60)
    assert first.upload(series[6:]).status_code in (200, 201)
    assert first.client.post(f"/api/v1/records/{record_id}/load", headers=first.headers()).status_code == 202
    grown = first.registry.get_loaded(record_id)
    assert grown.frames_total == 10 and grown.wait_complete(60)
    reply = second.client.get(f"/api/v1/records/{record_id}/frames/9", headers=second.headers())
    assert reply.status_code == 200, reply.json  # the second worker maps the grown series
    (path,) = _frames_files(first)
    assert path == grown.shared.path and not grown.shared.gone()


def test_the_frames_of_a_series_are_named_alike_by_the_worker_that_analysed_it_and_one_that_read_it(
        workers, ct_files):
    """The worker that analyses a grown series holds its manifest as computed (NumPy numbers, tuples);
    another reads it from the store (JSON). Named differently, each unlinked the other's frames
    as stale, and every viewer got 409 "not loaded"."""
    first, _ = workers
    series = _as_new_series(ct_files)
    record_id = first.upload(series[:6]).json["id"]
    first.upload(series[6:])
    analysed = first.app.extensions["sivr_node"].manifest(record_id)  # settled here, in memory
    stored = Manifest.from_json(json.loads(analysed.encode()))
    assert records._frames_name(record_id, analysed) == records._frames_name(record_id, stored)


def test_a_series_is_complete_when_no_worker_took_an_instance_for_the_stable_age(workers, ct_files):
    """Each worker times the series it grew; one that took the first instances completed the
    series (and unloaded it under its viewers) although another worker took one a moment ago."""
    first, second = workers
    series = _as_new_series(ct_files)
    record_id = first.upload(series[:4]).json["id"]
    first.upload(series[4:6])  # an append: the first worker now times the series
    ingest_first = first.app.extensions["sivr_ingest"]
    ingest_first.complete_s = 3600.0  # its watcher never acts in this test; ages are given as `now`
    time.sleep(1.0)
    second.upload(series[6:])  # through the other worker, at least a second later
    # an hour after the first worker's append (its own timer is due), not yet after the second's
    assert ingest_first.complete_due(time.monotonic() + 3600.0 - 0.5) == []
    assert ingest_first.complete_due(time.monotonic() + 3601.0) == [record_id]


def test_frames_analysed_anew_unchanged_stay_loaded_for_every_worker(workers, ct_files):
    """The exact analysis of a complete series gives it a new automatic window, not new frames:
    viewers go on without loading it again (they got 409 "not loaded" and the node decoded it again)."""
    first, second = workers
    series = _as_new_series(ct_files)
    record_id = first.upload(series[:6]).json["id"]
    first.upload(series[6:])
    node_first = first.app.extensions["sivr_node"]
    provisional = node_first.manifest(record_id)  # analysed with a provisional window
    assert first.client.post(f"/api/v1/records/{record_id}/load", headers=first.headers()).status_code == 202
    assert first.registry.get_loaded(record_id).wait_complete(60)
    (path,) = _frames_files(first)
    assert first.app.extensions["sivr_ingest"].complete_due(float("inf")) == [record_id]
    exact = node_first.manifest(record_id)
    assert exact.render.auto_window != provisional.render.auto_window  # analysed anew: another window
    for harness in (first, second):
        reply = harness.client.get(f"/api/v1/records/{record_id}/frames/5", headers=harness.headers())
        assert reply.status_code == 200, reply.json
    assert _frames_files(first) == [path]


def _one_series_fits(workers, ct_files):
    """The workers of a node whose budget holds one 10-slice series, not two; the first worker has
    loaded one, which the second maps (`held`)."""
    first, second = workers
    for registry in (first.registry, second.registry):
        registry.budget_bytes = 6 * 2**20
    old, _ = first.load(_as_new_series(ct_files))
    held = second.registry.get_loaded(old)
    assert held is not None
    return first, second, old, held


def test_a_series_evicted_by_one_worker_leaves_every_worker_even_unasked(workers, ct_files, monkeypatch):
    """A worker let go of an evicted series only when that series was asked for again: until then
    it kept it mapped, and the node used more RAM than its budget said."""
    monkeypatch.setattr(records, "CHECK_S", 0.0)
    first, second, old, held = _one_series_fits(workers, ct_files)
    assert second.registry.queued_frames() == 0  # it leads nothing
    new = first.upload(_as_new_series(ct_files)).json["id"]
    assert first.client.post(f"/api/v1/records/{new}/load", headers=first.headers()).status_code == 202
    second.registry.get_loaded(new)  # a request for another series
    assert old not in second.registry._records and held.cancelled


def test_a_worker_decoding_only_what_its_viewers_wait_for_keeps_no_whole_file(workers):
    """A multi-frame file is kept decrypted while its frames are decoded by the worker leading the
    load; another worker decoding a frame its viewer waits for kept the whole file for ever."""
    from tests.render.synthetic_stacks import dynamic

    first, second = workers
    record_id = first.upload([("multi.dcm", dynamic(2, 4))]).json["id"]
    first.registry._pool = _NoPool()  # the leader decodes nothing: the other worker decodes on demand
    first.registry.load(record_id)
    reply = second.client.get(f"/api/v1/records/{record_id}/frames/3", headers=second.headers())
    assert reply.status_code == 200, reply.json
    assert second.registry._loaders[record_id]._file_cache == {}


def test_a_frame_failed_is_failed_even_when_its_reason_cannot_be_written(tmp_path, monkeypatch):
    """Writing the reason raised, the state stayed PENDING, and the load said "loading" for ever."""
    frames = SharedFrames.open(tmp_path, "record.content", (2, 4, 4), np.dtype(np.int16))
    real_open = os.open

    def full(path, *args, **kwargs):
        if str(path).endswith(".errors"):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", full)
    frames.mark(1, "ValueError: broken")
    assert frames.states.tolist() == [0, FAILED] and frames.errors() == {1: "ValueError: broken"}


def test_a_worker_asked_nothing_lets_go_of_a_series_another_worker_evicted(workers, ct_files, monkeypatch):
    """A worker let go of an evicted series only when it served a request: one nobody asked kept the
    unlinked file mapped, memory the budget no longer counted."""
    monkeypatch.setattr(records, "CHECK_S", 0.05)
    first, second, old, held = _one_series_fits(workers, ct_files)
    assert held.wait_complete(60)
    time.sleep(0.01)
    first.load(_as_new_series(ct_files))  # evicts `old`; `second` gets no request from now on
    deadline = time.monotonic() + 10
    while not held.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert held.cancelled and old not in second.registry._records


def test_a_frame_one_worker_decoded_stays_decoded_when_another_fails_it(workers, ct_files):
    """Both workers claimed a frame; the leader decoded it, then the other's read failed (a store
    timeout): the frame was marked failed for the whole node and refused with 422 everywhere."""
    first, second = workers
    record_id = first.upload(ct_files).json["id"]
    first.registry._pool = _NoPool()
    leading = first.registry.load(record_id)
    second.registry.get_loaded(record_id)
    follower = second.registry._loaders[record_id]
    assert follower.take(3) and first.registry._loaders[record_id].take(3)
    first.registry._loaders[record_id].decode(3)
    assert leading.shared.states[3] == READY

    def timeout(*args, **kwargs):
        raise OSError("the store timed out")

    follower.store.read_file, real = timeout, follower.store.read_file
    try:
        follower.decode(3)
    finally:
        follower.store.read_file = real
    assert leading.shared.states[3] == READY
    assert second.client.get(f"/api/v1/records/{record_id}/frames/3", headers=second.headers()).status_code == 200


def test_a_series_deleted_while_another_worker_asks_for_it_is_not_loaded_again(workers, ct_files):
    """The delete told the other workers before the store let go of the series: one asked for it
    in between read it once more, decoded it again and served it after the delete had answered."""
    first, second = workers
    record_id = first.upload(ct_files).json["id"]
    unload = first.registry.unload

    def unload_while_a_viewer_asks(rid):
        done = unload(rid)
        load = second.client.post(f"/api/v1/records/{rid}/load", headers=second.headers())
        assert load.status_code == 404, load.json  # the store no longer has it
        return done

    first.registry.unload = unload_while_a_viewer_asks
    assert first.client.delete(f"/api/v1/records/{record_id}", headers=first.headers()).status_code == 204
    assert second.client.get(f"/api/v1/records/{record_id}/frames/0", headers=second.headers()).status_code == 404
    assert _frames_files(first) == []


def test_a_runtime_folder_removed_under_the_node_is_a_503_not_a_500(node, ct_files):
    """A runtime folder removed under a running node (by hand, a cleaner of /dev/shm): the workers
    share no locks or changes any more; a delete or an upload answered 500."""
    import shutil

    record_id = node.upload(ct_files).json["id"]
    shutil.rmtree(node.registry.runtime.folder)
    for reply in (node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()),
                  node.upload(_as_new_series(ct_files))):
        assert reply.status_code == 503 and reply.json["error"]["code"] == "runtime_unavailable", reply.json
        assert "restart the node" in reply.json["error"]["message"]
    # nothing was deleted: the series is still listed and in the store
    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 200
    assert node.app.extensions["sivr_node"].store.read_manifest(record_id).meta.files == len(ct_files)
    assert node.app.extensions["sivr_node"].models.StoredRecord.select().count() == 1  # the upload stored nothing


def test_the_runtime_folder_stays_bounded_however_many_series_arrive(node, ct_files, monkeypatch):
    """A lock file and a growth file per series received stayed in the runtime folder for the
    node's whole run: a node receiving series for months filled its folder with them."""
    from daemons.render.ingest import service

    monkeypatch.setattr(service, "SERIES_LOCKS", 4)
    ingest = node.app.extensions[service.INGEST_EXTENSION]
    for _ in range(12):
        files = _as_new_series(ct_files[:2])
        record_id = node.upload(files[:1]).json["id"]
        assert node.upload(files[1:]).status_code in (200, 201)  # an append: the series grows
        assert record_id in ingest.growing()
    folder = node.registry.runtime.folder
    assert len(list(folder.glob("*.grew"))) == 12
    assert ingest.complete_due(float("inf"), derive=False)
    assert list(folder.glob("*.grew")) == []  # complete: nothing of them left
    assert len(list(folder.glob("series-*.lock"))) <= 4 and len(ingest._locks) <= 4


def test_a_request_for_a_series_evicted_meanwhile_does_not_load_it_again(workers, ct_files):
    """A worker found another's frames, and they were evicted before it mapped them: its status
    poll loaded the series anew (evicting some other series) instead of answering "not loaded"."""
    first, second = workers
    record_id, _ = first.load(ct_files)
    registry = second.registry
    read = registry._manifest_reader
    calls = []

    def evicted_between(rid):
        calls.append(rid)
        if len(calls) == 2:  # after the worker saw the file, before it mapped it: another evicts it
            for held in frames_on_node(registry.runtime.folder):
                os.unlink(held.path)
        return read(rid)

    registry._manifest_reader = evicted_between
    assert registry.get_loaded(record_id) is None and len(calls) == 2
    assert _frames_files(second) == []  # nothing made anew


def test_a_frames_file_a_killed_worker_left_half_made_goes_at_the_next_load(node, ct_files):
    """A worker killed while it created a series' frames left its reserved temporary file in the
    runtime folder for the node's whole run, memory no budget counted."""
    folder = node.registry.runtime.folder
    leftover = folder / f".{uuid.uuid4().hex}.tmp"
    with leftover.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, 2**20)
    node.load(ct_files)
    assert not leftover.exists() and not list(folder.glob(".*.tmp"))


def test_a_reason_left_by_an_earlier_file_of_the_same_frames_is_not_reported(tmp_path):
    """An eviction racing a failure left a reason line behind; the next file of the same content
    then reported that decoded frame as failed, in every worker reading the reasons."""
    shape, dtype = (3, 2, 2), np.dtype(np.int16)
    (tmp_path / "rec.content.errors").write_text("0\tOSError: transient\n")  # the race's leftover
    frames = SharedFrames.open(tmp_path, "rec.content", shape, dtype)
    frames.mark(0, None)
    frames.mark(2, "ValueError: cannot decode")
    reader = SharedFrames.open(tmp_path, "rec.content", shape, dtype)  # another worker
    assert reader.states.tolist() == [READY, 0, FAILED]
    assert reader.errors() == {2: "ValueError: cannot decode"}


def _mapped_inodes() -> set[int]:
    """The inodes of the files this process maps (`/proc/self/maps`)."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        return {int(fields[4]) for fields in (line.split() for line in maps) if len(fields) > 5}


def test_an_evicted_series_leaves_the_workers_memory_at_once(make_node):
    """An evicted record referred to itself (its stall callback closed over it): it, its mapping of
    the unlinked frames and the volumes made of it (weakly keyed on it) stayed until the cycle
    collector ran, which gunicorn's workers (`gc.freeze`) seldom do, while the budget no longer
    counted them. It is freed by reference counting now, as soon as it is evicted."""
    node = make_node(memory__budget_mb=1)  # one series of 640 KiB fits, two do not
    old, _ = node.load(stack((1, 0, 0, 0, 1, 0), count=20, rows=128, cols=128))
    for path in ("frames/3?window=40,100", "mpr/coronal/3", "volume?size=64x64"):  # what viewers ask of it
        reply = node.client.get(f"/api/v1/records/{old}/{path}", headers=node.headers())
        assert reply.status_code == 200, (path, reply.json)
    record = node.registry.get_loaded(old)
    inode, evicted = record.shared._inode, weakref.ref(record)
    del record
    gc.collect()
    gc.disable()
    try:
        node.load(stack((1, 0, 0, 0, 1, 0), count=20, rows=128, cols=128))  # evicts `old`
        assert evicted() is None, [type(referrer).__name__ for referrer in gc.get_referrers(evicted())]
        assert inode not in _mapped_inodes()  # its unlinked frames are unmapped
    finally:
        gc.enable()


def _cine(positions: int, times: int, rows: int, cols: int) -> list[tuple[str, bytes]]:
    """A classic cine: `positions` slices, each imaged at `times` time points (TriggerTime), numbered
    position by position as scanners do, so a time point's frames are not stored together and its
    volume is a copy."""
    series, files = str(uuid.uuid4().int)[:30], []
    for time_point in range(times):
        for name, data in stack((1, 0, 0, 0, 1, 0), count=positions, rows=rows, cols=cols,
                                series=f"2.25.{series}"):
            ds = pydicom.dcmread(io.BytesIO(data))
            position = int(ds.InstanceNumber) - 1
            ds.InstanceNumber = position * times + time_point + 1
            ds.TriggerTime = 40.0 * time_point
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.{series}.{position}.{time_point}"
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            files.append((f"t{time_point}-{name}", out.getvalue()))
    return files


def test_copies_of_time_points_make_room_in_the_budget(make_node):
    """Copies of a record's pixels (each time point's volume of a cine stored position by position)
    counted in its memory, but the budget evicted only when a record was loaded: reformatting every
    time point left the node over its budget (1,088 KiB held under 1 MiB here; a 60 MiB cine under
    100 MiB held 120 MiB) with nothing evicted. Now each copy evicts the records used least recently,
    never the one copied."""
    node = make_node(memory__budget_mb=1)
    cine, meta = node.load(_cine(positions=4, times=3, rows=128, cols=128))  # 384 KiB
    assert len(meta["stacks"][0]["phases"]) == 3
    other, _ = node.load(stack((1, 0, 0, 0, 1, 0), count=10, rows=128, cols=128))  # 320 KiB
    assert node.registry.get_loaded(other) is not None
    for time_point in range(3):  # 128 KiB copied for each
        reply = node.client.get(f"/api/v1/records/{cine}/mpr/coronal/5?phase={time_point}", headers=node.headers())
        assert reply.status_code == 200, reply.json
    assert node.registry.memory_used() <= node.registry.budget_bytes
    assert node.registry.get_loaded(cine) is not None and node.registry.get_loaded(other) is None


@pytest.mark.parametrize("path", ["mpr/coronal/3", "mpr/axial/2/value?x=1&y=1", "volume?size=32x32"])
def test_a_series_deleted_through_one_worker_is_not_reformatted_by_the_other(workers, ct_files, path):
    """The frames of a series deleted through one worker were gone from the other at once, but its
    reformats and 3D views were drawn from the volume the other worker still held until it swept
    (a colleague's viewer drew a coronal view of it 3 s after the DELETE; 15 of 30 such requests
    answered 200). Now every door to a volume asks whether the series is still stored first."""
    first, second = workers
    record_id, _ = first.load(ct_files)
    second.client.post(f"/api/v1/records/{record_id}/load", headers=second.headers())
    assert second.registry.get_loaded(record_id).wait_complete(60)
    assert second.client.get(f"/api/v1/records/{record_id}/{path}", headers=second.headers()).status_code == 200
    assert first.client.delete(f"/api/v1/records/{record_id}", headers=first.headers()).status_code == 204
    reply = second.client.get(f"/api/v1/records/{record_id}/{path}", headers=second.headers())
    assert reply.status_code == 404, reply.json
