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
Every instance on a node had its pixel data decoded once when it arrived (`daemons.render.ingest.upload_checks`),
so Explicit VR Little Endian can always be produced, except for a stored-only instance (`daemons.render.stored_only`):
that one is sent as stored only (`transfer-syntax=*` or its own syntax), else 406.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import UID

from daemons.render.dicomweb.multipart import covers, media_type, specificity, split_unquoted, weight
from daemons.render.imaging.decode import little_endian_value, stored_values, swap_words, syntax_decodable, word_size
from daemons.render.imaging.transcode import EXPLICIT_LE, frame_count, little_endian_array, stored_syntax
from daemons.render.store.frame_layout import layout_of
from shared.errors import ApiError

ANY = "*"
DICOM = "application/dicom"
OCTETS = "application/octet-stream"
WILDCARDS = ("*/*", "*", "application/*")
#: the media types of a DICOM JSON answer (QIDO-RS, metadata, the STOW-RS outcome), the first the default
JSON_TYPES = ("application/dicom+json", "application/json")

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
#: older names some clients still send (dicomweb-client accepts both)
MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


@dataclass(frozen=True)
class Wanted:
    """One media range of an Accept header, as a part media type and an optional transfer syntax,
    with the ranges of the same header that refuse (q=0) part of what it covers, more specifically."""

    part_type: str
    transfer_syntax: str | None
    refused: tuple[Wanted, ...] = field(default=(), compare=False)

    @property
    def specificity(self) -> int:
        """`multipart.specificity` of its part type, one more with a transfer syntax (a media type's
        parameter makes a range more specific, RFC 9110 12.5.1)."""
        return specificity(self.part_type) + (self.transfer_syntax is not None)

    def refuses(self, part_type: str, transfer_syntax: str | None = None) -> bool:
        """Whether a more specific range of the header refused (q=0) a part of `part_type` in
        `transfer_syntax`, which this range would take in: `image/jls;q=0, */*` is no JPEG-LS frame."""
        return any(covers(no.part_type, part_type) and no.transfer_syntax in (None, transfer_syntax)
                   for no in self.refused)


def accepted(header: str | None) -> list[Wanted]:
    """The media ranges of an Accept header, best first (q=0 dropped); none given is `*/*`, and
    ranges given that all refuse (q=0) accept nothing: the caller answers 406. A range given q=0 is
    kept in the `refused` of each less specific range, which then `refuses` what it covers: a q of 0
    means "not acceptable" (RFC 9110 12.5.1), also where a wildcard beside it matches.

    `multipart/related; type="X"; transfer-syntax=Y` names the part type X; a bare media type
    (`application/dicom`, `*/*`) stands for itself.
    """
    if not (header or "").strip(" ,\t"):
        return [Wanted("*/*", None)]
    ranges = []
    for order, text in enumerate(split_unquoted(header or "", ",")):
        if not text.strip():
            continue
        media, params = media_type(text)
        part = params.get("type", "").lower() if media == "multipart/related" else media
        part = MEDIA_ALIASES.get(part, part)
        ranges.append((-weight(params), order, Wanted(part or "*/*", params.get("transfer-syntax") or None)))
    refusals = [wanted for q, _, wanted in ranges if q >= 0]
    return [replace(wanted, refused=tuple(no for no in refusals if no.specificity > wanted.specificity))
            for q, _, wanted in sorted(ranges, key=lambda r: (r[0], r[1])) if q < 0]


def not_acceptable(what: str) -> ApiError:
    return ApiError(406, "not_acceptable", what)


def json_answer(header: str | None, what: str) -> str:
    """The media type of a DICOM JSON answer for an Accept header: the first of `JSON_TYPES` it
    names, best first, application/dicom+json for a wildcard; 406 saying `what` is sent as when it
    accepts neither (the XML forms of PS3.18 are not supported)."""
    for item in accepted(header):
        if item.part_type in JSON_TYPES:
            return item.part_type
        taken = [json for json in JSON_TYPES if item.part_type in WILDCARDS and not item.refuses(json)]
        if taken:
            return taken[0]
    raise not_acceptable(f"{what} is sent as {' or '.join(JSON_TYPES)} only; the XML forms are not supported")


def instance_targets(wanted: list[Wanted]) -> list[str]:
    """The transfer syntaxes (or ANY: as stored) an instance may be sent in, best first; 406 if none."""
    targets = []
    for item in wanted:
        target = item.transfer_syntax or EXPLICIT_LE
        if item.part_type in (DICOM, *WILDCARDS) and not item.refuses(DICOM, target):
            targets.append(target)
    if not targets:
        raise not_acceptable('instances are sent as multipart/related; type="application/dicom" only')
    return targets


def instance_syntax(targets: list[str], stored: str) -> str | None:
    """The syntax to send an instance stored in `stored` in (ANY: as stored), or None if none fits
    (a stored-only instance, in a syntax this node cannot decode, is never transcoded)."""
    for target in targets:
        if target in (ANY, stored):
            return ANY
        if target == EXPLICIT_LE and syntax_decodable(stored):
            return EXPLICIT_LE
    return None


def needs_stored_syntax(targets: list[str]) -> bool:
    """Whether the answer depends on the stored syntaxes (no target every instance satisfies)."""
    return not any(t in (ANY, EXPLICIT_LE) for t in targets)


@dataclass(frozen=True)
class FrameChoice:
    """How an instance's frames are sent: as stored (compressed) or as native little-endian pixels."""

    stored: bool
    part_type: str
    transfer_syntax: str

    @property
    def content_type(self) -> str:
        return f"{self.part_type}; transfer-syntax={self.transfer_syntax}"


def frame_choice(wanted: list[Wanted], stored: str) -> FrameChoice:
    """The form of the frames of an instance stored in `stored` (406 when the client takes none)."""
    compressed = stored in FRAME_MEDIA_TYPES
    as_stored = FrameChoice(True, FRAME_MEDIA_TYPES[stored], stored) if compressed else None
    native = FrameChoice(False, OCTETS, EXPLICIT_LE)
    for item in wanted:
        syntax = item.transfer_syntax
        forms: list[FrameChoice | None] = []
        if item.part_type in WILDCARDS:
            if syntax in (None, ANY) or syntax == stored:
                forms = [as_stored, native]
            elif syntax == EXPLICIT_LE:
                forms = [native]
        elif item.part_type == OCTETS:
            if syntax in (None, EXPLICIT_LE):
                forms = [native]
            elif syntax in (ANY, stored):
                forms = [as_stored, native]
        elif compressed and item.part_type == FRAME_MEDIA_TYPES[stored] and syntax in (None, ANY, stored):
            forms = [as_stored]
        for form in forms:  # the first the range takes in: a more specific q=0 may refuse one
            if form is not None and not item.refuses(form.part_type, form.transfer_syntax):
                return form
    raise not_acceptable(f"the frames are stored in {stored}; ask for application/octet-stream (decoded, "
                         f"{EXPLICIT_LE}), transfer-syntax=* or {FRAME_MEDIA_TYPES.get(stored, OCTETS)}")


def frame_bytes(ds: Dataset, number: int, choice: FrameChoice) -> bytes:
    """Frame `number` (1-based) of an instance: its stored compressed bytes, or its native pixels
    (decoded as the node renders them, `decode.stored_values`)."""
    frames = frame_count(ds)
    syntax = UID(stored_syntax(ds))
    if choice.stored:
        return get_frame(ds.PixelData, number - 1, number_of_frames=frames)
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
