"""Image query parameters, declared once: parsed here for frames, MPR and 3D, and documented in the
OpenAPI document from the same declarations (`Param.openapi`).

Before this module each endpoint parsed its own copy, and they disagreed (`format=jpg`,
`size=512X512`, `window=40,1e10`, `region=0,0,1` and out-of-range indexes were accepted by one
endpoint and refused by another). A bad value is `400 validation_error` naming the parameter, and so
is a parameter given twice; an index outside the record is `404 not_found` with the valid range, for
frames and reformats alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask import request

from daemons.render.imaging.encode import DEFAULT_QUALITY, FORMATS
from daemons.render.imaging.geometry import FULL, Region
from daemons.render.imaging.pixels import PRESETS, WINDOW_FUNCTIONS, Window
from daemons.render.imaging.probe import SHAPES
from daemons.render.volume.mpr import SLAB_MODES
from shared.errors import ApiError, not_found
from shared.validation import ascii_float, ascii_int

MAX_VALUE = 1e9  # window centre and width, in modality units
FORMAT_ALIASES = {"jpg": "jpeg"}


def bad(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


def single_value(name: str, values: list[str]) -> str | None:
    """The one value of a query parameter (None when absent), for every door's parameters (the
    node's image API, DICOMweb's QIDO-RS and rendered resources). Given more than once it is 400:
    `window=40,400&window=nan,1` was drawn with the first and the second, malformed, went unread,
    and a client (or a proxy appending its own) could not tell which one was used."""
    if len(values) > 1:
        raise bad(f"query parameter {name} is given {len(values)} times; give it once")
    return values[0] if values else None


@dataclass(frozen=True)
class Param:
    """One query parameter: its name, what it means, and its JSON schema (for the OpenAPI document)."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False

    def raw(self) -> str | None:
        """The parameter's value, stripped; None when absent or blank; 400 when given twice (`single_value`)."""
        value = single_value(self.name, request.args.getlist(self.name))
        return None if value is None or value.strip() == "" else value.strip()

    def openapi(self) -> dict[str, Any]:
        return {"name": self.name, "in": "query", "required": self.required, "schema": self.schema,
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
INVERT = Param("invert", "true: the rendered image inverted (black is white), as the viewer's Invert tool shows it",
               {"enum": ["true", "false", "1", "0"]})
RECORD_DETAILS = ("full", "summary")
DETAIL = Param("detail", "full: RecordMeta with slices and planes; summary: without them, as lists give it "
               "(the patient page asks many records at once)", {"enum": list(RECORD_DETAILS), "default": "full"})
STACK = Param("stack", "the stack to reformat or render (an id of RecordMeta.stacks); without it the first",
              {"type": "string", "pattern": r"^[0-9]{1,6}$"})
PHASE = Param("phase", "the time point of the stack to reformat or render, counted from 0 (an index of the "
              "stack's `phases` in RecordMeta.stacks); without it the first (0)", {"type": "integer", "minimum": 0})
#: PUT/DELETE .../key-images/{plane}/{index}: which stack (reformats) and time point the image is of
#: (without `phase` none is recorded: daemons.render.api.key_images).
KEY_IMAGE_PARAMS = (STACK, PHASE)
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
                 QUALITY, FORMAT, SIZE, VIEW_ID, SEQ, STACK, PHASE, INVERT)

# Readings of original values (GET .../frames/{index}/value and /stats): image coordinates of the
# stored frame, x along a row 0..columns, y down the columns 0..rows (daemons.render.imaging.probe).
_COORDINATE = {"type": "number", "minimum": 0}
POINT_X = Param("x", "image x (column) of the point, 0 <= x < columns", _COORDINATE, True)
POINT_Y = Param("y", "image y (row) of the point, 0 <= y < rows", _COORDINATE, True)
BOX_X0, BOX_Y0, BOX_X1, BOX_Y1 = (
    Param(name, f"image {name[0]} of a corner of the box, 0..{'columns' if name[0] == 'x' else 'rows'}",
          _COORDINATE, True) for name in ("x0", "y0", "x1", "y1"))
