"""The node's JPEG 2000 plugin for pydicom (imagecodecs' OpenJPEG, the GIL released) gives exactly
what pydicom's own pylibjpeg plugin gives, on every JPEG 2000 file at hand."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from daemons.render.imaging import decode, jpeg2000
from daemons.render.ingest.isolation import DecodePool, IsolationLimits
from daemons.render.store.frame_layout import layout_of
from tests.conftest import DEMO_CT

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom"


def _jpeg2000_files() -> list[Path]:
    bundled = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"
    candidates = [*sorted(bundled.glob("*.dcm")), *sorted(DEMO_CT.glob("*.dcm"))[:3],
                  *(sorted(p for p in SHARED.rglob("*") if p.is_file() and p.stat().st_size < 20_000_000)
                    if SHARED.is_dir() else [])]
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in candidates:
            try:
                syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.get("TransferSyntaxUID", ""))
            except Exception:  # not DICOM: not a case
                continue
            if syntax in jpeg2000.SYNTAXES:
                found.append(path)
    return found


FILES = _jpeg2000_files()


def _decoded(ds: pydicom.Dataset, index: int | None, plugin: str) -> np.ndarray | str:
    try:
        return pixel_array(ds, index=index, decoding_plugin=plugin)
    except Exception as exc:  # both plugins must refuse the same frames
        return type(exc).__name__


def test_the_corpus_holds_lossless_lossy_signed_and_colour_files():
    names = {path.name for path in FILES}
    assert {"MR_small_jp2klossless.dcm", "JPEG2000.dcm", "J2K_pixelrep_mismatch.dcm", "GDCMJ2K_TextGBR.dcm",
            "SC_rgb_gdcm_KY.dcm"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_the_plugin_decodes_as_pydicoms_own(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        for index in range(min(frames, 3)):
            at = index if frames > 1 else None
            theirs, ours = _decoded(ds, at, "pylibjpeg"), _decoded(ds, at, jpeg2000.PLUGIN)
            if isinstance(theirs, str) or isinstance(ours, str):
                assert theirs == ours or (isinstance(theirs, str) and isinstance(ours, str)), (index, theirs, ours)
                continue
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), index


def test_the_node_decodes_jpeg2000_with_the_plugin(monkeypatch):
    """Loading a record and checking an upload both go through `decode_frames`."""
    calls = []
    original = jpeg2000.imagecodecs.jpeg2k_decode
    monkeypatch.setattr(jpeg2000.imagecodecs, "jpeg2k_decode",
                        lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs))
    raw = sorted(DEMO_CT.glob("*.dcm"))[0].read_bytes()
    ds = decode.read_dataset(raw)
    assert str(ds.file_meta.TransferSyntaxUID) in jpeg2000.SYNTAXES
    [(index, frame)] = list(decode.decode_frames(raw, layout_of(ds, float_modality=False), [0], dataset=ds))
    assert index == 0 and frame.shape == (ds.Rows, ds.Columns)
    assert [call["numthreads"] for call in calls] == [1]  # the node's loader decodes frames side by side


def _threads_of_a_decode(raw: bytes) -> list[int]:
    """A decode worker's job: the thread counts the node's decode path hands OpenJPEG there."""
    calls: list[int] = []
    original = jpeg2000.imagecodecs.jpeg2k_decode
    jpeg2000.imagecodecs.jpeg2k_decode = lambda *args, **kwargs: calls.append(kwargs["numthreads"]) or original(
        *args, **kwargs)
    try:
        ds = decode.read_dataset(raw)
        list(decode.decode_frames(raw, layout_of(ds, float_modality=False), [0], dataset=ds))
    finally:
        jpeg2000.imagecodecs.jpeg2k_decode = original
    return calls


@pytest.mark.parametrize("threads", [1, 3])
def test_a_decode_worker_decodes_each_frame_on_its_configured_threads(threads):
    """A worker checks a file's frames one after another: `decode.codec_threads` lets one sender's
    images use more than one core there, while the node itself keeps one thread per frame."""
    raw = sorted(DEMO_CT.glob("*.dcm"))[0].read_bytes()
    pool = DecodePool(IsolationLimits(workers=1, memory_mb=512, cpu_s=20, timeout_s=60.0, nice=0,
                                      codec_threads=threads))
    try:
        assert pool.call(_threads_of_a_decode, raw) == [threads]
    finally:
        pool.close()
    assert _threads_of_a_decode(raw) == [1]


@pytest.mark.parametrize("path", FILES[:8], ids=lambda path: path.name)
def test_frames_decoded_on_several_threads_are_the_same(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        at = 0 if int(ds.get("NumberOfFrames", 1) or 1) > 1 else None
        one = _decoded(ds, at, jpeg2000.PLUGIN)
        jpeg2000.use_threads(4)
        try:
            several = _decoded(ds, at, jpeg2000.PLUGIN)
        finally:
            jpeg2000.use_threads(1)
    assert type(one) is type(several)
    if isinstance(one, np.ndarray):
        assert one.dtype == several.dtype and np.array_equal(one, several)
    else:
        assert one == several
