"""WADO-RS metadata (the DICOM JSON model, PS3.18 F.2) of stored instances, kept in a bounded cache.

Why a cache in RAM, not JSON written at ingest: a series' metadata is asked for again and again
(every viewer opening it, OHIF once per study and series), and parsing its files each time costs
far more than the 200 ms a 500-instance series may take. Writing the JSON at ingest would put a
second copy of every header (patient names, dates) next to the store, to be encrypted and kept in
step with it; the cache instead holds it only in the node's memory, never on disk, so at rest
nothing changes: the instances stay encrypted in the store and the catalogue keeps its columns.
The first request for a series parses its files (in a few threads: decryption and decompression
release the GIL) and fills the cache; later ones join cached JSON texts. Entries are keyed by
(record id, file SHA-256), so a grown series only adds its new instances, and bounded by
`CACHE_BYTES` (least recently used go first).

Large binary values (pixel data, LUTs, overlays: over `BULK_THRESHOLD` bytes) become BulkDataURIs
of this node's bulk data route, with the element's path inside the instance (`tag` or
`sequence/item/tag`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pydicom
from flask import current_app
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from daemons.render.dicomweb.resolve import read_instance
from daemons.render.imaging.transcode import frame_count, little_endian_values, stored_syntax
from daemons.render.node import Node

log = logging.getLogger(__name__)

CACHE_BYTES = 256 * 1024 * 1024
BULK_THRESHOLD = 1024
FILL_THREADS = 4
EXTENSION = "sivr_dicomweb_metadata"
AVAILABLE_TRANSFER_SYNTAX = "00083002"


@dataclass(frozen=True)
class InstanceMeta:
    """One instance's metadata: its JSON text, stored transfer syntax and frame count."""

    json: bytes
    syntax: str
    frames: int


def element_path(ds: Dataset, element: DataElement, prefix: str = "") -> str | None:
    """The bulk data path of an element of `ds` (`tag`, or `sequence/item/tag` when nested).

    Found by identity among the elements already converted (a bulk data handler is called while
    its element, and any sequence holding it, is being converted), so only the few bulk values
    are looked for: walking every element up front would double the cost of the JSON.
    """
    if ds.get_item(element.tag) is element:
        return f"{prefix}{element.tag:08X}"
    for tag in ds.keys():  # noqa: SIM118 (a pydicom Dataset iterates its elements, keys() gives tags)
        item = ds.get_item(tag)
        if isinstance(item, DataElement) and item.VR == "SQ":
            for index, child in enumerate(item.value or []):
                found = element_path(child, element, f"{prefix}{int(tag):08X}/{index}/")
                if found is not None:
                    return found
    return None


#: one step of a bulk data path as `element_path` writes them: a tag (8 hex digits), an item index
_TAG_STEP = re.compile(r"[0-9A-Fa-f]{8}")
_ITEM_STEP = re.compile(r"[0-9]{1,9}")


def find_element(ds: Dataset, path: str) -> DataElement | None:
    """The element a bulk data path names (None when there is none).

    Steps are matched against the form `element_path` writes, in ASCII: `int()` alone also reads
    `0x82112`, `+0082112`, `0008_2112` or fullwidth digits as a tag, and `str.isdigit` passes `²`,
    which `int()` then refuses (a 500).
    """
    steps = path.split("/")
    if len(steps) % 2 == 0:
        return None
    current: Dataset = ds
    for position in range(0, len(steps), 2):
        if not _TAG_STEP.fullmatch(steps[position]):
            return None
        tag = int(steps[position], 16)
        if tag not in current:
            return None
        element = current[tag]
        if position == len(steps) - 1:
            return element
        if element.VR != "SQ" or not _ITEM_STEP.fullmatch(steps[position + 1]):
            return None
        index = int(steps[position + 1])
        if index >= len(element.value or []):
            return None
        current = element.value[index]
    return None