SHAPE = Param("shape", "rect: the box; ellipse: the ellipse inscribed in it", {"enum": list(SHAPES)}, True)
VALUE_PARAMS = (POINT_X, POINT_Y)
STATS_PARAMS = (SHAPE, BOX_X0, BOX_Y0, BOX_X1, BOX_Y1)

# GET /api/v1/presets: the presets for one modality only.
MODALITY = Param("modality", "DICOM modality code (CT, MR, ...): only the presets made for it",
                 {"type": "string", "pattern": r"^[A-Za-z0-9]{1,16}$"})
PRESETS_PARAMS = (MODALITY,)

FRAME_PARAMS = (WINDOW, PRESET, VOI_FUNCTION, FORMAT, QUALITY, SIZE, REGION, OVERLAYS, INVERT)
MPR_PARAMS = (WINDOW, PRESET, VOI_FUNCTION, FORMAT, QUALITY, SIZE, REGION, SLAB, SLAB_MODE, STACK, PHASE, INVERT)

# DICOMweb rendered resources (PS3.18 §8.3.5): the standard's spelling of the same ideas (and
# SIVR's `invert`, which the standard lacks, as the viewer's API spells it). `window`
# carries its function; `viewport` is the output box and, optionally, a source rectangle in pixels
# (negative widths flip); the media type comes from Accept or the `accept` parameter.
DICOMWEB_WINDOW_FUNCTIONS = {"linear": "linear", "linear-exact": "linear_exact", "sigmoid": "sigmoid"}
RENDERED_WINDOW = Param("window", "CENTER,WIDTH,FUNCTION (FUNCTION: linear, linear-exact or sigmoid), "
                        "PS3.18 §8.3.5.1.4; without it each image's own default VOI",
                        {"type": "string", "pattern": r"^[^,]+,[^,]+,(linear|linear-exact|sigmoid)$"})
VIEWPORT = Param("viewport", "VW,VH[,SX,SY,SW,SH]: the box (pixels) the image fits in keeping its true aspect, "
                 "and optionally the source rectangle in image pixels (SW/SH empty: to the edge; negative: "
                 "flipped), PS3.18 §8.3.5.1.3",
                 {"type": "string", "pattern": r"^\d{1,6},\d{1,6}(,-?\d*,-?\d*,-?\d*,-?\d*)?$"})
ANNOTATIONS = ("patient", "technique")
ANNOTATION = Param("annotation", "comma-separated: patient, technique (text burnt into the image)",
                   {"type": "string", "pattern": r"^(patient|technique)(,(patient|technique))?$"})
CHARSET = Param("charset", "character set of text in the response; images carry none (accepted, unused)")
ACCEPT = Param("accept", "media type(s), as in the Accept header; read first, the header decides only if "
                         "they name nothing offered (PS3.18 §8.7.8.1)")
RENDERED_PARAMS = (RENDERED_WINDOW, VIEWPORT, QUALITY, ANNOTATION, CHARSET, ACCEPT, INVERT)
THUMBNAIL_PARAMS = (VIEWPORT, QUALITY, CHARSET, ACCEPT)  # quality: a thumbnail is encoded as a rendered image is
RENDERED_MPR_PARAMS = (RENDERED_WINDOW, VIEWPORT, QUALITY, ACCEPT, SLAB, SLAB_MODE, STACK, PHASE, INVERT)
RENDERED_VOLUME_PARAMS = (RENDERED_WINDOW, VIEWPORT, QUALITY, ACCEPT, MODE, VOLUME_PRESET, AZIMUTH, ELEVATION,
                          ROLL, ZOOM, RENDER, VIEW_ID, SEQ, STACK, PHASE, INVERT)


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
    value = ascii_float(raw)
    if value is None:
        raise bad(f"query parameter {param.name} must be a number")
    if not low <= value <= high:
        raise bad(f"query parameter {param.name} must be between {low:g} and {high:g}")
    return value


def integer(param: Param, default: int, low: int, high: int) -> int:
    raw = param.raw()
    if raw is None:
        return default
    value = ascii_int(raw)
    if value is None:
        raise bad(f"query parameter {param.name} must be an integer")
    if not low <= value <= high:
        raise bad(f"query parameter {param.name} must be between {low} and {high}")
    return value


