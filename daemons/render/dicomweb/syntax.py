"""Transfer syntaxes over WADO-RS: what a client's Accept asks for, what the node sends, and the bytes.

The rules (PS3.18 8.7.3 and 8.7.4, as Orthanc's DICOMweb plugin since 1.5 also reads them):
- An instance part (`application/dicom`) without a `transfer-syntax` parameter, or an Accept of
  `*/*`, means Explicit VR Little Endian: a stored instance in another syntax is transcoded
  (decompressed) to it. `transfer-syntax=*` means "as stored": the stored bytes, bit-exact.
  Any other syntax is served only to instances stored in it (the node never compresses): 406.
- A frame part: `application/octet-stream` (no syntax, or 1.2.840.10008.1.2.1) is the frame's
  native little-endian pixels, decoded where the instance is compressed; `transfer-syntax=*`,
  `*/*`, or the stored syntax's own media type (image/jls, image/jp2, image/jpeg,
  image/dicom-rle...) gets the stored compressed frame as it is.
- A resource of one item (an instance, one frame, the bulk data of one value or of a single frame)
  is also answered single-part, to a bare media type (`application/dicom`, `application/octet-stream`,
  `image/jls`): PS3.18 10.4.4 permits single-part media types for "resources which are a single
  response item", and a client asking `Accept: application/dicom` for an instance expects the Part 10
  file as the body. The multipart answer stays the default (`*/*`); a bare type also takes in the
  parts of that type (`accept.Offer.loose`: `image/jls;q=0` refuses JPEG-LS parts too), less
  exactly than the single-part answer it names, and is all a study, a series or several frames
  (multipart only) are answered to.
Every instance on a node had its pixel data decoded once when it arrived (`daemons.render.ingest.upload_checks`),
so Explicit VR Little Endian can always be produced, except for a stored-only instance (`daemons.render.stored_only`):
that one is sent as stored only (`transfer-syntax=*` or its own syntax), else 406.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from daemons.render.dicomweb.accept import ANY, DICOM, OCTETS, Asked, Offer
from daemons.render.imaging.decode import (
    encoded_frame,
    little_endian_value,
    stored_values,
    swap_words,
    syntax_decodable,
    word_size,
)
from daemons.render.imaging.transcode import EXPLICIT_LE, frame_count, little_endian_array, stored_syntax
from daemons.render.store.frame_layout import layout_of
from shared.errors import ApiError

#: the media types of a DICOM JSON answer (QIDO-RS, metadata, the STOW-RS outcome), the first the default
JSON_TYPES = ("application/dicom+json", "application/json")
#: a transfer syntax no range can name (`accept.accepted` reads an empty one as none): what every decodable
#: instance is offered for (`needs_stored_syntax`)
_ANY_DECODABLE = ""

#: the media type of a compressed frame, by its transfer syntax (PS3.18 Table 8.7.3-2)
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


def not_acceptable(what: str) -> ApiError:
    return ApiError(406, "not_acceptable", what)


def json_answer(asked: Asked, what: str) -> str:
    """The media type of a DICOM JSON answer: the best of `JSON_TYPES` the request accepts
    (application/dicom+json first on a tie, as for a wildcard); 406 saying `what` is sent as when it
    accepts neither (the XML forms of PS3.18 are not supported)."""
    chosen = asked.choose([Offer(media, (media,), multipart=False) for media in JSON_TYPES])
    if not chosen:
        raise not_acceptable(f"{what} is sent as {' or '.join(JSON_TYPES)} only; the XML forms are not supported")
    return chosen[0].value


@dataclass(frozen=True)
class InstanceForm:
    """How an instance is sent: in which syntax (ANY: as stored; else Explicit VR Little Endian) and
    whether as a part of a multipart answer or as the whole body (single-part `application/dicom`)."""

    syntax: str
    multipart: bool = True


def _forms(single_item: bool) -> tuple[bool, ...]:
    """Whether each form of an answer is multipart: the multipart one first (the default, PS3.18
    Table 10.4.4-1: ties go to it), then for a single response item the single-part one."""
    return (True, False) if single_item else (True,)


def _instance_offers(stored: str, decodable: bool, single_item: bool = False) -> list[Offer[InstanceForm]]:
    """An instance stored in `stored`: as stored (ANY), or in Explicit VR Little Endian where it can be
    decoded, which a range naming no transfer syntax (a wildcard too) takes in; single-part too when it
    is the whole answer (`single_item`), which a bare `application/dicom` names exactly."""
    offers = []
    for multipart in _forms(single_item):
        offers.append(Offer(InstanceForm(ANY, multipart), (DICOM,), multipart, frozenset({stored}), stored=True,
                            default=False, loose=multipart))
        if decodable:
            value = ANY if stored == EXPLICIT_LE else EXPLICIT_LE
            offers.append(Offer(InstanceForm(value, multipart), (DICOM,), multipart, frozenset({EXPLICIT_LE}),
                                loose=multipart))
    return offers


def instance_syntax(asked: Asked, stored: str) -> str | None:
    """The syntax to send an instance stored in `stored` in, as a part of a study's or series' answer
    (ANY: as stored), or None if the request takes none (a stored-only instance, in a syntax this node
    cannot decode, is never transcoded)."""
    chosen = asked.choose(_instance_offers(stored, syntax_decodable(stored)))
    return chosen[0].value.syntax if chosen else None


def instance_form(asked: Asked, stored: str) -> InstanceForm | None:
    """How to send an instance stored in `stored` asked for alone (its instance resource): as
    `instance_syntax`, and single-part where the request prefers that; None if it takes neither."""
    chosen = asked.choose(_instance_offers(stored, syntax_decodable(stored), single_item=True))
    return chosen[0].value if chosen else None


def needs_stored_syntax(asked: Asked, single_item: bool = False) -> bool:
    """Whether the answer depends on the stored syntaxes: the request takes not every decodable
    instance, whatever its syntax, but names a specific other syntax: each instance must then be
    checked before the answer starts. 406 when it can take no instance at all (in no form: also
    single-part for an instance resource, `single_item`).

    A range of q=0 refuses what it names more specifically than the range that takes the rest in
    (`accept.ranked`), whatever syntax it names or none: `transfer-syntax=1.2.840.10008.1.2.5;q=0,
    transfer-syntax=*` takes every instance as stored but those in RLE, and `*/*; transfer-syntax=*,
    application/dicom;q=0` those stored in Explicit VR Little Endian in no form. Such a request
    depends on the stored syntaxes too: it was not checked, and the instances it refused went in
    Explicit VR Little Endian, which it had not asked for or had refused."""
    if asked.choose(_instance_offers(_ANY_DECODABLE, True, single_item)):
        return any(item.q == 0 for ranges in asked.sources for item in ranges)
    if any(item.syntax not in (None, ANY, EXPLICIT_LE) for ranges in asked.sources for item in ranges):
        return True
    if single_item:  # an instance resource is also its file alone (PS3.18 10.4.4)
        raise not_acceptable('an instance is sent as application/dicom (its Part 10 file as the body) or as '
                             'multipart/related; type="application/dicom": ask for one of them')
    raise not_acceptable('the pixel data and bulk data of instances are the .../pixeldata and .../bulkdata '
                         'resources (PS3.18 10.4.1.1.5-6); instances are sent as multipart/related; '
                         'type="application/dicom" only')


@dataclass(frozen=True)
class FrameChoice:
    """How an instance's frames are sent: as stored (compressed) or as native little-endian pixels."""

    stored: bool
    part_type: str
    transfer_syntax: str
    multipart: bool = True  # False: the one frame asked for is the whole body (single-part)

    @property
    def content_type(self) -> str:
        return f"{self.part_type}; transfer-syntax={self.transfer_syntax}"