def instance_json(ds: Dataset, bulk_base: str) -> bytes:
    """The DICOM JSON of a dataset, large binaries as BulkDataURIs under `bulk_base`.

    An element whose value cannot be written as DICOM JSON is left out (and logged) rather than
    failing the whole response. Not through pydicom's `suppress_invalid_tags`: that switches the
    process-wide reading validation to RAISE for the duration and restores it afterwards, which
    races between the request threads and the parse pool (one thread restores the RAISE another
    had set) and leaves every later parse in the process strict.
    """

    def bulk_uri(element: DataElement) -> str:
        return f"{bulk_base}/{element_path(ds, element) or f'{element.tag:08X}'}"

    model: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        try:
            model[f"{tag:08X}"] = ds[tag].to_json_dict(bulk_uri, BULK_THRESHOLD)
        except Exception as exc:  # as pydicom's own suppress_invalid_tags: any element pydicom cannot convert
            log.warning("metadata: element %08X dropped, its value does not convert to DICOM JSON: %s", tag, exc)
    model[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [stored_syntax(ds)]}
    try:
        return json.dumps(model, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # NaN or infinity in a DS, FL or FD value: JSON has no such numbers
        log.warning("metadata: non-finite numbers of instance %s sent as null", ds.get("SOPInstanceUID", "?"))
        return json.dumps(_finite(model), separators=(",", ":"), allow_nan=False).encode()


def _finite(value: Any) -> Any:
    """`value` (a DICOM JSON model) with each NaN or infinity replaced by null, as PS3.18 F.2.5 writes
    a value that is absent: `json.dumps` would write the bare `NaN` and `Infinity` that no JSON
    parser takes (a browser's `JSON.parse` refuses the whole series' metadata)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


class MetadataCache:
    """Instance metadata by (record id, SHA-256), bounded in bytes, least recently used dropped first."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], InstanceMeta] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> InstanceMeta | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[str, str], entry: InstanceMeta) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= len(old.json) if old is not None else 0
            self._entries[key] = entry
            self._bytes += len(entry.json)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped.json)

    def entries(self, the_node: Node, rows: list[Any], bulk_base: Callable[[Any], str],
                parsed: dict[str, Dataset] | None = None) -> list[InstanceMeta]:
        """The metadata of catalogue instance rows (in their order), parsing the ones not cached.

        `parsed`: datasets of some of these files by SHA-256, parsed from the same bytes (the ingest's,
        at the series-complete rule): they are not read from the store and parsed again, and each is
        taken out of the dict once used (its pixel data, read to make the JSON, goes with it).
        """
        parsed = {} if parsed is None else parsed
        found: dict[int, InstanceMeta] = {}
        missing = []
        for position, row in enumerate(rows):
            entry = self.get((row.series_id, row.sha256))
            if entry is None:
                missing.append((position, row))
            else:
                found[position] = entry

        def build(item: tuple[int, Any]) -> tuple[int, InstanceMeta]:
            position, row = item
            ds = parsed.pop(row.sha256, None)
            if ds is None:
                ds = pydicom.dcmread(io.BytesIO(read_instance(the_node, row)))
            entry = InstanceMeta(instance_json(little_endian_values(ds), bulk_base(row)), stored_syntax(ds),
                                 frame_count(ds))
            self.put((row.series_id, row.sha256), entry)
            return position, entry

        if len(missing) == 1:
            found.update([build(missing[0])])
        elif missing:
            with ThreadPoolExecutor(min(FILL_THREADS, len(missing)), thread_name_prefix="sivr-metadata") as pool:
                found.update(pool.map(build, missing))
        return [found[position] for position in range(len(rows))]


def metadata_cache() -> MetadataCache:
    """The app's metadata cache (one per node)."""
    cache = current_app.extensions.get(EXTENSION)
    if cache is None:
        cache = current_app.extensions.setdefault(EXTENSION, MetadataCache())
    return cache
