"""From georeferenced DataArrays to HoloViews elements on the map (Web Mercator when the CRS is known).

Rasters are reprojected with rioxarray (nearest neighbour, after upsampling coarse grids so that cells keep their
shape), so a cell is drawn where it lies on Earth and basemap tiles line up.  Without a CRS the map shows pixel
coordinates and no basemap.
"""

from __future__ import annotations

import functools
import math
import os
import socket
from typing import Any

import holoviews as hv
import numpy as np
import xarray as xr
from bokeh.models import CustomJSHover, HoverTool

__all__ = [
    "DISPLAY_CRS",
    "basemap",
    "empty_image",
    "empty_rgb",
    "footprints",
    "hv_image",
    "hv_rgb",
    "to_display",
    "to_source_xy",
]

DISPLAY_CRS = "EPSG:3857"
#: coarse grids are upsampled to about this many pixels on their long side before reprojection.
MIN_DISPLAY_PX = 240
#: rasters larger than this many pixels are drawn through datashader (regrid) instead of sent whole.
DATASHADE_PX = 1024 * 1024

_LONLAT_JS = """
if (format != "latlon") { return value.toFixed(1); }
const R = 6378137.0;
const lon = special_vars.x / R * 180 / Math.PI;
const lat = (2 * Math.atan(Math.exp(special_vars.y / R)) - Math.PI / 2) * 180 / Math.PI;
return lat.toFixed(6) + ", " + lon.toFixed(6);
"""


def lonlat_hover(extra: list[tuple[str, str]] | None = None) -> HoverTool:
    """A hover tool showing Web Mercator x/y and latitude, longitude (computed in the browser)."""
    return HoverTool(
        tooltips=[("x, y (EPSG:3857)", "$x{0.0}, $y{0.0}"), ("lat, lon", "$x{latlon}"), *(extra or [])],
        formatters={"$x": CustomJSHover(code=_LONLAT_JS)},
    )


def has_crs(da: xr.DataArray | None) -> bool:
    return da is not None and getattr(da.rio, "crs", None) is not None


def _upsample(da: xr.DataArray) -> xr.DataArray:
    """Repeat cells so the long side has at least MIN_DISPLAY_PX pixels (keeps cell edges sharp when warped)."""
    h, w = da.sizes["y"], da.sizes["x"]
    f = max(1, math.ceil(MIN_DISPLAY_PX / max(h, w)))
    if f == 1:
        return da
    xs, ys = da.x.values.astype(float), da.y.values.astype(float)
    dx = float(xs[1] - xs[0]) if xs.size > 1 else float(da.rio.resolution()[0])
    dy = float(ys[1] - ys[0]) if ys.size > 1 else float(da.rio.resolution()[1])
    nx = (xs[:, None] - dx / 2 + (np.arange(f) + 0.5) * dx / f).ravel()
    ny = (ys[:, None] - dy / 2 + (np.arange(f) + 0.5) * dy / f).ravel()
    vals = np.repeat(np.repeat(da.values, f, axis=-1), f, axis=-2)
    dims = da.dims
    coords = {d: da.coords[d] for d in dims if d not in ("x", "y")}
    out = xr.DataArray(vals, dims=dims, coords={**coords, "x": nx, "y": ny}, attrs=da.attrs)
    return out.rio.write_crs(da.rio.crs)


def to_display(da: xr.DataArray, nodata: float | None = None) -> xr.DataArray:
    """``da`` (``(band, y, x)`` or ``(y, x)``) reprojected to Web Mercator; unchanged without a CRS."""
    if not has_crs(da):
        return da
    if str(da.rio.crs).upper() == DISPLAY_CRS:
        return da
    from rasterio.enums import Resampling

    up = _upsample(da)
    fill = nodata if nodata is not None else (np.nan if np.issubdtype(up.dtype, np.floating) else 0)
    up = up.rio.write_nodata(fill, encoded=False) if np.issubdtype(up.dtype, np.floating) else up.rio.write_nodata(fill)
    return up.rio.reproject(DISPLAY_CRS, resampling=Resampling.nearest, nodata=fill)


def to_source_xy(x: float, y: float, crs: Any) -> tuple[float, float]:
    """A display point back in the source CRS."""
    if crs is None:
        return x, y

    t = _transformer(DISPLAY_CRS, str(crs))
    sx, sy = t.transform(x, y)
    return float(sx), float(sy)


def to_display_xy(x: float, y: float, crs: Any) -> tuple[float, float]:
    if crs is None:
        return x, y
    t = _transformer(str(crs), DISPLAY_CRS)
    dx, dy = t.transform(x, y)
    return float(dx), float(dy)


