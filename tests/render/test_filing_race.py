"""Filing and unfiling a series at the same moment (review of session 61).

`POST` and `DELETE /api/v1/records/{id}/filed` each set the store's mark, then this node's row, from
a row read before: a POST and a DELETE at once could leave the row filed and the store unfiled (or
the reverse), both answering 200. This node then kept the series off its work list and refused its
receipt (409) while the nodes sharing the store saw it unfiled. Both now run under the series' lock
(`Ingest.series_lock`, the one appends and deletes take), reading the row under it.
"""

from __future__ import annotations

import threading

import pytest

from tests.render.dimse_peers import close_archive, open_archive
from tests.render.test_worklist import received_series

ROUNDS = 60


@pytest.fixture
def archive(make_node):
    harness = open_archive(make_node)
    yield harness
    close_archive(harness)


def _filed_row(the_node, record_id: str) -> bool:
    stored = the_node.models.StoredRecord
    return bool(stored.get(stored.id == record_id).filed)


def _at_once(archive, url: str, headers: dict[str, str]) -> dict[str, int]:
    """A POST and a DELETE of `url`, started together; their statuses by method."""
    barrier = threading.Barrier(2)
    codes: dict[str, int] = {}

    def send(method: str) -> None:
        barrier.wait()
        codes[method] = archive.client.open(url, method=method, headers=headers).status_code

    threads = [threading.Thread(target=send, args=(m,)) for m in ("POST", "DELETE")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def _justified(unfile: int, before: bool, after: bool) -> bool:
    """Whether the DELETE's status fits the states before and after: a 409 found the series unfiled,
    so the POST came after it; a 200 from unfiled took off the POST's mark, so the POST came first."""
    if unfile == 409:
        return not before and after
    return before or not after


def test_filing_and_unfiling_at_once_leave_the_row_and_the_store_agreeing(archive):
    record_id = received_series(archive)
    the_node = archive.app.extensions["sivr_node"]
    url = f"/api/v1/records/{record_id}/filed"
    headers = archive.headers()
    disagreed: list[tuple[int, bool, bool]] = []  # (round, row filed, store filed)
    unjustified: list[tuple[int, int, bool, bool]] = []  # (round, DELETE's status, filed before, filed after)
    for round_ in range(ROUNDS):
        before = _filed_row(the_node, record_id)
        codes = _at_once(archive, url, headers)
        row = _filed_row(the_node, record_id)
        store = record_id in the_node.store.filed_among([record_id])
        if row != store:
            disagreed.append((round_, row, store))
        assert codes["POST"] == 200 and codes["DELETE"] in (200, 409), codes
        if not _justified(codes["DELETE"], before, row):
            unjustified.append((round_, codes["DELETE"], before, row))
    assert disagreed == [] and unjustified == [], (len(disagreed), len(unjustified))
    receipt = archive.client.post(f"/api/v1/records/{record_id}/receipt", headers=headers)
    assert receipt.status_code == (409 if _filed_row(the_node, record_id) else 200)
