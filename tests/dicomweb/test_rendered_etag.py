"""A rendered image's ETag names the image, not the record's place in a series (RFC 9110 8.8.3).

A series keeps its record id while it grows, and its frame `i` (or its first instance, or its
volume) may then show another instance: an ETag made of the record id and the request's
parameters alone let a browser or OHIF revalidate the old image with If-None-Match and get 304.
The ETag names the record's frames by their content (`daemons.render.api.image_headers.image_etag`),
so every image of a grown series is sent anew, and one of an unchanged series still revalidates.
"""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import generate_uid

from daemons.render.ingest.service import series_record_id
from tests.conftest import DEMO_CT
from tests.dicomweb.test_stow_wado import body_of, stow


def _demo_series(count: int) -> list[bytes]:
    """`count` demo CT slices as one new series of a new study, numbered 1.. in the record's frame
    order (feet to head, as the node orders an axial stack): instance `n` is frame `n - 1`, so the
    first one, sent last, takes the frame index (and the place in the catalogue's instance order)
    another instance held before, and only the ETag's content part can tell the images apart."""
    datasets = [pydicom.dcmread(path) for path in sorted(DEMO_CT.glob("*.dcm"))[40:40 + count]]
    if len(datasets) < count:
        pytest.skip(f"the demo CT is missing from {DEMO_CT}")
    study, series = generate_uid(), generate_uid()
    files = []
    for number, ds in enumerate(sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2])), start=1):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        out = io.BytesIO()
        ds.save_as(out)
        files.append(out.getvalue())
    return files


def _uids(raw: bytes) -> tuple[str, str]:
    ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _get(node, path: str, etag: str | None = None, accept: str | None = None, **params):
    headers = node.headers()
    if accept is not None:
        headers["Accept"] = accept
    if etag is not None:
        headers["If-None-Match"] = etag
    return node.client.get(path, query_string=params or None, headers=headers)


def _stored(node, files: list[bytes]) -> None:
    reply = stow(node, body_of(files))
    assert reply.status_code == 200, reply.get_data(as_text=True)


@pytest.mark.parametrize("resource", ["rendered", "thumbnail"])
def test_a_series_image_gets_a_new_etag_when_the_series_grows(node, resource):
    first, *later = _demo_series(4)
    study, series = _uids(first)
    path = f"/dicomweb/studies/{study}/series/{series}/{resource}"
    _stored(node, later)  # instances 2 to 4: the first is 2, the middle one 3
    before = _get(node, path, accept="image/png")
    assert before.status_code == 200, before.get_data(as_text=True)
    old = before.headers["ETag"]
    unchanged = _get(node, path, etag=old, accept="image/png")
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == old

    _stored(node, [first])  # instance 1: the first is 1, the middle one 2

    after = _get(node, path, accept="image/png")
    assert after.status_code == 200 and after.headers["ETag"] != old
    assert after.get_data() != before.get_data()
    revalidated = _get(node, path, etag=old, accept="image/png")
    assert revalidated.status_code == 200 and revalidated.get_data() == after.get_data()
    assert _get(node, path, etag=after.headers["ETag"], accept="image/png").status_code == 304


def test_frames_reformats_and_3d_views_get_new_etags_when_the_series_grows(node):
    files = _demo_series(4)
    _stored(node, files[1:])
    record_id = series_record_id(node.institution_id, _uids(files[0])[1])
    base = f"/api/v1/records/{record_id}"
    images = {f"{base}/frames/0": {}, f"{base}/mpr/coronal/0": {}, f"{base}/volume": {"size": "64x64"}}
    _load(node, record_id)
    old = {}
    for path, params in images.items():
        reply = _get(node, path, format="png", **params)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        old[path] = reply.headers["ETag"]
        assert _get(node, path, etag=old[path], format="png", **params).status_code == 304, path

    _stored(node, files[:1])  # frame 0 is now another instance, and the volume holds one slice more
    _load(node, record_id)

    for path, params in images.items():
        again = _get(node, path, etag=old[path], format="png", **params)
        assert again.status_code == 200 and again.headers["ETag"] != old[path], path


def _load(node, record_id: str) -> None:
    """Load the record whole (reformats need every frame)."""
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