def coordinate(param: Param, high: float) -> float:
    """A required image coordinate, 0..`high` (inclusive; a point's own limit is checked by
    daemons.render.imaging.probe, which knows whether the edge itself is a pixel)."""
    if param.raw() is None:
        raise bad(f"query parameter {param.name} is required")
    return number(param, 0.0, 0.0, high)


def shape() -> str:
    if SHAPE.raw() is None:
        raise bad("query parameter shape is required")
    return choice(SHAPE, None, SHAPES) or SHAPES[0]


def voi_function() -> str | None:
    """The requested VOI LUT function, or None (the default VOI keeps its own)."""
    return choice(VOI_FUNCTION, None, WINDOW_FUNCTIONS)


def window(presets: dict[str, tuple[float, float]] | None = PRESETS) -> Window | None:
    """`window=C,W`, else a named window `preset` (when `presets` is given), with `voi_function`;
    None when the request names neither (the image's default VOI applies)."""
    function = voi_function() or "linear"
    raw = WINDOW.raw()
    if raw is None:
        return None if presets is None else preset_window(presets, function)
    parts = raw.split(",")
    values = [v for v in (ascii_float(p.strip()) for p in parts) if v is not None and abs(v) < MAX_VALUE]
    if len(parts) != 2 or len(values) != 2:
        raise bad(f"query parameter window must be CENTER,WIDTH: two numbers below {MAX_VALUE:g} in size")
    try:
        return Window(values[0], values[1], function)
    except ValueError as exc:
        raise bad(f"query parameter window: {exc}") from exc


def preset_window(presets: dict[str, tuple[float, float]] = PRESETS, function: str = "linear") -> Window | None:
    """The named window `preset` asks for (400 for a name not in `presets`), None without it: the
    one reading of `preset` for the node's API (`window`) and DICOMweb (`rendered_window`) alike."""
    name = choice(PRESET, None, sorted(presets))
    if name is None:
        return None
    center, width = presets[name]
    return Window(center, width, function)


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
    match = re.fullmatch(r"([0-9]{1,6})[xX]([0-9]{1,6})", raw)
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
    parts = raw.split(",")
    values = [v for v in (ascii_float(p.strip()) for p in parts) if v is not None]
    try:
        if len(parts) != 4 or len(values) != 4:
            raise ValueError("four numbers are needed")
        return Region(*values)
    except ValueError as exc:
        raise bad("query parameter region must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and "
                  "0 <= y0 < y1 <= 1") from exc


