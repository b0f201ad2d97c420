"""Small synthetic DICOM files for upload tests (real data is used wherever a property needs it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid


def new_instance(sop_class: str) -> Dataset:
    """An empty instance of `sop_class` with its file meta (Explicit VR Little Endian) and a fresh UID."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    return ds


def dataset(rows: int = 8, cols: int = 8, series: str | None = None, pixels: bool = True,
             position: float = 0.0, orientation=(1, 0, 0, 0, 1, 0)) -> Dataset:
    ds = new_instance(pydicom.uid.CTImageStorage)
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series or "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [0, 0, position]
    if pixels:
        ds.PixelData = (np.arange(rows * cols, dtype=np.int16) + int(position)).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stack(orientation, count: int = 6, rows: int = 12, cols: int = 10, pixel_spacing=(0.8, 0.5),
          slice_spacing: float = 2.0, origin=(-10.0, -20.0, 30.0), series: str | None = None,
          thickness: float | None = None, values=None) -> list[tuple[str, bytes]]:
    """`count` parallel slices of `rows` x `cols` pixels along the normal of `orientation` (row and
    column cosines, as ImageOrientationPatient), the first at `origin`, numbered 1..count in that
    order. Pixel values are `values(x, y, z)` of each pixel's patient coordinates (LPS, mm; int16),
    so stacks acquired in different orientations image the same object; by default they rise along
    each stored axis. Returned as (name, bytes) in a shuffled order, as uploads come."""
    series = series or generate_uid()
    row_cos, col_cos = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_cos, col_cos)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    files = []
    for k in range(count):
        ds = dataset(rows, cols, series=series, orientation=orientation)
        corner = np.asarray(origin, float) + normal * k * slice_spacing
        ds.ImagePositionPatient = [float(v) for v in corner]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = thickness if thickness is not None else slice_spacing
        ds.InstanceNumber = k + 1
        if values is None:
            pixels = r * 16 + c * 8 + k * 100
        else:
            where = (corner[:, None, None] + row_cos[:, None, None] * c * pixel_spacing[1]
                     + col_cos[:, None, None] * r * pixel_spacing[0])
            pixels = values(*where)
        ds.PixelData = np.asarray(pixels, dtype=np.int16).tobytes()
        files.append((f"slice{k:03d}.dcm", to_bytes(ds)))
    return files[::2] + files[1::2]


def as_new_series(files: list[Path], folder: Path) -> list[Path]:
    """Copies of real files as a series of their own (new Series and SOP Instance UIDs).

    A node keeps one record per SeriesInstanceUID and a second upload of a series grows it, so a
    test that needs a record of exactly these files on a shared deployment (where other tests
    store the demo CT too) uploads such a copy.
    """
    series_uid = generate_uid()
    copies = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / path.name)
        copies.append(folder / path.name)
    return copies


def big_endian_copy(raw: bytes) -> tuple[bytes, pydicom.Dataset]:
    """The instance written Explicit VR Big Endian, with a private OW element of the words 1..8."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    pixels = ds.pixel_array
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
    ds.add_new(0x00090010, "LO", "SIVR TEST")
    ds.add_new(0x00091011, "OW", np.arange(1, 9, dtype=">u2").tobytes())
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=False)
    return out.getvalue(), ds


def progressive_jpeg_instance(pixels: np.ndarray, frames: int | None = None
                              ) -> tuple[bytes, pydicom.Dataset, np.ndarray]:
    """A CT instance in JPEG Full Progression (1.2.840.10008.1.2.4.55, retired; pydicom has no decoder
    for it), made with libjpeg through Pillow, and the pixels libjpeg decodes it to; `frames` names
    its NumberOfFrames (each frame the same image)."""
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, "JPEG", quality=90, progressive=True)
    decoded = np.asarray(Image.open(io.BytesIO(encoded.getvalue())))
    ds = dataset(*pixels.shape, series=generate_uid())
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = encapsulate([encoded.getvalue()] * (frames or 1))
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.55"
    ds.StudyInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds, decoded
