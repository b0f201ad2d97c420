"""Numbers the geometry and the statistics multiply must be usable wherever a file writes them.

A pixel spacing of 1e308 mm, an infinite spacing in a functional group, a NaN frame position or a
shared Rescale Slope of 1e300 once passed the upload checks: the record's JSON then held Infinity
or NaN (invalid JSON, in the patient's whole record list too) and every 2D image was a 500. Each
such file is refused at upload with a 422 naming the file, the attribute and its value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset

from tests.render.synthetic import dataset as _dataset
from tests.render.synthetic import to_bytes as _bytes
from tests.render.test_bad_input import _nothing_stored

#: pydicom warns when it writes a DS value DICOM does not allow ("inf", "nan"): that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")


def _slice(change: Callable[[Dataset], None]) -> bytes:
    """A 32x32 CT slice with 0.7 mm pixels, changed by `change`."""
    ds = _dataset(rows=32, cols=32)
    ds.PixelSpacing = [0.7, 0.7]
    change(ds)
    return _bytes(ds)


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _enhanced(position: Callable[[int], list], shared: Dataset | None = None, frames: int = 3) -> bytes:
    """An enhanced 32x32 CT of `frames` frames: each frame's position `position(frame)` in its own
    Plane Position item, orientation and 0.7 mm spacing in the shared group, plus `shared`'s macros."""
    ds = _dataset(rows=32, cols=32, pixels=False)
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.NumberOfFrames = frames
    ds.PixelData = (np.arange(32 * 32 * frames, dtype=np.int16) % 100).tobytes()
    ds.PerFrameFunctionalGroupsSequence = [
        _item(PlanePositionSequence=[_item(ImagePositionPatient=position(k))]) for k in range(frames)]
    group = shared or Dataset()
    if "PlaneOrientationSequence" not in group:
        group.PlaneOrientationSequence = [_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]
    if "PixelMeasuresSequence" not in group:
        group.PixelMeasuresSequence = [_item(PixelSpacing=[0.7, 0.7], SliceThickness=1)]
    ds.SharedFunctionalGroupsSequence = [group]
    return _bytes(ds)


def _spacing(keyword: str, value: list) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        del ds.PixelSpacing
        setattr(ds, keyword, value)
    return change


def _shared_rescale(slope: str, intercept: str = "0") -> Dataset:
    return _item(PixelValueTransformationSequence=[
        _item(RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="HU")])


BAD_FILES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    # case: (file, attribute the refusal names, what it says of the value)
    "pixel spacing 1e308": (lambda: _slice(_spacing("PixelSpacing", ["1e308", "1e308"])),
                            "PixelSpacing", "between"),
    "imager pixel spacing alone 1e308": (lambda: _slice(_spacing("ImagerPixelSpacing", ["1e308", "1e308"])),
                                         "ImagerPixelSpacing", "between"),
    "pixel spacing 1e-200 by 1e200": (lambda: _slice(_spacing("PixelSpacing", ["1e-200", "1e200"])),
                                      "PixelSpacing", "between"),
    "pixel spacing 1e300 (once accepted as no volume)": (lambda: _slice(_spacing("PixelSpacing", ["1e300", "1e300"])),
                                                         "PixelSpacing", "between"),
    "negative imager pixel spacing": (lambda: _slice(_spacing("ImagerPixelSpacing", ["-0.5", "0.5"])),
                                      "ImagerPixelSpacing", "negative"),
    "nominal scanned pixel spacing inf": (lambda: _slice(_spacing("NominalScannedPixelSpacing", ["inf", "inf"])),
                                          "NominalScannedPixelSpacing", "finite"),
    "shared pixel measures spacing inf": (
        lambda: _enhanced(lambda k: [0, 0, k], _item(PixelMeasuresSequence=[_item(PixelSpacing=["inf", "inf"])])),
        "PixelSpacing", "finite"),
    "one frame's position nan": (lambda: _enhanced(lambda k: [0, 0, "nan" if k == 1 else k]),
                                 "ImagePositionPatient", "finite"),
    "one frame's position inf": (lambda: _enhanced(lambda k: [0, 0, "inf" if k == 1 else k]),
                                 "ImagePositionPatient", "finite"),
    "position 1.7e308 (the gap to the next slice overflows)": (
        lambda: _slice(lambda ds: setattr(ds, "ImagePositionPatient", [0, 0, 1.7e308])),
        "ImagePositionPatient", "within"),
    "shared plane orientation nan": (
        lambda: _enhanced(lambda k: [0, 0, k], _item(PlaneOrientationSequence=[
            _item(ImageOrientationPatient=["nan", 0, 0, 0, 1, 0])])),
        "ImageOrientationPatient", "finite"),
    "shared rescale slope 1e300": (lambda: _enhanced(lambda k: [0, 0, k], _shared_rescale("1e300")),
                                   "Rescale Slope", "too large"),
    "shared rescale slope 0": (lambda: _enhanced(lambda k: [0, 0, k], _shared_rescale("0")),
                               "Rescale Slope", "zero"),
    "shared rescale slope nan": (lambda: _enhanced(lambda k: [0, 0, k], _shared_rescale("nan")),
                                 "RescaleSlope", "finite"),
    "shared rescale intercept inf": (lambda: _enhanced(lambda k: [0, 0, k], _shared_rescale("1", "inf")),
                                     "RescaleIntercept", "finite"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_an_unusable_number_is_refused_at_upload_naming_attribute_and_value(node, case):
    make, attribute, problem = BAD_FILES[case]
    reply = node.upload([("bad.dcm", make())])
    assert reply.status_code == 422, reply.get_data(as_text=True)[:400]
    error = reply.json["error"]
    assert error["code"] == "invalid_attribute", error
    assert "bad.dcm" in error["message"] and attribute in error["message"] and problem in error["message"], error
    _nothing_stored(node)


def test_a_frame_refusal_names_its_functional_group_item(node):
    reply = node.upload([("bad.dcm", _enhanced(lambda k: [0, 0, "nan" if k == 1 else k]))])
    assert reply.status_code == 422
    assert "PerFrameFunctionalGroupsSequence item 2, PlanePositionSequence" in reply.json["error"]["message"]


GOOD_FILES: dict[str, Callable[[], bytes]] = {
    "unknown spacing 0\\0": lambda: _slice(_spacing("PixelSpacing", [0, 0])),
    "microscope spacing 0.00025 mm": lambda: _slice(_spacing("PixelSpacing", [0.00025, 0.00025])),
    "the largest pixel spacing, 1e4 mm": lambda: _slice(_spacing("PixelSpacing", [1e4, 1e4])),
    "positions a metre from the origin": lambda: _enhanced(lambda k: [-1000, 250, 900 + k]),
    "nominal scanned pixel spacing": lambda: _slice(_spacing("NominalScannedPixelSpacing", [0.2, 0.2])),
    "enhanced with a shared rescale": lambda: _enhanced(lambda k: [0, 0, k], _shared_rescale("0.5", "-1024")),
}


@pytest.mark.parametrize("case", list(GOOD_FILES))
def test_plausible_numbers_stay_accepted_and_their_images_render(node, case):
    record_id, meta = node.load([("good.dcm", GOOD_FILES[case]())])
    image = node.client.get(f"/api/v1/records/{record_id}/frames/0", headers=node.headers())
    assert image.status_code == 200 and image.mimetype.startswith("image/")
