"""Encoded images kept in RAM, least recently used dropped beyond a byte budget.

Many viewers of one record mostly look at it in the same window (the file's own, or a preset),
and a viewer scrolls back and forth over the same slices: the same image is asked for again and
again. The key is the image's ETag (`api.image_headers.image_etag`: the record's frames by their
content + every parameter), so an entry can never be stale, even of a series that grew; a
record's entries are dropped when it is deleted or changes, to free the memory sooner.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

#: Bytes an entry costs beyond its image: the key tuple, its record id and ETag strings (new ones
#: per request), the value tuple, the bytes object's header and the ordered dict's slots. Measured
#: as the growth of a process's resident memory per entry (CPython 3.11, 67-byte and 600-byte
#: images alike: 510 to 525 bytes). Counted because the key is the client's to choose (any window,
#: size, region): tiny images counted by their bodies alone filled a cache with several times its
#: budget in real memory.
ENTRY_OVERHEAD = 512


def _entry_cost(body: bytes) -> int:
    """The memory one cached image takes, as the budget counts it."""
    return len(body) + ENTRY_OVERHEAD


class ImageCache:
    """Encoded images by (record id, ETag) within `budget_bytes` of memory, their bookkeeping included."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[tuple[str, str], tuple[bytes, str]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], threading.Event] = {}
        self.hits = 0
        self.misses = 0

    def get(self, record_id: str, etag: str) -> tuple[bytes, str] | None:
        with self._lock:
            item = self._items.get((record_id, etag))
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end((record_id, etag))
            self.hits += 1
            return item

    def put(self, record_id: str, etag: str, body: bytes, mimetype: str) -> None:
        if len(body) > self.budget_bytes // 16:
            return
        with self._lock:
            key = (record_id, etag)
            if key in self._items:
                return
            self._items[key] = (body, mimetype)
            self._used += _entry_cost(body)
            while self._used > self.budget_bytes and self._items:
                _, (old, _) = self._items.popitem(last=False)
                self._used -= _entry_cost(old)

    def get_or_make(self, record_id: str, etag: str, make: Callable[[], tuple[bytes, str]]) -> tuple[bytes, str]:
        """The cached image, or `make()`'s; concurrent requests for one image make it once.

        Viewers that open one record together ask for the same slices in the same window at the
        same moment; without this, each would encode the same image (the costliest step).
        """
        key = (record_id, etag)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return item
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = threading.Event()
            else:
                self.hits += 1
        if not owner:
            pending.wait(30)
            item = self.get(record_id, etag)
            if item is not None:
                return item
            return make()
        try:
            body, mimetype = make()
            self.misses += 1
            self.put(record_id, etag, body, mimetype)
            return body, mimetype
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.set()

    def drop_record(self, record_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == record_id]:
                body, _ = self._items.pop(key)
                self._used -= _entry_cost(body)

    @property
    def used_bytes(self) -> int:
        """The memory the kept images take, their bookkeeping (ENTRY_OVERHEAD each) included."""
        return self._used
