"""Headers that say what a rendered image shows, shared by frames, reformats and 3D views.

- `X-Orientation: top=S,right=L,bottom=I,left=R`: the patient direction at each image edge, so a
  viewer can label edges without knowing the node's geometry. Absent when the record's
  orientation is unknown (no ImageOrientationPatient): a wrong label is worse than none.
- `X-Window: center,width`: the window the image was rendered with, including the node's own
  choice when the request named none (the file's window or the automatic one; for a 3D
  projection the window measured on the projection), so a viewer's window drag starts from
  what is on screen. Absent where no single window applies (a VOI LUT).
- `ETag` (`image_etag`): which image this is, known before rendering, so a browser revalidating
  an image it has costs no rendering; it is also the node's image cache key (`ImageCache`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Response, request
from werkzeug.http import quote_etag

from daemons.render.imaging.pixels import Window
from daemons.render.records import frames_content
from daemons.render.store.manifest import Manifest

RENDER_MS = "X-Render-Ms"
ORIENTATION = "X-Orientation"
WINDOW = "X-Window"
#: What a page of another origin may read of an image answer: both CORS doors of the node (the
#: API's, `create_base_app`'s `expose_headers`; DICOMweb's, `daemons.render.dicomweb.cors`) expose them.
EXPOSED = (RENDER_MS, ORIENTATION, WINDOW)


def orientation_value(labels: dict[str, str]) -> str:
    return ",".join(f"{edge}={label}" for edge, label in labels.items())


def window_value(window: Window) -> str:
    return f"{window.center:.10g},{window.width:.10g}"


def mirrored_labels(labels: dict[str, str], flip: tuple[bool, bool]) -> dict[str, str]:
    """The edge labels of an image mirrored left-right (`flip[0]`) and/or top-bottom (`flip[1]`)."""
    swap = {}
    if flip[0]:
        swap.update({"left": "right", "right": "left"})
    if flip[1]:
        swap.update({"top": "bottom", "bottom": "top"})
    return {edge: labels[swap.get(edge, edge)] for edge in labels}


def image_etag(record_id: str, manifest: Manifest, *parts: Any) -> str:
    """The ETag of an image of a record rendered from `manifest`'s frames as `parts` (every
    parameter that shapes it) say. It names the frames by their content (`records.frames_content`),
    not by the record id alone: a series keeps its id while it grows, and its frame `i`, its
    volume and so its images then change (RFC 9110 8.8.3: another representation, another ETag).
    The frames' digest is kept with the manifest in RAM: no store read per request."""
    return hashlib.sha256(repr((record_id, frames_content(manifest), *parts)).encode()).hexdigest()[:32]


def image_response(body: bytes, mimetype: str, cache_control: str, render_ms: float, etag: str | None = None,
                   weak: bool = False, labels: dict[str, str] | None = None, window: Any = None) -> Response:
    """A rendered image with its headers: `Cache-Control`, `X-Render-Ms`, the `ETag` when given, and
    both headers above (each left out where it does not apply).

    Given to the response whole: werkzeug looks a header up by scanning the list of those already
    set, so setting them one by one costs every image request a scan per header.
    """
    headers = [("Cache-Control", cache_control), (RENDER_MS, f"{render_ms:.1f}")]
    if etag is not None:
        headers.append(("ETag", quote_etag(etag, weak)))
    if labels:
        headers.append((ORIENTATION, orientation_value(labels)))
    if isinstance(window, Window):
        headers.append((WINDOW, window_value(window)))
    return Response(body, mimetype=mimetype, headers=headers)


def not_modified(etag: str, cache_control: str, weak: bool = False) -> Response | None:
    """The 304 for a request whose If-None-Match names `etag`, else None: the one conditional rule
    of frames, reformats and 3D stills. If-None-Match compares weakly (RFC 9110 13.1.2), so
    `W/"<etag>"` matches too, and the 304 carries the Cache-Control the 200 would (15.4.5):
    reformats and 3D stills compared strongly and sent none, so a client or proxy that weakened the
    ETag had every image rendered anew, and a revalidated image lost its caching rule."""
    if not request.if_none_match.contains_weak(etag):
        return None
    response = Response(status=304, headers={"Cache-Control": cache_control})
    response.set_etag(etag, weak=weak)
    return response
