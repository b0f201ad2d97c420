"""Hostile STOW-RS bodies, in-process: framing the other tests do not cover, repeated instances,
instances without pixels and studies named wrongly. Each is a 4xx (or the per-instance outcome
of PS3.18 10.5.3) and never leaves anything half stored."""

from __future__ import annotations

import io
import re

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import BOUNDARY, STOW_TYPE, body_of, instance_count, stow
from tests.render.synthetic import new_instance, to_bytes

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
CANNOT_UNDERSTAND = 0xC000


def framed(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    """A body of raw parts (each its header block, blank line and content), closed."""
    return b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()


def failures(reply) -> list[int]:
    return [item["00081197"]["Value"][0] for item in reply.get_json()["00081198"]["Value"]]


@pytest.mark.parametrize(("content_type", "boundary"), [
    (f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"', BOUNDARY),
    ('multipart/related; type="application/dicom"; boundary="a;b=c"', "a;b=c"),
    ("multipart/related; boundary=b-1", "b-1"),  # no type: application/dicom
    ("multipart/related; type=Application/DICOM; boundary=b-1", "b-1"),
])
def test_boundaries_quoted_or_with_separators_and_a_missing_type_are_read(node, content_type, boundary):
    files = synthetic_series(1)
    body = framed(b"Content-Type: application/dicom\r\n\r\n" + files[0], boundary=boundary)
    reply = stow(node, body, content_type=content_type)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert instance_count(node) == 1


def test_a_part_without_headers_is_application_dicom(node):
    files = synthetic_series(1)
    assert stow(node, framed(b"\r\n" + files[0])).status_code == 200
    assert instance_count(node) == 1


@pytest.mark.parametrize("body", [
    framed(b"X-Long: " + b"a" * 20_000 + b"\r\n\r\n" + b"DICM"),  # a header block over 16 KiB
    framed(b"Content-Type: application/dicom\r\n\r\n" + b"x").replace(b"\r\n", b"\n"),  # bare LF framing
    f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode(),  # nothing after the headers
])
def test_framing_errors_are_400_malformed_multipart(node, body):
    reply = stow(node, body)
    assert reply.status_code == 400 and reply.get_json()["error"]["code"] == "malformed_multipart"
    assert instance_count(node) == 0


def test_a_nested_multipart_or_a_mangled_part_type_fails_that_part_only(node):
    """The Warning header quotes the failed part's type: its control characters once went into the
    header, which gunicorn refuses to send (the answer lost as a 500 after the others were stored)."""
    files = synthetic_series(2)
    inner = b"--inner\r\n\r\n" + files[0] + b"\r\n--inner--\r\n"
    body = framed(b"Content-Type: multipart/related; boundary=inner\r\n\r\n" + inner,
                  b"Content-Type: application/dicom\x00\x07\x7f\xe9\r\n\r\n" + files[0],
                  b"Content-Type: application/dicom\r\n\r\n" + files[1])
    reply = stow(node, body)
    assert reply.status_code == 202, reply.get_data(as_text=True)
    assert failures(reply) == [CANNOT_UNDERSTAND, CANNOT_UNDERSTAND]
    assert re.fullmatch(r'299 SIVR "[\x20-\x7e]*"', reply.headers["Warning"]), reply.headers["Warning"]
    assert instance_count(node) == 1


def test_the_same_instance_twice_in_one_request_is_stored_once(node):
    files = synthetic_series(2)
    reply = stow(node, body_of([files[0], files[0], files[1]]))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert instance_count(node) == 2


def test_one_sop_instance_uid_with_two_contents_in_one_request_keeps_the_first(node):
    files = synthetic_series(2)
    changed = pydicom.dcmread(io.BytesIO(files[0]))
    changed.PatientName = "Other^Name"
    reply = stow(node, body_of([files[0], to_bytes(changed), files[1]]))
    assert reply.status_code == 202, reply.get_data(as_text=True)
    [failed] = reply.get_json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [uids(files[0])[2]]
    assert instance_count(node) == 2
    study, series, sop = uids(files[0])
    kept = node.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
                           headers=node.headers()).get_json()[0]
    assert kept["00100010"]["Value"] == [{"Alphabetic": "Web^Dicom"}]


def test_an_instance_without_pixels_is_stored_and_retrieved_but_has_no_frames(node):
    report = new_instance(BASIC_TEXT_SR)
    report.StudyInstanceUID, report.SeriesInstanceUID = generate_uid(), generate_uid()
    report.Modality, report.PatientID = "SR", "DW-TEST"
    raw = to_bytes(report)
    assert stow(node, body_of([raw])).status_code == 200
    study, series, sop = uids(raw)
    instance = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    as_stored = {**node.headers(), "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    assert node.client.get(instance, headers=as_stored).status_code == 200
    assert node.client.get(f"{instance}/metadata", headers=node.headers()).status_code == 200
    for path, status, code in ((f"{instance}/frames/1", 404, "not_found"), (f"{instance}/bulk/7FE00010", 404,
                               "not_found"), (f"{instance}/rendered", 415, "stored_only")):
        reply = node.client.get(path, headers=node.headers())
        assert reply.status_code == status and reply.get_json()["error"]["code"] == code, path


def test_a_study_in_the_path_other_than_the_instances_stores_nothing(node):
    reply = stow(node, body_of(synthetic_series(2)), path="/dicomweb/studies/1.2.3.4")
    assert reply.status_code == 409, reply.get_data(as_text=True)
    assert len(failures(reply)) == 2
    assert instance_count(node) == 0


@pytest.mark.parametrize("study", ["abc", "x" * 200, "%00", "%C3%A9", "1" * 65, "1..2"])
def test_a_path_study_that_is_no_uid_is_400_and_stores_nothing(node, study):
    """It was answered 409 with every instance failed, and a RetrieveURL built from the bad UID."""
    reply = stow(node, body_of(synthetic_series(2)), path=f"/dicomweb/studies/{study}")
    assert reply.status_code == 400 and reply.get_json()["error"]["code"] == "validation_error"
    assert instance_count(node) == 0


def test_more_parts_than_the_limit_is_413_before_any_is_read(node):
    body = (f"--{BOUNDARY}\r\n\r\n\r\n" * 4001 + f"--{BOUNDARY}--\r\n").encode()
    reply = stow(node, body)
    assert reply.status_code == 413 and reply.get_json()["error"]["code"] == "over_limits"


def test_a_non_json_accept_is_406_and_stores_nothing(node):
    reply = node.client.post("/dicomweb/studies", data=body_of(synthetic_series(1)),
                             headers={**node.headers(), "Content-Type": STOW_TYPE, "Accept": "text/html"})
    assert reply.status_code == 406 and reply.get_json()["error"]["code"] == "not_acceptable"
    assert instance_count(node) == 0


def _post_stream(node, body: bytes, **headers: str):
    """A STOW-RS body sent as a stream: chunked (no Content-Length; the server marks its input
    terminated, as gunicorn does) or with the length given."""
    return node.client.post("/dicomweb/studies", input_stream=io.BytesIO(body), headers={
        **node.headers(), "Content-Type": STOW_TYPE, "Accept": "application/dicom+json", **headers},
        environ_overrides={"wsgi.input_terminated": True})


def test_bodies_chunked_or_shorter_than_announced_are_read_whole_or_refused(node):
    """The body is read into one buffer of its announced length (chunks joined at the end held it
    twice); a chunked body has none and grows to the limit, a body cut short of its length is
    refused, and nothing of either refusal is stored."""
    body = body_of(synthetic_series(2))
    cut = _post_stream(node, body[:-100], **{"Content-Length": str(len(body))})
    assert 400 <= cut.status_code < 500 and instance_count(node) == 0
    chunked = _post_stream(node, body, **{"Transfer-Encoding": "chunked"})
    assert chunked.status_code == 200, chunked.get_data(as_text=True)
    assert instance_count(node) == 2
    with_length = body_of(synthetic_series(1))
    exact = _post_stream(node, with_length, **{"Content-Length": str(len(with_length))})
    assert exact.status_code == 200 and instance_count(node) == 3


def test_a_chunked_body_over_the_limit_is_413_and_stores_nothing(make_node):
    harness = make_node(limits__max_upload_mb=1, limits__max_files=3)
    reply = _post_stream(harness, body_of(synthetic_series(3, rows=512, cols=512)), **{"Transfer-Encoding": "chunked"})
    assert reply.status_code == 413 and reply.get_json()["error"]["code"] == "over_limits"
    assert instance_count(harness) == 0


def test_an_announced_length_reserves_no_memory_before_its_bytes_arrive(node):
    """Review: the buffer was made at the announced length, so a Content-Length near the upload
    limit with a body trickled in (or never sent) held that much memory per request."""
    import tracemalloc

    announced = 1 << 30
    tracemalloc.start()
    try:
        cut = node.client.post("/dicomweb/studies", input_stream=io.BytesIO(body_of(synthetic_series(1))), headers={
            **node.headers(), "Content-Type": STOW_TYPE, "Accept": "application/dicom+json"},
            environ_overrides={"CONTENT_LENGTH": str(announced)})  # the stream ends long before it
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 400 <= cut.status_code < 500 and instance_count(node) == 0
    assert peak < announced // 16, f"{peak / 2**20:.0f} MiB held for a body of a few kB"


@pytest.mark.parametrize(("accept", "answered"), [
    (None, "application/dicom+json"),
    ("*/*", "application/dicom+json"),
    ("application/json", "application/json"),
    ("application/dicom+xml, application/json; q=0.5", "application/json"),
    ("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8", "application/dicom+json"),  # a browser's
    ("application/dicom+xml", None),
    ('multipart/related; type="application/dicom+xml"', None),
    ("application/dicom+json; q=0", None),
])
def test_the_three_json_answers_take_one_accept_rule(node, accept, answered):
    """STOW-RS's outcome, QIDO-RS and WADO-RS metadata are the same DICOM JSON: one rule
    (`syntax.json_answer`) chooses its media type, or 406 before anything is stored."""
    files = synthetic_series(1)
    study, series, _ = uids(files[0])
    headers = {**node.headers(), **({"Accept": accept} if accept is not None else {})}
    stored = node.client.post("/dicomweb/studies", data=body_of(files), headers={**headers, "Content-Type": STOW_TYPE})
    assert instance_count(node) == (0 if answered is None else 1)
    if answered is None:  # stored with the default, so that the searches below find the series
        assert stow(node, body_of(files)).status_code == 200
    searched = node.client.get(f"/dicomweb/studies/{study}/series", headers=headers)
    described = node.client.get(f"/dicomweb/studies/{study}/series/{series}/metadata", headers=headers)
    for reply in (stored, searched, described):
        if answered is None:
            assert reply.status_code == 406, reply.request.path
            assert reply.get_json()["error"]["code"] == "not_acceptable"
        else:
            assert reply.status_code == 200 and reply.mimetype == answered, (reply.request.path, reply.status_code)