def frame_choice(asked: Asked, stored: str, single_item: bool = False) -> FrameChoice:
    """The form of the frames of an instance stored in `stored` (406 when the client takes none): the
    stored compressed frame (its own media type, or application/octet-stream with a transfer syntax
    of `*` or its own), or the native pixels (application/octet-stream, Explicit VR Little Endian,
    which also answers to the stored syntax of an uncompressed instance); a wildcard takes either,
    the stored one first. Multipart, or single-part where one frame is the whole answer
    (`single_item`) and the request prefers that."""
    compressed = stored in FRAME_MEDIA_TYPES
    native = frozenset({EXPLICIT_LE} if compressed else {EXPLICIT_LE, stored})
    offers = []
    for multipart in _forms(single_item):
        if compressed:
            offers.append(Offer(FrameChoice(True, FRAME_MEDIA_TYPES[stored], stored, multipart),
                                (FRAME_MEDIA_TYPES[stored], OCTETS), multipart, frozenset({stored}), stored=True,
                                loose=multipart))
        offers.append(Offer(FrameChoice(False, OCTETS, EXPLICIT_LE, multipart), (OCTETS,), multipart, native,
                            stored=not compressed, loose=multipart))
    chosen = asked.choose(offers)
    if not chosen:
        raise not_acceptable(f"the frames are stored in {stored}; ask for application/octet-stream (decoded, "
                             f"{EXPLICIT_LE}), transfer-syntax=* or {FRAME_MEDIA_TYPES.get(stored, OCTETS)}")
    return chosen[0].value


def bulk_form(asked: Asked, single_item: bool = True) -> bool | None:
    """How a bulk data value (not pixel data) is sent, as application/octet-stream: True as a part of a
    multipart answer (the default), False as the whole body (single-part, which a bare
    `application/octet-stream` names where the value is a single response item, `single_item`: a
    BulkDataURI), None if the request takes neither. For a resource of several parts (`.../bulkdata`)
    a bare `application/octet-stream` names its parts' type, as for frames (`accept.Offer.loose`)."""
    offers = [Offer(multipart, (OCTETS,), multipart, loose=multipart) for multipart in _forms(single_item)]
    chosen = asked.choose(offers)
    return chosen[0].value if chosen else None


def frame_bytes(ds: Dataset, number: int, choice: FrameChoice) -> bytes:
    """Frame `number` (1-based) of an instance: its stored compressed bytes, or its native pixels
    (decoded as the node renders them, `decode.stored_values`). Stored bytes are found as rendering
    finds them (`decode.encoded_frame`: an offset table, or one pass over the fragments kept on the
    data set), not by pydicom's walk from the first fragment at every frame, which made the last
    1,000 frames of 2,000 of two fragments read three million fragments."""
    frames = frame_count(ds)
    syntax = UID(stored_syntax(ds))
    if choice.stored:
        return encoded_frame(ds, number - 1, frames)
    layout = layout_of(ds, float_modality=False)
    if syntax.is_compressed:
        return little_endian_array(stored_values(ds, number - 1, layout)).tobytes()
    bits = layout.native_frame_bits
    if bits % 8:
        raise not_acceptable("frames of 1-bit data that do not end on a byte boundary cannot be sent apart")
    size = bits // 8
    start, pixels = (number - 1) * size, ds["PixelData"]
    word = None if syntax.is_little_endian else word_size(pixels, layout.bits_allocated)
    if word is None:
        return bytes(pixels.value[start:start + size])
    if size % word:  # frames that split a word: the whole value is swapped, then cut
        return little_endian_value(pixels, layout.bits_allocated)[start:start + size]
    return swap_words(pixels.value[start:start + size], word)  # only this frame's words
