"""The pure greyscale pipeline (PS3.3 C.11), colour helpers, geometry and encoding: known values."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from daemons.render.imaging.decode import native_frame
from daemons.render.imaging.encode import encode_image
from daemons.render.imaging.geometry import Region, crop, output_size, resample
from daemons.render.imaging.pixels import (
    PRESETS,
    WINDOW_FUNCTIONS,
    GrayParams,
    LutTable,
    Modality,
    Window,
    auto_window,
    color_to_uint8,
    gray_lut,
    render_gray,
    render_gray_reference,
    to_uint8,
    window_values,
)
from daemons.render.store.frame_layout import Layout


# --- VOI window functions (C.11.2.1.2) -----------------------------------------------------------
def test_linear_window_known_values():
    window = Window(40, 400, "linear")
    x = np.array([-1000, -160, -159, 39.5, 239, 239.01, 3000])
    y = window_values(x, window)
    assert y[0] == 0 and y[1] == 0  # x <= c - 0.5 - (w-1)/2 = -160
    assert y[2] == pytest.approx((((-159 - 39.5) / 399) + 0.5) * 255)
    assert y[3] == pytest.approx(127.5)  # the centre of a LINEAR window is c - 0.5
    assert y[4] == pytest.approx(255.0)  # x = c - 0.5 + (w-1)/2 is still on the ramp, at its top
    assert y[5] == 255 and y[6] == 255


def test_linear_window_of_width_one_is_a_threshold():
    y = window_values(np.array([9.4, 9.5, 9.6, 10.0]), Window(10, 1, "linear"))
    assert y.tolist() == [0, 0, 255, 255]


def test_linear_exact_window_known_values():
    window = Window(100, 50, "linear_exact")
    y = window_values(np.array([74, 75, 75.5, 100, 125, 126]), window)
    assert y[0] == 0 and y[1] == 0  # x <= c - w/2
    assert y[2] == pytest.approx((0.5 / 50) * 255)
    assert y[3] == pytest.approx(127.5)
    assert y[4] == pytest.approx(255)
    assert y[5] == 255


def test_sigmoid_window_known_values():
    window = Window(0, 100, "sigmoid")
    y = window_values(np.array([0.0, 25.0, -25.0, 1e6, -1e6]), window)
    assert y[0] == pytest.approx(127.5)
    assert y[1] == pytest.approx(255 / (1 + math.exp(-1)))
    assert y[2] == pytest.approx(255 / (1 + math.exp(1)))
    assert y[3] == pytest.approx(255) and y[4] == pytest.approx(0)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_agree_with_pydicom(function):
    """pydicom implements the same formulas over the stored range; ours with that range must match."""
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 16, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1200.0, 700.0, function
    x = np.arange(0, 4096, 3, dtype=np.uint16)
    expected = apply_windowing(x.copy(), ds)
    ours = window_values(x, Window(1200.0, 700.0, function.lower()), 0.0, 65535.0)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-6)


def test_window_rejects_invalid_widths():
    with pytest.raises(ValueError):
        Window(0, 0.5, "linear")
    with pytest.raises(ValueError):
        Window(0, 0, "sigmoid")
    with pytest.raises(ValueError):
        Window(0, 10, "cubic")


# --- whole pipeline --------------------------------------------------------------------------
def test_rescale_then_window_on_signed_ct_values():
    stored = np.array([[-2000, 0], [1024, 1064]], dtype=np.int16)
    params = GrayParams(Modality(1.0, -1024.0), Window(40, 80, "linear"))
    image = render_gray_reference(stored, params)
    # HU: -3024, -1024, 0, 40 -> below, below, at c-40 (<= c-0.5-39.5 -> 0), 40 -> near the middle
    assert image[0, 0] == 0 and image[0, 1] == 0 and image[1, 0] == 0
    assert image[1, 1] == to_uint8(((40 - 39.5) / 79 + 0.5) * 255)


def test_monochrome1_is_inverted():
    stored = np.arange(0, 4096, 7, dtype=np.uint16)
    normal = render_gray_reference(stored, GrayParams(Modality(), Window(2048, 4096)))
    inverted = render_gray_reference(stored, GrayParams(Modality(), Window(2048, 4096), invert=True))
    np.testing.assert_array_equal(inverted.astype(int), 255 - normal.astype(int))
    assert inverted[0] == 255 and normal[0] == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_lookup_table_equals_float_pipeline_for_every_value(dtype):
    info = np.iinfo(dtype)
    every = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype)
    params = GrayParams(Modality(2.0, -100.0), Window(-50, 300, "sigmoid"), invert=True)
    np.testing.assert_array_equal(render_gray(every, params, gray_lut(np.dtype(dtype), params)),
                                  render_gray_reference(every, params))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("span", [(-1100, 3100), (-1100, -3), (5, 3100), (0, 0), (-1, -1)])
def test_a_table_over_a_value_range_is_exact_inside_it(dtype, span):
    """Signed ranges that cross zero, lie below it or above it (their unsigned indexes are two runs
    or one), clipped to the dtype."""
    info = np.iinfo(dtype)
    low, high = min(max(info.min, span[0]), info.max), max(min(info.max, span[1]), info.min)
    inside = np.arange(low, high + 1, dtype=np.int64).astype(dtype)
    params = GrayParams(Modality(1.0, -1024.0), Window(40, 400))
    lut = gray_lut(np.dtype(dtype), params, (low, high))
    np.testing.assert_array_equal(render_gray(inside, params, lut), render_gray_reference(inside, params))
    with pytest.raises(ValueError, match="not within"):
        gray_lut(np.dtype(dtype), params, (int(info.min) - 1, high))


def test_a_cropped_frame_renders_through_the_table_like_the_reference():
    frame = np.random.default_rng(3).integers(-1024, 3000, (64, 80)).astype(np.int16)
    params = GrayParams(Modality(), Window(100, 700))
    crop = frame[5:50:2, 7:70:3]
    lut = gray_lut(np.dtype(np.int16), params, (int(frame.min()), int(frame.max())))
    np.testing.assert_array_equal(render_gray(crop, params, lut), render_gray_reference(crop, params))
    np.testing.assert_array_equal(render_gray(crop, params), render_gray_reference(crop, params))


def test_big_endian_frames_render_like_native_ones():
    values = np.array([[-1000, 0, 500]], dtype=np.int16)
    params = GrayParams(Modality(), Window(0, 1000))
    lut = gray_lut(np.dtype(np.int16), params)
    np.testing.assert_array_equal(render_gray(values.astype(">i2"), params, lut), render_gray(values, params, lut))


def test_32_bit_data_uses_the_float_pipeline():
    stored = np.array([[0, 1_000_000, 2_000_000]], dtype=np.uint32)
    image = render_gray(stored, GrayParams(Modality(), Window(1_000_000, 2_000_000)))
    assert image.tolist() == [[0, 128, 255]]


def test_modality_lut_sequence_maps_stored_values():
    lut = LutTable(first_mapped=-2, bits=16, data=np.array([10, 20, 30, 40]))
    values = Modality(lut=lut).apply(np.array([-5, -2, -1, 0, 1, 9]))
    assert values.tolist() == [10, 10, 20, 30, 40, 40]  # clamped below the first and above the last


def test_voi_lut_sequence_is_scaled_from_its_bit_depth():
    voi = LutTable(first_mapped=0, bits=12, data=np.array([0, 4095, 2048]))
    image = render_gray_reference(np.array([0, 1, 2, 7], dtype=np.uint16), GrayParams(Modality(), voi))
    assert image.tolist() == [0, 255, to_uint8(2048 * 255 / 4095), to_uint8(2048 * 255 / 4095)]


def test_auto_window_ignores_padding_outliers():
    values = np.concatenate([np.full(100, -3024.0), np.linspace(-1000, 1000, 100_000)])
    window = auto_window(values)
    assert -1000 <= window.center - window.width / 2 < -900
    assert 900 < window.center + window.width / 2 <= 1000
    assert auto_window(np.full(10, 7.0)).width == 1.0


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    """The automatic window's definition over every value at once (what auto_window computed before
    it counted stored values): the 0.5th and 99.5th percentiles, min and max when they are closer."""
    low, high = np.percentile(np.asarray(values, dtype=np.float64), [0.5, 99.5])
    if high - low < 1.0:
        low, high = values.min(), values.max()
    return (low + high) / 2.0, max(high - low, 1.0)


@pytest.mark.parametrize("dtype, modality", [
    (np.int16, Modality(1.0, -1024.0)),
    (np.uint16, Modality(0.25, 3.0)),
    (np.int16, Modality(-2.0, 100.0)),  # a negative slope turns the order of the values over
    (np.uint8, Modality()),
    (np.uint16, Modality(lut=LutTable(0, 16, np.array([900, 5, 700, 40, 3000, 2] * 100, dtype=np.uint16)))),
])
def test_auto_window_of_stored_values_is_the_percentile_window_of_their_modality_values(dtype, modality):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    stored = rng.integers(max(info.min, -2000), min(info.max, 599), (300, 257), dtype=dtype)
    stored[:20] = info.min  # padding
    center, width = _percentile_window(modality.apply(stored))
    for form in (stored, stored[:, ::2], stored.astype(stored.dtype.newbyteorder(">")), np.asfortranarray(stored)):
        expected = (center, width) if form.shape == stored.shape else _percentile_window(modality.apply(form))
        assert auto_window(form, modality) == Window(*expected)  # NumPy's percentiles, bit for bit
    flat = np.full((4, 4), 3, dtype=dtype)  # one value: min and max, width 1
    assert auto_window(flat, modality) == Window(float(modality.apply(flat)[0, 0]), 1.0)


@pytest.mark.parametrize("form", ["native", "strided", "big-endian"])
def test_auto_window_of_a_large_frame_holds_no_copy_of_it(form):
    import tracemalloc

    stored = np.random.default_rng(3).integers(-1024, 3000, (4096, 4096), dtype=np.int16)  # 32 MiB
    stored = {"native": stored, "strided": stored[:, ::2],
              "big-endian": stored.astype(stored.dtype.newbyteorder(">"))}[form]
    tracemalloc.start()
    try:
        auto_window(stored, Modality(1.0, -1024.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB held to window a {stored.nbytes / 2**20:.0f} MiB frame"


def test_presets_include_the_usual_ct_windows():
    for name in ("ct_brain", "ct_lung", "ct_bone", "ct_abdomen", "ct_mediastinum", "ct_liver", "ct_stroke"):
        center, width = PRESETS[name]
        Window(center, width)
    assert PRESETS["ct_lung"] == (-600.0, 1500.0)


# --- bits, signs, colour ---------------------------------------------------------------------
def _layout(bits_stored: int, signed: bool) -> Layout:
    return Layout(rows=1, columns=3, samples=1, bits_allocated=16, bits_stored=bits_stored,
                  pixel_representation=int(signed), photometric="MONOCHROME2", float_modality=False)


def test_signed_12_bit_values_are_sign_extended():
    raw = np.array([0x0FFF, 0x0800, 0x07FF], dtype="<u2").tobytes()
    frame = native_frame(raw, 0, _layout(12, True), 0)
    assert frame.dtype == np.int16 and frame.tolist() == [[-1, -2048, 2047]]


def test_unsigned_12_bit_values_ignore_bits_above_bits_stored():
    raw = np.array([0xF123, 0x0FFF, 0x8000], dtype="<u2").tobytes()
    assert native_frame(raw, 0, _layout(12, False), 0).tolist() == [[0x0123, 0x0FFF, 0]]


def test_truncated_native_frame_is_an_error():
    with pytest.raises(ValueError, match="truncated"):
        native_frame(b"\x00\x00\x00\x00", 0, _layout(16, False), 0)


def test_16_bit_colour_is_scaled_to_8_bits():
    rgb = np.array([[[0, 32896, 65535]]], dtype=np.uint16)
    assert color_to_uint8(rgb, 16).tolist() == [[[0, 128, 255]]]
    same = np.array([[[1, 2, 3]]], dtype=np.uint8)
    assert color_to_uint8(same, 8) is same


def test_palette_of_a_big_endian_file_matches_its_little_endian_twin(dicom_dir):
    from daemons.render.imaging.decode import decode_frames
    from daemons.render.ingest.series_analysis import parse_upload
    from daemons.render.ingest.upload_checks import Limits

    limits = Limits(2**32, 10, 8192, 8192, 100, 2**32)
    images = []
    for name in ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"):
        raw = (dicom_dir / "pydicom-data" / name).read_bytes()
        parsed = parse_upload([(name, raw)], limits)
        layout = parsed.manifest.render.layout
        images.append(next(decode_frames(raw, layout, [0], parsed.files[0].pixel_offset))[1])
    assert images[0].shape == (600, 800, 3) and images[0].dtype == np.uint8
    np.testing.assert_array_equal(images[0], images[1])


# --- geometry --------------------------------------------------------------------------------
def test_native_size_keeps_true_aspect():
    # rows 2 mm apart, columns 1 mm apart: the image is twice as tall as it has rows
    assert output_size(100, 100, 2.0, 1.0, None, 2048) == (100, 200)
    assert output_size(512, 512, 0.7, 0.7, None, 2048) == (512, 512)
    assert output_size(4000, 1000, 1.0, 1.0, None, 2048) == (512, 2048)


def test_size_box_fits_inside_keeping_aspect():
    assert output_size(512, 512, 1.0, 1.0, (256, 256), 2048) == (256, 256)
    assert output_size(512, 512, 1.0, 1.0, (300, 200), 2048) == (200, 200)
    assert output_size(100, 200, 1.0, 1.0, (400, 400), 2048) == (400, 200)
    assert output_size(100, 100, 2.0, 1.0, (100, 100), 2048) == (50, 100)
    assert output_size(10, 10, 1.0, 1.0, (5000, 5000), 1024) == (1024, 1024)


def test_region_crops_the_requested_fraction():
    frame = np.arange(100).reshape(10, 10)
    part = crop(frame, Region(0.5, 0.0, 1.0, 0.2))
    np.testing.assert_array_equal(part, frame[0:2, 5:10])
    assert crop(frame, Region(0.0, 0.0, 0.01, 0.01)).shape == (1, 1)
    with pytest.raises(ValueError):
        Region(0.5, 0.0, 0.4, 1.0)


def test_resample_changes_size_and_keeps_flat_images_flat():
    flat = np.full((50, 80), 77, dtype=np.uint8)
    out = resample(flat, 160, 100)
    assert out.shape == (100, 160) and np.all(out == 77)
    assert resample(np.zeros((4, 4, 3), np.uint8), 2, 2).shape == (2, 2, 3)


# --- encoding --------------------------------------------------------------------------------
def test_png_is_lossless_and_others_decode():
    image = (np.indices((64, 96)).sum(axis=0) % 256).astype(np.uint8)
    png, mimetype = encode_image(image, "png")
    assert mimetype == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)
    for fmt, expected in (("webp", "image/webp"), ("jpeg", "image/jpeg"), ("gif", "image/gif")):
        data, mimetype = encode_image(image, fmt, 80)
        assert mimetype == expected
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        assert decoded.shape == image.shape
    rgb, _ = encode_image(np.zeros((8, 8, 3), np.uint8), "jpeg", 90)
    assert Image.open(io.BytesIO(rgb)).mode == "RGB"
    with pytest.raises(ValueError):
        encode_image(image, "bmp")
    with pytest.raises(ValueError):
        encode_image(image.astype(np.uint16), "png")


@pytest.mark.parametrize("shape", [(2048, 1), (4096, 2), (1, 4096), (2048, 1, 3), (512, 512), (700, 300, 3)])
def test_png_of_noise_in_any_shape_encodes_losslessly(shape):
    """Noise compresses to nothing, and each row adds a filter byte: a 2048 x 1 image of noise was
    more than imagecodecs' own estimate of its PNG ("output stream too small", a 500 for a strip of
    a noisy slice zoomed into a one-pixel-wide box)."""
    image = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    png, _ = encode_image(image, "png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
@pytest.mark.parametrize("shape", [(5, 1), (1, 5), (1, 1), (5, 1, 3), (1, 1, 3)])
def test_mirrored_images_one_pixel_wide_or_high_encode(fmt, shape):
    """A mirrored axis of one pixel has a negative stride that NumPy still calls contiguous; the
    codecs refused it (a 500 for a DICOMweb viewport mirrored into a 1-pixel image)."""
    image = (np.arange(math.prod(shape)) * 40 % 256).astype(np.uint8).reshape(shape)
    for mirrored in (image[:, ::-1], image[::-1], image[::-1, ::-1]):
        data, _ = encode_image(mirrored, fmt, 90)
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB" if len(shape) == 3 else "L"))
        assert decoded.shape == shape
        if fmt in ("png", "gif") and len(shape) == 2:
            np.testing.assert_array_equal(decoded, mirrored)


@pytest.mark.parametrize("function", WINDOW_FUNCTIONS)
def test_the_window_functions_take_scalars_and_leave_their_input_alone(function):
    window = Window(40, 400, function)
    values = np.array([-500.0, 39.5, 40.0, 41.0, 700.0])
    before = values.copy()
    y = window_values(values, window)
    np.testing.assert_array_equal(values, before)
    assert [float(window_values(v, window)) for v in values] == y.tolist()
    assert float(window_values(np.int16(41), window)) == y[3]
