"""Headers that say what a rendered image shows, shared by frames, reformats and 3D views.

- `X-Orientation: top=S,right=L,bottom=I,left=R`: the patient direction at each image edge, so a
  viewer can label edges without knowing the node's geometry. Absent when the record's
  orientation is unknown (no ImageOrientationPatient): a wrong label is worse than none.
- `X-Window: center,width`: the window the image was rendered with, including the node's own
  choice when the request named none (the file's window or the automatic one; for a 3D
  projection the window measured on the projection), so a viewer's window drag starts from
  what is on screen. Absent where no single window applies (a VOI LUT).
"""

from __future__ import annotations

from typing import Any

from flask import Response
from werkzeug.http import quote_etag

from daemons.render.imaging.pixels import Window

ORIENTATION = "X-Orientation"
WINDOW = "X-Window"
EXPOSED = (ORIENTATION, WINDOW)


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


def image_response(body: bytes, mimetype: str, cache_control: str, render_ms: float, etag: str | None = None,
                   weak: bool = False, labels: dict[str, str] | None = None, window: Any = None) -> Response:
    """A rendered image with its headers: `Cache-Control`, `X-Render-Ms`, the `ETag` when given, and
    both headers above (each left out where it does not apply).

    Given to the response whole: werkzeug looks a header up by scanning the list of those already
    set, so setting them one by one costs every image request a scan per header.
    """
    headers = [("Cache-Control", cache_control), ("X-Render-Ms", f"{render_ms:.1f}")]
    if etag is not None:
        headers.append(("ETag", quote_etag(etag, weak)))
    if labels:
        headers.append((ORIENTATION, orientation_value(labels)))
    if isinstance(window, Window):
        headers.append((WINDOW, window_value(window)))
    return Response(body, mimetype=mimetype, headers=headers)
