"""Overlay planes larger than anything the node shows are bounded at upload
(daemons.render.imaging.overlays, `unshowable_plane`): the file is kept and its image shown, its
overlays are not, and no overlay request reads the file for them."""

from __future__ import annotations

import numpy as np

from tests.render.synthetic import dataset, to_bytes
from tests.render.test_overlay_bits import _overlay, overlay_request


def _big_overlay_ct(size: int) -> bytes:
    """A 64x64 CT whose overlay plane 6000 declares `size` x `size` bits, all there."""
    ds = dataset(64, 64)
    ds.PixelSpacing = [1.0, 1.0]
    ds.WindowCenter, ds.WindowWidth = 10000, 200  # every pixel black: a drawn overlay bit is white
    _overlay(ds, size, size, np.full(size * size // 8, 0xFF, dtype=np.uint8).tobytes())
    return to_bytes(ds)


def test_an_overlay_larger_than_any_image_is_kept_unshown_and_never_read(node):
    """A 64x64 CT whose overlay plane is 16384 x 16384 bits (32 MB; this node's images are at most
    8192 x 8192): each frame's first overlay request read and parsed the whole stored file (64 MiB
    held). Now the file is stored, its image shown, its overlay marked not shown at upload, with a
    warning naming the plane and the attribute, and the request reads nothing for it."""
    size = 16384
    record_id, meta = node.load([("big-overlay.dcm", _big_overlay_ct(size))])
    assert any("overlay plane 6000: Overlay Rows 16384" in w for w in meta["warnings"]), meta["warnings"]
    manifest = node.app.extensions["sivr_node"].store.read_manifest(record_id)
    assert [entry.overlays for entry in manifest.files] == [False]
    image, peak = overlay_request(node, record_id)
    assert not (image == 255).any()  # the plane (all ones) is not drawn
    assert peak < size * size // 8 // 8, f"{peak / 2**20:.1f} MiB held for an overlay that is not shown"


def test_an_overlay_of_more_frames_than_its_image_is_not_shown(node):
    ds = dataset(16, 16)
    ds.WindowCenter, ds.WindowWidth = 10000, 200
    _overlay(ds, 16, 16, np.full(16 * 16 * 5 // 8, 0xFF, dtype=np.uint8).tobytes(), frames=5)
    record_id, meta = node.load([("frames.dcm", to_bytes(ds))])
    assert any("Number of Frames in Overlay 5 is over the image's frames (1)" in w for w in meta["warnings"])
    image, _ = overlay_request(node, record_id)
    assert not (image == 255).any()


def test_an_overlay_within_the_bounds_is_still_drawn(node):
    ds = dataset(16, 16)
    ds.WindowCenter, ds.WindowWidth = 10000, 200
    _overlay(ds, 32, 32, np.full(32 * 32 // 8, 0xFF, dtype=np.uint8).tobytes(), origin=(-3, -3))
    record_id, meta = node.load([("small.dcm", to_bytes(ds))])
    assert not any("overlay" in w for w in meta["warnings"])
    image, _ = overlay_request(node, record_id)
    assert (image == 255).all()  # a plane larger than its image, within the node's: clipped, as dcmtk does