def _flag(param: Param) -> bool:
    raw = (param.raw() or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise bad(f"query parameter {param.name} must be true or false")
    return raw in ("true", "1")


def overlays() -> bool:
    return _flag(OVERLAYS)


def invert() -> bool:
    """`invert=true`: the image's display values turned over (frames, reformats and 3D alike)."""
    return _flag(INVERT)


def slab() -> tuple[float, str]:
    return number(SLAB, 0.0, 0.0, MAX_SLAB_MM), choice(SLAB_MODE, "avg", SLAB_MODES) or "avg"


def stack() -> str | None:
    """The requested stack id, None for the record's first (an id it lacks is 404, daemons.render.stacks)."""
    raw = STACK.raw()
    if raw is not None and not re.fullmatch(STACK.schema["pattern"], raw):
        raise bad("query parameter stack must be a stack id of the record (digits)")
    return raw


def phase() -> int:
    """The requested time point of the stack (0-based), 0 without it. Not an integer: 400; an
    integer the stack has no time point for (negative included): 404 with the valid range, as for
    an unknown stack (daemons.render.stacks.find_stack)."""
    raw = PHASE.raw()
    if raw is None:
        return 0
    if not re.fullmatch(r"-?[0-9]{1,6}", raw):
        raise bad("query parameter phase must be a time point index of the stack (an integer from 0)")
    return int(raw)


def optional_phase() -> int | None:
    """`phase` where it is optional and its absence means "none" (a key image's time point), checked
    as `phase` is; None without it."""
    return None if PHASE.raw() is None else phase()


def check_index(what: str, index: int, count: int) -> None:
    """An image index in the path: outside the record it names nothing, so 404 with the range."""
    if not 0 <= index < count:
        raise not_found(what, f"{index} (the record has {count}: 0..{count - 1})")


def rendered_window(presets: dict[str, tuple[float, float]] | None = None) -> Window | None:
    """DICOMweb `window=C,W,FUNCTION`, else a named window `preset` (when `presets` is given: SIVR's
    3D views, which take the node API's `preset` as `window` does); None when the request names
    neither (each image's own default VOI, or the projection's, applies)."""
    raw = RENDERED_WINDOW.raw()
    if raw is None:
        return None if presets is None else preset_window(presets)
    parts = [p.strip() for p in raw.split(",")]
    message = ("query parameter window must be CENTER,WIDTH,FUNCTION with FUNCTION one of "
               f"{', '.join(DICOMWEB_WINDOW_FUNCTIONS)}")
    if len(parts) != 3 or parts[2] not in DICOMWEB_WINDOW_FUNCTIONS:
        raise bad(message)
    center, width = ascii_float(parts[0]), ascii_float(parts[1])
    if center is None or width is None:
        raise bad(message)
    if not all(abs(v) < MAX_VALUE for v in (center, width)):
        raise bad(f"query parameter window: CENTER and WIDTH must be numbers below {MAX_VALUE:g} in size")
    try:
        return Window(center, width, DICOMWEB_WINDOW_FUNCTIONS[parts[2]])
    except ValueError as exc:
        raise bad(f"query parameter window: {exc}") from exc


@dataclass(frozen=True)
class Viewport:
    """A parsed `viewport`: output box, and the source rectangle in pixels (None: the whole image)."""

    box: tuple[int, int] | None
    source: tuple[int, int, int | None, int | None] | None = None

    @property
    def flip(self) -> tuple[bool, bool]:
        """(left-right, top-bottom): a negative source width or height asks for a mirrored image."""
        if self.source is None:
            return False, False
        return (self.source[2] or 0) < 0, (self.source[3] or 0) < 0

    def region(self, rows: int, cols: int) -> Region:
        """The source rectangle as the fractions the renderers crop with (clipped to the image)."""
        if self.source is None:
            return FULL
        sx, sy, sw, sh = self.source
        if sx >= cols or sy >= rows:
            raise bad(f"query parameter viewport: the source rectangle starts outside the {cols}x{rows} image")
        right = cols if sw is None or sw == 0 else min(cols, sx + abs(sw))
        bottom = rows if sh is None or sh == 0 else min(rows, sy + abs(sh))
        return Region(sx / cols, sy / rows, right / cols, bottom / rows)


def viewport(max_px: int, default: tuple[int, int] | None = None) -> Viewport:
    """`viewport=VW,VH[,SX,SY,SW,SH]` (PS3.18 §8.3.5.1.3); without it, `default` as the box."""
    raw = VIEWPORT.raw()
    if raw is None:
        return Viewport(default)
    parts = [p.strip() for p in raw.split(",")]
    message = "query parameter viewport must be VW,VH or VW,VH,SX,SY,SW,SH (integers; SW, SH may be empty)"
    if len(parts) not in (2, 6) or not all(re.fullmatch(r"[0-9]{1,6}", p) for p in parts[:2]):
        raise bad(message)
    box = int(parts[0]), int(parts[1])
    if not (1 <= box[0] <= max_px and 1 <= box[1] <= max_px):
        raise bad(f"query parameter viewport: VW and VH must be between 1 and {max_px}")
    if len(parts) == 2:
        return Viewport(box)
    if not all(re.fullmatch(r"[0-9]{1,6}", p) for p in parts[2:4]) or \
            not all(re.fullmatch(r"(-?[0-9]{1,6})?", p) for p in parts[4:]):
        raise bad(message + "; SX and SY are not negative")
    sw, sh = (int(p) if p else None for p in parts[4:])
    return Viewport(box, (int(parts[2]), int(parts[3]), sw, sh))


def annotation_items() -> tuple[str, ...]:
    """The requested `annotation` items, in the order of ANNOTATIONS."""
    raw = ANNOTATION.raw()
    if raw is None:
        return ()
    items = {p.strip().lower() for p in raw.split(",")}
    if not items or not items <= set(ANNOTATIONS):
        raise bad(f"query parameter annotation must be a comma-separated list of {', '.join(ANNOTATIONS)}")
    return tuple(a for a in ANNOTATIONS if a in items)
