"""The file a C-STORE is stored as: the node's file meta information, written from the presentation
context (pynetdicom's `encoded_dataset`), followed by the peer's data set as it arrived.

A DIMSE data set holds no File Meta Information (group 0002: PS3.10 7.1 puts it in files only,
PS3.7 6.3.1 has the data set be the SOP instance's attributes). pynetdicom does not look: a peer's
data set that began with (0002,0010) naming MPEG-2 ahead of a native CT on an Explicit VR Little
Endian context made those elements part of the stored file's meta, pydicom kept the last Transfer
Syntax UID, and the CT was filed as stored-only MPEG-2, its pixel data never checked, and sent on
under that syntax. Such a data set is refused as not understood (0xC000), nothing stored; and the
file is checked to read back with the node's own meta, naming the context's transfer syntax.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from typing import Any

from pydicom.uid import UID

from daemons.render.ingest.upload_checks import UploadError, read_file_meta

FILE_META_GROUP = 0x0002
#: Compressed bytes inflated at a time while looking for a deflated data set's first element.
INFLATE_CHUNK = 1 << 16


def stored_file(event: Any) -> bytes:
    """The Part 10 file of a C-STORE's data set, with the file meta of its presentation context.
    UploadError (not_dicom, 0xC000) when the data set holds file meta elements of its own, or the
    file's meta would not read back as the context's transfer syntax."""
    data_set: BytesIO = event.request.DataSet
    syntax = UID(event.context.transfer_syntax)
    tag = first_tag(data_set, syntax)
    if tag is not None and tag >> 16 == FILE_META_GROUP:
        raise UploadError(400, "not_dicom", f"the data set begins with ({tag >> 16:04X},{tag & 0xFFFF:04X}), "
                          "a file meta element (group 0002): a DIMSE data set holds none, the node writes the "
                          "file meta from the presentation context")
    raw = event.encoded_dataset(include_meta=True)
    try:
        read_syntax, data_start = read_file_meta(raw)
    except Exception as exc:  # the node's own meta always reads: what follows it was read as meta
        read_syntax, data_start = f"unreadable ({exc})", -1
    with data_set.getbuffer() as view:
        data_set_bytes = view.nbytes
    if read_syntax != syntax or data_start != len(raw) - data_set_bytes:
        raise UploadError(400, "not_dicom", f"the stored file's meta would read as transfer syntax {read_syntax}, "
                          f"not the presentation context's {syntax.name}: the data set's first bytes read as file "
                          "meta")
    return raw


def first_tag(data_set: BytesIO, syntax: UID) -> int | None:
    """The tag (group << 16 | element) of the data set's first element, read in the context's byte
    order (inflated first under a deflated syntax); None when the data set is too short or its
    deflated bytes cannot be inflated (the ingest's parse refuses it with its own reason)."""
    if syntax.is_deflated:
        head = _inflated_head(data_set)
    else:
        with data_set.getbuffer() as view:
            head = bytes(view[:4])
    if len(head) < 4:
        return None
    group, element = struct.unpack("<HH" if syntax.is_little_endian else ">HH", head[:4])
    return int(group) << 16 | int(element)


def _inflated_head(data_set: BytesIO) -> bytes:
    """The first 4 bytes a deflated data set inflates to: at most that much output is made (a
    bomb inflates no further), from the compressed bytes a chunk at a time."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = b""
    with data_set.getbuffer() as compressed:
        try:
            for start in range(0, len(compressed), INFLATE_CHUNK):
                pending = bytes(compressed[start:start + INFLATE_CHUNK])
                while pending and len(head) < 4:
                    head += inflater.decompress(pending, 4 - len(head))
                    pending = inflater.unconsumed_tail
                if len(head) >= 4 or inflater.eof:
                    break
        except zlib.error:
            return b""
    return head
