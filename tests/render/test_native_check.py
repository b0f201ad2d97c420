"""Which files skip the decode worker (daemons/render/ingest/upload_checks.py `check_upload`): uncompressed
little-endian single-sample files are checked in the node, with the same refusals; any file a codec
or pydicom's pixel handlers would touch still goes through the isolated worker (its pool counts it).
"""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRBigEndian, RLELossless, generate_uid

from daemons.render.ingest.upload_checks import Limits, UploadError, check_file, check_upload
from tests.render.synthetic import dataset, to_bytes

LIMITS = Limits(max_upload_bytes=1 << 30, max_files=100, max_rows=4096, max_columns=4096, max_frames=1000,
                max_decoded_bytes=1 << 30)


def _jobs(harness) -> int:
    return harness.app.extensions["sivr_node"].decoder.stats()["jobs"]


def _series(count: int, **changes) -> list[tuple[str, bytes]]:
    series = generate_uid()
    files = []
    for index in range(count):
        ds = dataset(16, 16, series=series, position=float(index))
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        files.append((f"{index}.dcm", to_bytes(ds)))
    return files


def _recording(checks_called: list):
    def checker(uploads, limits):
        checks_called.extend(name for name, _ in uploads)
        return [check_file(name, raw, limits) for name, raw in uploads]

    return checker


def test_uncompressed_files_are_stored_without_a_decode_worker(node):
    before = _jobs(node)
    reply = node.upload(_series(3))
    assert reply.status_code == 201, reply.json
    assert _jobs(node) == before


def test_a_compressed_file_still_goes_through_the_decode_worker(node):
    series = generate_uid()
    files = []
    for index in range(2):
        ds = dataset(16, 16, series=series, position=float(index))
        ds.compress(RLELossless, generate_instance_uid=False)
        files.append((f"{index}.dcm", to_bytes(ds)))
    before = _jobs(node)
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    assert _jobs(node) == before + 2


def test_a_native_file_with_wrong_pixel_data_length_is_still_refused_in_the_node(node):
    before = _jobs(node)
    too_long = _series(1, PixelData=bytes(16 * 16 * 2 + 2))
    reply = node.upload(too_long)
    assert reply.status_code == 422 and reply.json["error"]["code"] == "invalid_attribute", reply.json
    truncated = _series(1, PixelData=bytes(16 * 16))
    reply = node.upload(truncated)
    assert reply.status_code == 422 and reply.json["error"]["code"] == "truncated", reply.json
    assert _jobs(node) == before


def test_the_node_check_gives_what_the_worker_check_gives():
    """The same refusal or bad frames whichever side checked; only non-native files reach the checker."""
    multiframe = dataset(16, 16)
    multiframe.NumberOfFrames = 3
    multiframe.PixelData = bytes(16 * 16 * 2 * 2)  # two complete frames of three
    cases = [("multi.dcm", to_bytes(multiframe)), *_series(1, PixelData=bytes(16 * 16 * 2 + 2))]
    for name, raw in cases:
        called: list[str] = []
        expected = check_file(name, raw, LIMITS)
        if expected.refusal is not None:
            with pytest.raises(UploadError) as refused:
                check_upload([(name, raw)], LIMITS, _recording(called))
            assert (refused.value.status, refused.value.code, refused.value.message) == expected.refusal
        else:
            files = check_upload([(name, raw)], LIMITS, _recording(called))
            assert list(expected.bad_frames) == [2] and files[0].bad_frames == expected.bad_frames
        assert called == []


def test_files_a_pixel_handler_reads_go_to_the_checker():
    big_endian = dataset(16, 16)
    big_endian.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    colour = dataset(16, 16)
    colour.SamplesPerPixel, colour.PhotometricInterpretation, colour.PlanarConfiguration = 3, "RGB", 0
    colour.BitsAllocated, colour.BitsStored, colour.HighBit, colour.PixelRepresentation = 8, 8, 7, 0
    colour.PixelData = bytes(16 * 16 * 3)
    for ds in (big_endian, colour):
        raw = to_bytes(ds)
        called: list[str] = []
        check_upload([("f.dcm", raw)], LIMITS, _recording(called))
        assert called == ["f.dcm"]


def test_duplicated_elements_are_found_without_walking_a_good_file_twice(monkeypatch):
    """The parse notes repeated top-level tags as it reads; only a file where it met one (or started
    elsewhere than the meta group length says) is walked again, and refused with the same reason."""
    from daemons.render.ingest import upload_checks

    walks = []
    walk = upload_checks.data_element_generator
    monkeypatch.setattr(upload_checks, "data_element_generator", lambda *a, **k: walks.append(1) or walk(*a, **k))
    [(name, raw)] = _series(1)
    parsed = upload_checks._parse_file(name, raw, LIMITS)
    assert parsed.dataset_start == 144 + int.from_bytes(raw[140:144], "little")
    upload_checks._check_no_duplicates(parsed)
    assert walks == []
    at = raw.index(b"\x28\x00\x10\x00US\x02\x00") + 10
    twice = raw[:at] + b"\x28\x00\x10\x00US\x02\x00" + (16).to_bytes(2, "little") + raw[at:]
    assert upload_checks._parse_file(name, twice, LIMITS).dataset_start is None
    with pytest.raises(UploadError) as error:
        check_upload([(name, twice)], LIMITS)
    assert error.value.status == 422 and "(0028,0010) appears twice" in error.value.message and walks
    walks.clear()
    lying = raw[:140] + (int.from_bytes(raw[140:144], "little") - 2).to_bytes(4, "little") + raw[144:]
    upload_checks._check_no_duplicates(upload_checks._parse_file(name, lying, LIMITS))
    assert walks  # the parse started elsewhere than the meta group length says: walked as before
