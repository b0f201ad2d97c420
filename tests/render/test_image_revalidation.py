"""Revalidating a rendered image (`If-None-Match`): one rule for frames, reformats and 3D stills
(`daemons.render.api.image_headers.not_modified`).

If-None-Match compares weakly (RFC 9110 13.1.2): a client or a proxy that weakened the ETag
(`W/"…"`) revalidates as well as one that kept it. A 304 carries the Cache-Control the 200 would
(15.4.5), so the image revalidated keeps its caching rule."""

from __future__ import annotations

import pytest

from tests.render.synthetic import stack

AXIAL = (1, 0, 0, 0, 1, 0)


@pytest.fixture
def images(node) -> tuple:
    record_id, _ = node.load(stack(AXIAL, count=6))
    base = f"/api/v1/records/{record_id}"
    return node, (f"{base}/frames/2", f"{base}/mpr/coronal/3", f"{base}/volume?size=64x64&render=still")


@pytest.mark.parametrize("which", ["frame", "reformat", "3D still"])
@pytest.mark.parametrize("weakened", [False, True])
def test_an_image_revalidates_with_its_etag_strong_or_weak_and_keeps_its_cache_rule(images, which, weakened):
    node, urls = images
    url = urls[["frame", "reformat", "3D still"].index(which)]
    first = node.client.get(url, headers=node.headers())
    assert first.status_code == 200 and first.headers["Cache-Control"].startswith("private, max-age=")
    etag = first.headers["ETag"]
    sent = f"W/{etag}" if weakened and not etag.startswith("W/") else etag
    again = node.client.get(url, headers={**node.headers(), "If-None-Match": sent})
    assert again.status_code == 304, (which, sent, again.status_code)
    assert again.data == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
    other = node.client.get(url, headers={**node.headers(), "If-None-Match": '"another-image"'})
    assert other.status_code == 200 and other.data == first.data
