"""Stored-only instances: kept, catalogued and retrieved as sent, never rendered.

An instance whose pixel data is in a transfer syntax this node cannot decode (MPEG-2, H.264 or
HEVC video, a JPIP referenced or a private syntax, ...) is stored like any other (the decision is
`ParsedFile.stored_only`, made once when the file is parsed; a non-image object, a report or a
presentation state, is stored only too) and listed apart in its series'
manifest (`Manifest.stored_only`). Every request that would render one (frames, rendered images,
thumbnails, MPR, 3D, values) gets this module's 415 `stored_only` answer naming the syntax; a
series mixing both renders its renderable instances and counts the others in `stored_only`.
"""

from __future__ import annotations

from pydicom.uid import UID

from daemons.render.store.manifest import FileEntry, Manifest
from shared.errors import ApiError

STATUS = 415
CODE = "stored_only"


def syntax_text(syntax: str) -> str:
    """A transfer syntax UID with its name where pydicom knows it."""
    name = UID(syntax).name
    return syntax if name == syntax else f"{syntax} ({name})"


def stored_only_error(what: str, entry: FileEntry) -> ApiError:
    """The answer to a request that would render the stored-only file `entry` (`what` names it)."""
    why = ("it holds no image (no Pixel Data: a report, presentation state or document)" if entry.frames == 0
           else f"its pixel data is in transfer syntax {syntax_text(entry.transfer_syntax or '')}, which this "
                "node cannot decode or render")
    return ApiError(STATUS, CODE, f"{what} is stored only: {why}; retrieve it as stored (a physician: WADO-RS; "
                    "or C-GET) to view it elsewhere")


def require_renderable(manifest: Manifest) -> None:
    """415 `stored_only` for a series that has no renderable instance (all of it is stored only)."""
    if manifest.meta.frames == 0 and manifest.stored_only:
        count = len(manifest.stored_only)
        raise stored_only_error(f"series {manifest.meta.series_uid or manifest.meta.id} (all {count} instance"
                                f"{'s' if count > 1 else ''})", manifest.stored_only[0])
