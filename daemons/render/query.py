"""Image query parameters, declared once: parsed here for frames, MPR and 3D, and documented in the
OpenAPI document from the same declarations (`Param.openapi`).

Before this module each endpoint parsed its own copy, and they disagreed (`format=jpg`,
`size=512X512`, `window=40,1e10`, `region=0,0,1` and out-of-range indexes were accepted by one
endpoint and refused by another). A bad value is `400 validation_error` naming the parameter; an
index outside the record is `404 not_found` with the valid range, for frames and reformats alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from flask import request

from daemons.render.encode import DEFAULT_QUALITY, FORMATS
from daemons.render.geometry import FULL, Region
from daemons.render.pixels import PRESETS, WINDOW_FUNCTIONS, Window
from daemons.render.volume.mpr import SLAB_MODES
from shared.errors import ApiError, not_found

MAX_VALUE = 1e9  # window centre and width, in modality units
FORMAT_ALIASES = {"jpg": "jpeg"}


def bad(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


@dataclass(frozen=True)
class Param:
    """One query parameter: its name, what it means, and its JSON schema (for the OpenAPI document)."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})

    def raw(self) -> str | None:
        value = request.args.get(self.name)
        return None if value is None or value.strip() == "" else value.strip()

    def openapi(self) -> dict[str, Any]:
        return {"name": self.name, "in": "query", "required": False, "schema": self.schema,
                "description": self.description}


WINDOW = Param("window", f"CENTER,WIDTH in modality units (e.g. 40,400), each below {MAX_VALUE:g} in size; "
               "without it (and without preset) the image's own default VOI",
               {"type": "string", "pattern": r"^[^,]+,[^,]+$"})
PRESET = Param("preset", "named window, see /api/v1/presets", {"enum": sorted(PRESETS)})
VOI_FUNCTION = Param("voi_function", "VOI LUT function of the window (PS3.3 C.11.2.1.2)",
                     {"enum": list(WINDOW_FUNCTIONS)})
FORMAT = Param("format", "image format (jpg is jpeg)", {"enum": [*FORMATS, *FORMAT_ALIASES]})
QUALITY = Param("quality", "encoder quality 1..100, for webp and jpeg",
                {"type": "integer", "minimum": 1, "maximum": 100})
SIZE = Param("size", "WIDTHxHEIGHT box the image fits in, keeping the true aspect",
             {"type": "string", "pattern": r"^\d{1,6}[xX]\d{1,6}$"})
REGION = Param("region", "x0,y0,x1,y1 fractions 0..1 with x0 < x1 and y0 < y1: zoom/pan crop")
OVERLAYS = Param("overlays", "draw the file's overlay planes (60xx) in white", {"enum": ["true", "false", "1", "0"]})
MAX_SLAB_MM = 500.0
SLAB = Param("slab", "slab thickness in mm", {"type": "number", "minimum": 0, "maximum": MAX_SLAB_MM})
SLAB_MODE = Param("slab_mode", "slab projection", {"enum": list(SLAB_MODES), "default": "avg"})

# 3D view (GET .../volume). `quality` there is the encoder's, as everywhere; `render` picks a fast
# preview or a full still.
VOLUME_MODES = ("mip", "minip", "avg", "dvr")
MODE = Param("mode", "projection or compositing", {"enum": list(VOLUME_MODES), "default": "mip"})
VOLUME_PRESET = Param("preset", "transfer-function preset (dvr) or window preset (mip/minip/avg), see /api/v1/presets")
ANGLES = {"azimuth": (-360.0, 360.0), "elevation": (-90.0, 90.0), "roll": (-180.0, 180.0)}
AZIMUTH, ELEVATION, ROLL = (Param(name, "degrees", {"type": "number", "minimum": low, "maximum": high})
                            for name, (low, high) in ANGLES.items())
ZOOM_LIMITS = (0.1, 20.0)
ZOOM = Param("zoom", "magnification", {"type": "number", "minimum": ZOOM_LIMITS[0], "maximum": ZOOM_LIMITS[1]})
RENDER = Param("render", "interactive: a fast preview (half size, at least 256 px, JPEG q60 by default); "
               "still: full size, PNG by default, deterministic",
               {"enum": ["interactive", "still"], "default": "still"})
