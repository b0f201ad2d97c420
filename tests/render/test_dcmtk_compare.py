"""Our rendering of real files against dcmtk's `dcmj2pnm`, same window and size: within ±1 grey level.

Every file of ../shared/data/dicom (INDEX.tsv; files that the node refuses and pydicom cannot
decode either are skipped with both reasons) and every pydicom bundled test file goes through the
node's own path: upload validation (`parse_upload`), frame decoding (`decode_frames`), the frame's
default VOI (`frame_voi`: its own window, else its VOI LUT, else the record's default) and the
C.11 pipeline. dcmtk gets the same choice: `+Wi 1` for the file's window, `+Wl 1` for its VOI LUT,
`+Ww C W` for the automatic one and for a frame's own Frame VOI LUT window. dcmtk truncates where
we round half up, hence at most 1 apart.

dcmj2pnm (free dcmtk) decodes neither JPEG-LS nor JPEG 2000; for those, and any file it refuses,
dcmtk renders a copy that pydicom decompressed to Explicit VR Little Endian: the decoder is then
pydicom's for both, and the comparison is of the rendering pipeline. Lossy syntaxes take that path
always (see LOSSY_SYNTAXES).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import pixel_array

from daemons.render.imaging.decode import IJG_SYNTAXES, decode_frames
from daemons.render.imaging.pixels import GrayParams, LutTable, Modality, render_gray
from daemons.render.imaging.voi import default_voi, frame_voi, lut_from_json
from daemons.render.ingest.series_analysis import parse_upload
from daemons.render.ingest.upload_checks import Limits, UploadError

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "data" / "dicom"
LIMITS = Limits(2**34, 10_000, 16384, 16384, 10_000, 2**34)

# Lossy decoders are not bit-exact across implementations (ISO 10918-1 specifies IDCT accuracy, not
# its result), so lossy files are compared on the same decoded values: pydicom's, given to both.
# JPEG Extended and the retired progressive processes are not in the set: the node decodes them
# with libjpeg-turbo, the same IJG code as dcmtk, and the two agree bit for bit (and pydicom cannot
# decode some of them at all, e.g. NEMA WG04 NM1_JPLY and the .53/.55 slices).
LOSSY_SYNTAXES = {
    pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGLSNearLossless, pydicom.uid.JPEG2000, pydicom.uid.HTJ2K,
}

pytestmark = pytest.mark.skipif(shutil.which("dcmj2pnm") is None, reason="dcmtk (dcmj2pnm) not installed")


def _local_cases() -> list:
    index = DICOM / "INDEX.tsv"
    if not index.is_file():
        return [pytest.param(None, id="shared-data-absent")]
    cases = []
    with index.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            status = row[next(k for k in row if k.startswith("decode"))]
            marks = []  # rows INDEX marks FAIL (pydicom cannot decode) are compared where the node can
            if status.startswith("no pixel"):
                marks = [pytest.mark.skip(reason="INDEX.tsv: no pixel data")]
            cases.append(pytest.param(DICOM / row["file"], id=row["file"], marks=marks))
    return cases


def _pydicom_cases() -> list:
    from pydicom.data import get_testdata_files

    return [pytest.param(Path(p), id=f"pydicom-bundled/{Path(p).name}")
            for p in sorted(get_testdata_files()) if Path(p).is_file()]


def _dcmtk(path: Path, args: list[str], frame: int, out: Path) -> np.ndarray | None:
    result = subprocess.run(
        ["dcmj2pnm", "--write-png", "--no-overlays", "+F", str(frame + 1), *args, str(path), str(out)],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0 or not out.exists():
        return None
    return np.asarray(Image.open(out))


def _decompressed_copy(path: Path, folder: Path) -> Path:
    """A minimal Explicit VR Little Endian file with pydicom's decoded pixels (YBR as RGB), or for
    IJG_SYNTAXES the node's (libjpeg-turbo: dcmtk's own decoder gives the same values).

    Only what rendering reads is copied (image pixel, LUT, window and functional-group
    attributes), which also sidesteps bundled files whose other attributes cannot be re-encoded.
    """
    source = pydicom.dcmread(path)
    if str(source.file_meta.TransferSyntaxUID) in IJG_SYNTAXES:  # decoded as the node does (IJG code)
        parsed = parse_upload([(path.name, path.read_bytes())], LIMITS)
        layout = parsed.manifest.render.layout
        frames = [f for _, f in decode_frames(path.read_bytes(), layout, list(range(parsed.files[0].frames)))]
        pixels = np.stack(frames) if len(frames) > 1 else frames[0]
    else:
        pixels = source.pixel_array
    copy = pydicom.Dataset()
    for element in source:
        if element.tag.group in (0x0008, 0x0018, 0x0020, 0x0028, 0x5200) and element.tag != 0x7FE00010:
            copy.add(element)
    if int(source.SamplesPerPixel) == 3:
        copy.PhotometricInterpretation = "RGB"
        copy.PlanarConfiguration = 0
    copy.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    copy["PixelData"].VR = "OB" if pixels.dtype.itemsize == 1 else "OW"
    copy.file_meta = pydicom.dataset.FileMetaDataset()
    copy.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    copy.file_meta.MediaStorageSOPClassUID = source.get("SOPClassUID", pydicom.uid.SecondaryCaptureImageStorage)
    copy.file_meta.MediaStorageSOPInstanceUID = source.get("SOPInstanceUID", pydicom.uid.generate_uid())
    target = folder / "decompressed.dcm"
    pydicom.dcmwrite(target, copy, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return target


def _ours(raw: bytes, name: str, frame: int) -> tuple[np.ndarray, list[str]]:
    """Our image of one frame and the dcmtk arguments that ask for the same VOI."""
    parsed = parse_upload([(name, raw)], LIMITS)
    manifest = parsed.manifest
    layout = manifest.render.layout
    info = manifest.files[0]
    _, stored = next(decode_frames(raw, layout, [frame], info.pixel_offset, info.slope, info.intercept))
    if layout.is_color:
        return stored, []
    render = manifest.render
    modality_lut = lut_from_json(render.modality_lut)
    modality = Modality(lut=modality_lut) if modality_lut is not None else Modality(
        render.rescale_slope, render.rescale_intercept)
    voi = frame_voi(manifest, frame).voi
    image = render_gray(stored, GrayParams(modality, voi, layout.photometric == "MONOCHROME1"))
    if isinstance(voi, LutTable):
        args = ["+Wl", "1"]
    elif (manifest.meta.default_window is not None and "WindowCenter" in parsed.files[0].dataset
          and voi == default_voi(manifest).voi):
        args = ["+Wi", "1"]
    else:
        args = ["+Ww", repr(voi.center), repr(voi.width)]
        if voi.function == "sigmoid":
            args.append("+Wfs")
    return image, args


def _ybr_standard(path: Path, frame: int) -> np.ndarray:
    """YBR_FULL to RGB by the equations of PS3.3 C.7.6.3.1.2, in floats, rounded."""
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    ybr = pixel_array(ds, index=frame if frames > 1 else None, as_rgb=False).astype(np.float64)
    y, cb, cr = ybr[..., 0], ybr[..., 1] - 128.0, ybr[..., 2] - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.floor(rgb + 0.5), 0, 255).astype(np.uint8)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _compare(path: Path | None, tmp_path: Path) -> None:
    if path is None:
        pytest.skip(f"real DICOM data absent: {DICOM} (/work/shared/data absent (fresh clone))")
    try:
        _ = pydicom.dcmread(path).pixel_array
        pydicom_error = None
    except Exception as exc:  # the bundled set holds deliberately broken files
        pydicom_error = f"{type(exc).__name__}: {str(exc)[:120]}"
    raw = path.read_bytes()
    try:
        parsed = parse_upload([(path.name, raw)], LIMITS)
    except UploadError as exc:
        if exc.code in ("not_dicom", "no_pixel_data") and pydicom_error is not None:
            pytest.skip(f"not an image: {exc.message}")
        if pydicom_error is not None:
            pytest.skip(f"refused ({exc.code}), and pydicom cannot decode it either: {pydicom_error}")
        if "dimensions are wrong" in exc.message:  # e.g. MR_small_padded.dcm: a row of excess pixel data
            pytest.skip(f"refused by design (PS3.5 8.1.1: the length must match the dimensions): {exc.message}")
        raise AssertionError(f"a file pydicom decodes was refused: {exc.code}: {exc.message}") from exc
    if parsed.manifest.stored_only:  # a syntax no decoder here reads, or no image: kept, never rendered
        pytest.skip(f"stored only ({parsed.manifest.stored_only[0].transfer_syntax}): not rendered by design")
    header = parsed.files[0].dataset
    syntax = header.file_meta.TransferSyntaxUID
    photometric = parsed.manifest.meta.photometric
    if photometric == "PALETTE COLOR" and "SegmentedRedPaletteColorLookupTableData" in header:
        pytest.skip("dcmtk 3.6.7 cannot render segmented palettes ('segmented palettes not yet supported')")
    # dcmtk 3.6.7 renders a 32-bit big-endian file differently from the same values little-endian
    # (rtdose_expb.dcm vs rtdose.dcm: 98 pixels 255 apart); it gets the little-endian copy.
    indirect = syntax in LOSSY_SYNTAXES or (syntax == pydicom.uid.ExplicitVRBigEndian and header.BitsAllocated == 32)
    frames = parsed.manifest.meta.frames
    for frame in sorted({0, frames // 2}):
        ours, args = _ours(raw, path.name, frame)
        theirs = None if indirect else _dcmtk(path, args, frame, tmp_path / "direct.png")
        if theirs is None and pydicom_error is not None:
            pytest.fail(f"we render {path.name}, which pydicom cannot decode ({pydicom_error}); "
                        "dcmtk should, but refused it")
        if theirs is None:
            theirs = _dcmtk(_decompressed_copy(path, tmp_path), args, frame, tmp_path / "copy.png")
        assert theirs is not None, f"dcmj2pnm could not render {path.name} even decompressed"
        assert ours.shape == theirs.shape, f"frame {frame}: shape {ours.shape} vs dcmtk {theirs.shape}"
        if photometric in ("YBR_FULL", "YBR_FULL_422") and not syntax.is_compressed and _max_diff(ours, theirs) > 1:
            # dcmtk converts YCbCr with integer approximations (up to 2 off); hold us to the standard.
            assert _max_diff(ours, _ybr_standard(path, frame)) <= 1
            continue
        diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        assert diff.max() <= 1, (
            f"frame {frame} ({' '.join(args) or 'colour'}): {int((diff > 1).sum())} pixels differ by more "
            f"than 1 grey level (max {int(diff.max())})"
        )


@pytest.mark.parametrize("path", _local_cases())
def test_shared_data_matches_dcmtk(path, tmp_path):
    _compare(path, tmp_path)


@pytest.mark.parametrize("path", _pydicom_cases())
def test_pydicom_bundled_file_matches_dcmtk(path, tmp_path):
    _compare(path, tmp_path)