@functools.lru_cache(maxsize=32)
def _transformer(src: str, dst: str) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def _bounds(da: xr.DataArray) -> tuple[float, float, float, float]:
    xs, ys = da.x.values.astype(float), da.y.values.astype(float)
    dx = abs(float(xs[1] - xs[0])) if xs.size > 1 else 1.0
    dy = abs(float(ys[1] - ys[0])) if ys.size > 1 else dx
    return (xs.min() - dx / 2, ys.min() - dy / 2, xs.max() + dx / 2, ys.max() + dy / 2)


def hv_rgb(da: xr.DataArray, *, alpha_from_nan: bool = True) -> hv.RGB:
    """An RGB(A) element from ``(band, y, x)`` (uint8 with an alpha band, or float in [0, 1] with NaN masked)."""
    disp = to_display(da)
    vals = np.asarray(disp.values)
    if np.issubdtype(vals.dtype, np.floating):
        finite = np.isfinite(vals).all(axis=0)
        rgb = (np.clip(np.nan_to_num(vals[:3], nan=0.0), 0, 1) * 255).astype(np.uint8)
        alpha = np.where(finite, 255, 0).astype(np.uint8)
        vals = np.concatenate([rgb, alpha[None]])
    elif vals.shape[0] == 3:
        vals = np.concatenate([vals, np.full((1, *vals.shape[1:]), 255, np.uint8)])
    ys = disp.y.values
    data = vals if ys.size < 2 or ys[0] > ys[-1] else vals[:, ::-1]  # rows top to bottom
    el = hv.RGB(np.moveaxis(data, 0, -1), bounds=_bounds(disp), vdims=["R", "G", "B", "A"])
    if data.shape[1] * data.shape[2] > DATASHADE_PX:
        from holoviews.operation.datashader import regrid

        return regrid(el)
    return el


def hv_image(da: xr.DataArray, name: str) -> hv.Image:
    """A scalar ``(y, x)`` map (similarity, agreement, clusters) as an Image in display coordinates."""
    disp = to_display(da.astype(np.float32))
    vals = np.asarray(disp.values, dtype=np.float32)
    ys = disp.y.values
    data = vals if ys.size < 2 or ys[0] > ys[-1] else vals[::-1]
    return hv.Image(data, bounds=_bounds(disp), vdims=[name])


def empty_rgb(bounds: tuple[float, float, float, float] | None = None) -> hv.RGB:
    """A transparent 1 x 1 RGB (a layer that is switched off keeps its type)."""
    return hv.RGB(np.zeros((1, 1, 4), np.uint8), bounds=bounds or (0, 0, 1, 1), vdims=["R", "G", "B", "A"])


def empty_image(name: str, bounds: tuple[float, float, float, float] | None = None) -> hv.Image:
    return hv.Image(np.full((1, 1), np.nan, np.float32), bounds=bounds or (0, 0, 1, 1), vdims=[name])


def footprints(
    boxes: dict[int, tuple[float, float, float, float]],
    crs: Any,
    ids: list[str],
    *,
    slots: int | None = None,
    pad_at: tuple[float, float] | None = None,
) -> hv.Polygons:
    """Tile footprints (source CRS boxes) as polygons in display coordinates, with their tile id.

    With ``slots``, exactly that many polygons (the first ``slots`` boxes, then zero-area polygons with an empty id
    at ``pad_at``, a source-CRS point, or at the origin), so that a map layer keeps its number of polygons."""
    polys = []
    for i, (l, b, r, t) in boxes.items():
        corners = [(l, b), (r, b), (r, t), (l, t), (l, b)]
        pts = [to_display_xy(x, y, crs) for x, y in corners]
        polys.append({"x": [p[0] for p in pts], "y": [p[1] for p in pts], "tile": ids[i]})
    if slots is not None:
        polys = polys[:slots]
        x, y = to_display_xy(*pad_at, crs) if pad_at is not None else (0.0, 0.0)
        polys += [{"x": [x, x, x], "y": [y, y, y], "tile": ""} for _ in range(slots - len(polys))]
    return hv.Polygons(polys, vdims=["tile"])


@functools.cache
def tiles_reachable(host: str = "tile.openstreetmap.org", port: int = 443, timeout_s: float = 1.0) -> bool:
    """Whether basemap tiles can be fetched (one connection attempt per process; never hangs)."""
    if os.environ.get("ANYSAT_APP_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def basemap(offline: bool) -> hv.Element | None:
    """OpenStreetMap tiles when reachable, else None (a blank background, no hanging requests)."""
    if offline or not tiles_reachable():
        return None
    from holoviews.element.tiles import OSM

    return OSM()
