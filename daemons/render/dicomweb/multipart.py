"""multipart/related (RFC 2387) as DICOMweb uses it: reading a STOW-RS body, writing WADO-RS answers.

Reading is strict, because a body that is cut or mis-framed must be refused whole (400), never
stored in part: the first delimiter must open the body (after an optional preamble), every part
must have its header block, and the close delimiter must be there. Parts are returned as
memoryviews of the one body buffer, so splitting a large STOW body copies none of it.

Writing yields the parts one by one (a generator), so a WADO-RS study answer is streamed and never
held in RAM whole. A part that cannot be made once the answer has started (an instance found
damaged, a frame not decoded in time) cuts the connection (`AnswerCut`): its status is out already,
and an answer that merely ended without its close delimiter was taken as whole by clients that do
not look for it (dicomweb-client's decoder returned the parts it got). The standard library's
`email` package is not used for either: it decodes text and line endings, which corrupts binary
DICOM parts.
"""

from __future__ import annotations

import errno
import logging
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shared.errors import ApiError

CRLF = b"\r\n"
MAX_PART_HEADER_BYTES = 16 * 1024
log = logging.getLogger(__name__)


class AnswerCut(ConnectionResetError):
    """Raised by a streamed answer's body that cannot be completed. gunicorn ends the connection for
    it as for a client that reset it (quietly: no traceback of a worker error), so the client sees the
    transfer broken (no last chunk; through the front, the same), never a whole answer short of parts."""

    def __init__(self, why: str):
        super().__init__(errno.ECONNRESET, why)


#: A quoted string (RFC 9110 5.6.4: a backslash escapes the next character), its closing quote
#: optional: an unclosed one runs to the end. Each character can start one branch only, so a match
#: never backtracks and the tokens of a header cost time linear in its length.
_QUOTED = r'"((?:\\.|[^"\\])*)"?'
_TOKENS = {sep: re.compile(rf'{_QUOTED}|[^"{re.escape(sep)}]+|{re.escape(sep)}', re.DOTALL) for sep in ";,"}
_QUOTED_VALUE = re.compile(_QUOTED, re.DOTALL)


def split_unquoted(text: str, separator: str) -> list[str]:
    """`text` cut at every `separator` outside quoted strings, which are kept whole with their quotes.

    In time linear in the text: a regular expression looking ahead for an even count of quotes
    rescanned the rest after every separator, and a part header of 16,000 ';' held a worker for
    0.3 s, a STOW body of such parts for minutes. A quoted `\\"` is part of its string, not its end.
    """
    pieces: list[list[str]] = [[]]
    for match in _TOKENS[separator].finditer(text):
        token = match.group()
        if token == separator:
            pieces.append([])
        else:
            pieces[-1].append(token)
    return ["".join(piece) for piece in pieces]


def _unquoted(text: str) -> str:
    """A parameter value as meant: a quoted string without its quotes and escapes."""
    text = text.strip()
    quoted = _QUOTED_VALUE.match(text)
    if quoted is None:
        return text
    return re.sub(r"\\(.)", r"\1", quoted.group(1), flags=re.DOTALL)


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type or Accept media range as (type, parameters), both lower-cased names.

    Parameter values may be quoted or not: DICOMweb clients write `type=application/dicom`
    unquoted (OHIF does), which RFC 7231's token syntax (and werkzeug's parser) would cut at '/'.
    """
    pieces = split_unquoted(value, ";")
    params = {}
    for piece in pieces[1:]:
        name, sep, text = piece.partition("=")
        if sep and name.strip():
            params[name.strip().lower()] = _unquoted(text)
    return pieces[0].strip().lower(), params


@dataclass(frozen=True)
class Part:
    """One body part: its headers (names lower-cased) and its content."""

    headers: dict[str, str]
    content: memoryview

    @property
    def content_type(self) -> tuple[str, dict[str, str]]:
        """The part's Content-Type as (type, parameters); an absent one is the body's `type`."""
        return media_type(self.headers.get("content-type", ""))


def _malformed(message: str) -> ApiError:
    return ApiError(400, "malformed_multipart", f"the multipart/related body is malformed: {message}")


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type (400 when there is none or it is unusable)."""
    _, params = media_type(content_type)
    boundary = params.get("boundary", "")
    if not boundary:
        raise _malformed("the Content-Type has no boundary parameter")
    if len(boundary) > 70 or any(ord(c) < 32 or ord(c) > 126 for c in boundary):
        raise _malformed("the boundary must be 1 to 70 printable ASCII characters (RFC 2046)")
    return boundary


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise _malformed(f"a part header line is not 'Name: value': {bytes(line[:80])!r}")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers


