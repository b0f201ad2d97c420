"""How a record's frames are laid out and what they decode to: the one fact about pixels that the
manifest, the stores and the decoders all need.

It lives apart from `daemons.render.imaging.decode` because that module pulls in the codecs and numba's
kernels: the toplevel, institution and web layers read manifests' neighbours (the deployment
imports the S3 store) and must run where executable memory is refused (MDWE,
tests/installers/test_units.py), so nothing they import may load numba.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the layers that import this module need not load pydicom
    from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Layout:
    """How a record's frames are laid out and what they decode to (from the upload's analysis)."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    float_modality: bool

    @property
    def is_color(self) -> bool:
        return self.samples == 3 or self.photometric == "PALETTE COLOR"

    @property
    def file_dtype(self) -> np.dtype:
        """The dtype of one greyscale sample as the file stores it (native byte order)."""
        if self.bits_allocated == 1:
            return np.dtype(np.uint8)
        kind = "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"{kind}{max(1, self.bits_allocated // 8)}")

    @property
    def stored_dtype(self) -> np.dtype:
        """The dtype frames are kept in, in RAM (native byte order)."""
        if self.is_color:
            return np.dtype(np.uint8)
        if self.float_modality:
            return np.dtype(np.float32)
        return self.file_dtype

    @property
    def native_frame_bits(self) -> int:
        """The bits of one uncompressed frame as a file stores it (PS3.5 8.1.1): Rows x Columns x
        samples x Bits Allocated, where in YBR_FULL_422 two luminance samples share one Cb and one
        Cr (PS3.3 C.7.6.3.1.2: two thirds of the samples)."""
        samples = self.rows * self.columns * self.samples
        if self.photometric == "YBR_FULL_422":
            samples = samples * 2 // 3
        return samples * self.bits_allocated

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (self.rows, self.columns, 3) if self.is_color else (self.rows, self.columns)

    def sized(self, rows: int, columns: int) -> Layout:
        """This layout for frames of another size: a classic series may mix image sizes (one
        stack each, `daemons.render.ingest.stack_analysis`); everything else about its pixels agrees."""
        return replace(self, rows=rows, columns=columns)

    def padded_to(self, sizes: Iterable[tuple[int, int]]) -> Layout:
        """This layout at the largest rows and largest columns of `sizes` ((rows, columns) of each
        stack): the one array a record of several sizes is held in (and counted as)."""
        rows, columns = zip(*sizes, strict=True)
        return self.sized(max(rows), max(columns))

    def to_json(self) -> dict:
        return dict(self.__dict__)


def layout_of(ds: Dataset, float_modality: bool) -> Layout:
    """The layout of a data set's frames, as its image attributes state it."""
    return Layout(
        rows=int(ds.Rows), columns=int(ds.Columns), samples=int(ds.SamplesPerPixel),
        bits_allocated=int(ds.BitsAllocated), bits_stored=int(ds.BitsStored),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        photometric=str(ds.PhotometricInterpretation).strip(), float_modality=float_modality,
    )
