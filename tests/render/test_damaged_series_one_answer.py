"""A damaged series answers the same 422 `store_corrupt` whether the node's catalogue knew it or not
(session 61).

`Node.manifest` answered a damaged series the catalogue knew with 422 `store_corrupt`, while the
record index's look-up (`RecordIndex.find`, for a series another node sharing the store stored)
quarantined one it did not know and answered 404 "record not found": a series that was there, and
when it could not be moved aside still is, was reported as never stored, and nothing told the
reader to have it restored. Both now raise the error `Node.quarantine` returns (`node.store_corrupt`,
one definition), which says whether the series was moved aside or stays, refused at each read.
"""

from __future__ import annotations

from tests.render.synthetic import stack
from tests.render.test_index_quarantine_audited import _audited, _unknown_and_damaged


def _known_and_damaged(harness) -> str:
    """A stored series the catalogue knows (a series of its own) whose manifest no longer
    authenticates: its record id."""
    record_id = harness.upload(stack((1, 0, 0, 0, 1, 0), count=3)).json["id"]
    manifest = harness.root / "store" / record_id / "manifest.bin"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    harness.app.extensions["sivr_node"].forget(record_id)
    return record_id


def _refused(harness, record_id: str) -> dict:
    reply = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
    assert reply.status_code == 422, (reply.status_code, reply.json)
    error = reply.json["error"]
    assert error["code"] == "store_corrupt" and record_id in error["message"], error
    assert "restore the series from a backup" in error["message"], error
    assert str(harness.root) not in error["message"], error  # the node's paths are for its log and audit
    return error


def test_a_damaged_series_that_cannot_be_moved_aside_answers_422_known_or_not(make_node):
    harness = make_node(storage__manifest_refresh_s=0)
    unknown = _unknown_and_damaged(harness)
    known = _known_and_damaged(harness)
    (harness.root / "store" / ".quarantine").write_text("in the way")  # the move aside fails (an OSError)

    for attempt in (1, 2):  # it stays in place: refused, and audited, at each read
        answers = [_refused(harness, record_id) for record_id in (unknown, known)]
        for record_id, error in zip((unknown, known), answers, strict=True):
            assert "could not be moved aside" in error["message"], error
            assert (harness.root / "store" / record_id / "manifest.bin").is_file()
            assert len(_audited(harness, record_id)) == attempt
        assert answers[0]["message"].replace(unknown, known) == answers[1]["message"]


def test_an_unknown_damaged_series_moved_aside_answers_422_then_404(make_node):
    harness = make_node(storage__manifest_refresh_s=0)
    record_id = _unknown_and_damaged(harness)

    error = _refused(harness, record_id)
    assert "was quarantined" in error["message"], error
    assert not (harness.root / "store" / record_id).exists()
    again = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers())
    assert again.status_code == 404 and again.json["error"]["code"] == "not_found", again.json
    assert len(_audited(harness, record_id)) == 1
