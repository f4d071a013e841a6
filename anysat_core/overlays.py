"""Maps for web map widgets: a ``(y, x)`` or RGB DataArray as a PNG image overlay in latitude/longitude.

Web maps (leafmap and ipyleaflet, folium) draw an image between two latitude/longitude corners, in Web Mercator.
:func:`web_overlay` reprojects a georeferenced map to Web Mercator with rioxarray, upsamples coarse grids (nearest
neighbour, so that the browser's smoothing does not blur 10 m cells) and encodes it as a PNG data URL; NaN cells are
transparent. :func:`colorize` turns a ``(y, x)`` map (similarity, confidence, classes) into RGB first.

    >>> ov = web_overlay(PCARGB().fit_transform(features))           # doctest: +SKIP
    >>> m = leafmap.Map(center=ov.center, zoom=ov.zoom)               # doctest: +SKIP
    >>> m.add(ipyleaflet.ImageOverlay(url=ov.url, bounds=ov.bounds))  # doctest: +SKIP

Nothing here imports a web map library: the overlay is plain data (a URL and corners).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anysat_core.errors import ConfigError, InputShapeError, MissingCRSError
from anysat_core.modalities import MODALITIES

__all__ = ["WebOverlay", "colorize", "composite", "rgb_bands", "web_overlay"]

#: coarse grids are upsampled (nearest) until their longer side has at least this many pixels
MIN_SIDE_PX = 256
#: fine grids are block-averaged until their longer side has at most this many pixels
MAX_SIDE_PX = 1024


def rgb_bands(modality: str) -> list[int]:
    """Indices of the bands shown as red, green, blue for a modality (natural colour when the registry names them;
    SAR: VV, VH, VV/VH or VV, VH, VV-VH; other: the first three)."""
    from anysat_core.data.raster.bands import band_alias

    mod = MODALITIES[modality]
    names = [band_alias(modality, c) for c in ("red", "green", "blue")]
    if all(names):
        return [mod.bands.index(n) for n in names]
    n = len(mod.bands)
    return [0, min(1, n - 1), min(2, n - 1)]


def composite(
    sample: Any, modality: str, date_index: int = 0, *, percentiles: tuple[float, float] | None = (2.0, 98.0)
) -> Any:
    """An RGB composite of one modality of a sample (one date of a time series), stretched per band between
    percentiles.

    Args:
        sample: a sample from a dataset, :func:`~anysat_core.open_rasters` or GeoPlex-mini (modality tensors
            ``(T, C, H, W)`` or ``(C, H, W)``, optional ``<modality>_mask`` and ``meta``).
        modality: which modality (its natural-colour bands when the registry names them: e.g. B04, B03, B02 of S2;
            SAR: VV, VH and VV-VH).
        date_index: which date of a time series.
        percentiles: the stretch: these percentiles of the valid pixels map to 0 and 1; None: no stretch (the
            bands' values, e.g. to stretch a mosaic of tiles once rather than each tile on its own).

    Returns:
        DataArray ``(band=3, y, x)`` in ``[0, 1]`` (NaN where masked or not finite) with pixel-centre coordinates
        and the sample's CRS when ``meta`` has one: ready for :func:`web_overlay` or ``.plot.imshow()``. With
        ``percentiles=None``, the unstretched values.

    Raises:
        ConfigError: a modality the sample lacks or a date index outside its dates.
    """
    import torch

    from anysat_core.features import features_to_dataarray

    if modality not in sample:
        raise ConfigError(
            f"composite got modality {modality!r}, which this sample does not have; pick one of "
            f"{[k for k in sample if k in MODALITIES]}"
        )
    x = sample[modality]
    mask = None
    if MODALITIES[modality].time_series:
        T = int(x.shape[0])
        if not 0 <= date_index < T:
            raise ConfigError(f"composite got date_index {date_index} for {modality}, which has dates 0..{T - 1}")
        x = x[date_index]
        m = sample.get(modality + "_mask")
        if m is not None and m.dim() == 4 and m.shape[0] == T:
            mask = m[date_index, 0]
    arr = x.float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    bands = [min(b, arr.shape[0] - 1) for b in rgb_bands(modality)]
    rgb = arr[bands].astype(np.float64)
    if modality in ("s1-asc", "s1") and arr.shape[0] >= 2 and bands[2] == min(2, arr.shape[0] - 1) and arr.shape[0] < 3:
        rgb[2] = arr[0] - arr[1]
    valid = np.isfinite(rgb).all(axis=0)
    if mask is not None:
        valid &= (mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)).astype(bool)  # True = valid
    out = np.where(valid, rgb, np.nan)
    if percentiles is not None:
        for c in range(3):
            v = rgb[c][valid]
            if v.size == 0:
                continue
            lo, hi = np.percentile(v, percentiles)
            scaled = (rgb[c] - lo) / (hi - lo) if hi > lo else np.full_like(rgb[c], 0.5)
            out[c] = np.where(valid, np.clip(scaled, 0.0, 1.0), np.nan)
    da = features_to_dataarray(np.moveaxis(out, 0, -1), sample.get("meta"))
    da = da.rename({"feature": "band"}).assign_coords(band=["r", "g", "b"])
    da.attrs = {"modality": modality, "date_index": int(date_index)}
    return da


@dataclass(frozen=True)
class WebOverlay:
    """A PNG image overlay for a web map.

    Attributes:
        url: ``data:image/png;base64,...`` (north up, Web Mercator, transparent where the map is NaN).
        bounds: ``((south, west), (north, east))`` in degrees, the order ipyleaflet and folium expect.
        width_px, height_px: size of the PNG.
    """

    url: str
    bounds: tuple[tuple[float, float], tuple[float, float]]
    width_px: int
    height_px: int

    @property
    def center(self) -> tuple[float, float]:
        """``(lat, lon)`` of the overlay's centre."""
        (s, w), (n, e) = self.bounds
        return ((s + n) / 2.0, (w + e) / 2.0)

    @property
    def zoom(self) -> int:
        """A web map zoom level at which the overlay fills a ~600 px wide map."""
        (_, w), (_, e) = self.bounds
        span = max(e - w, 1e-9)
        return int(max(1, min(22, math.floor(math.log2(360.0 * 600 / 256 / span)))))


def colorize(
    da: Any,
    cmap: str | Sequence[str] = "viridis",
    *,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Any:
    """RGB ``(band=3, y, x)`` in ``[0, 1]`` of a ``(y, x)`` map, NaN kept as NaN (transparent in an overlay).

    Args:
        da: ``(y, x)`` DataArray (similarity, confidence, cluster or class ids), georeferenced or not.
        cmap: a Matplotlib colormap name (continuous maps), or a list of colours (``"#rrggbb"`` or names) indexed by
            the integer value of each cell (cluster or class maps; value ``i`` gets ``cmap[i % len(cmap)]``).
        vmin, vmax: value range of a continuous colormap (default: the map's finite min and max).

    Returns:
        DataArray ``(band, y, x)`` with the coordinates and CRS of ``da``.

    Raises:
        InputShapeError: ``da`` is not a 2-D ``(y, x)`` DataArray.
    """
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    if not isinstance(da, xr.DataArray) or set(da.dims) != {"y", "x"}:
        got = f"dims {dict(da.sizes)}" if isinstance(da, xr.DataArray) else f"a {type(da).__name__}"
        raise InputShapeError(
            f"colorize got {got}; expected a (y, x) DataArray such as a similarity, cluster or prediction map "
            "(for (feature, y, x) features use PCARGB().fit_transform(features))"
        )
    da = da.transpose("y", "x")
    values = np.asarray(da.values, dtype=np.float64)
    nan = ~np.isfinite(values)
    if isinstance(cmap, str):
        finite = values[~nan]
        lo = float(finite.min()) if vmin is None and finite.size else float(vmin or 0.0)
        hi = float(finite.max()) if vmax is None and finite.size else float(vmax if vmax is not None else 1.0)
        scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        rgb = colormaps[cmap](scaled)[..., :3]
    else:
        table = np.array([to_rgb(c) for c in cmap], dtype=np.float64)
        ids = np.nan_to_num(values, nan=0.0).astype(np.int64) % len(table)
        rgb = table[ids]
    rgb = np.where(nan[..., None], np.nan, rgb).transpose(2, 0, 1)
    out = xr.DataArray(rgb, dims=("band", "y", "x"), coords={"band": [1, 2, 3], "y": da["y"], "x": da["x"]})
    if da.rio.crs is not None:
        out = out.rio.write_crs(da.rio.crs)
    return out


def web_overlay(rgb: Any, *, min_side_px: int = MIN_SIDE_PX, max_side_px: int | None = MAX_SIDE_PX) -> WebOverlay:
    """A georeferenced RGB map as a PNG overlay for a web map (Web Mercator, latitude/longitude corners).

    Args:
        rgb: DataArray ``(band=3, y, x)`` in ``[0, 1]`` with a CRS (``rio.crs``), e.g. from
            :meth:`~anysat_core.PCARGB.transform`, :func:`colorize` or an input composite; NaN is transparent.
        min_side_px: coarse grids are repeated (nearest neighbour) until the longer side has this many pixels.
        max_side_px: finer grids are averaged over blocks of pixels until the longer side has at most this many
            (a 0.2 m aerial mosaic would otherwise make a data URL of megabytes); None keeps every pixel.

    Returns:
        a :class:`WebOverlay` (``url``, ``bounds``, ``center``, ``zoom``).

    Raises:
        InputShapeError: not a 3-band ``(band, y, x)`` DataArray (use :func:`colorize` for a ``(y, x)`` map).
        MissingCRSError: the map has no CRS (write one with ``da.rio.write_crs(...)``).
    """
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr
    from PIL import Image
    from rasterio.enums import Resampling

    if not isinstance(rgb, xr.DataArray) or set(rgb.dims) != {"band", "y", "x"} or rgb.sizes.get("band") != 3:
        got = f"dims {dict(rgb.sizes)}" if isinstance(rgb, xr.DataArray) else f"a {type(rgb).__name__}"
        raise InputShapeError(
            f"web_overlay got {got}; expected a DataArray (band=3, y, x) in [0, 1] "
            "(PCARGB().fit_transform(features), or colorize(map) for a (y, x) map)"
        )
    if rgb.rio.crs is None:
        raise MissingCRSError(
            "web_overlay got a map without a CRS; a web map needs to know where it is: "
            "write one with da.rio.write_crs('EPSG:32631') (features from extract_features carry theirs)"
        )
    rgb = rgb.transpose("band", "y", "x").astype("float64")
    ny, nx = rgb.sizes["y"], rgb.sizes["x"]
    if max_side_px is not None and max(ny, nx) > max_side_px:
        block = math.ceil(max(ny, nx) / max_side_px)
        crs = rgb.rio.crs
        rgb = rgb.coarsen(y=block, x=block, boundary="trim").mean().rio.write_crs(crs)
        ny, nx = rgb.sizes["y"], rgb.sizes["x"]
    factor = max(1, math.ceil(min_side_px / max(ny, nx, 1)))
    if factor > 1:  # repeat cells so that reprojection and the browser keep their edges sharp
        fine = np.repeat(np.repeat(rgb.values, factor, axis=1), factor, axis=2)
        dx = float(rgb.x[1] - rgb.x[0]) if nx > 1 else float(abs(rgb.rio.resolution()[0]))
        dy = float(rgb.y[1] - rgb.y[0]) if ny > 1 else -float(abs(rgb.rio.resolution()[1]))
        xs = float(rgb.x[0]) - dx / 2 + (np.arange(nx * factor) + 0.5) * dx / factor
        ys = float(rgb.y[0]) - dy / 2 + (np.arange(ny * factor) + 0.5) * dy / factor
        rgb = xr.DataArray(fine, dims=("band", "y", "x"), coords={"band": rgb["band"], "y": ys, "x": xs}).rio.write_crs(
            rgb.rio.crs
        )
    merc = rgb.rio.write_nodata(np.nan).rio.reproject("EPSG:3857", resampling=Resampling.nearest)
    west, south, east, north = merc.rio.transform_bounds("EPSG:4326")
    arr = np.asarray(merc.values, dtype=np.float64)
    if merc.y.size > 1 and float(merc.y[0]) < float(merc.y[-1]):
        arr = arr[:, ::-1, :]
    nan = ~np.isfinite(arr).all(axis=0)
    rgba = np.empty((*arr.shape[1:], 4), dtype=np.uint8)
    rgba[..., :3] = np.rint(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    rgba[..., 3] = np.where(nan, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return WebOverlay(
        url=url,
        bounds=((float(south), float(west)), (float(north), float(east))),
        width_px=int(rgba.shape[1]),
        height_px=int(rgba.shape[0]),
    )
