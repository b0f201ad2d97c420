"""Which files skip the decode worker (daemons/render/upload_checks.py `check_upload`): uncompressed
little-endian single-sample files are checked in the node, with the same refusals; any file a codec
or pydicom's pixel handlers would touch still goes through the isolated worker (its pool counts it).
"""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRBigEndian, RLELossless, generate_uid

from daemons.render.upload_checks import Limits, UploadError, check_file, check_upload
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
