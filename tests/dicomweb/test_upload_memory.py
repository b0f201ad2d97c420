"""Bodies being stored share one memory budget per server process (`limits.upload_memory_mb`),
reserved as their bytes arrive: a body that finds no room gets 503 busy at once with nothing stored,
a body trickled in holds only what it sent, and requests refused for their headers never see it."""

from __future__ import annotations

import io
import threading

import pytest

from daemons.render.ingest.service import INGEST_EXTENSION
from daemons.render.ingest.upload_memory import BODY_COPIES, UploadMemory, UploadMemoryFull
from tests.dicomweb.conftest import synthetic_series
from tests.dicomweb.test_stow_wado import STOW_TYPE, body_of, instance_count

MIB = 1024 * 1024


def memory_of(harness) -> UploadMemory:
    return harness.app.extensions[INGEST_EXTENSION].memory


class TrickledBody(io.BytesIO):
    """A request body of which `first` bytes arrive at once and the rest only once `go` is set (a
    slow client, or a proxy streaming a chunked upload)."""

    def __init__(self, body: bytes, first: int, go: threading.Event):
        super().__init__(body)
        self._first, self._go, self.waiting = first, go, threading.Event()

    def _arrived(self, size: int | None) -> int | None:
        """How much of `size` may be read now."""
        if self._go.is_set():
            return size
        if self.tell() >= self._first:
            self.waiting.set()
            assert self._go.wait(60), "the test never let the rest of the body arrive"
            return size
        left = self._first - self.tell()
        return left if size is None or size < 0 else min(size, left)

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self._arrived(size))

    def read1(self, size: int | None = -1) -> bytes:
        return super().read1(self._arrived(size))

    def readinto(self, buffer) -> int:
        allowed = self._arrived(len(buffer))
        return super().readinto(memoryview(buffer)[:allowed])


def _stow(harness, stream, length: int, headers=None):
    return harness.app.test_client().post("/dicomweb/studies", input_stream=stream, headers={
        **(headers or harness.headers()), "Content-Type": STOW_TYPE, "Accept": "application/dicom+json",
        "Content-Length": str(length)})


def test_a_body_that_finds_no_room_gets_503_busy_at_once_and_nothing_is_stored(make_node):
    """Another body holding the budget: STOW-RS and a browser upload are refused without waiting
    (no worker thread held), nothing stored; requests refused for their headers keep their own
    answers; once the other body is done, the same requests are stored and nothing stays held."""
    harness = make_node(limits__upload_memory_mb=1)
    memory = memory_of(harness)
    files = synthetic_series(2, rows=64, cols=64)
    body = body_of(files)
    with memory.reservation() as other:
        other.grow_to(MIB // BODY_COPIES)
        refused = _stow(harness, io.BytesIO(body), len(body))
        assert refused.status_code == 503, refused.get_data(as_text=True)
        error = refused.get_json()["error"]
        assert error["code"] == "busy" and refused.headers["Retry-After"] == "10"
        assert "limits.upload_memory_mb" in error["message"] and "nothing was stored" in error["message"]
        upload = harness.upload([("a.dcm", files[0])])
        assert upload.status_code == 503 and upload.get_json()["error"]["code"] == "busy"
        assert instance_count(harness) == 0
        # the cheap checks come first: no token, another institution, a wrong media type
        assert harness.client.post("/dicomweb/studies", data=body, headers={"Content-Type": STOW_TYPE}
                                   ).status_code == 401
        stranger = harness.headers(institution_id="00000000-0000-4000-8000-000000000001")
        assert _stow(harness, io.BytesIO(body), len(body), headers=stranger).status_code == 403
        wrong_type = harness.client.post("/dicomweb/studies", data=body, headers={
            **harness.headers(), "Content-Type": "application/dicom"})
        assert wrong_type.status_code == 415
        assert memory.used == other.held  # the refused bodies hold nothing
    assert memory.used == 0
    assert _stow(harness, io.BytesIO(body), len(body)).status_code == 200
    assert harness.upload([("b.dcm", synthetic_series(1, rows=64, cols=64)[0])]).status_code == 201
    assert instance_count(harness) == 3
    assert memory.used == 0


def test_a_body_trickling_in_holds_only_what_arrived_and_others_are_stored_meanwhile(make_node):
    """A slow client used to be able to lock every upload out (a reservation of the whole body, or
    of the whole budget when chunked, taken before its bytes came). Its share grows with its bytes."""
    harness = make_node(limits__upload_memory_mb=8)
    memory = memory_of(harness)
    slow_files = synthetic_series(8, rows=256, cols=256)  # about 1 MiB in all
    slow_body = body_of(slow_files)
    first = 200 * 1024
    go, answers = threading.Event(), {}
    trickled = TrickledBody(slow_body, first, go)
    slow = threading.Thread(target=lambda: answers.setdefault("slow", _stow(harness, trickled, len(slow_body))))
    slow.start()
    try:
        assert trickled.waiting.wait(30)
        assert 0 < memory.used <= BODY_COPIES * first
        other = body_of(synthetic_series(2, rows=64, cols=64))
        assert _stow(harness, io.BytesIO(other), len(other)).status_code == 200
        assert 0 < memory.used <= BODY_COPIES * first
    finally:
        go.set()
        slow.join(60)
    assert answers["slow"].status_code == 200, answers["slow"].get_data(as_text=True)
    assert instance_count(harness) == 10
    assert memory.used == 0


def test_reservations_share_the_budget_and_a_body_alone_always_fits():
    memory = UploadMemory(10 * MIB)
    with memory.reservation() as alone:
        alone.grow_to(100 * MIB)  # over the budget alone: admitted (bounded by limits.max_upload_mb)
        assert memory.used == BODY_COPIES * 100 * MIB
    assert memory.used == 0
    with memory.reservation() as first, memory.reservation() as second:
        first.grow_to(2 * MIB)
        second.grow_to(MIB)
        assert memory.used == 9 * MIB
        second.grow_to(MIB)  # what it holds already is not asked again
        with pytest.raises(UploadMemoryFull, match="9 of 10 MiB reserved"):
            second.grow_to(MIB + MIB // 2)
        assert memory.used == 9 * MIB  # a refused growth takes nothing
        first.release()
        second.grow_to(3 * MIB)
        assert memory.used == 9 * MIB
    assert memory.used == 0
