"""WADO-RS of a study whose instances are stored in different transfer syntaxes: a request that takes
some of them in no form is refused before the answer starts, naming them and the Accept that takes
them all (`wado._in_other_syntaxes`); one that refuses a syntax with q=0 is held to it
(`syntax.needs_stored_syntax`)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tests.dicomweb.conftest import synthetic_series, uids

DICOM_IN = 'multipart/related; type="application/dicom"'
EXPLICIT_LE = str(ExplicitVRLittleEndian)


@pytest.fixture
def mixed(node):
    """One study: a series of 2 Explicit VR Little Endian instances, another of 3 RLE ones."""
    study = generate_uid()
    plain = synthetic_series(2, study=study)
    rle = synthetic_series(3, syntax=RLELossless, study=study)
    for series in (plain, rle):  # an upload is one series
        assert node.upload([(f"{n}.dcm", raw) for n, raw in enumerate(series)]).status_code == 201
    node.study, node.plain, node.rle = study, plain, rle
    return node


def get(node, path: str, accept: str):
    return node.client.get(f"/dicomweb/studies/{node.study}{path}", headers={**node.headers(), "Accept": accept})


def part_syntaxes(response) -> list[str]:
    """The transfer syntax of each part of a multipart/related answer, as its bytes say."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    found = []
    for chunk in response.get_data().split(f"--{boundary}".encode())[1:-1]:
        content = chunk.partition(b"\r\n\r\n")[2][:-2]
        found.append(str(pydicom.dcmread(io.BytesIO(content)).file_meta.TransferSyntaxUID))
    return found


def test_a_406_on_mixed_syntaxes_names_the_instances_and_what_to_ask(mixed):
    """Before: "an instance is stored in 1.2.840.10008.1.2.1; this node sends instances as stored ...":
    which instance, of which series, and what to send instead, the client had to find out itself."""
    reply = get(mixed, "", f"{DICOM_IN}; transfer-syntax={RLELossless}")
    assert reply.status_code == 406
    message = reply.get_json()["error"]["message"]
    assert reply.get_json()["error"]["code"] == "not_acceptable"
    assert message.startswith("2 of the 5 instances asked for")
    for raw in mixed.plain:
        _, series, sop = uids(raw)
        assert f"instance {sop} of series {series} in {EXPLICIT_LE}" in message
    assert all(uids(raw)[2] not in message for raw in mixed.rle)
    assert f'{DICOM_IN}; transfer-syntax=*' in message
    # the Accept it names takes them all, each as stored
    assert sorted(part_syntaxes(get(mixed, "", f"{DICOM_IN}; transfer-syntax=*"))) == [EXPLICIT_LE] * 2 + [
        str(RLELossless)] * 3
    # an instance resource is named alike
    study, series, sop = uids(mixed.plain[0])
    alone = get(mixed, f"/series/{series}/instances/{sop}", f"application/dicom; transfer-syntax={RLELossless}")
    assert alone.status_code == 406 and f"instance {sop} of series {series}" in alone.get_json()["error"]["message"]


@pytest.mark.parametrize("accept", [
    f"{DICOM_IN}; transfer-syntax={RLELossless}; q=0, {DICOM_IN}; transfer-syntax=*",
    f"*/*; transfer-syntax=*, {DICOM_IN}; transfer-syntax={EXPLICIT_LE}; q=0, {DICOM_IN}; q=0",
])
def test_a_syntax_refused_with_q0_is_not_sent_in_explicit_little_endian(mixed, accept):
    """Before: the instances such a request took in no form went in Explicit VR Little Endian (a
    200), which it had refused or not asked for: `wado._stream_instances`' fallback, judged
    unreachable, was reached. Now 406 before the answer starts, naming them."""
    reply = get(mixed, "", accept)
    assert reply.status_code == 406, (reply.status_code, part_syntaxes(reply))
    assert reply.get_json()["error"]["code"] == "not_acceptable"
    assert "instances asked for are stored in a transfer syntax the request does not take" in \
        reply.get_json()["error"]["message"]