VIEW_ID = Param("view_id", "the viewer's view; with seq, older requests answer 409 superseded",
                {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,64}$"})
SEQ = Param("seq", "request sequence number within view_id", {"type": "integer", "minimum": 0})
VOLUME_PARAMS = (MODE, VOLUME_PRESET, AZIMUTH, ELEVATION, ROLL, ZOOM, WINDOW, VOI_FUNCTION, RENDER,
                 QUALITY, FORMAT, SIZE, VIEW_ID, SEQ)

FRAME_PARAMS = (WINDOW, PRESET, VOI_FUNCTION, FORMAT, QUALITY, SIZE, REGION, OVERLAYS)
MPR_PARAMS = (WINDOW, PRESET, VOI_FUNCTION, FORMAT, QUALITY, SIZE, REGION, SLAB, SLAB_MODE)


def choice(param: Param, default: str | None, choices) -> str | None:
    raw = param.raw()
    if raw is None:
        return default
    if raw not in choices:
        raise bad(f"query parameter {param.name} must be one of {', '.join(choices)}")
    return raw


def number(param: Param, default: float, low: float, high: float) -> float:
    raw = param.raw()
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise bad(f"query parameter {param.name} must be a number") from exc
    if not math.isfinite(value) or not low <= value <= high:
        raise bad(f"query parameter {param.name} must be between {low:g} and {high:g}")
    return value


def integer(param: Param, default: int, low: int, high: int) -> int:
    raw = param.raw()
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d{1,16}", raw):
        raise bad(f"query parameter {param.name} must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise bad(f"query parameter {param.name} must be between {low} and {high}")
    return value


def voi_function() -> str | None:
    """The requested VOI LUT function, or None (the default VOI keeps its own)."""
    return choice(VOI_FUNCTION, None, WINDOW_FUNCTIONS)


def window(presets: dict[str, tuple[float, float]] | None = PRESETS) -> Window | None:
    """`window=C,W`, else a named window `preset` (when `presets` is given), with `voi_function`;
    None when the request names neither (the image's default VOI applies)."""
    function = voi_function() or "linear"
    raw = WINDOW.raw()
    if raw is None:
        if presets is None:
            return None
        name = choice(PRESET, None, sorted(presets))
        if name is None:
            return None
        center, width = presets[name]
        return Window(center, width, function)
    parts = raw.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) and abs(v) < MAX_VALUE for v in values):
        raise bad(f"query parameter window must be CENTER,WIDTH: two numbers below {MAX_VALUE:g} in size")
    try:
        return Window(values[0], values[1], function)
    except ValueError as exc:
        raise bad(f"query parameter window: {exc}") from exc


def image_format(default: str = "png") -> str:
    raw = FORMAT.raw()
    if raw is None:
        return default
    fmt = FORMAT_ALIASES.get(raw.lower(), raw.lower())
    if fmt not in FORMATS:
        raise bad(f"query parameter format must be one of {', '.join(FORMATS)} (jpg is jpeg)")
    return fmt


def quality(fmt: str, default: int | None = None) -> int:
    return integer(QUALITY, DEFAULT_QUALITY[fmt] if default is None else default, 1, 100)


def size(max_px: int, default: tuple[int, int] | None = None) -> tuple[int, int] | None:
    raw = SIZE.raw()
    if raw is None:
        return default
    match = re.fullmatch(r"(\d{1,6})[xX](\d{1,6})", raw)
    if not match:
        raise bad("query parameter size must be WIDTHxHEIGHT, e.g. 512x512")
    box = int(match.group(1)), int(match.group(2))
    if not (1 <= box[0] <= max_px and 1 <= box[1] <= max_px):
        raise bad(f"query parameter size must be between 1x1 and {max_px}x{max_px}")
    return box


def region() -> Region:
    raw = REGION.raw()
    if raw is None:
        return FULL
    try:
        values = [float(p) for p in raw.split(",")]
        if len(values) != 4:
            raise ValueError("four values are needed")
        return Region(*values)
    except ValueError as exc:
        raise bad("query parameter region must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and "
                  "0 <= y0 < y1 <= 1") from exc


def overlays() -> bool:
    raw = (OVERLAYS.raw() or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise bad("query parameter overlays must be true or false")
    return raw in ("true", "1")


def slab() -> tuple[float, str]:
    return number(SLAB, 0.0, 0.0, MAX_SLAB_MM), choice(SLAB_MODE, "avg", SLAB_MODES) or "avg"


def check_index(what: str, index: int, count: int) -> None:
    """An image index in the path: outside the record it names nothing, so 404 with the range."""
    if not 0 <= index < count:
        raise not_found(what, f"{index} (the record has {count}: 0..{count - 1})")
