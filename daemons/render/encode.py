"""Encoding of rendered 8-bit images to PNG, WebP or JPEG bytes.

Kept apart from rendering (pure arrays) so the 2D and 3D endpoints share one encoder with the same
speed settings. The settings favour latency over the last few percent of size, because a viewer
scrolling a stack asks for a new image every few tens of milliseconds:
- PNG: zlib level 1 with Pillow's default filter choice (lossless; on a 512² CT slice ~4 % larger
  than level 6 and a third faster; level 9 is ten times slower);
- WebP: lossy, method 2 at the requested quality (a third smaller than method 0 for ~1 ms more;
  methods 4-6 save another 2 % for three to five times the time);
- JPEG: baseline, no optimisation pass, 4:2:0 for colour only (grey JPEG has no chroma), through
  simplejpeg (libjpeg-turbo) rather than Pillow: the same encoder and speed, but it lets go of
  the GIL while encoding, so the node's request threads encode JPEGs on every core at once
  (Pillow's JPEG encoder holds it: two threads encode no faster than one).
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

FORMATS = ("png", "webp", "jpeg")
MIMETYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
DEFAULT_QUALITY = {"png": 100, "webp": 80, "jpeg": 85}
PNG_COMPRESS_LEVEL = 1
WEBP_METHOD = 2


def encode_image(arr_uint8: np.ndarray, fmt: str, quality: int | None = None,
                 webp_method: int = WEBP_METHOD) -> tuple[bytes, str]:
    """Encode an (H, W) grey or (H, W, 3) RGB uint8 array; returns `(bytes, mimetype)`.

    `quality` (1..100) applies to WebP and JPEG; PNG is always lossless. Unknown formats raise
    ValueError (the HTTP layer validates the request before calling this). `webp_method` (0..6)
    trades WebP size for encoding time; the node's `render.webp_method` setting passes it.
    """
    if fmt not in MIMETYPES:
        raise ValueError(f"unknown image format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if arr_uint8.dtype != np.uint8 or arr_uint8.ndim not in (2, 3):
        raise ValueError("encode_image needs an (H, W) or (H, W, 3) uint8 array")
    if quality is None:
        quality = DEFAULT_QUALITY[fmt]
    pixels = np.ascontiguousarray(arr_uint8)
    if fmt == "jpeg":
        grey = pixels.ndim == 2
        data = simplejpeg.encode_jpeg(pixels[:, :, None] if grey else pixels, quality=int(quality),
                                      colorspace="GRAY" if grey else "RGB",
                                      colorsubsampling="Gray" if grey else "420", fastdct=False)
        return data, MIMETYPES[fmt]
    image = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        image.save(out, "WEBP", quality=int(quality), method=webp_method)
    return out.getvalue(), MIMETYPES[fmt]