def split_related(body: bytes | bytearray, boundary: str, max_parts: int) -> list[Part]:
    """The parts of a multipart body (400 `malformed_multipart` when the framing is wrong; 413
    `over_limits` at part `max_parts + 1`, before the rest is split: a body of millions of empty
    parts cost 40 times its size in RAM and minutes before its count was compared)."""
    data = memoryview(body)
    opening = b"--" + boundary.encode("ascii")
    delimiter = CRLF + opening
    if body.startswith(opening):
        position = len(opening)
    else:
        found = body.find(delimiter)  # a preamble before the first delimiter is allowed
        if found < 0:
            raise _malformed("the boundary named in the Content-Type never occurs in the body")
        position = found + len(delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", position):
            break  # the close delimiter: anything after it is an epilogue
        if len(parts) == max_parts:
            raise ApiError(413, "over_limits", f"more than {max_parts} instances: over this node's limit per request")
        line_end = body.find(CRLF, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise _malformed("a delimiter line does not end where it should (truncated body?)")
        header_start = line_end + 2
        if body.startswith(CRLF, header_start):
            header_end, content_start = header_start, header_start + 2
        else:
            header_end = body.find(CRLF + CRLF, header_start, header_start + MAX_PART_HEADER_BYTES)
            if header_end < 0:
                raise _malformed(f"part {len(parts) + 1} has no end of headers (truncated body?)")
            content_start = header_end + 4
        next_delimiter = body.find(delimiter, content_start)
        if next_delimiter < 0:
            raise _malformed(f"part {len(parts) + 1} is not closed by a boundary (truncated body?)")
        parts.append(Part(_headers(body[header_start:header_end]), data[content_start:next_delimiter]))
        position = next_delimiter + len(delimiter)
    if not parts:
        raise _malformed("it has no parts")
    return parts


def new_boundary() -> str:
    return f"sivr-{secrets.token_hex(16)}"


def related_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    """`multipart/related; type="..."; boundary=...` for an answer whose parts are `part_type`."""
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return value if transfer_syntax is None else f"{value}; transfer-syntax={transfer_syntax}"


#: a part of an answer: (Content-Type, content), or (Content-Type, content, Content-Location) where the
#: part is to name the resource it holds (the pixel data and bulk data of a study, PS3.18 10.4.3.3.5)
AnswerPart = tuple[str, bytes | memoryview] | tuple[str, bytes | memoryview, str]


def write_related(parts: Iterable[AnswerPart], boundary: str, what: str) -> Iterator[bytes]:
    """Yield a multipart/related body part by part: each `(Content-Type, content[, Content-Location])`
    as it comes. A part that cannot be made (`parts` raises: a refusal, the store gone, a file that does not parse) cuts
    the answer (`AnswerCut`), logged with `what` the answer was and how many parts had gone (an
    error that is no refusal with its traceback)."""
    sent = 0
    made = iter(parts)
    while True:
        try:
            part = next(made, None)
        except ApiError as exc:
            log.warning("%s: answer cut after %d parts: %s %s", what, sent, exc.status, exc.message)
            raise AnswerCut(f"{what}: cut after {sent} parts ({exc.message})") from exc
        except Exception as exc:
            log.error("%s: answer cut after %d parts", what, sent, exc_info=exc)
            raise AnswerCut(f"{what}: cut after {sent} parts ({type(exc).__name__})") from exc
        if part is None:
            break
        content_type, content, *location = part
        named = "".join(f"Content-Location: {where}\r\n" for where in location)
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {len(content)}\r\n{named}\r\n"
        yield head.encode("latin-1")
        yield bytes(content)
        yield CRLF
        sent += 1
    yield f"--{boundary}--\r\n".encode("ascii")
