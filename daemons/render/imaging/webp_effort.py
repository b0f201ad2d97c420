"""How hard to work on a WebP image, given how many are being encoded right now.

WebP at method 2 is a third smaller than at method 0 but costs 1.2-1.4x the CPU, and on a busy
node encoding is most of the work: sixteen viewers scrolling in their own windows keep every core
encoding. When more WebP images are in flight than the node has cores, new ones are encoded at
method 0 (larger, faster) until the queue drains, so latency holds under load and images are
small whenever the node keeps up: the interactive/still trade 3D viewers (ParaView, trame) make.

Every image the node serves is encoded through `WebpEffort.encode` (2D frames, reformats, 3D
views, their DICOMweb renderings), so `render.webp_method` and the fallback apply to all of them
alike, and `weak_etag` is the one rule for the validator their bytes get.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from daemons.render.imaging.encode import encode_image

FAST_METHOD = 0


def weak_etag(fmt: str) -> bool:
    """Whether an image in `fmt` gets a weak ETag: WebP bytes depend on the effort the node's load
    allowed when it was encoded (and on `render.webp_method`), so the same image can differ byte
    for byte (RFC 9110 8.8.1); the other formats encode the same way every time."""
    return fmt == "webp"


class WebpEffort:
    def __init__(self, method: int, busy_above: int):
        """`method` when the node keeps up; `busy_above` encodes in flight (0: never adapt)."""
        self.method = method
        self.busy_above = busy_above
        self._in_flight = 0
        self._lock = threading.Lock()
        self.fast_encodes = 0

    @contextmanager
    def slot(self) -> Iterator[int]:
        """Count one encode in flight for its duration; yields the method it should use."""
        with self._lock:
            self._in_flight += 1
            busy = 0 < self.busy_above < self._in_flight
            if busy:
                self.fast_encodes += 1
        try:
            yield min(self.method, FAST_METHOD) if busy else self.method
        finally:
            with self._lock:
                self._in_flight -= 1

    def encode(self, image: np.ndarray, fmt: str, quality: int | None) -> tuple[bytes, str]:
        """`encode_image` for an image the node serves: WebP at the method the node's load allows
        (counted in flight while it encodes), other formats as always."""
        if fmt != "webp":
            return encode_image(image, fmt, quality)
        with self.slot() as method:
            return encode_image(image, fmt, quality, webp_method=method)
