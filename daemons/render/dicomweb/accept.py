"""Content negotiation for every DICOMweb resource: which of the answers a resource can give the
client takes, and which it takes best. One definition, so that WADO-RS (instances, frames, bulk
data, metadata), the rendered resources and thumbnails, QIDO-RS and the STOW-RS answer cannot read
one Accept header two ways (they did: `multipart/related; type="*/*"; q=0, */*` refused multipart
answers on `/rendered` and was ignored by WADO-RS, which sent one).

The rules (RFC 9110 12.5.1; PS3.18 8.7.7, 8.7.8, 10.4.4):
- An answer's weight is the q-value of the most specific media range that takes it in, whatever the
  order of the ranges: `*/*, image/jpeg;q=0.5` prefers every other image type to JPEG, and a range
  given q=0 (or below) refuses what it takes in where a less specific range would take it.
  Specificity is, in this order: the part type (`*/*`, `image/*`, `image/png`), then whether a
  transfer syntax is named, then the outer type (any, `multipart/*`, `multipart/related`).
- `multipart/related; type="X"` takes in a multipart answer of X parts; without `type` (or with
  `type="*/*"`) any multipart answer, which `*/*` also takes in, less specifically.
- A bare media type takes in a single-part answer of that type, and for a WADO-RS resource
  (instances, frames, bulk data) also the multipart answer of parts of that type (`Offer.loose`),
  as clients write `application/dicom` for `multipart/related; type="application/dicom"`: its q
  weighs (and refuses) those parts too. Where a resource of one item (an instance, one frame, one
  bulk data value) offers both, the bare range names the single-part one exactly, which goes first
  (PS3.18 10.4.4 permits single-part types "for resources which are a single response item": a
  client asking `application/dicom` for an instance expects the file as the body). A rendered
  resource of several images is never answered to a single-part range (PS3.18 10.4.4).
- A transfer syntax: `*` is the stored bytes as they are; a range that names none takes in Explicit
  VR Little Endian for `application/dicom` and `application/octet-stream`, an answer's own syntax for
  a compressed type (`image/jls`), and what a resource sends by default for a wildcard. Where an
  answer has no transfer syntax (an image, JSON) the parameter is ignored (PS3.18 8.7.7).
- Ties: the range listed first, then an answer the deciding range names exactly before one it takes
  in loosely (a bare type's multipart answer), then the resource's own order of preference (its
  default first).
- The `accept` query parameter is read first; only if it takes in none of the answers is the Accept
  header read (PS3.18 8.7.8.1). No Accept header, or one of empty elements only, is `*/*`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from flask import request

from daemons.render.api.query import single_value
from daemons.render.dicomweb.multipart import media_type, split_unquoted
from daemons.render.imaging.transcode import EXPLICIT_LE

ANY = "*"
DICOM = "application/dicom"
OCTETS = "application/octet-stream"
#: part types whose range, naming no transfer syntax, means Explicit VR Little Endian (PS3.18 8.7.3.5.2)
LITTLE_ENDIAN_BY_DEFAULT = frozenset({DICOM, OCTETS})
#: older names some clients still send (dicomweb-client accepts both)
MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
_OUTER_LEVELS = {"*/*": 0, "": 0, "multipart/*": 1, "multipart/related": 2}

T = TypeVar("T")


def weight(params: dict[str, str]) -> float:
    """The q-value of an Accept media range from its parameters (`multipart.media_type`), 0 to 1.

    A value that is no number (`abc`, `nan`, empty) weighs as none given, 1: PS3.18 8.7.7 ignores a
    parameter that is not valid. Any other is clipped to 0..1 (`5` is 1, `-1` is 0: not
    acceptable). A NaN kept as such sorts nowhere: it took the ranges after it out of their order."""
    try:
        value = float(params.get("q", "1"))
    except ValueError:
        return 1.0
    return 1.0 if math.isnan(value) else min(max(value, 0.0), 1.0)


def _media_level(media_range: str) -> int:
    """RFC 9110 12.5.1: `*/*` 0, `type/*` 1, a media type 2."""
    if media_range == "*/*":
        return 0
    return 1 if media_range.endswith("/*") else 2


def _media_covers(media_range: str, media: str) -> bool:
    if media_range == "*/*":
        return True
    if media_range.endswith("/*"):
        return media.startswith(media_range[:-1])
    return media_range == media


@dataclass(frozen=True)
class Offer(Generic[T]):
    """One answer a resource can give: its media type (`parts[0]`; for a multipart answer, that of its
    parts), what it is to the resource (`value`), and how ranges name it.

    `parts`: the part types a range may name it by (a compressed frame sent as stored is also named
    by `application/octet-stream` with a transfer syntax, as OHIF asks for it). `syntaxes`: the
    transfer syntaxes it is in (none: the parameter means nothing for it). `stored`: whether it is
    the bytes as stored (`transfer-syntax=*`). `default`: whether a wildcard range naming no transfer
    syntax takes it in. `loose`: whether a bare range of its part type takes a multipart answer in."""

    value: T
    parts: tuple[str, ...]
    multipart: bool
    syntaxes: frozenset[str] = frozenset()
    stored: bool = False
    default: bool = True
    loose: bool = False


@dataclass(frozen=True)
class Range:
    """One media range of an Accept header (or of the `accept` parameter), as it applies to DICOMweb:
    its outer type (`*/*`, `multipart/*`, `multipart/related`, or "" for a bare media type), the
    part type it names, its transfer syntax, its q-value and its place in the header."""

    outer: str
    part: str
    syntax: str | None
    q: float
    position: int

    @property
    def specificity(self) -> tuple[int, bool, int]:
        return _media_level(self.part), self.syntax is not None, _OUTER_LEVELS[self.outer]

    def covers(self, offer: Offer) -> bool:
        """Whether this range takes `offer` in (the rules of the module's docstring)."""
        if self.outer in ("multipart/*", "multipart/related"):
            if not offer.multipart:
                return False
        elif self.outer == "" and offer.multipart and not offer.loose:
            return False
        if not any(_media_covers(self.part, part) for part in offer.parts):
            return False
        if not offer.syntaxes:
            return True
        if self.syntax == ANY:
            return offer.stored
        if self.syntax is not None:
            return self.syntax in offer.syntaxes
        if _media_level(self.part) < 2:
            return offer.default
        return self.part not in LITTLE_ENDIAN_BY_DEFAULT or EXPLICIT_LE in offer.syntaxes


def accepted(header: str | None) -> list[Range]:
    """The media ranges of an Accept header in its order, q=0 ones included (they refuse); none
    given (or only empty elements) is `*/*`. Parameter names and types are case-insensitive;
    `multipart/related; type="X"; transfer-syntax=Y` names the part type X."""
    ranges = []
    for position, text in enumerate(split_unquoted(header or "", ",")):
        if not text.strip(" \t"):
            continue
        media, params = media_type(text)
        media = "*/*" if media == "*" else media
        outer = media if media in ("*/*", "multipart/*", "multipart/related") else ""
        part = params.get("type", "").strip().lower() if outer.startswith("multipart") else media
        part = "*/*" if part in ("", "*") else MEDIA_ALIASES.get(part, part)
        ranges.append(Range(outer, part, params.get("transfer-syntax", "").strip() or None, weight(params), position))
    return ranges or [Range("*/*", "*/*", None, 1.0, 0)]


def ranked(ranges: Sequence[Range], offers: Sequence[Offer[T]]) -> list[Offer[T]]:
    """The offers `ranges` accept (q above 0), best first: each weighs what its most specific
    covering range says (the first listed of equally specific ones); ties go to the range listed
    first, then to an offer that range names exactly (not a multipart answer taken in loosely by a
    bare type), then to the order of `offers`. In time ranges x offers."""
    scored = []
    for index, offer in enumerate(offers):
        deciding = None
        for item in ranges:
            if item.covers(offer) and (deciding is None or item.specificity > deciding.specificity):
                deciding = item
        if deciding is not None and deciding.q > 0:
            loosely = deciding.outer == "" and offer.multipart
            scored.append((-deciding.q, deciding.position, loosely, index, offer))
    return [offer for *_, offer in sorted(scored, key=lambda s: s[:4])]


@dataclass(frozen=True)
class Asked:
    """What a request accepts: the `accept` query parameter's ranges (when given), then the header's."""

    sources: tuple[list[Range], ...]

    @classmethod
    def of(cls, header: str | None, parameter: str | None = None) -> Asked:
        header_ranges = accepted(header)
        if parameter is None or not parameter.strip(" \t,"):
            return cls((header_ranges,))
        return cls((accepted(parameter), header_ranges))

    def choose(self, offers: Sequence[Offer[T]]) -> list[Offer[T]]:
        """The offers acceptable, best first: those of the `accept` parameter if it takes in any
        (PS3.18 8.7.8.1), else those of the header; [] when none is acceptable (the caller's 406)."""
        for ranges in self.sources:
            found = ranked(ranges, offers)
            if found:
                return found
        return []


def asked() -> Asked:
    """What the current request accepts (400 when the `accept` parameter is given twice)."""
    return Asked.of(request.headers.get("Accept"), single_value("accept", request.args.getlist("accept")))
