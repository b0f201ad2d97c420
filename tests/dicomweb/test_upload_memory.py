"""Bodies being stored share one memory budget per server process (`limits.upload_memory_mb`):
STOW-RS and browser uploads beyond it wait briefly, then get 503 busy with nothing stored."""

from __future__ import annotations

import io
import threading

import pytest

from daemons.render.ingest.upload_memory import BODY_COPIES, UploadMemory, body_reservation
from shared.errors import ApiError
from tests.dicomweb.conftest import synthetic_series
from tests.dicomweb.test_stow_wado import STOW_TYPE, body_of, instance_count

MIB = 1024 * 1024


class HeldBody(io.BytesIO):
    """A request body whose bytes arrive only once `release` is set (a slow client's upload)."""

    def __init__(self, body: bytes, release: threading.Event):
        super().__init__(body)
        self._release, self.started = release, threading.Event()

    def _arrived(self) -> None:
        self.started.set()
        assert self._release.wait(60), "the test never released the body"

    def read(self, size: int | None = -1) -> bytes:
        self._arrived()
        return super().read(size)

    def readinto(self, buffer) -> int:
        self._arrived()
        return super().readinto(buffer)


def _stow(harness, stream, length: int):
    return harness.app.test_client().post("/dicomweb/studies", input_stream=stream, headers={
        **harness.headers(), "Content-Type": STOW_TYPE, "Accept": "application/dicom+json",
        "Content-Length": str(length)})


def test_a_body_beyond_the_budget_gets_503_busy_until_the_one_holding_it_is_stored(make_node):
    harness = make_node(limits__upload_memory_mb=1)
    held_body = body_of(synthetic_series(2, rows=256, cols=256))  # 256 kB, reserved three times over
    assert len(held_body) * BODY_COPIES > MIB * 3 // 4
    release, answers = threading.Event(), {}
    held = HeldBody(held_body, release)
    slow = threading.Thread(target=lambda: answers.setdefault("slow", _stow(harness, held, len(held_body))))
    slow.start()
    try:
        assert held.started.wait(30)
        other = body_of(synthetic_series(1, rows=256, cols=256))
        refused = _stow(harness, io.BytesIO(other), len(other))
        assert refused.status_code == 503, refused.get_data(as_text=True)
        assert refused.get_json()["error"]["code"] == "busy" and refused.headers["Retry-After"]
        assert "MiB reserved" in refused.get_json()["error"]["message"]
        upload = harness.upload([("a.dcm", synthetic_series(1, rows=256, cols=256)[0])])
        assert upload.status_code == 503 and upload.get_json()["error"]["code"] == "busy"
        assert instance_count(harness) == 0
    finally:
        release.set()
        slow.join(60)
    assert answers["slow"].status_code == 200, answers["slow"].get_data(as_text=True)
    assert instance_count(harness) == 2
    assert harness.app.extensions["sivr_upload_memory"].used == 0  # released: the next one is admitted
    assert _stow(harness, io.BytesIO(other), len(other)).status_code == 200
    assert instance_count(harness) == 3


def test_an_unauthenticated_body_neither_waits_for_nor_holds_room(make_node):
    harness = make_node(limits__upload_memory_mb=1)
    memory = harness.app.extensions["sivr_upload_memory"]
    with memory.reserved(memory.budget):
        reply = harness.client.post("/dicomweb/studies", data=b"x" * 1000,
                                    headers={"Content-Type": STOW_TYPE})
        assert reply.status_code == 401


def test_reservations_share_the_budget_and_a_waiting_one_is_admitted_when_room_frees():
    memory = UploadMemory(10 * MIB)
    with memory.reserved(4 * MIB), memory.reserved(6 * MIB):
        assert memory.used == 10 * MIB
        with pytest.raises(ApiError) as refused, memory.reserved(1, wait_s=0.05):
            pass
        assert refused.value.status == 503
    admitted = threading.Event()

    def wait_for_room() -> None:
        with memory.reserved(8 * MIB, wait_s=30):
            admitted.set()

    with memory.reserved(8 * MIB):
        waiter = threading.Thread(target=wait_for_room)
        waiter.start()
        assert not admitted.wait(0.2)  # no room while the first is held
    waiter.join(30)
    assert admitted.is_set() and memory.used == 0

def test_a_body_alone_always_fits_and_an_unannounced_one_takes_the_whole_budget():
    memory = UploadMemory(2 * MIB)
    with memory.reserved(100 * MIB, wait_s=0):
        assert memory.used == 2 * MIB
    assert body_reservation(None, 2 * MIB, 10 * MIB) == 2 * MIB
    assert body_reservation(MIB, 2 * MIB, 10 * MIB) == BODY_COPIES * MIB
    assert body_reservation(11 * MIB, 2 * MIB, 10 * MIB) == 0  # refused with 413 before a byte is read
