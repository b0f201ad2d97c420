"""STOW-RS answers each instance's outcome (PS3.18 10.5.3) even when storing one series of the request
fails on the store itself after another series was stored: the stored ones are in
ReferencedSOPSequence, the others in FailedSOPSequence with a FailureReason, 202 when some were
stored; never the whole request's error with its stored instances untold. A request that stored
nothing only because the store could not take it is 503, as the node's other doors answer it."""

from __future__ import annotations

import pytest

from daemons.render.ingest.service import series_record_id
from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import body_of, instance_count, stow
from tests.render.test_store_unreadable import _mode

PROCESSING_FAILURE = 0x0110


def _outcomes(reply) -> tuple[list[str], dict[str, int]]:
    answer = reply.get_json()
    stored = [item["00081155"]["Value"][0] for item in answer.get("00081199", {}).get("Value", [])]
    failed = {item["00081155"]["Value"][0]: item["00081197"]["Value"][0]
              for item in answer.get("00081198", {}).get("Value", [])}
    return stored, failed


@pytest.mark.parametrize("mode, why", [(0o555, "read-only"), (0o311, "not listable"), (0o000, "closed")])
def test_a_series_the_store_cannot_take_fails_alone_and_the_stored_one_is_told(node, mode, why):
    """Series B was stored before; its record folder is then made read-only (appending raised
    PermissionError: a 500) or unreadable (RecordUnreadable: a 503). A request of a new series A,
    then one more instance of B: A was stored and the client was told only the error. Now A's
    instances are referenced, B's failed with 0x0110 and the store's reason, and the answer is 202."""
    earlier = synthetic_series(2)
    study = uids(earlier[0])[0]
    assert stow(node, body_of(earlier)).status_code == 200
    more_of_b = synthetic_series(3, study=study, series=uids(earlier[0])[1])[2:]
    series_a = synthetic_series(2, study=study)
    folder = node.root / "store" / series_record_id(node.institution_id, uids(earlier[0])[1])
    with _mode(folder, mode):
        reply = stow(node, body_of([*series_a, *more_of_b]))
    assert reply.status_code == 202, (why, reply.status_code, reply.get_data(as_text=True)[:400])
    stored, failed = _outcomes(reply)
    assert stored == [uids(raw)[2] for raw in series_a]
    assert failed == {uids(more_of_b[0])[2]: PROCESSING_FAILURE}
    assert "store" in reply.headers["Warning"] and str(node.root) not in reply.get_data(as_text=True)
    assert instance_count(node) == 4  # B's third instance was not half stored
    again = stow(node, body_of(more_of_b))  # the store is back: the client sends what failed again
    assert again.status_code == 200 and instance_count(node) == 5


def test_a_request_that_stores_nothing_for_the_store_alone_is_503_as_every_door_answers(node):
    """Nothing stored, and only because the store could not take it (a folder the node may not write,
    an object store that does not answer): the request is answered 503 store_unavailable with
    Retry-After and the fix, as the node's upload and its other doors answer it, not a 409, which
    PS3.18 makes a final conflict that clients do not send again."""
    earlier = synthetic_series(2)
    more = synthetic_series(4, study=uids(earlier[0])[0], series=uids(earlier[0])[1])[2:]
    assert stow(node, body_of(earlier)).status_code == 200
    with _mode(node.root / "store" / series_record_id(node.institution_id, uids(earlier[0])[1]), 0o555):
        reply = stow(node, body_of(more))
    assert reply.status_code == 503, reply.get_data(as_text=True)[:400]
    error = reply.get_json()["error"]
    assert error["code"] == "store_unavailable" and "chown" in error["message"]
    assert str(node.root) not in error["message"] and reply.headers["Retry-After"]
    assert instance_count(node) == 2
    assert stow(node, body_of(more)).status_code == 200 and instance_count(node) == 4
