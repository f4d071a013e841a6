"""A survey of a scene before any work: does it hold a single valid pixel?

:func:`has_valid_data` lets scene inference refuse an all-nodata scene before any output exists, without reading a
usable scene twice: it reads lazily, in strips of rows from the middle of each raster outwards, and stops at the first
valid pixel.  A scene with data is answered after one strip of its first raster (a few MiB); only a scene with no
valid pixel at all is read completely, once, and is then refused instead of being run.

A pixel is valid as for :class:`~anysat_core.data.raster.RasterScene` tiles: finite, not the frame's ``nodata``, in a
gridded modality (MODIS, one pixel per tile, does not count), and inside the scene's common data extent.
"""

from __future__ import annotations

import numpy as np
import rasterio.errors
from rasterio.crs import CRS

from anysat_core.data.raster.grid import frame_pixel_box
from anysat_core.data.raster.scene import RasterScene
from anysat_core.data.raster.sources import Frame
from anysat_core.errors import CorruptFileError
from anysat_core.modalities import MODALITIES

__all__ = ["STRIP_BYTES", "has_valid_data", "nodata_summary", "valid_in_frame"]

#: Bytes of one strip of rows read at a time (as stored in the file, all selected bands).
STRIP_BYTES = 16 * 2**20


def _any_valid(raw: np.ndarray, nodata: float | None) -> bool:
    """Whether ``raw`` holds a value that is finite and not ``nodata`` (compared as the scene's reader does)."""
    valid = np.isfinite(raw) if np.issubdtype(raw.dtype, np.floating) else np.ones(raw.shape, bool)
    if nodata is not None:
        if np.issubdtype(raw.dtype, np.floating):
            valid &= raw != raw.dtype.type(nodata)
        else:  # integers: exactly, in float64 (an out-of-range nodata never wraps around)
            valid &= raw.astype(np.float64) != nodata
    return bool(valid.any())


def valid_in_frame(
    f: Frame, crs: CRS, bounds: tuple[float, float, float, float], strip_bytes: int = STRIP_BYTES
) -> bool:
    """Whether frame ``f`` has a valid pixel inside ``bounds`` (in ``crs``): strips of about ``strip_bytes`` read
    from the middle row outwards, stopping at the first valid pixel.

    Raises:
        CorruptFileError: a strip cannot be read (a truncated or damaged file).
    """
    window = frame_pixel_box(f, bounds, crs)
    if window is None:
        return False
    r0, r1, c0, c1 = window
    row_bytes = max(1, len(f.band_idx) * (c1 - c0) * f.da.dtype.itemsize)
    step = max(1, int(strip_bytes // row_bytes))
    starts = list(range(r0, r1, step))
    middle = (r0 + r1) / 2
    starts.sort(key=lambda s: abs(s + step / 2 - middle))  # data is most often in the middle of a raster
    for s in starts:
        try:
            raw = np.asarray(f.da.isel(band=f.band_idx, y=slice(s, min(s + step, r1)), x=slice(c0, c1)).values)
        except (rasterio.errors.RasterioError, OSError) as e:
            raise CorruptFileError(
                f"cannot read rows {s}..{min(s + step, r1)} of {f.name!r} ({type(e).__name__}: {e}); the file may be "
                "truncated or damaged: re-download or re-export it"
            ) from e
        if _any_valid(raw, f.nodata):
            return True
    return False


def has_valid_data(scene: RasterScene, strip_bytes: int = STRIP_BYTES) -> bool:
    """Whether any gridded modality of ``scene`` has a valid pixel inside the scene's common data extent.

    Frames are surveyed one after the other (see :func:`valid_in_frame`); the answer comes at the first valid pixel.

    Raises:
        CorruptFileError: a raster cannot be read.
    """
    bounds = scene.grid.data_bounds
    for m, st in scene._mods.items():
        if MODALITIES[m].tile_token:
            continue
        for f in st.frames:
            if valid_in_frame(f, scene.crs, bounds, strip_bytes):
                return True
    return False


def nodata_summary(scene: RasterScene) -> str:
    """``"s2: s2_20200110.tif (nodata 0), ..."``: the gridded rasters of ``scene`` and the nodata each one uses."""
    parts = []
    for m, st in scene._mods.items():
        if MODALITIES[m].tile_token:
            continue
        names = ", ".join(f"{f.name} (nodata {f.nodata:g})" if f.nodata is not None else f.name for f in st.frames[:3])
        more = f" and {len(st.frames) - 3} more" if len(st.frames) > 3 else ""
        parts.append(f"{m}: {names}{more}")
    return "; ".join(parts)
