"""Which DICOM instance each frame of a record comes from: its SOPInstanceUID and its frame number
in that instance (1-based, as DICOMweb counts). The viewer names the instance of the image it
shows with these (the tag browser asks for that instance's DICOMweb metadata); they come from the
node's DICOM catalogue, which every stored series is indexed in, so records stored before this
existed have them too."""

from __future__ import annotations

from typing import Any

from daemons.render.catalogue.index import CatalogueModels
from daemons.render.store.manifest import Manifest


def frame_instances(manifest: Manifest, cat: CatalogueModels, record_id: str) -> list[tuple[str | None, int]]:
    """(SOPInstanceUID or None when the catalogue lacks the file, frame number from 1) of every
    frame, in the record's frame order (the manifest's files are in that order)."""
    rows = cat.Instance.select(cat.Instance.blob, cat.Instance.sop_instance_uid).where(cat.Instance.series == record_id)
    uids = {row.blob: row.sop_instance_uid for row in rows}
    frames: list[tuple[str | None, int]] = []
    for entry in manifest.files:
        uid = uids.get(entry.blob)
        frames.extend((uid, number) for number in range(1, entry.frames + 1))
    return frames


def with_instances(slices: list[dict[str, Any]], frames: list[tuple[str | None, int]]) -> list[dict[str, Any]]:
    """The `slices` of RecordMeta, each with `sop_instance_uid` and `frame_number` (new dicts)."""
    return [{**entry, "sop_instance_uid": uid, "frame_number": number}
            for entry, (uid, number) in zip(slices, frames, strict=False)]
