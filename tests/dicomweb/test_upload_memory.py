"""Bodies being stored share one memory budget per server process (`limits.upload_memory_mb`),
reserved as their bytes arrive: a body that finds no room gets 503 busy at once with nothing stored,
a body trickled in holds only what it sent, and requests refused for their headers never see it.
One user sends at most `limits.uploads_per_user` bodies to a process at once (429 beyond)."""

from __future__ import annotations

import io
import threading

import pytest

from daemons.render.ingest.service import INGEST_EXTENSION
from daemons.render.ingest.upload_memory import BODY_COPIES, UploadMemory, UploadMemoryFull, UploadsPerUser
from shared.errors import ApiError
from shared.webapp import UNREAD_BODY_LIMIT
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


def test_one_user_sends_at_most_uploads_per_user_bodies_at_once_and_others_are_stored(make_node):
    """Attack 114: an account sending as many uploads as the process has request threads, each body a
    byte now and then, held every thread. Its uploads beyond the bound are refused at once, before
    their bodies are read (429, Retry-After, nothing stored), through both doors; another user's are
    stored meanwhile, and the same user's again once one of its own has ended."""
    harness = make_node(limits__uploads_per_user=2)
    sender = harness.headers(user_id="3e0a7b7e-3c55-4d2e-9a57-2b0f4b1f0a01")
    slow_bodies = [body_of(synthetic_series(2, rows=64, cols=64)) for _ in range(2)]
    go, answers = threading.Event(), {}
    trickled = [TrickledBody(body, 100, go) for body in slow_bodies]
    slow = [threading.Thread(target=lambda k=k: answers.setdefault(k, _stow(harness, trickled[k], len(slow_bodies[k]),
                                                                              headers=sender)))
            for k in range(2)]
    for thread in slow:
        thread.start()
    try:
        assert all(body.waiting.wait(30) for body in trickled)
        third = body_of(synthetic_series(1, rows=256, cols=256))
        assert len(third) > UNREAD_BODY_LIMIT  # a refused body smaller is read if it comes within a second
        unread = TrickledBody(third, 0, go)  # a body the node must not wait for
        refused = _stow(harness, unread, len(third), headers=sender)
        assert refused.status_code == 429, refused.get_data(as_text=True)
        error = refused.get_json()["error"]
        assert error["code"] == "too_many_uploads" and refused.headers["Retry-After"] == "10"
        assert "limits.uploads_per_user" in error["message"] and unread.tell() == 0
        upload = harness.upload([("a.dcm", synthetic_series(1, rows=64, cols=64)[0])], headers=sender)
        assert upload.status_code == 429 and upload.get_json()["error"]["code"] == "too_many_uploads"
        assert instance_count(harness) == 0
        assert _stow(harness, io.BytesIO(third), len(third)).status_code == 200  # another user
    finally:
        go.set()
        for thread in slow:
            thread.join(60)
    assert [answers[k].status_code for k in range(2)] == [200, 200]
    assert _stow(harness, io.BytesIO(third), len(third), headers=sender).status_code == 200
    assert instance_count(harness) == 5


def test_upload_slots_are_per_user_and_freed_whatever_the_view_raised():
    uploads = UploadsPerUser(2)
    with uploads.slot("a"), uploads.slot("a"):
        with pytest.raises(ApiError) as refused, uploads.slot("a"):
            pass
        assert refused.value.status == 429
        with uploads.slot("b"):
            pass
    with pytest.raises(RuntimeError), uploads.slot("a"), uploads.slot("a"):
        raise RuntimeError("the view failed")
    with uploads.slot("a"), uploads.slot("a"):
        pass
    assert uploads._held == {}
