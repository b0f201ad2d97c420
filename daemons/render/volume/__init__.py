"""Pure 3D rendering of loaded records: arrays in, arrays out, no HTTP and no I/O.

- `prepare_volume` turns a record's voxels, spacing and orientation into a `PreparedVolume`;
- `ViewSpec` describes a 3D view, `select_backend` gives a `RayCaster` (CPU or OpenGL) to render it;
- `reformat` cuts axial, coronal or sagittal planes (with slabs) at their true aspect.
"""

from daemons.render.volume.geometry import camera_axes, make_geometry, ray_grid
from daemons.render.volume.raycast import MODES, QUALITY, RayCaster, ViewSpec
from daemons.render.volume.transfer import PRESETS
from daemons.render.volume.volume import PreparedVolume, prepare_volume

__all__ = ["MODES", "PRESETS", "QUALITY", "PreparedVolume", "RayCaster", "ViewSpec", "camera_axes",
           "make_geometry", "prepare_volume", "ray_grid"]
