"""A series the store refuses while it grows (an older manifest put back: `RecordRolledBack`, a
`RecordUnreadable`) is retried by the series-complete watcher every `complete_s`; why is logged once
for each reason, as a warning naming the record and the reason, without a traceback.

Before: "its final analysis failed; retried later" with a full traceback at every retry, for as long
as the record stayed rolled back (the log filled with the same lines until someone acted).
"""

from __future__ import annotations

import logging
import time

from tests.render.test_manifest_rollback import _copy, _put_back, _slices
from tests.render.test_series_growth import add, ingest_of

LOGGER = "daemons.render.ingest.service"


def test_a_rolled_back_series_is_told_once_not_at_every_retry(make_node, caplog):
    node = make_node(storage__manifest_refresh_s=0)
    slices = _slices(4)
    record_id = node.upload(slices[:2]).json["id"]
    folder = node.root / "store" / record_id
    older = _copy(folder)
    for one in slices[2:]:  # appended instance by instance: the series grows, the watcher owes it its analysis
        assert add(node, [one]).added == 1
    latest = _copy(folder)
    _put_back(folder, older)
    ingest = ingest_of(node)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with node.app.app_context():
        for _ in range(3):
            assert ingest.complete_due(time.monotonic() + 3600) == []
    told = [r for r in caplog.records if r.name == LOGGER and record_id in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in told]
    assert told[0].levelno == logging.WARNING and told[0].exc_info is None
    assert "commit 1; this node wrote or read commit 3" in told[0].getMessage()
    _put_back(folder, latest)  # restored: the analysis completes
    with node.app.app_context():
        assert ingest.complete_due(time.monotonic() + 3600) == [record_id]
