"""Text burnt into a rendered image: DICOMweb's `annotation=patient,technique` (PS3.18 §8.3.5.1.1).

Pure: an 8-bit array and lines of text in, an array out. Patient lines go to the top-left corner,
technique lines to the bottom-left, white on a dark band so they read on any anatomy. The font
size follows the image height (small thumbnails get the smallest legible size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_FONT_PX = 9
FONT_FRACTION = 1 / 36  # of the image height
MARGIN_PX = 2


@dataclass(frozen=True)
class Annotation:
    """Lines of text for the top-left (patient) and bottom-left (technique) corners."""

    top: tuple[str, ...] = ()
    bottom: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.top or self.bottom)


def burn_in(image: np.ndarray, annotation: Annotation) -> np.ndarray:
    """`image` (H, W) grey or (H, W, 3) RGB uint8 with the annotation's text drawn on it."""
    if not annotation:
        return image
    picture = Image.fromarray(np.ascontiguousarray(image), "L" if image.ndim == 2 else "RGB")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(max(MIN_FONT_PX, round(picture.height * FONT_FRACTION)))
    white = 255 if image.ndim == 2 else (255, 255, 255)
    black = 0 if image.ndim == 2 else (0, 0, 0)
    line_px = int(font.getbbox("Ag")[3]) + 1
    y = MARGIN_PX
    for line in annotation.top:
        _text(draw, (MARGIN_PX, y), line, font, white, black)
        y += line_px
    y = picture.height - MARGIN_PX - line_px * len(annotation.bottom)
    for line in annotation.bottom:
        _text(draw, (MARGIN_PX, y), line, font, white, black)
        y += line_px
    return np.asarray(picture)


def _text(draw: ImageDraw.ImageDraw, at: tuple[int, int], line: str, font, fill, band) -> None:
    left, top, right, bottom = draw.textbbox(at, line, font=font)
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=band)
    draw.text(at, line, font=font, fill=fill)
