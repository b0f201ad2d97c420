"""A refused WADO-RS request is no view (review of session 61).

`/pixeldata` and `/bulkdata` counted the series in the view audit before `_stream_bulk` checked that
the answer could be made: an RLE series asked for as JPEG answered 406 three times and the audit said
the physician had viewed its images four times (the study's bulk data counted each of its series).
Every WADO-RS route now counts a series once its answer is chosen, after every check that refuses it.
"""

from __future__ import annotations

import json
import uuid

from pydicom.uid import RLELossless

from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import body_of, stow

JPEG = 'multipart/related; type="image/jpeg"'
JPEG_BASELINE_FILES = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'


def _views(node, user_id: str) -> int:
    """The images of kind `dicomweb` the view audit counted for `user_id`, flushed now."""
    node.app.extensions["sivr_view_audit"].flush()
    with node.app.app_context():
        entries = node.app.extensions["sivr_node"].models.AuditEntry
        rows = entries.select().where((entries.action == "record.view") & (entries.user_id == user_id))
        return sum(json.loads(row.detail)["dicomweb"] for row in rows)


def test_refused_wado_requests_are_not_counted_as_views(node):
    files = synthetic_series(2, syntax=RLELossless, rows=64, cols=64)
    study, series, sop = uids(files[0])
    assert stow(node, body_of(files)).status_code == 200
    instance = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    user_id = str(uuid.uuid4())
    headers = node.headers(user_id=user_id)
    refused = [
        (f"/dicomweb/studies/{study}/series/{series}/pixeldata", JPEG, 406),
        (f"/dicomweb/studies/{study}/pixeldata", JPEG, 406),
        (f"/dicomweb/studies/{study}/bulkdata", JPEG, 406),
        (f"/dicomweb/studies/{study}/series/{series}/bulkdata", JPEG, 406),
        (f"{instance}/pixeldata", JPEG, 406),
        (f"{instance}/bulkdata", JPEG, 406),
        (f"{instance}/frames/1", JPEG, 406),
        (f"{instance}/frames/9", None, 404),
        (f"{instance}/bulk/7FE00010", JPEG, 406),
        (f"{instance}/bulk/00091010", None, 404),
        (f"/dicomweb/studies/{study}/metadata", "image/png", 406),
        (f"/dicomweb/studies/{study}/series/{series}/metadata", "image/png", 406),
        (f"{instance}/metadata", "image/png", 406),
        (f"/dicomweb/studies/{study}", JPEG_BASELINE_FILES, 406),
        (f"/dicomweb/studies/{study}/series/{series}", JPEG_BASELINE_FILES, 406),
        (instance, JPEG_BASELINE_FILES, 406),
    ]
    answered = {}
    for path, accept, _ in refused:
        sent = headers if accept is None else {**headers, "Accept": accept}
        reply = node.client.get(path, headers=sent)
        reply.get_data()
        answered[path.rpartition(study)[2] or path, accept] = reply.status_code
    assert list(answered.values()) == [status for _, _, status in refused], list(answered.values())
    assert _views(node, user_id) == 0

    served = node.client.get(f"{instance}/pixeldata", headers=headers)
    assert served.status_code == 200 and served.get_data()
    assert _views(node, user_id) == 1
