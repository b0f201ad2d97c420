"""Small synthetic DICOM files for upload tests (real data is used wherever a property needs it)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def dataset(rows: int = 8, cols: int = 8, series: str | None = None, pixels: bool = True,
             position: float = 0.0, orientation=(1, 0, 0, 0, 1, 0)) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
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
