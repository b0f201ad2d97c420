"""The multipart/related reader and writer of the DICOMweb services (RFC 2046 framing)."""

from __future__ import annotations

import pytest

from daemons.render.dicomweb.accept import Asked, Range, accepted
from daemons.render.dicomweb.multipart import boundary_of, media_type, split_related, split_unquoted, write_related
from daemons.render.dicomweb.syntax import EXPLICIT_LE, frame_choice, instance_syntax
from shared.errors import ApiError


def test_written_parts_read_back_with_preamble_padding_and_epilogue():
    parts = [("application/dicom", b"\r\n--not-the-boundary\r\n" + bytes(range(256))), ("application/dicom", b"")]
    body = b"".join(write_related(parts, "b-1", "a test answer"))
    read = split_related(b"a preamble\r\n" + body.replace(b"--b-1\r\n", b"--b-1 \t\r\n", 1) + b"epilogue", "b-1", 10)
    assert [(p.headers["content-type"], bytes(p.content)) for p in read] == parts
    assert read[0].content_type == ("application/dicom", {})


@pytest.mark.parametrize("body", [b"", b"--b-1--\r\n", b"--b-1\r\nContent-Type: x\r\n\r\ndata", b"no boundary here",
                                  b"--b-1\r\nbroken header line\r\n\r\ndata\r\n--b-1--"])
def test_malformed_bodies_are_400(body):
    with pytest.raises(ApiError) as refused:
        split_related(body, "b-1", 10)
    assert refused.value.status == 400 and refused.value.code == "malformed_multipart"


def test_a_body_of_too_many_parts_is_refused_at_the_first_part_over_the_limit():
    """The parts were all split (a memoryview and a dict each) before their number was compared:
    2.3 million empty parts in 20 MiB took 44 s and 800 MiB. The rest of the body is not read: here
    it is not even well framed."""
    body = b"--b-1\r\n\r\n\r\n" * 4 + b"--b-1\r\nno end of headers"
    assert len(split_related(b"--b-1\r\n\r\n\r\n" * 3 + b"--b-1--", "b-1", 3)) == 3
    with pytest.raises(ApiError) as refused:
        split_related(body, "b-1", 3)
    assert (refused.value.status, refused.value.code) == (413, "over_limits")
    assert "more than 3 instances" in refused.value.message


@pytest.mark.parametrize("header", ["multipart/related", 'multipart/related; boundary=""',
                                    f"multipart/related; boundary={'x' * 71}"])
def test_unusable_boundaries_are_400(header):
    with pytest.raises(ApiError):
        boundary_of(header)


def test_accept_ranges_keep_their_order_q_and_part_type():
    ranges = accepted('multipart/related; type="image/jls"; q=0.5, multipart/related; type=application/octet-stream; '
                      'transfer-syntax=*, image/x-dicom-rle;q=0')
    assert ranges == [Range("multipart/related", "image/jls", None, 0.5, 0),
                      Range("multipart/related", "application/octet-stream", "*", 1.0, 1),
                      Range("", "image/dicom-rle", None, 0.0, 2)]
    assert accepted(None) == [Range("*/*", "*/*", None, 1.0, 0)]
    assert instance_syntax(Asked.of(None), "1.2.840.10008.1.2.5") == EXPLICIT_LE
    assert instance_syntax(Asked.of("image/png"), "1.2.840.10008.1.2.5") is None


def test_frames_as_stored_or_decoded():
    rle = "1.2.840.10008.1.2.5"
    assert frame_choice(Asked.of("multipart/related; type=image/x-dicom-rle"), rle).stored
    ohif = Asked.of("multipart/related; type=application/octet-stream; transfer-syntax=*")  # unquoted, as OHIF
    assert frame_choice(ohif, rle).content_type == f"image/dicom-rle; transfer-syntax={rle}"
    assert not frame_choice(Asked.of("multipart/related; type=application/octet-stream"), rle).stored
    assert not frame_choice(Asked.of(None), EXPLICIT_LE).stored
    with pytest.raises(ApiError) as refused:
        frame_choice(Asked.of("multipart/related; type=image/jls"), rle)
    assert refused.value.status == 406


def test_separators_inside_quotes_do_not_cut():
    assert split_unquoted('a; b="c;d"; e', ";") == ["a", ' b="c;d"', " e"]
    assert split_unquoted('a;b="c;d', ";") == ["a", 'b="c;d']  # an unclosed quote runs to the end
    assert media_type('multipart/related; type="application/dicom"; boundary="x;y"') == (
        "multipart/related", {"type": "application/dicom", "boundary": "x;y"})
    assert [r.part for r in accepted('image/png, multipart/related; type="a/b,c"; q=0.5')] == ["image/png", "a/b,c"]


def test_an_escaped_quote_inside_a_quoted_string_neither_ends_it_nor_stays_escaped():
    """RFC 9110 quoted-pair: `\\"` is a quote within the string; a separator after it is still quoted."""
    assert split_unquoted(r'a; b="c\";d"; e', ";") == ["a", r' b="c\";d"', " e"]
    assert media_type(r'multipart/related; boundary="x\"y;z"; type="application/dicom"') == (
        "multipart/related", {"boundary": 'x"y;z', "type": "application/dicom"})
    assert media_type(r'a/b; p="ends with \\"; q=1')[1] == {"p": "ends with \\", "q": "1"}
    assert [r.part for r in accepted(r'image/png; x="1\",2", image/jpeg')] == ["image/png", "image/jpeg"]


@pytest.mark.timeout(20)
def test_headers_of_many_separators_or_quotes_are_read_in_linear_time():
    """A regular expression looking ahead to the end for an even count of quotes rescanned the rest
    after every separator: a STOW part header of 16,000 ';' held a worker for 0.3 s, a body of
    such parts for minutes. These headers would take it minutes each; the timeout fails the test."""
    many = 400_000
    assert len(media_type("a/b" + ";" * many)[1]) == 0
    assert media_type('a/b; x="' + '";"' * many)[0] == "a/b"
    assert accepted("image/png" + "," * many) == [Range("", "image/png", None, 1.0, 0)]


def test_a_part_that_fails_in_any_way_cuts_the_answer(caplog):
    """Not only a refusal (ApiError): the store gone or a file that does not parse on a later part
    escaped as a worker error (gunicorn's traceback, the transfer ended as if whole for some clients)."""
    from daemons.render.dicomweb.multipart import AnswerCut
    from daemons.render.store.interface import StoreUnavailable

    def parts():
        yield "application/dicom", b"first"
        raise StoreUnavailable("the object store does not answer")

    written = write_related(parts(), "b-1", "a test answer")
    assert next(written).startswith(b"--b-1")
    with pytest.raises(AnswerCut):
        list(written)
    assert "a test answer: answer cut after 1 parts" in caplog.text
